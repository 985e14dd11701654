//! End-to-end tests of `husk vm run`: real KVM microVMs booting the guest
//! kernel and the agent, with busybox root filesystems built here.
//!
//! VM tests are skipped (with a message) when `HUSK_KERNEL` is unset, i.e.
//! outside scripts/test.sh. At most two run at once ([`vm_lock`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use husk_tests::{
    busybox_rootfs, husk, kernel_or_skip, leftovers, mkfs_ext4, processes_in_group, run, vm_lock,
    Finished, Running,
};

/// Generous: a boot takes 15-60 s on the nested-KVM CI hosts, several
/// times that when other VMs share the two cores.
const VM_TIMEOUT: Duration = Duration::from_secs(480);

/// A test's scratch space: a busybox root image and an empty run dir.
struct Env {
    _lock: husk_tests::VmSlot,
    tmp: tempfile::TempDir,
    rootfs: PathBuf,
    run_dir: PathBuf,
}

impl Env {
    fn new(test: &str) -> Option<Env> {
        kernel_or_skip(test)?;
        let lock = vm_lock();
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("root.ext4");
        busybox_rootfs(&tmp.path().join("build"), &rootfs).unwrap();
        let run_dir = tmp.path().join("run");
        std::fs::create_dir(&run_dir).unwrap();
        Some(Env {
            _lock: lock,
            tmp,
            rootfs,
            run_dir,
        })
    }

    fn root(&self) -> &str {
        self.rootfs.to_str().unwrap()
    }

    /// `husk ARGS` with a boot timeout for busy hosts (`--boot-timeout`
    /// still wins).
    fn husk(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = husk(&self.run_dir, args);
        cmd.env("HUSK_BOOT_TIMEOUT", "400");
        cmd
    }

    fn run(&self, args: &[&str]) -> Finished {
        let done = run(self.husk(args), VM_TIMEOUT).unwrap();
        eprintln!(
            "husk {args:?} -> {:?}\nstdout: {:?}\nstderr: {:?}",
            done.status, done.stdout, done.stderr
        );
        done
    }

    /// No process of husk's group is left, and the run dir is empty.
    fn assert_clean(&self, done: &Finished) {
        assert_eq!(
            processes_in_group(done.pid),
            Vec::<u32>::new(),
            "leaked processes"
        );
        assert_eq!(
            leftovers(&self.run_dir),
            Vec::<String>::new(),
            "leaked run files"
        );
    }
}

#[test]
fn echo_prints_exactly_hello() {
    let Some(env) = Env::new("echo_prints_exactly_hello") else {
        return;
    };
    let done = env.run(&[
        "vm",
        "run",
        "--disk",
        env.root(),
        "--",
        "/bin/echo",
        "hello",
    ]);
    assert_eq!(done.stdout, "hello\n");
    assert_eq!(done.stderr, "");
    assert_eq!(done.code(), 0);
    env.assert_clean(&done);
}

