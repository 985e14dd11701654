//! End-to-end tests of the containerd shim (`containerd-shim-husk-v2`,
//! `--runtime io.containerd.husk.v2`): Debian's containerd started with a
//! private root, state, sockets and config, driven with `ctr` as a user
//! would; every container a real KVM microVM. Tests wait on containerd's
//! events and on processes, never on fixed sleeps, and check that nothing
//! is left behind (no monitor, no husk container).
//!
//! Skipped (with a message) without `HUSK_KERNEL`/`HUSK_AGENT` (outside
//! scripts/test.sh), root, containerd or the built shim; under
//! `HUSK_TEST_STRICT=1` those skips fail.

#[allow(dead_code)]
#[path = "images/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "containers/support.rs"]
mod csupport;

#[allow(dead_code)]
#[path = "containerd/support.rs"]
mod dsupport;

use csupport::{kill, PtyProcess};
use dsupport::{layers_made_under, IMAGE, RUNTIME, SHORT, VM_TIMEOUT};
use husk_tests::{OOM_SCRIPT, OOM_VM_MIB};

#[test]
fn run_rm_output_exit_codes_events_and_layer_cache() {
    let Some(c) = dsupport::start("run_rm_output_exit_codes_events_and_layer_cache") else {
        return;
    };
    let mut events = c.events();
    // Layer disks of this test's containerd (tests run two at a time).
    let own_layers = || layers_made_under(c.dir.path());
    assert_eq!(own_layers(), Vec::<std::path::PathBuf>::new());
    let done = c.run(
        &[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            IMAGE,
            "t1",
            "echo",
            "hi",
        ],
        VM_TIMEOUT,
    );
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(done.stdout, "hi\n");
    let t1 = [("container_id", "\"t1\"")];
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        events.wait(topic, &t1, SHORT);
    }
    let after_first = own_layers();
    assert_eq!(
        after_first.len(),
        1,
        "the image's one layer is converted once"
    );

    // The second container of the image converts nothing; its exit code
    // propagates.
    let done = c.run(
        &[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            IMAGE,
            "t2",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        VM_TIMEOUT,
    );
    assert_eq!(done.code(), 3, "{}", done.stderr);
    assert_eq!(done.stdout, "out\n");
    assert!(done.stderr.contains("err"), "{}", done.stderr);
    events.wait(
        "/tasks/exit",
        &[("container_id", "\"t2\""), ("exit_status", "3")],
        SHORT,
    );
    assert_eq!(
        own_layers(),
        after_first,
        "second container converted a layer"
    );
    assert_eq!(c.ok(&["task", "ls", "-q"]), "");
    c.assert_clean();
}

#[test]
fn detached_task_exec_ps_stats_kill_and_delete() {
    let Some(c) = dsupport::start("detached_task_exec_ps_stats_kill_and_delete") else {
        return;
    };
    let mut events = c.events();
    let web = [("container_id", "\"web\"")];
    c.ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        IMAGE,
        "web",
        "httpd",
        "-f",
        "-p",
        "80",
    ]);
    events.wait("/tasks/start", &web, VM_TIMEOUT);

    let out = c.ok(&["task", "exec", "--exec-id", "e1", "web", "ls", "/"]);
    assert!(out.lines().any(|l| l == "bin"), "{out}");
    events.wait("/tasks/exec-added", &[("exec_id", "\"e1\"")], SHORT);
    events.wait("/tasks/exec-started", &[("exec_id", "\"e1\"")], SHORT);
    events.wait("/tasks/exit", &[("id", "\"e1\"")], SHORT);
    let failed = c.run(
        &[
            "task",
            "exec",
            "--exec-id",
            "e2",
            "web",
            "sh",
            "-c",
            "exit 5",
        ],
        VM_TIMEOUT,
    );
    assert_eq!(failed.code(), 5, "{}", failed.stderr);

    let ps = c.ok(&["task", "ps", "web"]);
    let monitors = c.monitors();
    assert_eq!(monitors.len(), 1, "one VM: {monitors:?}");
    assert!(ps.contains(&monitors[0].to_string()), "{ps}");
    let ls = c.ok(&["task", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("web") && l.contains("RUNNING")),
        "{ls}"
    );
    let metrics = c.ok(&["task", "metrics", "web"]);
    assert!(metrics.contains("memory.usage_in_bytes"), "{metrics}");

    c.ok(&["task", "kill", "-s", "TERM", "web"]);
    events.wait(
        "/tasks/exit",
        &[
            ("container_id", "\"web\""),
            ("id", "\"web\""),
            ("exit_status", "143"),
        ],
        VM_TIMEOUT,
    );
    let ls = c.ok(&["task", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("web") && l.contains("STOPPED")),
        "{ls}"
    );
    c.ok(&["task", "delete", "web"]);
    events.wait("/tasks/delete", &web, SHORT);
    c.ok(&["container", "rm", "web"]);
    c.assert_clean();
}

