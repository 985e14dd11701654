//! Boots real VMs with the husk guest kernel ($HUSK_KERNEL) and a busybox
//! initramfs built here. Skipped (with a message) only when HUSK_KERNEL is
//! unset. The VMs run one at a time so that vCPU thread counts are exact.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

mod common;
use vmm::{
    ConsoleOutput, DiskConfig, ExitReason, HostKind, NetBackend, NetConfig, Vm, VmConfig,
    VsockConfig,
};

/// Upper bound for one boot; a watchdog stops the VM after it. A boot and
/// a short script take 30-100 s on PVM hosts (guest kernel code is
/// emulated), up to ~5 min when the host's CPUs are busy with other VMs.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const MARKER: &str = "HUSK-BOOT-TEST-MARKER";
/// Environment variables the VMM may give PID 1 (`HostKind::guest_env`);
/// /init prints each as `env NAME=value.`.
const ENV_NAMES: [&str; 3] = ["GLIBC_TUNABLES", "OPENSSL_ia32cap", "GODEBUG"];
static SERIAL: Mutex<()> = Mutex::new(());

/// An initramfs with busybox and an /init running `script` after mounting /proc.
fn initramfs(dir: &Path, script: &str) -> PathBuf {
    let env: String = ENV_NAMES
        .iter()
        .map(|name| format!("echo \"env {name}=${name}.\"\n"))
        .collect();
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n\
         echo {MARKER}\necho \"nproc=$(/bin/busybox nproc)\"\n{env}{script}\n"
    );
    common::busybox_initramfs(dir, &init)
}

fn config(kernel: PathBuf, initrd: PathBuf, console: PathBuf, vcpus: u8) -> VmConfig {
    VmConfig {
        kernel,
        initrd: Some(initrd),
        cmdline_extra: String::new(),
        vcpus,
        mem_mib: 256,
        disks: vec![],
        vsock: None,
        net: None,
        fs: None,
        console: ConsoleOutput::File(console),
        seccomp: vmm::SeccompMode::Enforce,
    }
}

/// The names of this process's threads that are vCPU threads.
fn vcpu_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with("vcpu"))
        .collect()
}

/// Runs `vm` with a watchdog; `on_console` is polled while it runs and may
/// stop it. Returns the exit reason and the console text.
fn run_vm(
    vm: Vm,
    console: &Path,
    mut on_console: impl FnMut(&str) -> bool + Send + 'static,
) -> (ExitReason, String, Duration) {
    let stop = vm.stop_handle();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done2, console2) = (done.clone(), console.to_path_buf());
    let watchdog = std::thread::spawn(move || {
        let start = Instant::now();
        while !done2.load(std::sync::atomic::Ordering::SeqCst) {
            let text = std::fs::read_to_string(&console2).unwrap_or_default();
            if start.elapsed() > BOOT_TIMEOUT || on_console(&text) {
                stop.stop();
                return start.elapsed() <= BOOT_TIMEOUT;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    });
    let start = Instant::now();
    // The event loop runs on a thread of its own under its seccomp filter,
    // as in the sandbox (the vCPU threads filter themselves); the VM comes
    // back to be dropped here, unfiltered.
    let (result, vm) = std::thread::spawn(move || {
        let mut vm = vm;
        (vm.run_until_paused_filtered(), vm)
    })
    .join()
    .unwrap();
    drop(vm);
    let reason = result.unwrap_or_else(|e| panic!("VM failed: {e}"));
    let elapsed = start.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let text = std::fs::read_to_string(console).unwrap();
    assert!(
        watchdog.join().unwrap(),
        "VM did not finish within {BOOT_TIMEOUT:?}; console:\n{text}"
    );
    (reason, text, elapsed)
}

fn boot(
    script: &str,
    vcpus: u8,
    on_console: impl FnMut(&str) -> bool + Send + 'static,
) -> Option<(ExitReason, String)> {
    boot_with(script, vcpus, |_, _| {}, on_console)
}

/// Like `boot`, with `devices` adding devices to the configuration (it gets
/// a temporary directory for their files).
fn boot_with(
    script: &str,
    vcpus: u8,
    devices: impl FnOnce(&Path, &mut VmConfig),
    on_console: impl FnMut(&str) -> bool + Send + 'static,
) -> Option<(ExitReason, String)> {
    let kernel = common::kernel()?;
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let initrd = initramfs(dir.path(), script);
    let console = dir.path().join("console.log");
    let mut config = config(kernel, initrd, console.clone(), vcpus);
    devices(dir.path(), &mut config);
    let vm = Vm::new(config).unwrap();
    let (reason, text, elapsed) = run_vm(vm, &console, on_console);
    eprintln!("{script:?}: {reason:?} after {elapsed:?}");
    assert_eq!(
        vcpu_threads(),
        Vec::<String>::new(),
        "vCPU threads left behind"
    );
    Some((reason, text))
}

#[test]
fn poweroff_with_two_vcpus() {
    let Some((reason, console)) = boot("/bin/busybox poweroff -f", 2, |_| false) else {
        return;
    };
    assert!(
        console.contains(MARKER),
        "no marker on the console:\n{console}"
    );
    assert!(
        console.contains("nproc=2"),
        "guest does not see 2 vCPUs:\n{console}"
    );
    assert_eq!(reason, ExitReason::PowerOff, "console:\n{console}");
    assert_guest_env(&console);
}

/// PID 1 got exactly the host's guest environment from the kernel command
/// line (values with `=` and `~` included); none on VMX/SVM hosts.
fn assert_guest_env(console: &str) {
    let env = HostKind::detect().guest_env();
    for name in ENV_NAMES {
        let value = env
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v.as_str());
        let line = format!("env {name}={value}.");
        assert!(
            console.lines().any(|l| l.trim_end() == line),
            "{line:?} missing on {:?}; console:\n{console}",
            HostKind::detect()
        );
    }
}

