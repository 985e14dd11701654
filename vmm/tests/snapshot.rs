//! Snapshots of real VMs: a guest printing a counter is paused, saved and
//! restored into a new VM, where the counter goes on. Skipped (with a
//! message) only when HUSK_KERNEL is unset.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use vmm::snapshot::FormatError;
use vmm::{
    ConsoleOutput, DiskConfig, ExitReason, RestoreConfig, SnapshotError, SnapshotFiles, StopHandle,
    Vm, VmConfig, VmError,
};

/// Upper bound for a boot or a resumed run; a watchdog stops the VM after it.
const TIMEOUT: Duration = Duration::from_secs(600);
/// Ticks seen before pausing, and after the restore.
const TICKS_BEFORE: u32 = 3;
const TICKS_AFTER: u32 = 3;

/// The numbers of the complete `tick N` lines in `text`.
fn ticks(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.trim_end().strip_prefix("tick "))
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// What a console watcher saw: whether its condition was met, and when
/// (since the watcher started) each `tick` line appeared.
struct Watched {
    ready: bool,
    tick_times: Vec<Duration>,
}

/// Calls `action` once `console` satisfies `ready`, or gives up after
/// TIMEOUT (then stops the VM).
fn watch(
    console: PathBuf,
    handle: StopHandle,
    done: Arc<AtomicBool>,
    ready: impl Fn(&str) -> bool + Send + 'static,
    action: impl FnOnce(&StopHandle) + Send + 'static,
) -> std::thread::JoinHandle<Watched> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut tick_times = Vec::new();
        while !done.load(Ordering::SeqCst) && start.elapsed() < TIMEOUT {
            let text = std::fs::read_to_string(&console).unwrap_or_default();
            tick_times.resize(ticks(&text).len().max(tick_times.len()), start.elapsed());
            if ready(&text) {
                action(&handle);
                return Watched {
                    ready: true,
                    tick_times,
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        handle.stop();
        Watched {
            ready: false,
            tick_times,
        }
    })
}

fn boot_config(kernel: PathBuf, dir: &Path, console: PathBuf) -> VmConfig {
    let init = "#!/bin/busybox sh\necho SNAPSHOT-GUEST-UP\ni=0\n\
        while true; do i=$((i+1)); echo \"tick $i\"; /bin/busybox sleep 1; done\n";
    VmConfig {
        kernel,
        initrd: Some(common::busybox_initramfs(dir, init)),
        cmdline_extra: String::new(),
        vcpus: 2,
        mem_mib: 256,
        disks: vec![],
        vsock: None,
        net: None,
        fs: None,
        console: ConsoleOutput::File(console),
        seccomp: vmm::SeccompMode::Enforce,
    }
}

#[test]
fn paused_guest_continues_in_a_restored_vm() {
    let Some(kernel) = common::kernel() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let console1 = dir.path().join("console1.log");
    let files = SnapshotFiles {
        state: dir.path().join("vm.state"),
        memory: dir.path().join("vm.mem"),
    };

    // Boot, wait for a few ticks, pause, save, drop the VM.
    let mut vm = Vm::new(boot_config(kernel, dir.path(), console1.clone())).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let ready = |t: &str| ticks(t).len() >= TICKS_BEFORE as usize;
    let w = watch(
        console1.clone(),
        vm.stop_handle(),
        done.clone(),
        ready,
        |h| h.pause(),
    );
    let start = Instant::now();
    let reason = vm.run_until_paused().unwrap();
    done.store(true, Ordering::SeqCst);
    let text1 = std::fs::read_to_string(&console1).unwrap();
    let watched = w.join().unwrap();
    assert!(watched.ready, "no ticks in time; console:\n{text1}");
    eprintln!("ticks before the pause at {:?}", watched.tick_times);
    assert_eq!(reason, ExitReason::Paused, "console:\n{text1}");
    eprintln!("booted and paused after {:?}", start.elapsed());
    let saving = Instant::now();
    vm.save_snapshot(&files).unwrap();
    eprintln!(
        "saved in {:?} (state {} bytes, memory {} MiB apparent, {} KiB on disk)",
        saving.elapsed(),
        std::fs::metadata(&files.state).unwrap().len(),
        std::fs::metadata(&files.memory).unwrap().len() >> 20,
        du_kib(&files.memory),
    );
    // Saving leaves the source VM intact: it resumes and ticks on.
    let source_last = *ticks(&text1).last().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let ready = move |t: &str| ticks(t).last().is_some_and(|&n| n > source_last);
    let w = watch(
        console1.clone(),
        vm.stop_handle(),
        done.clone(),
        ready,
        |h| h.stop(),
    );
    assert_eq!(vm.run_until_paused().unwrap(), ExitReason::Stopped);
    done.store(true, Ordering::SeqCst);
    assert!(w.join().unwrap().ready, "the source VM did not resume");
    assert!(matches!(vm.run_until_paused(), Err(VmError::Ended)));
    drop(vm);
    report_msrs(&files.state);
    let last = *ticks(&text1).last().unwrap();
    assert!(last >= TICKS_BEFORE, "console:\n{text1}");

    // Restore into a new VM with its own console and let it run on.
    let console2 = dir.path().join("console2.log");
    let restoring = Instant::now();
    let vm = Vm::restore(RestoreConfig {
        files: files.clone(),
        console: ConsoleOutput::File(console2.clone()),
        seccomp: vmm::SeccompMode::Enforce,
        disks: vec![],
        vsock: None,
        net: None,
    })
    .unwrap();
    let restore_time = restoring.elapsed();
    let done = Arc::new(AtomicBool::new(false));
    let target = last + TICKS_AFTER;
    let first_output = Arc::new(std::sync::Mutex::new(None));
    let first = first_output.clone();
    let running = Instant::now();
    let ready = move |t: &str| {
        if !t.is_empty() {
            first.lock().unwrap().get_or_insert(running.elapsed());
        }
        ticks(t).last().is_some_and(|&n| n >= target)
    };
    let w = watch(
        console2.clone(),
        vm.stop_handle(),
        done.clone(),
        ready,
        |h| h.stop(),
    );
    let reason = vm.run().unwrap();
    done.store(true, Ordering::SeqCst);
    let text2 = std::fs::read_to_string(&console2).unwrap();
    let watched = w.join().unwrap();
    assert!(
        watched.ready,
        "restored guest did not reach tick {target}; console after restore:\n{text2}"
    );
    assert_eq!(reason, ExitReason::Stopped);
    eprintln!(
        "restore (files to a runnable VM): {restore_time:?}; first guest output after {:?}; \
         ticks seen at {:?}",
        first_output.lock().unwrap().unwrap(),
        watched.tick_times
    );

    // The guest did not boot again: no banner, and the ticks of both
    // consoles together count on without a gap or a restart.
    assert!(!text2.contains("SNAPSHOT-GUEST-UP"), "rebooted:\n{text2}");
    let all = ticks(&format!("{text1}{text2}"));
    let expected: Vec<u32> = (1..=*all.last().unwrap()).collect();
    assert_eq!(all, expected, "console before:\n{text1}\nafter:\n{text2}");
    assert!(
        ticks(&text2).first().is_some_and(|&n| n <= last + 1),
        "{text2}"
    );
}

