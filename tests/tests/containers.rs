//! End-to-end tests of containers through the `husk` binary: real KVM
//! microVMs, the static agent, busybox images built here. Each test boots
//! as few VMs as its assertions allow (a boot takes 15-30 s here) and
//! checks that nothing leaks: no monitor process, no container file.
//!
//! Skipped (with a message) without `HUSK_KERNEL` (outside
//! scripts/test.sh) or without root.

use std::time::{Duration, Instant};

use husk_tests::{Running, OOM_SCRIPT, OOM_VM_MIB};
use rustix::process::Signal;

#[allow(dead_code)]
#[path = "images/support.rs"]
mod support;

#[path = "containers/support.rs"]
mod csupport;

use csupport::{kill, s, Env, PtyProcess, IMAGE, VM_TIMEOUT, VOLUME_IMAGE};

/// How long one step inside a running guest (output appearing, a signal
/// taking effect) may take: seconds on a quiet host, minutes when other
/// VMs share the two cores.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn run_rm_prints_output_and_exit_code() {
    let Some(env) = Env::new("run_rm_prints_output_and_exit_code") else {
        return;
    };
    // Refused before any VM: husk's own errors exit 125.
    let err = env.fails(125, &["run", "--rm", "nosuch:image", "true"]);
    assert!(err.contains("No such image: nosuch:image"), "{err}");
    let missing = "type=bind,src=/nonexistent-husk-source,dst=/x";
    let err = env.fails(125, &["run", "--rm", "--mount", missing, IMAGE, "true"]);
    assert!(err.contains("bind source path does not exist"), "{err}");
    let err = env.fails(125, &["run", "--rm", "-m", "1m", IMAGE, "true"]);
    assert!(err.contains("minimum memory"), "{err}");
    let err = env.fails(125, &["run", "--name", "bad/name", IMAGE, "true"]);
    assert!(err.contains("invalid container name"), "{err}");

    let env_file = env.dir.path().join("env");
    std::fs::write(&env_file, "FROM_FILE=file\nOVR=file\n").unwrap();
    let script = "echo out; echo err >&2; \
                  echo \"$IMG $OVR $FROM_FILE $(pwd) $(id -u) $(hostname) $(nproc)\"; \
                  grep -c . /etc/resolv.conf >/dev/null && echo resolv; exit 3";
    let done = env.husk(&[
        "run",
        "--rm",
        "--env-file",
        s(&env_file),
        "-e",
        "OVR=flag",
        "-w",
        "/work/dir",
        "-u",
        "app",
        "--hostname",
        "box",
        "--cpus",
        "2",
        "-m",
        "192m",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(done.code(), 3, "{}", done.stderr);
    assert_eq!(
        done.stdout,
        "out\nimage flag file /work/dir 1000 box 2\nresolv\n"
    );
    assert_eq!(done.stderr, "err\n");
    env.assert_clean();
}

#[test]
fn run_exit_codes_for_missing_and_failing_commands() {
    let Some(env) = Env::new("run_exit_codes_for_missing_and_failing_commands") else {
        return;
    };
    // Not --rm: the failure stays recorded in the container's state.
    let err = env.fails(127, &["run", "--name", "miss", IMAGE, "nosuch-command"]);
    assert!(
        err.contains("nosuch-command") && err.contains("not found"),
        "{err}"
    );
    assert_eq!(
        env.inspect("miss", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 127"
    );
    assert!(env
        .inspect("miss", "{{.State.Error}}")
        .contains("not found"));
    let ps = env.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.starts_with("miss Exited (127) "), "{ps}");
    env.ok(&["rm", "miss"]);

    // Without -t, SIGINT to husk is forwarded to the container's process.
    let script = "trap 'echo got INT; exit 9' INT; echo ready; while true; do sleep 1; done";
    let mut cli = Running::start(env.cmd(&["run", "--rm", IMAGE, "sh", "-c", script])).unwrap();
    cli.wait_for_line("ready", VM_TIMEOUT).unwrap();
    cli.signal(Signal::INT);
    let done = cli.finish(Duration::from_secs(60)).unwrap();
    assert_eq!(done.code(), 9, "{}", done.stderr);
    assert_eq!(done.stdout, "ready\ngot INT\n");
    env.assert_clean();
}

#[test]
fn detached_container_lifecycle() {
    let Some(env) = Env::new("detached_container_lifecycle") else {
        return;
    };
    // The shell waits in `wait`, which a trapped signal interrupts at once:
    // its trap runs without waiting for a child to finish.
    let script =
        "echo started; trap 'echo got TERM' TERM; while true; do sleep 1000 & wait $!; done";
    let id = env.ok(&["run", "-d", "--name", "web", IMAGE, "sh", "-c", script]);
    let id = id.trim();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let err = env.fails(125, &["create", "--name", "web", IMAGE, "true"]);
    assert!(err.contains("already in use"), "{err}");

    // ps: Docker's columns, -q, --format, --filter.
    let ps = env.ok(&["ps"]);
    let mut lines = ps.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES"
        ]
    );
    let row = lines.next().expect("one row");
    assert!(row.starts_with(&id[..12]), "{row}");
    assert!(row.contains("\"sh -c echo started;…\""), "{row}");
    assert!(
        row.contains(" ago ") && row.contains("Up ") && row.ends_with("web"),
        "{row}"
    );
    assert_eq!(env.ok(&["ps", "-q"]).trim(), &id[..12]);
    assert_eq!(env.ok(&["ps", "-q", "--no-trunc"]).trim(), id);
    assert_eq!(
        env.ok(&["ps", "--format", "{{.Names}}:{{.State}}:{{.Image}}"])
            .trim(),
        "web:running:bb:test"
    );
    assert_eq!(env.ok(&["ps", "-q", "--filter", "status=exited"]), "");
    assert_eq!(
        env.ok(&["ps", "-q", "--filter", "name=we"]).trim(),
        &id[..12]
    );
    assert_eq!(
        env.ok(&["ps", "-q", "--filter", &format!("id={}", &id[..5])])
            .trim(),
        &id[..12]
    );
    env.eventually("the first log line", STEP_TIMEOUT, || {
        env.ok(&["logs", "web"]) == "started\n"
    });
    assert_eq!(
        env.inspect("web", "{{.State.Running}} {{.Name}} {{.Config.WorkingDir}}"),
        "true /web /srv/app"
    );

    // exec: output, exit codes, settings, stdin.
    assert_eq!(env.ok(&["exec", "web", "echo", "hi"]), "hi\n");
    assert_eq!(env.husk(&["exec", "web", "sh", "-c", "exit 5"]).code(), 5);
    let err = env.fails(127, &["exec", "web", "nosuch"]);
    assert!(err.contains("not found"), "{err}");
    let err = env.fails(126, &["exec", "web", "/bin/notexec"]);
    assert!(err.contains("permission denied"), "{err}");
    let out = env.ok(&[
        "exec",
        "-e",
        "X=1",
        "-w",
        "/tmp/new",
        "-u",
        "app",
        "web",
        "sh",
        "-c",
        "echo $X $IMG $(pwd) $(id -u)",
    ]);
    assert_eq!(out, "1 image /tmp/new 1000\n");
    // Piped stdin, written and closed before the process has started: it
    // must be delivered, never dropped.
    let mut cmd = env.cmd(&["exec", "-i", "web", "sh", "-c", "tr a-z A-Z; echo done"]);
    cmd.stdin(std::process::Stdio::piped());
    let mut piped = Running::start(cmd).unwrap();
    {
        use std::io::Write;
        let mut stdin = piped.take_stdin().expect("piped stdin");
        stdin.write_all(b"piped input\n").unwrap();
    }
    let done = piped.finish(VM_TIMEOUT).unwrap();
    assert_eq!(
        (done.code(), done.stdout.as_str()),
        (0, "PIPED INPUT\ndone\n"),
        "exec -i lost its piped input: {}",
        done.stderr
    );
    env.ok(&["exec", "web", "sh", "-c", "echo persisted > /data.txt"]);

    // rm refuses a running container; stop sends TERM (trapped, ignored)
    // then SIGKILL after -t.
    let err = env.fails(1, &["rm", "web"]);
    assert!(err.contains("stop the container first"), "{err}");
    assert_eq!(env.ok(&["stop", "-t", "5", "web"]), "web\n");
    // Killed by SIGKILL, but not by the OOM killer.
    assert_eq!(
        env.inspect(
            "web",
            "{{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}}"
        ),
        "exited 137 false"
    );
    assert_eq!(env.ok(&["logs", "web"]), "started\ngot TERM\n");
    assert!(env.ok(&["ps", "-a"]).contains("Exited (137) "));
    assert_eq!(env.ok(&["ps", "-q"]), "");
    env.fails(125, &["exec", "web", "true"]);

    // start again: same writable disk.
    assert_eq!(env.ok(&["start", "web"]), "web\n");
    assert_eq!(env.ok(&["exec", "web", "cat", "/data.txt"]), "persisted\n");
    assert_eq!(env.inspect("web", "{{.State.Status}}"), "running");
    assert_eq!(env.ok(&["kill", "web"]), "web\n");
    assert_eq!(env.ok(&["wait", "web"]), "137\n");
    assert_eq!(env.ok(&["logs", "--tail", "1", "web"]), "started\n");
    assert_eq!(env.ok(&["rm", "web"]), "web\n");
    env.fails(1, &["rm", "web"]);
    env.assert_clean();
}

