//! End-to-end test of the VMM's seccomp filters: every thread of a running
//! container's jailed VMM is filtered (`Seccomp: 2` in its /proc status):
//! the vCPU and event-loop threads, and the main thread that serves the
//! control socket, each by the filter of its kind; and the guest keeps
//! working under them. The filters are enforced here (no `HUSK_SECCOMP`),
//! so a system call missing from them would kill the container's VMM.
//!
//! Skipped (with a message) without `HUSK_KERNEL` or root.

use std::time::Duration;

#[allow(dead_code)]
#[path = "images/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "containers/support.rs"]
mod csupport;

use csupport::{Env, IMAGE};

/// How long a step inside the running guest may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

/// One thread of a process: its id, name (`comm`) and seccomp mode
/// (0 none, 2 filter).
#[derive(Debug)]
struct Thread {
    tid: u32,
    name: String,
    seccomp: u32,
}

/// The threads of process `pid`.
fn threads(pid: u32) -> Vec<Thread> {
    let task = format!("/proc/{pid}/task");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&task).expect("task dir").flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(entry.path().join("comm")),
            std::fs::read_to_string(entry.path().join("status")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let seccomp = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .map(|v| v.trim().parse().expect("Seccomp value"))
            .expect("a Seccomp line");
        found.push(Thread {
            tid,
            name: comm.trim().to_string(),
            seccomp,
        });
    }
    found
}

/// The pid of the process running container `name`'s VMM: its jailed
/// `husk-vmm` process (`State.Jail.Pid`).
fn vmm_pid(env: &Env, name: &str) -> u32 {
    let pid = env.inspect(name, "{{.State.Jail.Pid}}");
    pid.parse()
        .unwrap_or_else(|_| panic!("monitor pid of {name}: {pid:?}"))
}

/// Whether `name` is a VMM thread's: the event loop `vm` or `vcpu<N>`.
fn is_vmm_thread(name: &str) -> bool {
    name == "vm"
        || name
            .strip_prefix("vcpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn vmm_threads_of_a_running_container_are_filtered() {
    let Some(env) = Env::new("vmm_threads_of_a_running_container_are_filtered") else {
        return;
    };
    let script = "echo up; while true; do sleep 1000; done";
    env.ok(&[
        "run", "-d", "--name", "sc", "--cpus", "2", IMAGE, "sh", "-c", script,
    ]);
    env.eventually("the first log line", STEP_TIMEOUT, || {
        env.ok(&["logs", "sc"]) == "up\n"
    });
    let pid = vmm_pid(&env, "sc");
    let all = threads(pid);
    let mut names: Vec<&str> = all
        .iter()
        .filter(|t| is_vmm_thread(&t.name))
        .map(|t| t.name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["vcpu0", "vcpu1", "vm"], "threads: {all:?}");
    for t in &all {
        if is_vmm_thread(&t.name) {
            assert_eq!(t.seccomp, 2, "VMM thread unfiltered: {t:?}");
        }
    }
    // The process's main thread (it only serves the control socket) runs
    // under the control filter: no thread of the VMM is unfiltered.
    let main = all.iter().find(|t| t.tid == pid).expect("main thread");
    assert_eq!(main.seccomp, 2, "{main:?}");
    assert!(
        all.iter().all(|t| t.seccomp == 2),
        "unfiltered threads: {all:?}"
    );

    // The guest works under the filters (the agent's boot connection was
    // a guest-initiated vsock connection, made after the filters were
    // installed): a host-initiated one (exec) with its output, then a stop
    // that ends every thread without an error.
    assert_eq!(env.ok(&["exec", "sc", "echo", "filtered"]), "filtered\n");
    assert_eq!(env.inspect("sc", "{{.State.Status}}"), "running");
    env.ok(&["stop", "-t", "1", "sc"]);
    assert_eq!(
        env.inspect("sc", "{{.State.Status}} {{.State.Error}}"),
        "exited",
        "the VMM ended without an error"
    );
    env.ok(&["rm", "sc"]);
    env.assert_clean();
}
