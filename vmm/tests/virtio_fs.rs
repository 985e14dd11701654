//! virtio-fs with a real backend, Debian's virtiofsd (QEMU 7.2): the guest
//! mounts the shared directory, prints a file the test wrote and writes
//! one the test then finds on the host. Skipped (with a message) when
//! HUSK_KERNEL, /dev/kvm or virtiofsd is missing, unless
//! HUSK_TEST_STRICT=1 makes that a failure. The VMs run one at a time.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use vmm::{ConsoleOutput, ExitReason, FsConfig, SeccompMode, SnapshotError, Vm, VmConfig};

const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";
/// Upper bound for one boot (see boot.rs: slow on PVM hosts).
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const HOST_TEXT: &str = "hello from the host";
const GUEST_TEXT: &str = "written by the guest";
static SERIAL: Mutex<()> = Mutex::new(());

/// The guest's script: mount the tag, print the host's file, write one.
const SCRIPT: &str = "/bin/busybox mkdir -p /mnt\n\
if /bin/busybox mount -t virtiofs husk /mnt; then\n\
  echo \"host file: $(/bin/busybox cat /mnt/hello.txt)\"\n\
  echo 'written by the guest' > /mnt/guest.txt\n\
  /bin/busybox sync\n\
  /bin/busybox umount /mnt && echo UNMOUNTED\n\
else\n\
  echo MOUNT-FAILED\n\
fi\n\
/bin/busybox poweroff -f";

