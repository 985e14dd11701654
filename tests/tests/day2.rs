//! End-to-end tests of the day-2 commands of issue #14 (part 2): `stats`,
//! `top`, `cp`, `diff`, `export`, `commit`, `history`, against real
//! containers. Each test boots one VM (and a maintenance VM for each
//! operation on a stopped container).
//!
//! Skipped (with a message) without `HUSK_KERNEL` or without root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

#[allow(dead_code)]
#[path = "images/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "containers/support.rs"]
mod csupport;

use csupport::{s, Env, IMAGE};

#[test]
fn stats_and_top_show_the_running_guest() {
    let Some(env) = Env::new("stats_and_top_show_the_running_guest") else {
        return;
    };
    env.ok(&["run", "-d", "--name", "st", IMAGE, "sleep", "1000"]);
    let pid = env.inspect("st", "{{.State.Pid}}");
    assert_ne!(pid, "0");

    let out = env.ok(&["stats", "--no-stream", "--format", "{{json .}}", "st"]);
    let row: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON row");
    assert_eq!(row["Name"], "st", "{row}");
    let mem = row["MemUsage"].as_str().expect("MemUsage");
    let (used, limit) = mem.split_once(" / ").expect("USAGE / LIMIT");
    assert!(!used.starts_with("0B") && used != "0", "{mem}");
    assert!(limit.ends_with("MiB") && limit != "0B", "{mem}");
    assert!(row["CPUPerc"].as_str().unwrap().ends_with('%'), "{row}");
    assert_ne!(row["PIDs"], "0", "{row}");
    assert_ne!(row["VMMRSS"], "0B", "{row}");

    let table = env.ok(&["stats", "--no-stream", "st"]);
    let header = table.lines().next().unwrap();
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(table.lines().nth(1).unwrap().contains(" st "), "{table}");

    let top = env.ok(&["top", "st"]);
    let mut lines = top.lines();
    let cols: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        cols,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    let sleep = lines
        .find(|l| l.ends_with("sleep 1000"))
        .unwrap_or_else(|| panic!("no sleep process in:\n{top}"));
    let fields: Vec<&str> = sleep.split_whitespace().collect();
    assert_eq!(fields[0], "root", "{sleep}");
    assert_eq!(fields[1], pid, "{sleep}");

    env.ok(&["rm", "-f", "st"]);
    let err = env.fails(125, &["top", "st"]);
    assert!(err.contains("No such container"), "{err}");
    env.assert_clean();
}

/// Files, modes and symlink targets of a tree, relative to `root`.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
            };
            out.push(format!("{rel} {:o} {what}", m.mode() & 0o7777));
        }
    }
    out.sort();
    out
}