#[test]
fn process_security_settings_reach_the_container() {
    let Some(env) = Env::new("process_security_settings_reach_the_container") else {
        return;
    };
    // Refused before any VM, naming the value.
    for (flag, value, want) in [
        (
            "--security-opt",
            "seccomp=unconfined",
            "husk: unsupported --security-opt \"seccomp=unconfined\"",
        ),
        (
            "--group-add",
            "staff",
            "husk: invalid --group-add \"staff\"",
        ),
        ("--cap-add", "NOPE", "husk: invalid capability \"NOPE\""),
        (
            "--ulimit",
            "nofile=2:1",
            "husk: invalid --ulimit \"nofile=2:1\"",
        ),
    ] {
        let err = env.fails(125, &["run", "--rm", flag, value, IMAGE, "true"]);
        assert!(err.starts_with(want), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    // Capabilities, groups, limits and no_new_privs of the init process.
    // (The kernel ends the Groups line with a space.)
    let probe = "grep -E \"^(CapBnd|CapEff|NoNewPrivs|Groups)\" /proc/self/status; \
                 ulimit -n; ulimit -Hn";
    let done = env.husk(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        "--ulimit",
        "nofile=100:200",
        "--security-opt",
        "no-new-privileges",
        "--group-add",
        "4321",
        IMAGE,
        "sh",
        "-c",
        probe,
    ]);
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(
        done.stdout,
        "Groups:\t0 4321 \n\
         CapEff:\t0000000000000400\n\
         CapBnd:\t0000000000000400\n\
         NoNewPrivs:\t1\n\
         100\n\
         200\n"
    );
    // Without flags: Docker's default set.
    let done = env.husk(&["run", "--rm", IMAGE, "grep", "CapEff", "/proc/self/status"]);
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(done.stdout, "CapEff:\t00000000a80425fb\n");

    // exec'd processes inherit the container's settings.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "secured",
        "--cap-drop",
        "chown",
        "--ulimit",
        "nproc=77",
        "--ulimit",
        "nofile=300:400",
        "--group-add",
        "555",
        "--security-opt",
        "no-new-privileges=true",
        IMAGE,
        "sh",
        "-c",
        "echo up; exec sleep 1000",
    ]);
    env.eventually("the init process", VM_TIMEOUT, || {
        env.ok(&["logs", "secured"]) == "up\n"
    });
    let status = "grep -E \"^(CapBnd|CapEff|NoNewPrivs|Groups)\" /proc/self/status";
    let probe = format!("{status}; ulimit -n; ulimit -Hn; ulimit -u");
    assert_eq!(
        env.ok(&["exec", "secured", "sh", "-c", &probe]),
        "Groups:\t0 555 \n\
         CapEff:\t00000000a80425fa\n\
         CapBnd:\t00000000a80425fa\n\
         NoNewPrivs:\t1\n\
         300\n\
         400\n\
         77\n"
    );
    // Another user keeps the bounding set only, as with Docker.
    assert_eq!(
        env.ok(&["exec", "-u", "app", "secured", "sh", "-c", status]),
        "Groups:\t555 1000 \n\
         CapEff:\t0000000000000000\n\
         CapBnd:\t00000000a80425fa\n\
         NoNewPrivs:\t1\n"
    );
    // exec --privileged: every capability of the guest kernel (6.1: 41).
    assert_eq!(
        env.ok(&["exec", "--privileged", "secured", "sh", "-c", status]),
        "Groups:\t0 555 \n\
         CapEff:\t000001ffffffffff\n\
         CapBnd:\t000001ffffffffff\n\
         NoNewPrivs:\t1\n"
    );
    assert_eq!(
        env.inspect(
            "secured",
            "{{json .HostConfig.CapAdd}} {{json .HostConfig.CapDrop}} \
             {{.HostConfig.Privileged}} {{json .HostConfig.SecurityOpt}} \
             {{json .HostConfig.GroupAdd}}"
        ),
        "null [\"CAP_CHOWN\"] false [\"no-new-privileges\"] [\"555\"]"
    );
    assert_eq!(
        env.inspect("secured", "{{json .HostConfig.Ulimits}}"),
        "[{\"Hard\":77,\"Name\":\"nproc\",\"Soft\":77},\
         {\"Hard\":400,\"Name\":\"nofile\",\"Soft\":300}]"
    );
    assert_eq!(env.ok(&["rm", "-f", "secured"]), "secured\n");
    env.assert_clean();
}