#[test]
fn sigkill_gives_137_and_a_killed_shim_leaves_nothing() {
    let Some(c) = dsupport::start("sigkill_gives_137_and_a_killed_shim_leaves_nothing") else {
        return;
    };
    let mut events = c.events();
    c.ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        IMAGE,
        "k9",
        "sleep",
        "600",
    ]);
    events.wait("/tasks/start", &[("container_id", "\"k9\"")], VM_TIMEOUT);
    c.ok(&["task", "kill", "-s", "KILL", "k9"]);
    events.wait(
        "/tasks/exit",
        &[("container_id", "\"k9\""), ("exit_status", "137")],
        VM_TIMEOUT,
    );
    c.ok(&["task", "delete", "k9"]);
    c.ok(&["container", "rm", "k9"]);
    c.assert_clean();

    c.ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        IMAGE,
        "dead",
        "sleep",
        "600",
    ]);
    events.wait("/tasks/start", &[("container_id", "\"dead\"")], VM_TIMEOUT);
    assert_eq!(c.monitors().len(), 1);
    let shims = c.shims();
    assert_eq!(shims.len(), 1, "one shim: {shims:?}");
    kill(shims[0], rustix::process::Signal::KILL);
    // containerd notices, runs the shim's `delete` action and reports
    // the task as killed.
    events.wait(
        "/tasks/exit",
        &[("container_id", "\"dead\""), ("exit_status", "137")],
        SHORT,
    );
    c.until("the task to leave `ctr task ls`", SHORT, || {
        !c.ok(&["task", "ls"]).contains("RUNNING")
    });
    // Deleted already by containerd's cleanup, or now.
    let del = c.run(&["task", "delete", "dead"], SHORT);
    assert!(
        del.code() == 0 || del.stderr.contains("not found"),
        "{}",
        del.stderr
    );
    c.ok(&["container", "rm", "dead"]);
    c.assert_clean();
}

#[test]
fn guest_oom_kill_publishes_task_oom() {
    let Some(c) = dsupport::start("guest_oom_kill_publishes_task_oom") else {
        return;
    };
    let mut events = c.events();
    // The memory limit is the VM's memory.
    let limit = (u64::from(OOM_VM_MIB) << 20).to_string();
    let done = c.run(
        &[
            "run",
            "--rm",
            "--memory-limit",
            &limit,
            "--runtime",
            RUNTIME,
            IMAGE,
            "hog",
            "sh",
            "-c",
            OOM_SCRIPT,
        ],
        VM_TIMEOUT,
    );
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(done.stdout, "survived 137\n");
    events.wait("/tasks/oom", &[("container_id", "\"hog\"")], SHORT);
    events.wait("/tasks/exit", &[("container_id", "\"hog\"")], SHORT);
    c.assert_clean();
}

#[test]
fn terminal_with_resize() {
    let Some(c) = dsupport::start("terminal_with_resize") else {
        return;
    };
    let cmd = c.ctr(&[
        "run",
        "-t",
        "--rm",
        "--runtime",
        RUNTIME,
        IMAGE,
        "tty",
        "sh",
    ]);
    let mut p = PtyProcess::spawn(cmd, 30, 100);
    let start = p.expect("# ", VM_TIMEOUT);
    eprintln!("terminal up to the prompt: {start:?}");
    // ctr sends the terminal's size after the start, and each change
    // (SIGWINCH) as ResizePty; the guest's shell waits (bounded) for the
    // size it expects and says what it has.
    let wait_size = |want: &str| {
        format!(
            "for i in $(seq 300); do [ \"$(stty size)\" = '{want}' ] && break; sleep 0.1; done; \
             echo size $(stty size) $(tty)\n"
        )
    };
    p.write(wait_size("30 100").as_bytes());
    // Guest processes are slow on loaded nested-KVM hosts: a VM's bound.
    p.expect("size 30 100 /dev/pts/", VM_TIMEOUT);
    p.resize(40, 120);
    p.write(wait_size("40 120").as_bytes());
    p.expect("size 40 120 /dev/pts/", VM_TIMEOUT);
    p.write(b"exit 7\n");
    assert_eq!(p.wait(VM_TIMEOUT), 7);
    drop(p);
    c.assert_clean();
}