/// The Linux drivers bring a virtio-blk, a virtio-vsock and a virtio-net
/// device up (status ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK), read the
/// disk's serial and sectors, write a sector that reaches the image file,
/// and send an ARP request that reaches the network backend.
#[test]
fn virtio_devices_come_up_and_move_data() {
    let script = "/bin/busybox mount -t sysfs sysfs /sys\n\
        /bin/busybox mount -t devtmpfs devtmpfs /dev\n\
        for d in /sys/bus/virtio/devices/*; do echo \"dev $(/bin/busybox cat $d/device) \
        status $(/bin/busybox cat $d/status)\"; done\n\
        echo \"serial $(/bin/busybox cat /sys/block/vda/serial)\"\n\
        echo \"sector0 $(/bin/busybox head -c 12 /dev/vda)\"\n\
        echo written-by-the-guest | /bin/busybox dd of=/dev/vda bs=512 seek=1 conv=notrunc,fsync\n\
        /bin/busybox ip addr add 10.0.2.15/24 dev eth0\n\
        /bin/busybox ip link set eth0 up\n\
        /bin/busybox ping -c 1 -W 1 10.0.2.2\n\
        /bin/busybox poweroff -f";
    let disk_dir = tempfile::tempdir().unwrap();
    let image = disk_dir.path().join("disk.img");
    let mut data = b"husk-sector0".to_vec();
    data.resize(64 * 1024, 0);
    std::fs::write(&image, data).unwrap();
    let disk = image.clone();
    let (ours, mut peer) = UnixStream::pair().unwrap();
    let devices = move |dir: &Path, config: &mut VmConfig| {
        config.disks.push(DiskConfig {
            path: Some(disk),
            read_only: false,
            serial: "boot-test-disk".into(),
            rate_limit: Default::default(),
        });
        config.vsock = Some(VsockConfig {
            guest_cid: 3,
            uds_path: dir.join("vsock.sock"),
            listener: None,
            streams: vmm::VsockStreams::Raw,
        });
        config.net = Some(NetConfig {
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            mtu: 1500,
            backend: NetBackend::Stream(Arc::new(ours)),
            egress: Default::default(),
            rate_limit: Default::default(),
        });
    };
    let Some((reason, console)) = boot_with(script, 1, devices, |_| false) else {
        return;
    };
    assert_eq!(reason, ExitReason::PowerOff, "console:\n{console}");
    // Device IDs in sysfs: 1 net, 2 block, 0x13 vsock; status 0xf = up.
    for id in ["0x0001", "0x0002", "0x0013"] {
        let line = format!("dev {id} status 0x0000000f");
        assert!(
            console.lines().any(|l| l.trim_end() == line),
            "{line:?} missing; console:\n{console}"
        );
    }
    assert!(
        console.contains("serial boot-test-disk"),
        "console:\n{console}"
    );
    assert!(
        console.contains("sector0 husk-sector0"),
        "console:\n{console}"
    );
    let written = std::fs::read(&image).unwrap();
    assert_eq!(&written[512..533], b"written-by-the-guest\n");
    // Frames the guest sent (4-byte length, then the frame): an ARP request
    // for 10.0.2.2 among them.
    peer.set_nonblocking(true).unwrap();
    let mut wire = Vec::new();
    let _ = peer.read_to_end(&mut wire);
    let mut frames = Vec::new();
    while wire.len() >= 4 {
        let len = u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
        let frame: Vec<u8> = wire.drain(..(4 + len).min(wire.len())).skip(4).collect();
        frames.push(frame);
    }
    assert!(
        frames
            .iter()
            .any(|f| f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[38..42] == [10, 0, 2, 2]),
        "no ARP request for 10.0.2.2 among {} frames; console:\n{console}",
        frames.len()
    );
}

#[test]
fn reboot_is_reported() {
    let Some((reason, console)) = boot("/bin/busybox reboot -f", 1, |_| false) else {
        return;
    };
    assert!(console.contains("nproc=1"), "console:\n{console}");
    assert_eq!(reason, ExitReason::Reboot, "console:\n{console}");
}

#[test]
fn stop_handle_stops_a_running_guest() {
    let script = "while true; do /bin/busybox sleep 1000; done";
    let Some((reason, console)) = boot(script, 2, |c| c.contains(MARKER)) else {
        return;
    };
    assert!(console.contains(MARKER));
    assert_eq!(reason, ExitReason::Stopped);
}

#[test]
fn bad_kernel_files_are_rejected_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notelf");
    std::fs::write(&text, b"just text, not a kernel").unwrap();
    let console = dir.path().join("c.log");
    let mut cfg = config(text.clone(), text.clone(), console.clone(), 1);
    cfg.initrd = None;
    let err = match Vm::new(cfg.clone()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a text file was accepted as a kernel"),
    };
    if err.contains("/dev/kvm") {
        eprintln!("skipped the kernel checks: {err}");
        return;
    }
    assert_eq!(
        err,
        format!(
            "kernel image {}: not an ELF file (an uncompressed vmlinux is required)",
            text.display()
        )
    );
    cfg.kernel = dir.path().join("missing");
    let err = Vm::new(cfg.clone()).err().unwrap().to_string();
    assert!(err.ends_with("missing: file not found"), "{err}");
    cfg.kernel = "/bin/busybox".into();
    cfg.vcpus = 0;
    assert!(Vm::new(cfg).is_err());
}
