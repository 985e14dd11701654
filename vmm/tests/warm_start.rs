//! Warm start with a real guest: a template VM with a disk, an empty disk
//! slot, vsock and net is booted until its guest program is connected
//! over vsock, paused and saved; a restore puts another disk into the
//! empty slot and gives vsock a new socket path. The guest program (the
//! `husk-vsock-probe` binary of this crate, PID 1 of the guest) must see
//! the new disk's size, serial and content, and reconnect over vsock after
//! the transport reset. Skipped (with a message) only when HUSK_KERNEL is
//! unset.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod common;

use vmm::{
    ConsoleOutput, DiskConfig, ExitReason, NetBackend, NetConfig, RestoreConfig, SnapshotFiles,
    StopHandle, Vm, VmConfig, VsockConfig,
};

/// Upper bound for a boot or a resumed run; a watchdog stops the VM after
/// it, and host reads give up after it.
const TIMEOUT: Duration = Duration::from_secs(600);
const PORT: u32 = 5000;
const PROBE: &str = env!("CARGO_BIN_EXE_husk-vsock-probe");

/// Stops the VM after TIMEOUT unless `done` is set first.
fn watchdog(handle: StopHandle, done: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        while !done.load(Ordering::SeqCst) && start.elapsed() < TIMEOUT {
            std::thread::park_timeout(Duration::from_millis(100));
        }
        handle.stop();
    })
}

/// What the host saw of one guest connection, and the connection.
struct Seen {
    hello: String,
    report: String,
    reader: BufReader<UnixStream>,
}

/// The host side of one guest connection: accepts it on `listener`, reads
/// the hello, asks for a report with `sectors`, then runs `then` on the VM.
fn host_side(
    listener: UnixListener,
    sectors: u64,
    handle: StopHandle,
    then: fn(&StopHandle),
) -> JoinHandle<Result<Seen, String>> {
    std::thread::spawn(move || {
        let result = (|| {
            let (stream, _) = listener.accept().map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(TIMEOUT))
                .map_err(|e| e.to_string())?;
            let mut reader = BufReader::new(stream);
            let hello = read_line(&mut reader)?;
            let report = ask_report(&mut reader, sectors)?;
            Ok(Seen {
                hello,
                report,
                reader,
            })
        })();
        then(&handle);
        result
    })
}

