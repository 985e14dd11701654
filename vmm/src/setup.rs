//! Steps of VM assembly: opening KVM, creating the VM with its in-kernel
//! interrupt controllers, and attaching devices to buses, irqfds and
//! ioeventfds.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use event_manager::MutEventSubscriber;
use kvm_bindings::{kvm_pit_config, KVM_API_VERSION, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VmFd};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::x86_64::layout::{
    KVM_IDENTITY_MAP_START, KVM_TSS_START, SERIAL_IRQ, VIRTIO_FIRST_IRQ, VIRTIO_MMIO_BASE,
    VIRTIO_MMIO_SIZE,
};
use crate::bus::{Bus, BusError};
use crate::cmdline::VirtioMmioSlot;
use crate::config::{ConsoleOutput, DiskConfig, FsConfig, NetConfig, VsockConfig};
use crate::devices::legacy::{PowerOffPort, I8042, I8042_BASE, I8042_SIZE, POWEROFF_PORT};
use crate::devices::serial::{
    console_writer, EventFdTrigger, SerialDevice, SERIAL_PORT_BASE, SERIAL_PORT_SIZE,
};
use crate::devices::virtio::block::{Block, BlockConfig, BlockError};
use crate::devices::virtio::fs::{Fs, FsError};
use crate::devices::virtio::mmio::{MmioError, MmioTransport};
use crate::devices::virtio::net::{Net, NetError};
use crate::devices::virtio::vsock::{self as vsock_dev, Vsock, VsockError};
use crate::devices::virtio::{GuestMemory, VirtioDevice, VirtioInterrupt};
use crate::exit::ExitSignal;
use crate::snapshot::LegacyState;

/// Offset of the QueueNotify register in a virtio-mmio window.
const VIRTIO_MMIO_QUEUE_NOTIFY: u64 = 0x50;

