//! End-to-end tests of `husk-oci`, the OCI runtime with runc's command
//! line: driven directly the way runc's callers drive it (create, state,
//! start, exec, ps, kill, delete; the pid file's process is the
//! container's and exits with its status), through containerd's own runc
//! shim (`ctr run --runc-binary`), and through podman and conmon
//! (`podman --runtime`). Every container is a real KVM microVM. Tests wait
//! on processes, pipes and command results, never on fixed sleeps, and
//! check that nothing is left behind.
//!
//! Skipped (with a message) without `HUSK_KERNEL`/`HUSK_AGENT` (outside
//! scripts/test.sh), root, the tools or the built binary; under
//! `HUSK_TEST_STRICT=1` those skips fail.

#[allow(dead_code)]
#[path = "images/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "containers/support.rs"]
mod csupport;

#[allow(dead_code)]
#[path = "oci_cli/support.rs"]
mod osupport;

use csupport::PtyProcess;
use husk_tests::containerd::{processes_with, Containerd, IMAGE, SHORT, VM_TIMEOUT};
use husk_tests::oci_bin;
use osupport::{busybox_image_tar, wait_exit, Direct, Podman};

#[test]
fn create_start_exec_kill_delete_and_the_pid_files_process() {
    let Some(t) = Direct::new("create_start_exec_kill_delete_and_the_pid_files_process") else {
        return;
    };
    // Orphans of this process (the monitors, once their launcher exits)
    // become its children, as they become conmon's or the runc shim's.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).expect("subreaper");

    // c1: held until `start`, then killed.
    let b1 = t.bundle("b1", &["sh", "-c", "echo started; exec sleep 1000"]);
    let (pid, mut out) = t.create("c1", &b1);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the pid lives");
    let ppid: u32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        ppid,
        std::process::id(),
        "the pid file's process is re-parented to the subreaper"
    );
    let s = t.state("c1");
    assert_eq!(s["status"], "created", "{s}");
    assert_eq!(s["pid"], pid);
    assert_eq!(s["id"], "c1");
    assert_eq!(s["bundle"], b1.to_str().unwrap());
    assert_eq!(s["annotations"]["io.example.test"], "oci_cli");
    assert!(out.nothing_yet(), "the process must wait for start");
    let busy = t.run(&["delete", "c1"]);
    assert_eq!(
        busy.code(),
        0,
        "a created container can be deleted: {}",
        busy.stderr
    );
    let gone = t.run(&["state", "c1"]);
    assert_eq!(gone.code(), 1);
    assert!(gone.stderr.contains("does not exist"), "{}", gone.stderr);
    assert_eq!(
        wait_exit(pid, SHORT),
        137,
        "a deleted created container's pid ends"
    );

    let (pid, mut out) = t.create("c1", &b1);
    t.ok(&["start", "c1"]);
    assert_eq!(t.state("c1")["status"], "running");
    out.expect("started", VM_TIMEOUT);
    assert_eq!(t.ok(&["exec", "c1", "echo", "from exec"]), "from exec\n");
    let failed = t.run(&["exec", "c1", "sh", "-c", "exit 5"]);
    assert_eq!(failed.code(), 5, "{}", failed.stderr);
    let pids: Vec<i32> = serde_json::from_str(&t.ok(&["ps", "--format", "json", "c1"])).unwrap();
    assert_eq!(pids, [pid]);
    let running = t.run(&["delete", "c1"]);
    assert_eq!(running.code(), 1);
    assert_eq!(running.stderr.lines().count(), 1, "{}", running.stderr);
    assert!(running.stderr.contains("not stopped"), "{}", running.stderr);
    t.ok(&["kill", "c1", "TERM"]);
    assert_eq!(
        wait_exit(pid, VM_TIMEOUT),
        128 + 15,
        "exit status of a SIGTERM'd process"
    );
    let s = t.state("c1");
    assert_eq!(
        (s["status"].as_str(), s["pid"].as_i64()),
        (Some("stopped"), Some(0)),
        "{s}"
    );
    t.ok(&["delete", "c1"]);

    // c2: exits on its own; the status propagates.
    let b2 = t.bundle("b2", &["sh", "-c", "echo hi; echo err >&2; exit 3"]);
    let (pid, out) = t.create("c2", &b2);
    t.ok(&["start", "c2"]);
    assert_eq!(wait_exit(pid, VM_TIMEOUT), 3);
    let text = out.rest(SHORT);
    assert!(text.contains("hi\n") && text.contains("err\n"), "{text:?}");
    assert_eq!(t.state("c2")["status"], "stopped");
    t.ok(&["delete", "c2"]);

    // Errors: one line, exit 1, and a JSON line in the --log file.
    let missing = t.run(&["kill", "nope", "KILL"]);
    assert_eq!(missing.code(), 1);
    assert_eq!(missing.stderr.lines().count(), 1, "{}", missing.stderr);
    let log = std::fs::read_to_string(t.log()).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(
        last["msg"]
            .as_str()
            .unwrap()
            .contains("\"nope\" does not exist"),
        "{last}"
    );
    assert_eq!(t.run(&["delete", "--force", "nope"]).code(), 0);
    t.assert_clean();
}

