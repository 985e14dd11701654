//! End-to-end tests of the jailed VMM process (`husk-vmm`): a running
//! container's VMM is an unprivileged process without capabilities, in
//! its own namespaces and cgroup, whose root holds no disk, and which
//! cannot open another container's disk; a warm-start template's VM is
//! built in such a jail too.
//!
//! Skipped (with a message) without `HUSK_KERNEL` or without root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

#[allow(dead_code)]
#[path = "images/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "containers/support.rs"]
mod csupport;

use csupport::{Env, IMAGE};

/// The fields of a `/proc/PID/status` line (`Uid:\t0\t0\t0\t0`).
fn status_field(status: &str, name: &str) -> Vec<String> {
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc status:\n{status}"));
    line.split_whitespace().skip(1).map(String::from).collect()
}

/// A container's `State.Jail` and its id.
struct Jailed {
    id: String,
    pid: u32,
    uid: u32,
    gid: u32,
    cgroup: String,
}

fn jail_of(env: &Env, name: &str) -> Jailed {
    let doc: Value = serde_json::from_str(&env.ok(&["inspect", name])).expect("inspect JSON");
    let c = &doc[0];
    let jail = &c["State"]["Jail"];
    assert!(jail.is_object(), "State.Jail missing: {c}");
    let num = |k: &str| {
        jail[k]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or_else(|| panic!("State.Jail.{k}: {jail}"))
    };
    Jailed {
        id: c["Id"].as_str().expect("Id").to_string(),
        pid: num("Pid"),
        uid: num("Uid"),
        gid: num("Gid"),
        cgroup: jail["Cgroup"].as_str().expect("Cgroup").to_string(),
    }
}

/// The cgroup directory holding the VMM's memory limit, and that
/// limit's file (v1 or v2).
fn memory_limit_file(cgroup: &str) -> PathBuf {
    let rel = cgroup.trim_start_matches('/');
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
    if std::fs::read_to_string(v2).is_ok_and(|c| c.split_whitespace().any(|x| x == "memory")) {
        Path::new("/sys/fs/cgroup").join(rel).join("memory.max")
    } else {
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.limit_in_bytes")
    }
}

/// The pids limit of the process's pids cgroup (from /proc/PID/cgroup).
fn pids_max(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let line = text
        .lines()
        .find(|l| {
            let parts: Vec<&str> = l.splitn(3, ':').collect();
            if unified {
                parts.get(1) == Some(&"")
            } else {
                parts
                    .get(1)
                    .is_some_and(|c| c.split(',').any(|x| x == "pids"))
            }
        })
        .unwrap_or_else(|| panic!("no pids cgroup in {text}"));
    let path = line.splitn(3, ':').nth(2).expect("path");
    let dir = if unified {
        Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'))
    } else {
        Path::new("/sys/fs/cgroup/pids").join(path.trim_start_matches('/'))
    };
    std::fs::read_to_string(dir.join("pids.max"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .trim()
        .to_string()
}

/// Checks everything the issue asks of a running container's VMM.
fn assert_jailed(j: &Jailed) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", j.pid)).expect("status");
    assert_eq!(status_field(&status, "Name"), ["husk-vmm"], "{status}");
    assert_ne!(j.uid, 0);
    assert_ne!(j.gid, 0);
    assert_eq!(status_field(&status, "Uid"), vec![j.uid.to_string(); 4]);
    assert_eq!(status_field(&status, "Gid"), vec![j.gid.to_string(); 4]);
    assert_eq!(status_field(&status, "Groups"), Vec::<String>::new());
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, cap), ["0000000000000000"], "{cap}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), ["1"]);
    // pid 1 of its own pid namespace.
    assert_eq!(
        status_field(&status, "NSpid"),
        [j.pid.to_string(), "1".into()]
    );
    for ns in ["mnt", "pid", "net", "ipc", "uts"] {
        let theirs = std::fs::read_link(format!("/proc/{}/ns/{ns}", j.pid)).expect("ns");
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("ns");
        assert_ne!(theirs, ours, "the VMM shares the host's {ns} namespace");
    }
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", j.pid)).expect("cgroup");
    assert!(
        cgroups
            .lines()
            .any(|l| l.ends_with(&format!(":{}", j.cgroup))),
        "{} not in {cgroups}",
        j.cgroup
    );
    let limit_file = memory_limit_file(&j.cgroup);
    let limit: u64 = std::fs::read_to_string(&limit_file)
        .unwrap_or_else(|e| panic!("{}: {e}", limit_file.display()))
        .trim()
        .parse()
        .expect("memory limit");
    // The default guest memory plus the VMM's overhead, far below "max".
    assert!(
        (256 << 20..4 << 30).contains(&limit),
        "memory limit {limit}"
    );
    let pids: u64 = pids_max(j.pid).parse().expect("pids.max is a number");
    assert!((2..100).contains(&pids), "pids.max {pids}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", j.pid)).expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core");
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
}