#[test]
fn oom_kill_in_the_guest_shows_in_inspect() {
    // Alone: the guest fills all of its memory through its (on nested
    // hosts, slow) kernel before the OOM killer acts; a VM beside it
    // would halve the pace.
    let Some(env) = Env::exclusive("oom_kill_in_the_guest_shows_in_inspect") else {
        return;
    };
    let memory = format!("{OOM_VM_MIB}m");
    let done = env.husk(&[
        "run", "--name", "hog", "--memory", &memory, IMAGE, "sh", "-c", OOM_SCRIPT,
    ]);
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(done.stdout, "survived 137\n");
    assert_eq!(
        env.inspect("hog", "{{.State.Status}} {{.State.OOMKilled}}"),
        "exited true"
    );
    assert_eq!(env.ok(&["rm", "hog"]), "hog\n");
    env.assert_clean();
}

#[test]
fn tty_session_with_resize_and_ctrl_c() {
    let Some(env) = Env::new("tty_session_with_resize_and_ctrl_c") else {
        return;
    };
    let mut p = PtyProcess::spawn(
        env.session_cmd(&["run", "--rm", "-it", "--name", "tty1", IMAGE, "sh"]),
        30,
        100,
    );
    p.expect("# ", VM_TIMEOUT);
    p.write(b"stty size; tty; echo $((6*7))\n");
    p.expect("30 100\r\n/dev/pts/", STEP_TIMEOUT);
    p.expect("42\r\n", STEP_TIMEOUT);
    // The new size travels CLI -> monitor -> agent: ask again (after each
    // prompt) until the guest's terminal has it.
    p.resize(40, 120);
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        p.write(b"stty size\n");
        if p.expect("# ", STEP_TIMEOUT).contains("40 120\r\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the resize never reached the guest"
        );
    }
    // Ctrl-C reaches the foreground process through the guest's terminal
    // once the shell has handed the terminal to it (it runs).
    p.write(b"sleep 100\n");
    env.eventually("sleep to run", STEP_TIMEOUT, || {
        env.husk(&["exec", "tty1", "pidof", "sleep"]).code() == 0
    });
    p.write(b"\x03");
    p.expect("^C", STEP_TIMEOUT);
    p.write(b"echo status $?\n");
    p.expect("status 130", STEP_TIMEOUT);
    p.write(b"exit 7\n");
    assert_eq!(p.wait(Duration::from_secs(60)), 7);
    drop(p);
    env.assert_clean();
}

