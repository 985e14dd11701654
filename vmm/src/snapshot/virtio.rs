//! Saving the VM's virtio devices and restoring them with new backends.
//!
//! A snapshot holds the devices in slot order (disks, then vsock, then
//! net). A restore must bring the same layout: one [`DiskConfig`] per saved
//! disk slot, a vsock config iff the snapshot has vsock, a net config iff
//! it has net. Each device is created on its new backend, then brought to
//! the saved transport and queue state
//! ([`MmioTransport::restore`](crate::devices::virtio::mmio::MmioTransport::restore));
//! the vsock device finally posts a TRANSPORT_RESET event.

use kvm_ioctls::VmFd;

use super::{RestoreConfig, SnapshotError};
use crate::bus::Bus;
use crate::config::{DiskConfig, MAX_VIRTIO_DEVICES};
use crate::devices::virtio::persist::{DeviceKindState, VirtioDeviceState};
use crate::devices::virtio::GuestMemory;
use crate::setup::{self, AttachedDevice, VirtioKind};

fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Refuses devices whose state is not the VMM's: virtio-fs (its
/// vhost-user backend's).
pub fn check_saveable(devices: &[AttachedDevice]) -> Result<(), SnapshotError> {
    match devices.iter().any(|d| matches!(d.kind, VirtioKind::Fs(_))) {
        true => Err(SnapshotError::VirtioFs),
        false => Ok(()),
    }
}

/// The state of every device (the VM is paused: nothing is in flight).
pub fn save_devices(devices: &[AttachedDevice]) -> Result<Vec<VirtioDeviceState>, SnapshotError> {
    devices
        .iter()
        .map(|d| {
            let (transport, common) = lock(&d.transport).save();
            let device = match &d.kind {
                VirtioKind::Block(b) => DeviceKindState::Block(lock(b).save_state()),
                VirtioKind::Vsock(v) => DeviceKindState::Vsock(lock(v).save_state()),
                VirtioKind::Net(n) => DeviceKindState::Net(lock(n).save_state()),
                VirtioKind::Fs(_) => return Err(SnapshotError::VirtioFs),
            };
            Ok(VirtioDeviceState {
                transport,
                common,
                device,
            })
        })
        .collect()
}

/// Describes a layout (`2 disks, vsock, net`) for errors.
fn describe(disks: usize, vsock: bool, net: bool) -> String {
    let mut parts = vec![format!(
        "{disks} disk slot{}",
        if disks == 1 { "" } else { "s" }
    )];
    parts.extend(vsock.then(|| "vsock".to_string()));
    parts.extend(net.then(|| "net".to_string()));
    parts.join(", ")
}

/// Checks that `config` brings one backend per saved device, in order.
fn check_layout(saved: &[VirtioDeviceState], config: &RestoreConfig) -> Result<(), SnapshotError> {
    if saved.len() > MAX_VIRTIO_DEVICES {
        return Err(SnapshotError::Layout {
            saved: format!("{} devices, more than {MAX_VIRTIO_DEVICES}", saved.len()),
            given: describe(
                config.disks.len(),
                config.vsock.is_some(),
                config.net.is_some(),
            ),
        });
    }
    let kinds: Vec<&str> = saved.iter().map(|d| d.device.kind()).collect();
    let disks = kinds.iter().take_while(|&&k| k == "block").count();
    let rest = &kinds[disks..];
    let (vsock, net) = match rest {
        [] => (false, false),
        ["vsock"] => (true, false),
        ["net"] => (false, true),
        ["vsock", "net"] => (true, true),
        _ => {
            return Err(SnapshotError::Layout {
                saved: kinds.join(", "),
                given: describe(
                    config.disks.len(),
                    config.vsock.is_some(),
                    config.net.is_some(),
                ),
            })
        }
    };
    if disks != config.disks.len() || vsock != config.vsock.is_some() || net != config.net.is_some()
    {
        return Err(SnapshotError::Layout {
            saved: describe(disks, vsock, net),
            given: describe(
                config.disks.len(),
                config.vsock.is_some(),
                config.net.is_some(),
            ),
        });
    }
    Ok(())
}

/// Creates the devices on `config`'s backends and restores the saved
/// state into them. Call it after the interrupt controllers are restored:
/// it may raise interrupts (config changes, the vsock reset event).
pub fn restore_devices(
    vm: &VmFd,
    mmio: &mut Bus,
    mem: &GuestMemory,
    saved: &[VirtioDeviceState],
    config: &RestoreConfig,
) -> Result<Vec<AttachedDevice>, SnapshotError> {
    check_layout(saved, config)?;
    let disks: &[DiskConfig] = &config.disks;
    let (devices, _slots) = setup::attach_virtio_devices(
        vm,
        mmio,
        mem,
        disks,
        config.vsock.as_ref(),
        config.net.as_ref(),
        None,
    )?;
    for (device, state) in devices.iter().zip(saved) {
        lock(&device.transport).restore(&state.transport, &state.common)?;
        if let VirtioKind::Vsock(v) = &device.kind {
            let mut v = lock(v);
            if v.is_active() {
                v.transport_reset();
            }
        }
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConsoleOutput, VsockConfig};
    use crate::devices::virtio::block::BlockState;
    use crate::devices::virtio::mmio::MmioRegisters;
    use crate::devices::virtio::persist::{CommonState, TransportState};
    use crate::devices::virtio::vsock::VsockState;
    use crate::devices::virtio::Features;
    use crate::snapshot::SnapshotFiles;

    fn state(device: DeviceKindState) -> VirtioDeviceState {
        VirtioDeviceState {
            transport: TransportState {
                regs: MmioRegisters::default(),
                interrupt_status: 0,
                queues: vec![],
                config_space: vec![],
            },
            common: CommonState {
                features: Features::new(0),
                active_queues: None,
            },
            device,
        }
    }

    fn disk() -> DiskConfig {
        DiskConfig {
            path: None,
            read_only: false,
            serial: "s".into(),
            rate_limit: Default::default(),
        }
    }

    #[test]
    fn layout_must_match() {
        let block = || {
            state(DeviceKindState::Block(BlockState {
                capacity: 0,
                serial: "s".into(),
                read_only: false,
            }))
        };
        let vsock = state(DeviceKindState::Vsock(VsockState { guest_cid: 3 }));
        let saved = vec![block(), block(), vsock];
        let mut config = RestoreConfig {
            files: SnapshotFiles {
                state: "s".into(),
                memory: "m".into(),
            },
            console: ConsoleOutput::Sink,
            disks: vec![disk(), disk()],
            vsock: Some(VsockConfig {
                guest_cid: 3,
                uds_path: "v".into(),
                listener: None,
                streams: crate::VsockStreams::Raw,
            }),
            net: None,
            seccomp: crate::SeccompMode::Enforce,
        };
        assert!(check_layout(&saved, &config).is_ok());
        config.disks.pop();
        let err = check_layout(&saved, &config).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the snapshot's virtio devices (2 disk slots, vsock) do not match the \
             restore's (1 disk slot, vsock)"
        );
        config.disks.push(disk());
        config.vsock = None;
        assert!(check_layout(&saved, &config).is_err());
        let odd = vec![saved[2].clone(), block()];
        assert!(check_layout(&odd, &config).is_err());
    }
}