#[test]
fn vmm_runs_jailed_and_cannot_open_another_containers_disk() {
    let test = "vmm_runs_jailed_and_cannot_open_another_containers_disk";
    let Some(env) = Env::new(test) else {
        return;
    };
    if !husk_tests::tools_or_skip(test, &["/usr/bin/setpriv"], "apt install util-linux") {
        return;
    }
    env.ok(&["run", "-d", "--name", "ja", IMAGE, "sleep", "1000"]);
    env.ok(&["run", "-d", "--name", "jb", IMAGE, "sleep", "1000"]);
    let a = jail_of(&env, "ja");
    let b = jail_of(&env, "jb");
    assert_jailed(&a);
    assert_jailed(&b);
    assert_ne!(a.uid, b.uid, "two VMs share a jail uid");
    assert_ne!(a.cgroup, b.cgroup);

    // A's root holds nothing but the agent's socket: no disk.
    let root: Vec<String> = std::fs::read_dir(format!("/proc/{}/root", a.pid))
        .expect("the VMM's root")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(root, ["v.sock_1024"], "the jail's root holds more");

    // A's uid cannot open B's writable disk (nor read it).
    let b_disk = env.root().join("containers").join(&b.id).join("rw.ext4");
    assert!(b_disk.exists(), "{}", b_disk.display());
    let out = Command::new("/usr/bin/setpriv")
        .arg(format!("--reuid={}", a.uid))
        .arg(format!("--regid={}", a.gid))
        .arg("--clear-groups")
        .args(["--", "/bin/busybox", "dd", "count=1", "bs=1"])
        .arg(format!("if={}", b_disk.display()))
        .arg("of=/dev/null")
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "A's uid read B's disk: {err}");
    assert!(err.contains("Permission denied"), "{err}");
    // Nor does A's VMM hold it open.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", a.pid)).expect("fds");
    for fd in fds.flatten() {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        assert_ne!(target, b_disk, "A's VMM holds B's disk");
    }

    // Still a working container: exec reaches the agent through the jail.
    assert_eq!(env.ok(&["exec", "ja", "echo", "through"]).trim(), "through");

    env.ok(&["rm", "-f", "ja", "jb"]);
    for j in [&a, &b] {
        let dir = memory_limit_file(&j.cgroup);
        let dir = dir.parent().expect("cgroup dir");
        env.eventually("the jail's cgroup to go", Duration::from_secs(30), || {
            !dir.exists()
        });
        assert!(
            !Path::new(&format!("/proc/{}", j.pid)).exists() || {
                // A zombie-free exit: the pid may have been reused by now;
                // it is no husk-vmm of this jail.
                std::fs::read_to_string(format!("/proc/{}/status", j.pid))
                    .map(|s| !s.contains(&format!("\t{}\t", j.uid)))
                    .unwrap_or(true)
            }
        );
    }
    // The jails' root directories are gone (other tests' jails may exist).
    for j in [&a, &b] {
        let root = Path::new("/run/husk/jail").join(format!("root-{}", j.uid));
        assert!(!root.exists(), "{} left", root.display());
    }
    env.assert_clean();
}