/// Sends `report <sectors>` and reads the answer.
fn ask_report(reader: &mut BufReader<UnixStream>, sectors: u64) -> Result<String, String> {
    reader
        .get_mut()
        .write_all(format!("report {sectors}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    read_line(reader)
}

fn read_line(reader: &mut BufReader<UnixStream>) -> Result<String, String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err("connection closed".into()),
        Ok(_) => Ok(line.trim_end().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn disk_image(path: &Path, head: &[u8], len: usize) {
    let mut data = head.to_vec();
    data.resize(len, 0);
    std::fs::write(path, data).unwrap();
}

fn net(mac_last: u8) -> (NetConfig, UnixStream) {
    let (ours, peer) = UnixStream::pair().unwrap();
    let config = NetConfig {
        mac: [0x52, 0x54, 0, 0x12, 0x34, mac_last],
        mtu: 1500,
        backend: NetBackend::Stream(Arc::new(ours)),
        egress: Default::default(),
        rate_limit: Default::default(),
    };
    (config, peer)
}

fn template_config(kernel: PathBuf, dir: &Path, net: NetConfig) -> VmConfig {
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n\
         /bin/busybox mount -t sysfs sysfs /sys\n\
         /bin/busybox mount -t devtmpfs devtmpfs /dev\n\
         echo WARM-TEMPLATE-UP\nexec /bin/husk-vsock-probe {PORT} vdb\n"
    );
    let initrd = common::initramfs_with(dir, &init, &[Path::new(PROBE)]);
    let base = dir.join("base.img");
    disk_image(&base, b"template-base-disk", 64 * 1024);
    VmConfig {
        kernel,
        initrd: Some(initrd),
        cmdline_extra: String::new(),
        vcpus: 1,
        mem_mib: 256,
        disks: vec![
            DiskConfig {
                path: Some(base),
                read_only: true,
                serial: "base".into(),
                rate_limit: Default::default(),
            },
            DiskConfig {
                path: None,
                read_only: false,
                serial: "empty-slot".into(),
                rate_limit: Default::default(),
            },
        ],
        vsock: Some(VsockConfig {
            guest_cid: 3,
            uds_path: dir.join("t.sock"),
            listener: None,
            streams: vmm::VsockStreams::Raw,
        }),
        net: Some(net),
        fs: None,
        console: ConsoleOutput::File(dir.join("template.log")),
        seccomp: vmm::SeccompMode::Enforce,
    }
}

#[test]
fn restored_template_sees_its_new_disk_and_reconnects() {
    let Some(kernel) = common::kernel() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = SnapshotFiles {
        state: dir.path().join("vm.state"),
        memory: dir.path().join("vm.mem"),
    };

    // The template: boot until the probe is connected and reports an empty
    // vdb, then pause and save.
    let (net1, _peer1) = net(0x01);
    let config = template_config(kernel, dir.path(), net1);
    let listener = UnixListener::bind(dir.path().join(format!("t.sock_{PORT}"))).unwrap();
    let mut vm = Vm::new(config.clone()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let dog = watchdog(vm.stop_handle(), done.clone());
    let host = host_side(listener, 0, vm.stop_handle(), StopHandle::pause);
    let start = Instant::now();
    let reason = vm.run_until_paused().unwrap();
    let console = std::fs::read_to_string(dir.path().join("template.log")).unwrap();
    let mut seen = host
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("template: {e}; console:\n{console}"));
    assert_eq!(reason, ExitReason::Paused, "console:\n{console}");
    eprintln!("template connected and paused after {:?}", start.elapsed());
    assert_eq!(seen.hello, "hello conn=1");
    assert_eq!(seen.report, "report size=0 serial=empty-slot head=");
    vm.save_snapshot(&files).unwrap();

    // Saving leaves the template intact: it resumes with its devices and
    // its vsock connection.
    let handle = vm.stop_handle();
    let again = std::thread::spawn(move || {
        let report = ask_report(&mut seen.reader, 0);
        handle.stop();
        report
    });
    assert_eq!(vm.run_until_paused().unwrap(), ExitReason::Stopped);
    let report = again.join().unwrap().expect("template after resume");
    assert_eq!(report, "report size=0 serial=empty-slot head=");
    done.store(true, Ordering::SeqCst);
    dog.thread().unpark();
    dog.join().unwrap();
    drop(vm);

    // The container: its own disk in slot 1, a new vsock path, a new net
    // backend and MAC.
    let image = dir.path().join("container.img");
    disk_image(&image, b"container-disk-content", 128 * 1024);
    let mut disks = config.disks.clone();
    disks[1] = DiskConfig {
        path: Some(image.clone()),
        read_only: false,
        serial: "container-disk".into(),
        rate_limit: Default::default(),
    };
    let (net2, _peer2) = net(0x02);
    let listener = UnixListener::bind(dir.path().join(format!("r.sock_{PORT}"))).unwrap();
    let console = dir.path().join("restored.log");
    let restoring = Instant::now();
    let vm = Vm::restore(RestoreConfig {
        files: files.clone(),
        console: ConsoleOutput::File(console.clone()),
        seccomp: vmm::SeccompMode::Enforce,
        disks,
        vsock: Some(VsockConfig {
            guest_cid: 3,
            uds_path: dir.path().join("r.sock"),
            listener: None,
            streams: vmm::VsockStreams::Raw,
        }),
        net: Some(net2),
    })
    .unwrap();
    eprintln!("restored in {:?}", restoring.elapsed());
    let done = Arc::new(AtomicBool::new(false));
    let dog = watchdog(vm.stop_handle(), done.clone());
    let host = host_side(listener, 256, vm.stop_handle(), StopHandle::stop);
    let running = Instant::now();
    let reason = vm.run().unwrap();
    done.store(true, Ordering::SeqCst);
    dog.thread().unpark();
    dog.join().unwrap();
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    let Seen { hello, report, .. } = host
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("restored: {e}; console:\n{text}"));
    eprintln!("restored guest reported after {:?}", running.elapsed());
    assert_eq!(reason, ExitReason::Stopped, "console:\n{text}");
    // The same guest process, on its second connection.
    assert_eq!(hello, "hello conn=2", "console:\n{text}");
    assert_eq!(
        report, "report size=256 serial=container-disk head=container-disk-content",
        "console:\n{text}"
    );
    assert!(!text.contains("WARM-TEMPLATE-UP"), "rebooted:\n{text}");
}