/// Whether skipping is a failure (`HUSK_TEST_STRICT` set, not `0`).
fn strict() -> bool {
    std::env::var_os("HUSK_TEST_STRICT").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The kernel, if everything the test needs is there; otherwise says why
/// it is skipped (or fails under HUSK_TEST_STRICT=1).
fn prerequisites(test: &str) -> Option<PathBuf> {
    let reason = if !Path::new("/dev/kvm").exists() {
        "/dev/kvm is missing"
    } else if !Path::new(VIRTIOFSD).exists() {
        "virtiofsd is missing (Debian's qemu-system-common)"
    } else if std::env::var_os("HUSK_KERNEL").is_none() {
        "HUSK_KERNEL is not set (path of the husk guest vmlinux)"
    } else {
        return common::kernel();
    };
    if strict() {
        panic!("{test} cannot run: {reason} (HUSK_TEST_STRICT is set)");
    }
    eprintln!("skipped {test}: {reason}");
    None
}

/// A virtiofsd serving `shared`, and the vhost-user socket connected to it.
struct Virtiofsd {
    child: Child,
    socket: Arc<UnixStream>,
}

impl Virtiofsd {
    /// Starts virtiofsd on a listening socket it inherits (`--fd`), the
    /// way a caller that binds the socket itself hands it over, and
    /// connects to it.
    fn start(shared: &Path, dir: &Path) -> Virtiofsd {
        let path = dir.join("virtiofsd.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // Inherited across exec: no close-on-exec (the VMs, and so these
        // spawns, run one at a time).
        rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::empty()).unwrap();
        let log = std::fs::File::create(dir.join("virtiofsd.log")).unwrap();
        let child = Command::new(VIRTIOFSD)
            .arg(format!("--fd={}", listener.as_raw_fd()))
            .args(["-o", &format!("source={}", shared.display())])
            .args(["-o", "cache=auto", "-o", "sandbox=namespace"])
            .arg("--rlimit-nofile=0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        drop(listener);
        // The backlog takes the connection before virtiofsd accepts it.
        let socket = Arc::new(UnixStream::connect(&path).unwrap());
        Virtiofsd { child, socket }
    }

    /// Waits for virtiofsd to end (it does once the VMM closed its end of
    /// the socket), killing it after a while.
    fn finish(mut self, dir: &Path) -> String {
        drop(self.socket);
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                eprintln!("virtiofsd still runs after the VM ended; killing it");
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(dir.join("virtiofsd.log")).unwrap_or_default()
    }
}

fn config(kernel: PathBuf, dir: &Path, socket: Arc<UnixStream>, seccomp: SeccompMode) -> VmConfig {
    config_with(kernel, dir, socket, seccomp, SCRIPT)
}

fn config_with(
    kernel: PathBuf,
    dir: &Path,
    socket: Arc<UnixStream>,
    seccomp: SeccompMode,
    script: &str,
) -> VmConfig {
    let init = format!("#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n{script}\n");
    VmConfig {
        kernel,
        initrd: Some(common::busybox_initramfs(dir, &init)),
        cmdline_extra: String::new(),
        vcpus: 1,
        mem_mib: 256,
        disks: vec![],
        vsock: None,
        net: None,
        fs: Some(FsConfig {
            tag: "husk".into(),
            socket: Some(socket),
        }),
        console: ConsoleOutput::File(dir.join("console.log")),
        seccomp,
    }
}

/// Runs `vm` to its end with a watchdog, its event loop on a thread of
/// its own under its seccomp filter (as in the sandbox); the VM is dropped
/// on this thread. Returns the exit reason.
fn run_vm(vm: Vm) -> ExitReason {
    run_vm_watching(vm, None, |_| false)
}

/// Like [`run_vm`]; `on_console` is polled with the console's text while
/// the VM runs and stops it by returning true.
fn run_vm_watching(
    vm: Vm,
    console: Option<PathBuf>,
    mut on_console: impl FnMut(&str) -> bool + Send + 'static,
) -> ExitReason {
    let stop = vm.stop_handle();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done2 = done.clone();
    let watchdog = std::thread::spawn(move || {
        let start = Instant::now();
        while !done2.load(std::sync::atomic::Ordering::SeqCst) {
            let text = console
                .as_ref()
                .and_then(|c| std::fs::read_to_string(c).ok())
                .unwrap_or_default();
            if on_console(&text) {
                stop.stop();
                return true;
            }
            if start.elapsed() > BOOT_TIMEOUT {
                stop.stop();
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    });
    let (result, vm) = std::thread::spawn(move || {
        let mut vm = vm;
        (vm.run_until_paused_filtered(), vm)
    })
    .join()
    .unwrap();
    drop(vm);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(watchdog.join().unwrap(), "VM did not finish in time");
    result.unwrap_or_else(|e| panic!("VM failed: {e}"))
}

/// Boots a guest sharing a directory through virtiofsd; checks what it
/// read and wrote.
fn share_a_directory(test: &str, seccomp: SeccompMode) {
    let Some(kernel) = prerequisites(test) else {
        return;
    };
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("hello.txt"), format!("{HOST_TEXT}\n")).unwrap();
    let backend = Virtiofsd::start(&shared, dir.path());
    let start = Instant::now();
    let vm = Vm::new(config(kernel, dir.path(), backend.socket.clone(), seccomp)).unwrap();
    let reason = run_vm(vm);
    eprintln!("{test}: {reason:?} after {:?}", start.elapsed());
    let log = backend.finish(dir.path());
    let console = std::fs::read_to_string(dir.path().join("console.log")).unwrap();
    let context = format!("console:\n{console}\nvirtiofsd:\n{log}");
    assert_eq!(reason, ExitReason::PowerOff, "{context}");
    assert!(
        console.contains(&format!("host file: {HOST_TEXT}")),
        "{context}"
    );
    assert!(console.contains("UNMOUNTED"), "{context}");
    let written = std::fs::read_to_string(shared.join("guest.txt")).unwrap_or_default();
    assert_eq!(written, format!("{GUEST_TEXT}\n"), "{context}");
}

#[test]
fn the_guest_reads_and_writes_a_shared_directory() {
    share_a_directory(
        "the_guest_reads_and_writes_a_shared_directory",
        SeccompMode::Disabled,
    );
}

#[test]
fn virtio_fs_works_under_the_enforced_seccomp_filters() {
    share_a_directory(
        "virtio_fs_works_under_the_enforced_seccomp_filters",
        SeccompMode::Enforce,
    );
}

#[test]
fn a_vm_with_virtio_fs_cannot_be_snapshotted() {
    let test = "a_vm_with_virtio_fs_cannot_be_snapshotted";
    let Some(kernel) = prerequisites(test) else {
        return;
    };
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let backend = Virtiofsd::start(dir.path(), dir.path());
    let vm = Vm::new(config(
        kernel,
        dir.path(),
        backend.socket.clone(),
        SeccompMode::Enforce,
    ))
    .unwrap();
    let files = vmm::SnapshotFiles {
        state: dir.path().join("state"),
        memory: dir.path().join("memory"),
    };
    let err = vm.save_snapshot(&files).unwrap_err();
    assert!(matches!(err, SnapshotError::VirtioFs), "{err}");
    assert!(!files.state.exists() && !files.memory.exists());
    drop(vm);
    backend.finish(dir.path());
}

#[test]
fn a_missing_socket_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = UnixStream::pair().unwrap();
    let mut c = config(
        "/nonexistent".into(),
        dir.path(),
        Arc::new(a),
        SeccompMode::Enforce,
    );
    c.fs.as_mut().unwrap().socket = None;
    let err = Vm::new(c).err().expect("refused");
    assert!(matches!(err, vmm::VmError::Config(_)), "{err}");
    assert!(err.to_string().contains("no vhost-user socket"), "{err}");
}

#[test]
fn a_backend_that_dies_leaves_the_vmm_running() {
    let test = "a_backend_that_dies_leaves_the_vmm_running";
    let Some(kernel) = prerequisites(test) else {
        return;
    };
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "x").unwrap();
    let backend = Virtiofsd::start(dir.path(), dir.path());
    // The guest mounts, then reads the file every second while a ticker
    // shows it alive: once the host killed virtiofsd, a read never ends.
    let script = "/bin/busybox mkdir -p /mnt\n\
        /bin/busybox mount -t virtiofs husk /mnt && echo MOUNTED\n\
        (while true; do /bin/busybox sleep 1; echo TICK; done) &\n\
        while true; do /bin/busybox cat /mnt/hello.txt >/dev/null; /bin/busybox sleep 1; done";
    let config = config_with(
        kernel,
        dir.path(),
        backend.socket.clone(),
        SeccompMode::Enforce,
        script,
    );
    let console = dir.path().join("console.log");
    let vm = Vm::new(config).unwrap();
    // Kill virtiofsd once the guest mounted; stop the VM after a few more
    // guest ticks (the VMM must neither panic nor hang, then or at drop).
    let pid = rustix::process::Pid::from_raw(backend.child.id() as i32).unwrap();
    let mut ticks_at_kill = None;
    let reason = run_vm_watching(vm, Some(console.clone()), move |text| {
        let ticks = text.matches("TICK").count();
        if ticks_at_kill.is_none() && text.contains("MOUNTED") {
            rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
            ticks_at_kill = Some(ticks);
        }
        ticks_at_kill.is_some_and(|n| ticks >= n + 3)
    });
    let log = backend.finish(dir.path());
    let text = std::fs::read_to_string(&console).unwrap();
    assert_eq!(
        reason,
        ExitReason::Stopped,
        "console:\n{text}\nvirtiofsd:\n{log}"
    );
    assert!(text.contains("MOUNTED"), "console:\n{text}");
}
