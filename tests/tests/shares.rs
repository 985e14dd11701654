//! End-to-end tests of shared directories (virtio-fs, issue #13): `-v
//! /host:/ctr[:ro]`, `-v ./file:/ctr`, `--mount type=bind|tmpfs`, through
//! the `husk` binary with real VMs and a real virtiofsd.

use std::time::Duration;

#[allow(dead_code)]
#[path = "images/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "containers/support.rs"]
mod csupport;

use csupport::{s, Env, IMAGE};

#[test]
fn binds_read_and_write_both_ways_and_do_not_escape() {
    let Some(env) = Env::new("binds_read_and_write_both_ways_and_do_not_escape") else {
        return;
    };
    let base = env.dir.path();
    let src = base.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("from-host"), "host data\n").unwrap();
    std::fs::write(base.join("app.yml"), "key: value\n").unwrap();
    let ro = base.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(ro.join("fixed"), "fixed\n").unwrap();
    // Links out of the share: resolved by the guest in its own root, never
    // by the host, so the host's file stays out of reach.
    std::fs::write(base.join("secret"), "SECRET\n").unwrap();
    std::os::unix::fs::symlink(base.join("secret"), src.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../secret", src.join("rel-link")).unwrap();
    let script = "cat from-host; echo guest data > from-guest; \
                  cat /etc/app.yml; \
                  touch /ro/new 2>&1 || echo ro-refused; cat /ro/fixed; \
                  cat /mro/fixed; rm /mro/fixed 2>&1 || echo mro-refused; \
                  cat abs-link rel-link 2>&1; \
                  grep -c ' /scratch tmpfs ' /proc/mounts; \
                  echo scratch > /scratch/x && cat /scratch/x";
    let mut cmd = env.cmd(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/work", s(&src)),
        "-w",
        "/work",
        "-v",
        "./app.yml:/etc/app.yml",
        "-v",
        &format!("{}:/ro:ro", s(&ro)),
        "--mount",
        &format!("type=bind,src={},dst=/mro,readonly", s(&ro)),
        "--mount",
        "type=tmpfs,destination=/scratch,tmpfs-size=1m",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    cmd.current_dir(base);
    let done = husk_tests::run(cmd, csupport::VM_TIMEOUT).unwrap();
    assert_eq!(done.code(), 0, "{}{}", done.stderr, env.container_logs());
    let out = &done.stdout;
    for want in [
        "host data\n",
        "key: value\n",
        "ro-refused\n",
        "mro-refused\n",
        "fixed\nfixed\n",
        "1\nscratch\n",
    ] {
        assert!(out.contains(want), "{want:?} missing from {out:?}");
    }
    assert!(
        !out.contains("SECRET"),
        "a link led out of the share: {out}"
    );
    assert_eq!(
        std::fs::read_to_string(src.join("from-guest")).unwrap(),
        "guest data\n"
    );
    assert!(!ro.join("new").exists() && ro.join("fixed").exists());
    env.assert_clean();
}

#[test]
fn two_containers_see_each_others_writes() {
    let Some(env) = Env::new("two_containers_see_each_others_writes") else {
        return;
    };
    let shared = env.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let vol = format!("{}:/s", s(&shared));
    // Each waits for the other's file (bounded: 3000 x 0.2 s). A file is written
    // beside its name and renamed into place: `echo x > f` creates `f` before it
    // writes, so a reader polling for `f` could otherwise cat it empty.
    let wait_for = |f: &str| {
        format!("i=0; while [ ! -f /s/{f} ] && [ $i -lt 3000 ]; do sleep 0.2; i=$((i+1)); done; cat /s/{f}")
    };
    let a = format!(
        "echo from-a > /s/a.tmp; mv /s/a.tmp /s/a; {}",
        wait_for("b")
    );
    let b = format!(
        "{}; echo from-b > /s/b.tmp; mv /s/b.tmp /s/b",
        wait_for("a")
    );
    for (name, script) in [("sa", &a), ("sb", &b)] {
        env.ok(&[
            "run", "-d", "--name", name, "-v", &vol, IMAGE, "sh", "-c", script,
        ]);
    }
    for name in ["sa", "sb"] {
        assert_eq!(
            env.ok(&["wait", name]).trim(),
            "0",
            "{}",
            env.container_logs()
        );
    }
    assert_eq!(env.ok(&["logs", "sa"]), "from-b\n");
    assert_eq!(env.ok(&["logs", "sb"]), "from-a\n");
    let mounts = env.inspect("sa", "{{json .Mounts}}");
    let mounts: serde_json::Value = serde_json::from_str(&mounts).unwrap();
    assert_eq!(mounts[0]["Type"], "bind", "{mounts}");
    assert_eq!(mounts[0]["Source"], s(&shared.canonicalize().unwrap()));
    assert_eq!(mounts[0]["Destination"], "/s");
    assert_eq!(mounts[0]["RW"], true);
    env.ok(&["rm", "sa", "sb"]);
    env.assert_clean();
}

#[test]
fn bad_mount_specs_fail_with_one_line() {
    let Some(env) = Env::new("bad_mount_specs_fail_with_one_line") else {
        return;
    };
    let missing = env.dir.path().join("missing");
    let cases = [
        (
            vec!["--mount".to_string(), "type=bind,dst=/x".to_string()],
            "field Source must not be empty",
        ),
        (
            vec![
                "--mount".to_string(),
                format!("type=bind,src={},dst=/x", s(&missing)),
            ],
            "bind source path does not exist",
        ),
        (
            vec!["--mount".to_string(), "type=nfs,dst=/x".to_string()],
            "mount type unknown",
        ),
        (
            vec!["-v".to_string(), "rel/dir:/x".to_string()],
            "invalid volume specification",
        ),
        (
            vec!["-v".to_string(), "/dev/null:/x".to_string()],
            "neither a directory nor a regular file",
        ),
    ];
    for (flags, want) in cases {
        let mut args: Vec<&str> = vec!["run", "--rm"];
        args.extend(flags.iter().map(String::as_str));
        args.extend([IMAGE, "true"]);
        let e = env.fails(125, &args);
        assert!(e.contains(want), "{flags:?}: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    }
    assert!(!missing.exists(), "--mount made its missing source");
    // `-v` makes a missing host directory, as Docker does.
    let made = env.dir.path().join("made");
    env.ok(&[
        "create",
        "--name",
        "made",
        "-v",
        &format!("{}:/m", s(&made)),
        IMAGE,
    ]);
    assert!(made.is_dir());
    env.ok(&["rm", "made"]);
    // Without virtiofsd, a foreground run says so (the monitor's boot
    // error reaches the starter, not a closed connection), and --rm
    // leaves nothing.
    let mut cmd = env.cmd(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/m", s(&made)),
        IMAGE,
        "true",
    ]);
    cmd.env("HUSK_VIRTIOFSD", env.dir.path().join("no-virtiofsd"));
    let out = cmd.output().expect("husk run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("no virtiofsd"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    env.eventually("no container", Duration::from_secs(60), || {
        env.ok(&["ps", "-aq"]).is_empty()
    });
    env.assert_clean();
}