#[test]
fn a_bad_bundle_fails_create_and_leaves_nothing() {
    let Some(t) = Direct::new("a_bad_bundle_fails_create_and_leaves_nothing") else {
        return;
    };
    let b = t.bundle("bad", &["true"]);
    std::fs::remove_dir_all(b.join("rootfs")).unwrap();
    let done = t.run(&[
        "create",
        "--bundle",
        b.to_str().unwrap(),
        "--pid-file",
        "/nonexistent/p",
        "bad",
    ]);
    assert_eq!(done.code(), 1);
    assert_eq!(done.stderr.lines().count(), 1, "{}", done.stderr);
    assert!(
        done.stderr.contains("is not a directory"),
        "{}",
        done.stderr
    );
    let log = std::fs::read_to_string(t.log()).unwrap();
    assert!(log.contains("is not a directory"), "{log}");
    t.assert_clean();
}

#[test]
fn ctr_run_through_containerds_runc_shim() {
    let test = "ctr_run_through_containerds_runc_shim";
    if !husk_tests::tools_or_skip(
        test,
        &["/usr/bin/containerd-shim-runc-v2"],
        "apt install containerd",
    ) {
        return;
    }
    let Some(c) = Containerd::start(test, &oci_bin(), busybox_image_tar) else {
        return;
    };
    let oci = oci_bin();
    let runc_root = c.dir.path().join("runc");
    // `ctr run --rm` through husk-oci, with extra flags.
    let run_with = |flags: &[&str], name: &str, cmd: &[&str], timeout| {
        let mut args = vec![
            "run",
            "--rm",
            "--runc-binary",
            oci.to_str().unwrap(),
            "--runc-root",
            runc_root.to_str().unwrap(),
        ];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[IMAGE, name]);
        args.extend_from_slice(cmd);
        c.run(&args, timeout)
    };
    let run = |name: &str, cmd: &[&str]| run_with(&[], name, cmd, VM_TIMEOUT);
    let done = run("t1", &["echo", "hi"]);
    assert_eq!(
        (done.code(), done.stdout.as_str()),
        (0, "hi\n"),
        "{}",
        done.stderr
    );
    let done = run("t2", &["sh", "-c", "echo out; exit 3"]);
    assert_eq!(
        (done.code(), done.stdout.as_str()),
        (3, "out\n"),
        "{}",
        done.stderr
    );
    // A terminal: the shim's console socket receives husk-oci's pty.
    let cmd = c.ctr(&[
        "run",
        "-t",
        "--rm",
        "--runc-binary",
        oci.to_str().unwrap(),
        "--runc-root",
        runc_root.to_str().unwrap(),
        IMAGE,
        "t3",
        "sh",
        "-c",
        "echo tty $(tty) $(stty size); exit 2",
    ]);
    let mut p = PtyProcess::spawn(cmd, 30, 100);
    p.expect("tty /dev/pts/", VM_TIMEOUT);
    assert_eq!(p.wait(VM_TIMEOUT), 2);
    drop(p);
    // A directory bind mount in config.json: shared with the VM.
    let data = c.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in"), "shared\n").unwrap();
    let bind = format!("type=bind,src={},dst=/data,options=rbind", data.display());
    let script = "cat /data/in; echo back > /data/out";
    let done = run_with(
        &["--mount", &bind],
        "binds",
        &["sh", "-c", script],
        VM_TIMEOUT,
    );
    assert_eq!(
        (done.code(), done.stdout.as_str()),
        (0, "shared\n"),
        "{}",
        done.stderr
    );
    assert_eq!(std::fs::read_to_string(data.join("out")).unwrap(), "back\n");
    // A bundle husk cannot honour: the shim reads husk-oci's JSON log.
    let missing = "type=bind,src=/nonexistent-husk-source,dst=/data,options=rbind";
    let done = run_with(&["--mount", missing], "bad", &["true"], SHORT);
    assert_ne!(done.code(), 0);
    assert!(
        done.stderr
            .contains("bind mount of /nonexistent-husk-source at /data"),
        "{}",
        done.stderr
    );
    let _ = c.run(&["container", "rm", "bad"], SHORT);
    assert_eq!(c.ok(&["task", "ls", "-q"]), "");
    let root = runc_root.display().to_string();
    c.until("monitors to exit", SHORT, || {
        processes_with(&["container-monitor", &root]).is_empty()
    });
    osupport::assert_no_containers(&runc_root.join(husk_tests::containerd::NS));
}

#[test]
fn podman_run_exec_stop_rm() {
    let Some(p) = Podman::new("podman_run_exec_stop_rm") else {
        return;
    };
    let run = [
        "run",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];
    let mut args = run.to_vec();
    args.extend(["--rm", osupport::PODMAN_IMAGE, "echo", "hi"]);
    let done = p.run(&args, VM_TIMEOUT);
    assert_eq!(
        (done.code(), done.stdout.as_str()),
        (0, "hi\n"),
        "{}",
        done.stderr
    );
    let mut args = run.to_vec();
    args.extend(["--rm", osupport::PODMAN_IMAGE, "sh", "-c", "exit 3"]);
    assert_eq!(p.run(&args, VM_TIMEOUT).code(), 3);

    let mut args = run.to_vec();
    args.extend([
        "-d",
        "--name",
        "web",
        osupport::PODMAN_IMAGE,
        "sleep",
        "1000",
    ]);
    p.ok(&args);
    assert_eq!(p.ok(&["exec", "web", "echo", "from exec"]), "from exec\n");
    assert_eq!(
        p.run(&["exec", "web", "sh", "-c", "exit 4"], VM_TIMEOUT)
            .code(),
        4
    );
    p.ok(&["stop", "-t", "10", "web"]);
    let status = p.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        "web",
    ]);
    assert_eq!(status.trim(), "exited 143", "stopped by SIGTERM");
    p.ok(&["rm", "web"]);
    assert_eq!(p.ok(&["ps", "-a", "-q"]), "");
    p.assert_clean();
}