/// Prints which MSRs of KVM's list the snapshot holds (diagnostics: the
/// others could not be read or set back on this host).
fn report_msrs(state: &Path) {
    let state = vmm::snapshot::format::read_file(state).unwrap();
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let listed = vmm::snapshot::state::msr_index_list(&kvm).unwrap();
    let saved: Vec<u32> = state.vcpus[0].msrs.iter().map(|m| m.index).collect();
    let skipped: Vec<u32> = listed.into_iter().filter(|i| !saved.contains(i)).collect();
    eprintln!(
        "{} MSRs saved per vCPU; skipped (not readable or not settable): {skipped:x?}",
        saved.len()
    );
}

/// Allocated size of `path` in KiB (the memory file is sparse).
fn du_kib(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() / 2
}

#[test]
fn snapshots_are_refused_clearly() {
    let Some(kernel) = common::kernel() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let mut config = boot_config(kernel, dir.path(), dir.path().join("c.log"));
    config.disks.push(DiskConfig {
        path: Some(disk),
        read_only: true,
        serial: "d".into(),
        rate_limit: Default::default(),
    });
    let files = SnapshotFiles {
        state: dir.path().join("vm.state"),
        memory: dir.path().join("vm.mem"),
    };
    // A VM with a disk slot is restored only with a backend for it.
    Vm::new(config.clone())
        .unwrap()
        .save_snapshot(&files)
        .unwrap();
    let err = Vm::restore(RestoreConfig {
        files: files.clone(),
        console: ConsoleOutput::Sink,
        seccomp: vmm::SeccompMode::Enforce,
        disks: vec![],
        vsock: None,
        net: None,
    })
    .err()
    .unwrap();
    assert!(matches!(err, SnapshotError::Layout { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "the snapshot's virtio devices (1 disk slot) do not match the restore's (0 disk slots)"
    );

    // A VM not yet started can be saved; damaged files are refused.
    config.disks.clear();
    Vm::new(config).unwrap().save_snapshot(&files).unwrap();
    let restore = |files: &SnapshotFiles| {
        Vm::restore(RestoreConfig {
            files: files.clone(),
            console: ConsoleOutput::Sink,
            seccomp: vmm::SeccompMode::Enforce,
            disks: vec![],
            vsock: None,
            net: None,
        })
    };
    let state = std::fs::read(&files.state).unwrap();
    std::fs::write(&files.state, &state[..state.len() / 2]).unwrap();
    let err = restore(&files).err().unwrap();
    assert!(
        matches!(err, SnapshotError::Format(FormatError::Truncated { .. })),
        "{err}"
    );
    std::fs::write(&files.state, &state).unwrap();
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(&files.memory)
        .unwrap();
    mem.set_len(1 << 20).unwrap();
    let err = restore(&files).err().unwrap();
    assert!(matches!(err, SnapshotError::MemoryFile(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "guest memory file has 1048576 bytes, the snapshot needs 268435456"
    );
}