/// Errors from VM assembly.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// /dev/kvm does not exist.
    #[error("/dev/kvm not found: is KVM enabled on this host?")]
    KvmNotFound,
    /// /dev/kvm exists but cannot be opened by this user.
    #[error("no permission to open /dev/kvm")]
    KvmPermission,
    /// /dev/kvm cannot be opened for another reason.
    #[error("cannot open /dev/kvm")]
    KvmOpen(#[source] kvm_ioctls::Error),
    /// The KVM API version is not 12.
    #[error("unsupported KVM API version {0} (12 is required)")]
    KvmApiVersion(i32),
    /// A capability husk needs is missing.
    #[error("KVM lacks a required capability: {0}")]
    KvmCapability(&'static str),
    /// A VM-level KVM ioctl failed.
    #[error("{0} failed")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// Creating an eventfd failed.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// The console file cannot be created.
    #[error("console output {0}: cannot create")]
    Console(PathBuf, #[source] std::io::Error),
    /// A device range clashes on a bus.
    #[error("cannot map a device")]
    Bus(#[from] BusError),
    /// A snapshot's serial port state is invalid.
    #[error("the snapshot's serial port state is invalid")]
    SerialState,
    /// The virtio-mmio transport cannot be created.
    #[error("cannot create the virtio-mmio transport of device {0}")]
    Mmio(usize, #[source] MmioError),
    /// A disk cannot be opened.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The vsock device cannot be created.
    #[error(transparent)]
    Vsock(#[from] VsockError),
    /// The network device cannot be created.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The virtio-fs device cannot be created (or its backend set up).
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Opens /dev/kvm and checks the API version and the capabilities husk uses.
pub fn open_kvm() -> Result<Kvm, SetupError> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => SetupError::KvmNotFound,
        libc::EACCES | libc::EPERM => SetupError::KvmPermission,
        _ => SetupError::KvmOpen(e),
    })?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION as i32 {
        return Err(SetupError::KvmApiVersion(version));
    }
    let caps = [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
    ];
    for (cap, name) in caps {
        if !kvm.check_extension(cap) {
            return Err(SetupError::KvmCapability(name));
        }
    }
    Ok(kvm)
}

/// Creates the VM with the in-kernel IOAPIC/PIC/LAPICs and PIT.
pub fn create_vm(kvm: &Kvm) -> Result<VmFd, SetupError> {
    let vm = kvm
        .create_vm()
        .map_err(|e| SetupError::Kvm("KVM_CREATE_VM", e))?;
    vm.set_tss_address(KVM_TSS_START as usize)
        .map_err(|e| SetupError::Kvm("KVM_SET_TSS_ADDR", e))?;
    if kvm.check_extension(Cap::SetIdentityMapAddr) {
        vm.set_identity_map_address(KVM_IDENTITY_MAP_START)
            .map_err(|e| SetupError::Kvm("KVM_SET_IDENTITY_MAP_ADDR", e))?;
    }
    vm.create_irq_chip()
        .map_err(|e| SetupError::Kvm("KVM_CREATE_IRQCHIP", e))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(|e| SetupError::Kvm("KVM_CREATE_PIT2", e))?;
    Ok(vm)
}

/// The legacy devices whose state a snapshot holds.
pub struct LegacyDevices {
    /// COM1.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// The keyboard controller.
    pub i8042: Arc<Mutex<I8042>>,
}

/// Adds the serial port, the i8042 and the poweroff port to `pio`, fresh
/// or in a saved `state`.
pub fn attach_legacy(
    vm: &VmFd,
    pio: &mut Bus,
    console: &ConsoleOutput,
    exit: &Arc<ExitSignal>,
    state: Option<&LegacyState>,
) -> Result<LegacyDevices, SetupError> {
    let out = match console {
        ConsoleOutput::Stdout => console_writer(None, true),
        ConsoleOutput::File(p) => console_writer(Some(p), false),
        ConsoleOutput::Sink => console_writer(None, false),
    };
    let out = out.map_err(|e| match console {
        ConsoleOutput::File(p) => SetupError::Console(p.clone(), e),
        _ => SetupError::EventFd(e),
    })?;
    let irq = EventFd::new(EFD_NONBLOCK).map_err(SetupError::EventFd)?;
    vm.register_irqfd(&irq, SERIAL_IRQ)
        .map_err(|e| SetupError::Kvm("KVM_IRQFD (serial)", e))?;
    let trigger = EventFdTrigger::new(irq);
    let (serial, i8042) = match state {
        None => (SerialDevice::new(trigger, out), I8042::new(exit.clone())),
        Some(s) => (
            SerialDevice::from_state(&s.serial, trigger, out).ok_or(SetupError::SerialState)?,
            I8042::from_state(exit.clone(), &s.i8042),
        ),
    };
    let devices = LegacyDevices {
        serial: Arc::new(Mutex::new(serial)),
        i8042: Arc::new(Mutex::new(i8042)),
    };
    pio.insert(devices.serial.clone(), SERIAL_PORT_BASE, SERIAL_PORT_SIZE)?;
    pio.insert(devices.i8042.clone(), I8042_BASE, I8042_SIZE)?;
    pio.insert(
        Arc::new(Mutex::new(PowerOffPort::new(exit.clone()))),
        POWEROFF_PORT,
        1,
    )?;
    Ok(devices)
}

/// The virtio-mmio window and GSI of the `index`-th virtio device.
pub fn virtio_slot(index: usize) -> VirtioMmioSlot {
    VirtioMmioSlot {
        base: VIRTIO_MMIO_BASE + index as u64 * VIRTIO_MMIO_SIZE,
        size: VIRTIO_MMIO_SIZE,
        irq: VIRTIO_FIRST_IRQ + index as u32,
    }
}

/// A device that is both a virtio device and an event-loop subscriber.
pub trait VirtioBackend: VirtioDevice + MutEventSubscriber + Send {}
impl<T: VirtioDevice + MutEventSubscriber + Send> VirtioBackend for T {}

/// An event-loop subscriber.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// A virtio device of the VM, by kind.
#[derive(Clone)]
pub enum VirtioKind {
    /// A disk slot.
    Block(Arc<Mutex<Block>>),
    /// The vsock device.
    Vsock(Arc<Mutex<Vsock>>),
    /// The network interface.
    Net(Arc<Mutex<Net>>),
    /// The virtio-fs device.
    Fs(Arc<Mutex<Fs>>),
}

/// A virtio device attached to the VM: the device and its transport.
pub struct AttachedDevice {
    /// The device.
    pub kind: VirtioKind,
    /// Its virtio-mmio transport (also on the MMIO bus).
    pub transport: Arc<Mutex<MmioTransport>>,
}

impl AttachedDevice {
    /// The device as an event-loop subscriber.
    pub fn subscriber(&self) -> Subscriber {
        match &self.kind {
            VirtioKind::Block(d) => d.clone(),
            VirtioKind::Vsock(d) => d.clone(),
            VirtioKind::Net(d) => d.clone(),
            VirtioKind::Fs(d) => d.clone(),
        }
    }
}

/// Creates the virtio devices in slot order (disks, then vsock, net, fs)
/// and attaches each; returns them with their slots (for the command line).
pub fn attach_virtio_devices(
    vm: &VmFd,
    mmio: &mut Bus,
    mem: &GuestMemory,
    disks: &[DiskConfig],
    vsock: Option<&VsockConfig>,
    net: Option<&NetConfig>,
    fs: Option<&FsConfig>,
) -> Result<(Vec<AttachedDevice>, Vec<VirtioMmioSlot>), SetupError> {
    let mut devices = Vec::new();
    for disk in disks {
        let block = Arc::new(Mutex::new(Block::new(BlockConfig::from(disk))?));
        let transport = attach_virtio(vm, mmio, mem, devices.len(), block.clone())?;
        let kind = VirtioKind::Block(block);
        devices.push(AttachedDevice { kind, transport });
    }
    if let Some(vsock) = vsock {
        let device = Arc::new(Mutex::new(Vsock::new(vsock_dev::VsockConfig {
            guest_cid: vsock.guest_cid,
            uds_path: vsock.uds_path.clone(),
            listener: vsock.listener.clone(),
            streams: vsock.streams,
        })?));
        let transport = attach_virtio(vm, mmio, mem, devices.len(), device.clone())?;
        let kind = VirtioKind::Vsock(device);
        devices.push(AttachedDevice { kind, transport });
    }
    if let Some(net) = net {
        let device = Arc::new(Mutex::new(Net::from_config(net)?));
        let transport = attach_virtio(vm, mmio, mem, devices.len(), device.clone())?;
        let kind = VirtioKind::Net(device);
        devices.push(AttachedDevice { kind, transport });
    }
    if let Some(fs) = fs {
        let socket = fs
            .socket
            .clone()
            .ok_or_else(|| FsError::NoSocket(fs.tag.clone()))?;
        let device = Arc::new(Mutex::new(Fs::new(&fs.tag, socket)?));
        let transport = attach_virtio(vm, mmio, mem, devices.len(), device.clone())?;
        let kind = VirtioKind::Fs(device);
        devices.push(AttachedDevice { kind, transport });
    }
    let slots = (0..devices.len()).map(virtio_slot).collect();
    Ok((devices, slots))
}

/// Puts `device` behind a virtio-mmio transport in slot `index`: maps the
/// window, wires its irqfd and queue-notify ioeventfds, and returns the
/// transport.
pub fn attach_virtio<D: VirtioBackend + 'static>(
    vm: &VmFd,
    mmio: &mut Bus,
    mem: &GuestMemory,
    index: usize,
    device: Arc<Mutex<D>>,
) -> Result<Arc<Mutex<MmioTransport>>, SetupError> {
    let slot = virtio_slot(index);
    let irq = EventFd::new(EFD_NONBLOCK).map_err(SetupError::EventFd)?;
    vm.register_irqfd(&irq, slot.irq)
        .map_err(|e| SetupError::Kvm("KVM_IRQFD (virtio)", e))?;
    let interrupt = Arc::new(VirtioInterrupt::new(irq));
    let as_virtio: Arc<Mutex<dyn VirtioDevice>> = device.clone();
    let transport = MmioTransport::new(mem.clone(), as_virtio, interrupt)
        .map_err(|e| SetupError::Mmio(index, e))?;
    let notify = IoEventAddress::Mmio(slot.base + VIRTIO_MMIO_QUEUE_NOTIFY);
    for (queue, evt) in transport.queue_evts().iter().enumerate() {
        vm.register_ioevent(evt, &notify, queue as u32)
            .map_err(|e| SetupError::Kvm("KVM_IOEVENTFD", e))?;
    }
    let transport = Arc::new(Mutex::new(transport));
    mmio.insert(transport.clone(), slot.base, slot.size)?;
    Ok(transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_avoid_the_serial_irq() {
        let s0 = virtio_slot(0);
        assert_eq!((s0.base, s0.irq), (0xd000_0000, 5));
        let s2 = virtio_slot(2);
        assert_eq!((s2.base, s2.irq), (0xd000_2000, 7));
        assert_ne!(s0.irq, SERIAL_IRQ);
    }
}