#[test]
fn cp_round_trips_a_tree_and_diff_and_export_see_the_changes() {
    let Some(env) = Env::new("cp_round_trips_a_tree_and_diff_and_export_see_the_changes") else {
        return;
    };
    let dir = env.dir.path();
    let src = dir.join("tree");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("file with spaces"), "spaced\n").unwrap();
    std::fs::write(src.join("sub/exe"), "#!/bin/sh\necho hi\n").unwrap();
    std::os::unix::fs::symlink("file with spaces", src.join("link")).unwrap();
    for (p, mode) in [
        ("sub", 0o750),
        ("sub/exe", 0o755),
        ("file with spaces", 0o640),
    ] {
        std::fs::set_permissions(src.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    // A created container (never started): copied into through a
    // maintenance VM; the process sees it once started.
    env.ok(&["create", "--name", "cpx", IMAGE, "sleep", "1000"]);
    env.ok(&["cp", s(&src), "cpx:/"]);
    assert_eq!(env.inspect("cpx", "{{.State.Status}}"), "created");
    env.ok(&["start", "cpx"]);
    let seen = env.ok(&["exec", "cpx", "cat", "/tree/file with spaces"]);
    assert_eq!(seen, "spaced\n");
    env.ok(&[
        "exec",
        "cpx",
        "sh",
        "-c",
        "rm /bin/notexec && mkdir /data && ln -s /etc /data/evil",
    ]);

    // Host -> container -> host, identical.
    env.ok(&["cp", s(&src), "cpx:/data/"]);
    let seen = env.ok(&["exec", "cpx", "cat", "/data/tree/file with spaces"]);
    assert_eq!(seen, "spaced\n");
    let back = dir.join("back");
    std::fs::create_dir(&back).unwrap();
    env.ok(&["cp", "cpx:/data/tree", s(&back)]);
    assert_eq!(tree(&back.join("tree")), tree(&src));
    // `dir/.` into a new directory: its contents.
    let contents = dir.join("contents");
    env.ok(&["cp", "cpx:/data/tree/.", s(&contents)]);
    assert_eq!(tree(&contents), tree(&src));
    // A file onto a new name.
    env.ok(&["cp", "cpx:/data/tree/sub/exe", s(&dir.join("exe2"))]);
    assert_eq!(
        std::fs::read_to_string(dir.join("exe2")).unwrap(),
        "#!/bin/sh\necho hi\n"
    );

    // A symlink out of the tree stays a link; followed (-L), it resolves
    // inside the container: its /etc/passwd, not the host's.
    env.ok(&["cp", "cpx:/data/evil", s(&dir.join("evil"))]);
    assert_eq!(
        std::fs::read_link(dir.join("evil")).unwrap(),
        Path::new("/etc")
    );
    env.ok(&["cp", "-L", "cpx:/data/evil/passwd", s(&dir.join("passwd"))]);
    let passwd = std::fs::read_to_string(dir.join("passwd")).unwrap();
    assert!(passwd.contains("app:x:1000"), "{passwd}");
    let err = env.fails(125, &["cp", "cpx:/nonexistent", s(dir)]);
    assert!(err.contains("Could not find the file"), "{err}");
    let err = env.fails(125, &["cp", s(&src), "cpx:/no/such/dir/"]);
    assert!(err.contains("no such directory"), "{err}");

    // diff: the new tree, the removed image file.
    let diff = env.ok(&["diff", "cpx"]);
    let lines: Vec<&str> = diff.lines().collect();
    for want in [
        "A /data",
        "A /data/tree",
        "A /data/tree/file with spaces",
        "D /bin/notexec",
        "C /bin",
    ] {
        assert!(lines.contains(&want), "{want} missing from:\n{diff}");
    }

    // export: the merged root, without the API filesystems' contents.
    let fs_tar = dir.join("fs.tar");
    env.ok(&["export", "-o", s(&fs_tar), "cpx"]);
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&fs_tar).unwrap());
    for e in ar.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    assert!(
        names.iter().any(|n| n == "data/tree/file with spaces"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "bin/busybox"), "{names:?}");
    assert!(!names.iter().any(|n| n == "bin/notexec"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("proc/") && n.len() > 5),
        "{names:?}"
    );

    // update: a VM's memory and vCPUs cannot follow.
    let f = env.husk(&["update", "--memory", "1g", "cpx"]);
    assert_eq!(f.code(), 1, "{}", f.stderr);
    assert!(f.stderr.contains("Cannot update container"), "{}", f.stderr);

    // commit: the changes as a new image that runs and sees them.
    let id = env.ok(&[
        "commit",
        "-m",
        "with the tree",
        "-c",
        "CMD [\"cat\", \"/data/tree/file with spaces\"]",
        "cpx",
        "committed:1",
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    env.ok(&["rm", "-f", "cpx"]);
    assert!(env.ok(&["images"]).contains("committed"));
    let history = env.ok(&["history", "committed:1"]);
    let mut lines = history.lines();
    let header = lines.next().unwrap();
    for col in ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"] {
        assert!(header.contains(col), "{header}");
    }
    let newest = lines.next().unwrap();
    assert!(
        newest.starts_with(&id.trim()["sha256:".len()..][..12]),
        "{history}"
    );
    assert!(newest.ends_with("with the tree"), "{history}");
    assert!(lines.all(|l| l.starts_with("<missing>")), "{history}");
    let quiet = env.ok(&["history", "-q", "--no-trunc", "committed:1"]);
    assert_eq!(quiet.lines().next(), Some(id.trim()));
    let out = env.ok(&["run", "--rm", "committed:1"]);
    assert_eq!(out, "spaced\n");
    env.ok(&[
        "run",
        "--rm",
        "committed:1",
        "test",
        "!",
        "-e",
        "/bin/notexec",
    ]);
    env.assert_clean();
}

/// Sockets left in a container's directory, and processes that hold its
/// writable disk open: what a maintenance VM must not leave behind.
fn leftovers(env: &Env, name: &str) -> Vec<String> {
    let id = env.inspect(name, "{{.Id}}");
    let dir = env.root().join("containers").join(&id);
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sock") || n.contains(".sock_"))
        .collect();
    let disk = dir.join("rw.ext4");
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t == disk) {
                left.push(format!(
                    "process {} holds rw.ext4",
                    p.file_name().to_string_lossy()
                ));
            }
        }
    }
    left
}