#[test]
fn bundles_husk_cannot_honour_fail_create_with_one_line() {
    let Some(c) = dsupport::start("bundles_husk_cannot_honour_fail_create_with_one_line") else {
        return;
    };
    let cases: [(&[&str], &str); 2] = [
        (&["--memory-limit", "1048576"], "below husk's minimum"),
        (
            &[
                "--mount",
                "type=bind,src=/nonexistent-husk-source,dst=/data,options=rbind",
            ],
            "bind mount of /nonexistent-husk-source at /data",
        ),
    ];
    for (i, (flags, want)) in cases.iter().enumerate() {
        let name = format!("bad{i}");
        let mut args = vec!["run", "--rm", "--runtime", RUNTIME];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[IMAGE, &name, "true"]);
        let done = c.run(&args, SHORT);
        assert_ne!(done.code(), 0);
        assert!(done.stderr.contains(want), "{want}: {}", done.stderr);
        let _ = c.run(&["container", "rm", &name], SHORT);
    }
    assert_eq!(c.ok(&["task", "ls", "-q"]), "");
    c.assert_clean();
}

#[test]
fn a_task_with_a_directory_bind_mount_shares_it() {
    let Some(c) = dsupport::start("a_task_with_a_directory_bind_mount_shares_it") else {
        return;
    };
    let data = c.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in"), "from the host\n").unwrap();
    let ro = c.dir.path().join("config");
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(ro.join("key"), "v\n").unwrap();
    let rw = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        data.display()
    );
    let ro_mount = format!(
        "type=bind,src={},dst=/config,options=rbind:ro",
        ro.display()
    );
    let script = "cat /data/in /config/key; echo from the task > /data/out; \
                  touch /config/new 2>/dev/null || echo ro-refused";
    let done = c.run(
        &[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--mount",
            &rw,
            "--mount",
            &ro_mount,
            IMAGE,
            "binds",
            "sh",
            "-c",
            script,
        ],
        VM_TIMEOUT,
    );
    assert_eq!(done.code(), 0, "{}{}", done.stderr, c.log_tail());
    assert_eq!(done.stdout, "from the host\nv\nro-refused\n");
    assert_eq!(
        std::fs::read_to_string(data.join("out")).unwrap(),
        "from the task\n"
    );
    assert!(!ro.join("new").exists());
    c.assert_clean();
}

#[test]
fn exec_with_terminal_and_with_piped_stdin() {
    let Some(c) = dsupport::start("exec_with_terminal_and_with_piped_stdin") else {
        return;
    };
    let mut events = c.events();
    c.ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        IMAGE,
        "box",
        "sleep",
        "600",
    ]);
    events.wait("/tasks/start", &[("container_id", "\"box\"")], VM_TIMEOUT);

    // Input through the exec's stdin FIFO, its end through CloseIO.
    let mut cmd = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "cat",
        "box",
        "sh",
        "-c",
        "cat; echo done",
    ]);
    cmd.stdin(std::process::Stdio::piped());
    let mut running = husk_tests::Running::start(cmd).expect("ctr task exec");
    let mut stdin = running.take_stdin().expect("stdin");
    std::io::Write::write_all(&mut stdin, b"data\n").expect("write");
    drop(stdin);
    let done = running.finish(VM_TIMEOUT).expect("ctr task exec");
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(done.stdout, "data\ndone\n");

    // A terminal exec, resized.
    let cmd = c.ctr(&["task", "exec", "-t", "--exec-id", "tty", "box", "sh"]);
    let mut p = PtyProcess::spawn(cmd, 30, 100);
    p.expect("# ", VM_TIMEOUT);
    p.resize(40, 120);
    p.write(
        b"for i in $(seq 300); do [ \"$(stty size)\" = '40 120' ] && break; sleep 0.1; done; \
          echo size $(stty size)\n",
    );
    p.expect("size 40 120", VM_TIMEOUT);
    p.write(b"exit 4\n");
    assert_eq!(p.wait(VM_TIMEOUT), 4);
    drop(p);
    events.wait(
        "/tasks/exit",
        &[("id", "\"tty\""), ("exit_status", "4")],
        SHORT,
    );

    c.ok(&["task", "kill", "-s", "KILL", "box"]);
    events.wait(
        "/tasks/exit",
        &[("id", "\"box\""), ("exit_status", "137")],
        VM_TIMEOUT,
    );
    c.ok(&["task", "delete", "box"]);
    c.ok(&["container", "rm", "box"]);
    c.assert_clean();
}