#[test]
fn volume_data_survives_container_removal() {
    let Some(env) = Env::new("volume_data_survives_container_removal") else {
        return;
    };
    assert_eq!(env.ok(&["volume", "create", "data"]), "data\n");
    // The image's VOLUME /cache gets an anonymous volume, removed with
    // the --rm container.
    let out = env.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        VOLUME_IMAGE,
        "sh",
        "-c",
        "echo x > /data/f && grep -c -e ' /data ' -e ' /cache ' /proc/mounts",
    ]);
    assert_eq!(out, "2\n");
    assert_eq!(env.ok(&["volume", "ls", "-q"]), "data\n");
    let out = env.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data:ro",
        IMAGE,
        "sh",
        "-c",
        "cat /data/f; touch /data/g || echo ro",
    ]);
    assert!(out.starts_with("x\n") && out.ends_with("ro\n"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["volume", "inspect", "data"])).unwrap();
    assert_eq!(v[0]["Name"], "data");
    assert_eq!(env.ok(&["volume", "rm", "data"]), "data\n");
    let err = env.fails(1, &["volume", "rm", "data"]);
    assert!(err.contains("No such volume"), "{err}");
    env.assert_clean();
}

#[test]
fn killed_monitor_and_killed_cli_leave_truthful_state() {
    let Some(env) = Env::new("killed_monitor_and_killed_cli_leave_truthful_state") else {
        return;
    };
    // kill -9 of the monitor (the VMM runs in it): the container is
    // reported exited, with the reason, and rm cleans everything.
    env.ok(&["run", "-d", "--name", "victim", IMAGE, "sleep", "1000"]);
    let pid: u32 = env
        .inspect("victim", "{{.State.MonitorPid}}")
        .parse()
        .unwrap();
    assert_eq!(env.monitors(), [pid]);
    kill(pid, Signal::KILL);
    env.eventually("the monitor to die", STEP_TIMEOUT, || {
        env.monitors().is_empty()
    });
    // The process list drops the monitor's command line while the kernel is
    // still tearing down its memory (the VM's); its lock, and so the
    // running state, goes a moment later.
    env.eventually(
        "the killed monitor's container to be reported exited 137",
        STEP_TIMEOUT,
        || env.inspect("victim", "{{.State.Status}} {{.State.ExitCode}}") == "exited 137",
    );
    assert!(env
        .inspect("victim", "{{.State.Error}}")
        .contains("monitor died"));
    assert!(env.ok(&["ps", "-a"]).contains("Exited (137)"));
    env.fails(125, &["exec", "victim", "true"]);
    env.ok(&["rm", "victim"]);
    env.assert_clean();

    // kill -9 of the CLI of a foreground run while the VM boots: the
    // container keeps running (as with Docker); rm -f cleans up.
    let cli =
        Running::start(env.cmd(&["run", "--name", "orphan", IMAGE, "sleep", "1000"])).unwrap();
    env.eventually("the orphan's monitor to start", VM_TIMEOUT, || {
        env.monitors().len() == 1
    });
    cli.signal(Signal::KILL);
    let done = cli.finish(Duration::from_secs(10)).unwrap();
    assert_eq!(done.status.code(), None, "killed");
    env.eventually("the orphan's process to run", VM_TIMEOUT, || {
        env.inspect("orphan", "{{.State.Pid}}") != "0"
    });
    assert_eq!(env.inspect("orphan", "{{.State.Status}}"), "running");
    assert_eq!(env.ok(&["exec", "orphan", "echo", "alive"]), "alive\n");
    assert_eq!(env.ok(&["rm", "-f", "orphan"]), "orphan\n");
    env.assert_clean();
}