/// The `name` events of container `c` so far.
fn events(env: &Env, c: &str, name: &str) -> usize {
    let out = env.ok(&[
        "events",
        "--since",
        "0",
        "--until",
        "0s",
        "--filter",
        &format!("container={c}"),
        "--filter",
        &format!("event={name}"),
    ]);
    out.lines().count()
}

#[test]
fn cp_diff_export_and_commit_work_on_a_stopped_container() {
    let Some(env) = Env::new("cp_diff_export_and_commit_work_on_a_stopped_container") else {
        return;
    };
    let dir = env.dir.path();
    // It runs to its end, having written a file.
    let script = "cat /etc/in.txt 2>/dev/null; echo made > /made.txt";
    env.ok(&["run", "--name", "stp", IMAGE, "sh", "-c", script]);
    assert_eq!(env.inspect("stp", "{{.State.Status}}"), "exited");

    // Out, as a tar stream and into a directory.
    let f = env.husk(&["cp", "stp:/made.txt", "-"]);
    assert_eq!(f.code(), 0, "{}", f.stderr);
    let mut ar = tar::Archive::new(f.stdout.as_bytes());
    let mut entries = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut e, &mut text).unwrap();
        entries.push((e.path().unwrap().display().to_string(), text));
    }
    assert_eq!(entries, [("made.txt".to_string(), "made\n".to_string())]);
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    env.ok(&["cp", "stp:/made.txt", s(&out)]);
    assert_eq!(
        std::fs::read_to_string(out.join("made.txt")).unwrap(),
        "made\n"
    );

    // In; a failure midway is one line and leaves nothing behind.
    let local = dir.join("in.txt");
    std::fs::write(&local, "copied in\n").unwrap();
    env.ok(&["cp", s(&local), "stp:/etc/"]);
    let err = env.fails(125, &["cp", s(&local), "stp:/no/such/dir/"]);
    assert!(err.contains("no such directory"), "{err}");
    let err = env.fails(125, &["cp", "stp:/nonexistent", s(&out)]);
    assert!(err.contains("Could not find the file"), "{err}");

    // diff and export see the change.
    let diff = env.ok(&["diff", "stp"]);
    let lines: Vec<&str> = diff.lines().collect();
    for want in ["A /made.txt", "A /etc/in.txt"] {
        assert!(lines.contains(&want), "{want} missing from:\n{diff}");
    }
    let fs_tar = dir.join("fs.tar");
    env.ok(&["export", "-o", s(&fs_tar), "stp"]);
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&fs_tar).unwrap());
    for e in ar.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    for want in ["etc/in.txt", "made.txt", "bin/busybox"] {
        assert!(names.iter().any(|n| n == want), "{want}: {names:?}");
    }

    // The container did not run meanwhile, and nothing is left of the
    // maintenance VMs.
    assert_eq!(env.inspect("stp", "{{.State.Status}}"), "exited");
    assert_eq!(events(&env, "stp", "start"), 1);
    assert_eq!(events(&env, "stp", "die"), 1);
    assert_eq!(leftovers(&env, "stp"), Vec::<String>::new());

    // Started again, the process sees the copied file.
    let out = env.ok(&["start", "-a", "stp"]);
    assert_eq!(out, "copied in\n");

    // commit: the stopped container's changes as an image.
    let id = env.ok(&["commit", "stp", "stopped:1"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(leftovers(&env, "stp"), Vec::<String>::new());

    // A start while a maintenance VM has the container waits for it (or,
    // having won, the copy goes to the running container): both succeed,
    // never two VMs on one disk.
    let cp = env.cmd(&["cp", s(&local), "stp:/etc/again.txt"]);
    let copier = std::thread::spawn(move || {
        let mut cp = cp;
        cp.output().unwrap()
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    env.ok(&["start", "stp"]);
    let copied = copier.join().unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    env.ok(&["wait", "stp"]);
    assert_eq!(events(&env, "stp", "start"), 3);
    let f = env.husk(&["cp", "stp:/etc/again.txt", "-"]);
    assert!(f.stdout.contains("copied in\n"), "{}", f.stderr);
    assert_eq!(leftovers(&env, "stp"), Vec::<String>::new());
    env.ok(&["rm", "stp"]);
    let out = env.ok(&[
        "run",
        "--rm",
        "stopped:1",
        "cat",
        "/etc/in.txt",
        "/made.txt",
    ]);
    assert_eq!(out, "copied in\nmade\n");
    env.assert_clean();
}