#[test]
fn shell_sees_env_cwd_cpus_and_second_disk() {
    let Some(env) = Env::new("shell_sees_env_cwd_cpus_and_second_disk") else {
        return;
    };
    let data_dir = env.tmp.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::write(data_dir.join("hello.txt"), "data\n").unwrap();
    let data = env.tmp.path().join("data.ext4");
    mkfs_ext4(&data_dir, &data).unwrap();
    let data_spec = format!("{}:ro", data.display());
    let script = "echo out; echo \"$FOO $(pwd)\"; nproc; \
                  for d in /sys/block/vd*; do echo \"${d##*/}=$(cat $d/serial)\"; done; \
                  echo err >&2; exit 3";
    let done = env.run(&[
        "vm",
        "run",
        "--cpus",
        "2",
        "--disk",
        env.root(),
        "--disk",
        &data_spec,
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(done.code(), 3);
    assert_eq!(done.stderr, "err\n");
    let lines: Vec<&str> = done.stdout.lines().collect();
    assert_eq!(lines[..3], ["out", "bar /tmp", "2"], "{:?}", done.stdout);
    let disks = &lines[3..];
    for serial in ["husk-agent", "disk0", "disk1"] {
        assert_eq!(
            disks
                .iter()
                .filter(|l| l.ends_with(&format!("={serial}")))
                .count(),
            1,
            "one disk with serial {serial}: {disks:?}"
        );
    }
    env.assert_clean(&done);
}

#[test]
fn read_only_root_refuses_writes() {
    let Some(env) = Env::new("read_only_root_refuses_writes") else {
        return;
    };
    let spec = format!("{}:ro", env.root());
    let done = env.run(&["vm", "run", "--disk", &spec, "--", "touch", "/newfile"]);
    assert_ne!(done.code(), 0);
    assert!(
        done.stderr.contains("Read-only file system"),
        "{}",
        done.stderr
    );
    env.assert_clean(&done);
}

#[test]
fn missing_command_exits_127_and_the_guest_powers_off() {
    let Some(env) = Env::new("missing_command_exits_127_and_the_guest_powers_off") else {
        return;
    };
    let mut cmd = env.husk(&["vm", "run", "--disk", env.root(), "--", "husk-no-such-cmd"]);
    cmd.env("HUSK_DEBUG", "1");
    let done = run(cmd, VM_TIMEOUT).unwrap();
    eprintln!("{done:?}");
    assert_eq!(done.code(), 127);
    assert!(done.stderr.starts_with("husk: "), "{}", done.stderr);
    assert!(done.stderr.contains("husk-no-such-cmd") && done.stderr.contains("not found"));
    // The guest powered itself off (rather than husk stopping the VM).
    assert!(
        done.stderr
            .contains("husk: debug: the guest powered off: true"),
        "{}",
        done.stderr
    );
    env.assert_clean(&done);
}

#[test]
fn sigterm_stops_the_vm_and_cleans_up() {
    let Some(env) = Env::new("sigterm_stops_the_vm_and_cleans_up") else {
        return;
    };
    let cmd = env.husk(&[
        "vm",
        "run",
        "--disk",
        env.root(),
        "--",
        "sh",
        "-c",
        "echo ready; exec sleep 1000",
    ]);
    let mut running = Running::start(cmd).unwrap();
    running.wait_for_line("ready", VM_TIMEOUT).unwrap();
    running.signal(rustix::process::Signal::TERM);
    let done = running.finish(Duration::from_secs(20)).unwrap();
    assert_eq!(done.code(), 143, "{done:?}");
    env.assert_clean(&done);
}

#[test]
fn boot_timeout_names_the_kept_console_log() {
    let Some(env) = Env::new("boot_timeout_names_the_kept_console_log") else {
        return;
    };
    // Cold: a restore could reach the agent within the second.
    let done = env.run(&[
        "vm",
        "run",
        "--cold",
        "--boot-timeout",
        "1",
        "--disk",
        env.root(),
        "--",
        "true",
    ]);
    assert_eq!(done.code(), 125);
    let line = done.stderr.trim_end();
    assert_eq!(done.stderr.lines().count(), 1, "{}", done.stderr);
    assert!(
        line.starts_with("husk: the guest did not reach the agent within 1 s (console log: "),
        "{line}"
    );
    let console = line
        .rsplit_once("(console log: ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map(PathBuf::from)
        .unwrap();
    assert!(
        console.starts_with(&env.run_dir) && console.is_file(),
        "{}",
        console.display()
    );
    // Only the console log is kept; the sockets are gone.
    let kept = leftovers(&env.run_dir);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept[1].ends_with("/console.log"), "{kept:?}");
    assert_eq!(processes_in_group(done.pid), Vec::<u32>::new());
}

// ---- fast negative tests: husk fails before booting anything ----

fn fails_fast(run_dir: &Path, args: &[&str], expect: &[&str]) {
    let done = run(husk(run_dir, args), Duration::from_secs(30)).unwrap();
    assert_eq!(done.code(), 125, "{done:?}");
    assert_eq!(done.stdout, "");
    assert_eq!(
        done.stderr.lines().count(),
        1,
        "one line: {:?}",
        done.stderr
    );
    assert!(done.stderr.starts_with("husk: "), "{:?}", done.stderr);
    for want in expect {
        assert!(done.stderr.contains(want), "{want:?} in {:?}", done.stderr);
    }
    assert_eq!(leftovers(run_dir), Vec::<String>::new());
}

#[test]
fn missing_or_bad_kernel_and_missing_disk_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let disk = tmp.path().join("disk.img");
    std::fs::write(&disk, [0u8; 4096]).unwrap();
    let disk = disk.to_str().unwrap();

    let missing = tmp.path().join("no-vmlinux");
    let missing = missing.to_str().unwrap();
    fails_fast(
        &run_dir,
        &[
            "vm", "run", "--kernel", missing, "--disk", disk, "--", "true",
        ],
        &[missing, "No such file"],
    );

    let bogus = tmp.path().join("bzImage");
    std::fs::write(&bogus, b"MZ\x00\x00 this is not an ELF file").unwrap();
    let bogus = bogus.to_str().unwrap();
    fails_fast(
        &run_dir,
        &["vm", "run", "--kernel", bogus, "--disk", disk, "--", "true"],
        &[bogus, "not an ELF"],
    );

    let elf = tmp.path().join("vmlinux");
    std::fs::write(&elf, b"\x7fELF\x02\x01\x01\x00").unwrap();
    let elf = elf.to_str().unwrap();
    let no_disk = tmp.path().join("no-disk.ext4");
    let no_disk = no_disk.to_str().unwrap();
    fails_fast(
        &run_dir,
        &[
            "vm", "run", "--kernel", elf, "--disk", no_disk, "--", "true",
        ],
        &[no_disk, "No such file"],
    );
}