#[test]
fn guest_kernel_panic_is_reported() {
    let Some(env) = Env::new("guest_kernel_panic_is_reported") else {
        return;
    };
    // busybox as the "agent": PID 1 exits at once and the kernel panics.
    let fake = env.dir.path().join("fake-agent");
    std::fs::copy("/bin/busybox", &fake).unwrap();
    let mut cmd = env.cmd(&["run", "--name", "panicky", IMAGE, "true"]);
    cmd.env("HUSK_AGENT", &fake)
        .env("HUSK_CACHE", env.dir.path().join("cache"));
    let done = husk_tests::run(cmd, VM_TIMEOUT).unwrap();
    eprintln!("{done:?}");
    assert_eq!(done.code(), 255, "{}", done.stderr);
    assert!(
        done.stderr.contains("guest kernel panic: Kernel panic"),
        "{}",
        done.stderr
    );
    assert!(env
        .inspect("panicky", "{{.State.Error}}")
        .starts_with("guest kernel panic"));
    env.ok(&["rm", "panicky"]);
    env.assert_clean();
}

#[test]
fn ten_containers_start_concurrently() {
    let Some(env) = Env::exclusive("ten_containers_start_concurrently") else {
        return;
    };
    let starts: Vec<Running> = (0..10)
        .map(|i| {
            let name = format!("c{i}");
            let mut cmd = env.cmd(&[
                "run",
                "-d",
                "--rm",
                "--name",
                &name,
                IMAGE,
                "sh",
                "-c",
                "echo up; sleep 1000",
            ]);
            cmd.env("HUSK_BOOT_TIMEOUT", "900");
            Running::start(cmd).unwrap()
        })
        .collect();
    for r in starts {
        let done = r.finish(Duration::from_secs(1200)).unwrap();
        assert_eq!(done.code(), 0, "{}", done.stderr);
    }
    let names = env.ok(&["ps", "--format", "{{.Names}} {{.State}}"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    let want: Vec<String> = (0..10).map(|i| format!("c{i} running")).collect();
    assert_eq!(names, want);
    for i in 0..10 {
        assert_eq!(env.ok(&["exec", &format!("c{i}"), "echo", "ok"]), "ok\n");
    }
    // --rm containers stopped by husk stop are removed by their monitors.
    let stop: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let mut args = vec!["stop", "-t", "1"];
    args.extend(stop.iter().map(String::as_str));
    env.ok(&args);
    env.eventually("auto-removal", Duration::from_secs(120), || {
        env.ok(&["ps", "-aq"]).is_empty()
    });
    env.assert_clean();
}

#[test]
fn library_starts_a_created_container_with_fds() {
    let Some(env) = Env::new("library_starts_a_created_container_with_fds") else {
        return;
    };
    use husk_runtime::{MonitorCommand, Runtime, StdioWiring};
    use std::io::Read;
    // `husk create` resolves the assets; the library does the rest, the
    // way a shim would: start with its own descriptors, wait, delete.
    let id = env.ok(&[
        "create",
        "--name",
        "lib",
        IMAGE,
        "sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2; exit 4",
    ]);
    let rt = Runtime::open(&env.root())
        .unwrap()
        .with_monitor(MonitorCommand {
            program: husk_tests::husk_bin(),
            args: vec!["container-monitor".into()],
        });
    let c = rt.container(id.trim()).unwrap();
    assert_eq!(c.state.status, husk_runtime::Status::Created);
    assert_eq!(c.config.name, "lib");
    let (mut out_r, out_w) = pipe();
    let (mut err_r, err_w) = pipe();
    rt.start(
        "lib",
        StdioWiring::Fds {
            stdin: None,
            stdout: Some(out_w),
            stderr: Some(err_w),
        },
    )
    .unwrap();
    assert_eq!(rt.wait("lib", Some(VM_TIMEOUT)).unwrap(), Some(4));
    // The monitor holds the write ends until it exits.
    let (mut out, mut err) = (String::new(), String::new());
    out_r.read_to_string(&mut out).unwrap();
    err_r.read_to_string(&mut err).unwrap();
    assert_eq!((out.as_str(), err.as_str()), ("to-stdout\n", "to-stderr\n"));
    assert_eq!(env.ok(&["logs", "lib"]), "to-stdout\n");
    rt.delete("lib", husk_runtime::DeleteOptions::default())
        .unwrap();
    assert!(matches!(
        rt.container("lib"),
        Err(husk_runtime::Error::NoSuchContainer(_))
    ));
    env.assert_clean();
}

/// A pipe: (read end as a File, write end).
fn pipe() -> (std::fs::File, std::os::fd::OwnedFd) {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    (std::fs::File::from(r), w)
}

/// The json-file log rotates as `--log-opt` says: a container printing
/// far more than max-size leaves at most max-file files of at most
/// max-size each, `husk logs` shows the last lines in order, and a
/// follower sees every line across the rotations.
#[test]
fn logs_rotate_and_are_followed_across_files() {
    let Some(env) = Env::new("logs_rotate_and_are_followed_across_files") else {
        return;
    };
    // Refused before any VM.
    for (opt, want) in [
        ("max-size=ten", "invalid --log-opt max-size=\"ten\""),
        ("max-file=2", "max-file can only be used with max-size"),
        ("mode=blocking", "unknown log opt 'mode'"),
    ] {
        let err = env.fails(125, &["create", "--log-opt", opt, IMAGE, "true"]);
        assert!(err.contains(want), "{err}");
    }
    assert_eq!(env.ok(&["ps", "-aq"]), "");

    // About 75 bytes of JSON per line. The first 5000 lines (~375 KB,
    // six files' worth) fit in the ten files kept, so a follower cannot
    // be outrun by the rotation; all 12000 (~900 KB) do not.
    const FOLLOWED: usize = 5000;
    const LINES: usize = 12000;
    let script = format!(
        "mkfifo /go /more; echo ready; read x < /go; seq 1 {FOLLOWED}; \
         read x < /more; seq {} {LINES}",
        FOLLOWED + 1
    );
    env.ok(&[
        "run",
        "-d",
        "--name",
        "spam",
        "--log-opt",
        "max-size=64k",
        "--log-opt",
        "max-file=10",
        IMAGE,
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(
        env.inspect("spam", "{{json .HostConfig.LogConfig}}"),
        r#"{"Config":{"max-file":"10","max-size":"64k"},"Type":"json-file"}"#
    );
    let mut follower = Running::start(env.cmd(&["logs", "-f", "spam"])).unwrap();
    follower.wait_for_line("ready", STEP_TIMEOUT).unwrap();
    env.ok(&["exec", "spam", "sh", "-c", "echo go > /go"]);
    follower
        .wait_for_line(&FOLLOWED.to_string(), STEP_TIMEOUT)
        .unwrap();
    follower.signal(Signal::KILL);
    let followed = follower.finish(STEP_TIMEOUT).unwrap();
    let first_part: String = std::iter::once("ready".to_string())
        .chain((1..=FOLLOWED).map(|n| n.to_string()))
        .map(|l| l + "\n")
        .collect();
    assert!(
        followed.stdout == first_part,
        "the follower missed or repeated lines: {} bytes of {}",
        followed.stdout.len(),
        first_part.len()
    );
    env.ok(&["exec", "spam", "sh", "-c", "echo go > /more"]);
    assert_eq!(env.ok(&["wait", "spam"]), "0\n");

    let log = std::path::PathBuf::from(env.inspect("spam", "{{.LogPath}}"));
    let dir = log.parent().unwrap();
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("log.json"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, e.metadata().unwrap().len())
        })
        .collect();
    files.sort();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<String> = std::iter::once("log.json".to_string())
        .chain((1..10).map(|n| format!("log.json.{n}")))
        .collect();
    assert_eq!(names, want);
    for (name, len) in &files {
        assert!(*len <= 64 << 10, "{name} has {len} bytes");
    }
    // What is kept is the end of the output, in order, across the files.
    let kept = husk_tests::run(env.cmd(&["logs", "spam"]), VM_TIMEOUT).unwrap();
    assert_eq!(kept.code(), 0, "{}", kept.stderr);
    let numbers: Vec<usize> = kept
        .stdout
        .lines()
        .map(|l| l.parse().expect("a line of seq"))
        .collect();
    let first = numbers[0];
    assert!(first > 1, "nothing was dropped");
    assert_eq!(numbers, (first..=LINES).collect::<Vec<_>>());
    assert_eq!(env.ok(&["logs", "--tail", "2", "spam"]), "11999\n12000\n");
    assert_eq!(env.ok(&["rm", "spam"]), "spam\n");
    env.assert_clean();
}

#[path = "containers/limits.rs"]
mod limits;