/// The `husk-vmm` process (pid 1 of its pid namespace, not its waiter)
/// started with `marker` in its environment, if one runs.
fn vmm_with_env(marker: &str) -> Option<u32> {
    let procs = std::fs::read_dir("/proc").ok()?;
    procs.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let nspid = status.lines().find(|l| l.starts_with("NSpid:"))?;
        let is_vmm = status.lines().next() == Some("Name:\thusk-vmm")
            && nspid.split_whitespace().count() == 3
            && nspid.ends_with("\t1");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let has_marker = environ.split(|&b| b == 0).any(|v| v == marker.as_bytes());
        (is_vmm && has_marker).then_some(pid)
    })
}

/// Whether `templates` holds a complete template (published with its
/// inputs file).
fn has_template(templates: &Path) -> bool {
    std::fs::read_dir(templates).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().join("inputs.json").exists())
    })
}

/// A warm-start template VM runs jailed too. With a template store of its
/// own (a private `HUSK_CACHE`), the first `run` boots the template's VM
/// before any template exists: that VMM process has a jail uid, no
/// capabilities, `no_new_privs`, its own namespaces, filtered vCPU
/// threads, and it saves the template (through files its caller opened)
/// from which the container is then restored.
#[test]
fn template_vms_are_built_jailed() {
    let test = "template_vms_are_built_jailed";
    let Some(env) = Env::new(test) else {
        return;
    };
    let cache = tempfile::tempdir().expect("tempdir");
    let templates = cache.path().join("templates");
    let marker = format!("HUSK_CACHE={}", cache.path().display());
    let mut cmd = env.cmd(&["run", "--rm", IMAGE, "echo", "restored"]);
    cmd.env("HUSK_CACHE", cache.path())
        .stdout(std::process::Stdio::piped());
    let child = cmd.spawn().expect("husk run");

    // A VMM seen while no template exists is the template's: a container's
    // VMM starts only after its template is published. Checking in that
    // order (VMM, then no template) leaves no window for a mix-up.
    let mut found = None;
    env.eventually(
        "the template's VMM to start",
        Duration::from_secs(600),
        || {
            found = vmm_with_env(&marker).and_then(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                (!has_template(&templates)).then_some((pid, status))
            });
            found.is_some()
        },
    );
    let (pid, status) = found.expect("found");
    let uid = status_field(&status, "Uid");
    assert_ne!(uid[0], "0", "{status}");
    assert_eq!(uid, vec![uid[0].clone(); 4]);
    for cap in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(status_field(&status, cap), ["0000000000000000"], "{cap}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), ["1"]);
    for ns in ["mnt", "pid", "net"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).expect("ns");
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("ns");
        assert_ne!(
            theirs, ours,
            "the template's VMM shares the host's {ns} namespace"
        );
    }
    // Its vCPU threads run filtered (its main thread saves the VM, so it
    // is the one left without a filter). A vCPU thread has its name a moment
    // before it installs its filter, so this waits for mode 2 (filter).
    env.eventually(
        "the template's vCPU thread to run with a seccomp filter",
        Duration::from_secs(60),
        || vcpu_seccomp(pid).as_deref() == Some("2"),
    );

    let out = child.wait_with_output().expect("husk run");
    assert!(out.status.success(), "husk run: {:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "restored");
    assert!(has_template(&templates), "no template was saved");
    env.assert_clean();
}

/// The Seccomp mode of the VMM's `vcpu0` thread, once it runs.
fn vcpu_seccomp(pid: u32) -> Option<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        if comm.trim() != "vcpu0" {
            return None;
        }
        let status = std::fs::read_to_string(t.path().join("status")).ok()?;
        status_field(&status, "Seccomp").first().cloned()
    })
}
