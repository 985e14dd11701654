use super::*;
use husk_protocol::{RootDisk, VolumeMount};
use std::os::unix::fs::symlink;

fn spec() -> ContainerSpec {
    ContainerSpec {
        root: RootFs::Layers {
            layers: vec!["layer0".into(), "layer1".into()],
            writable: "rw".into(),
        },
        shares: Vec::new(),
        volumes: vec![VolumeMount {
            serial: "vol0".into(),
            fs_type: "ext4".into(),
            target: "/data".into(),
            read_only: false,
        }],
        hostname: "box".into(),
        hosts: vec!["10.0.0.1 db".into()],
        resolv_conf: Some("nameserver 10.0.0.2\n".into()),
        network: None,
        files: Vec::new(),
        tmpfs: Vec::new(),
        sysctls: Vec::new(),
        read_only_root: false,
    }
}

fn layers(s: &mut ContainerSpec) -> (&mut Vec<String>, &mut String) {
    match &mut s.root {
        RootFs::Layers { layers, writable } => (layers, writable),
        RootFs::Disk(_) => panic!("a layered spec"),
    }
}

fn disk(serial: &str, fs_type: &str) -> RootFs {
    RootFs::Disk(RootDisk {
        serial: serial.into(),
        fs_type: fs_type.into(),
        read_only: true,
    })
}

#[test]
fn a_normal_spec_passes() {
    check_container(&spec()).unwrap();
    let mut s = spec();
    let (l, w) = layers(&mut s);
    w.clear();
    l.truncate(1);
    check_container(&s).unwrap();
    for fs in ["ext4", "erofs"] {
        s.root = disk("husk-agent", fs);
        check_container(&s).unwrap();
    }
}

fn file(path: &str, len: usize) -> FileSpec {
    FileSpec {
        path: path.into(),
        content: vec![b'x'; len],
        mode: 0o644,
    }
}

#[test]
fn bounded_files_and_tmpfs_pass() {
    let mut s = spec();
    s.files = vec![
        file("/etc/hosts", MAX_FILE_BYTES),
        file("/etc/resolv.conf", 10),
    ];
    s.tmpfs = vec![
        tmpfs("/run", Some("65536k")),
        tmpfs("/tmp", Some("50%")),
        tmpfs("/x", None),
    ];
    check_container(&s).unwrap();
}

fn sysctl(key: &str, value: &str) -> Sysctl {
    Sysctl {
        key: key.into(),
        value: value.into(),
    }
}

#[test]
fn sysctls_pass() {
    let mut s = spec();
    s.sysctls = vec![
        sysctl("net.ipv4.ping_group_range", "0 0"),
        sysctl("kernel.shmmni", "8192"),
    ];
    check_container(&s).unwrap();
}

fn tmpfs(target: &str, size: Option<&str>) -> TmpfsMount {
    TmpfsMount {
        target: target.into(),
        size: size.map(String::from),
        mode: Some(0o755),
        read_only: false,
        nosuid: true,
        nodev: true,
        noexec: false,
    }
}

#[test]
fn bad_specs_are_refused() {
    type Mutate = Box<dyn Fn(&mut ContainerSpec)>;
    let cases: Vec<(&str, Mutate)> = vec![
        ("no layers", Box::new(|s| layers(s).0.clear())),
        ("serial", Box::new(|s| layers(s).0[0] = "../x".into())),
        ("long serial", Box::new(|s| *layers(s).1 = "a".repeat(21))),
        ("disk serial", Box::new(|s| s.root = disk("a/b", "ext4"))),
        ("disk fs", Box::new(|s| s.root = disk("disk0", "nfs"))),
        (
            "relative",
            Box::new(|s| s.volumes[0].target = "data".into()),
        ),
        (
            "dotdot",
            Box::new(|s| s.volumes[0].target = "/a/../../x".into()),
        ),
        ("root", Box::new(|s| s.volumes[0].target = "/".into())),
        ("nul", Box::new(|s| s.volumes[0].target = "/a\0b".into())),
        ("fs", Box::new(|s| s.volumes[0].fs_type = "nfs".into())),
        ("hostname", Box::new(|s| s.hostname = "a b".into())),
        (
            "hosts",
            Box::new(|s| s.hosts.push("1.2.3.4 x\n5.6.7.8 y".into())),
        ),
        ("resolv", Box::new(|s| s.resolv_conf = Some("a\0".into()))),
        (
            "many layers",
            Box::new(|s| *layers(s).0 = vec!["l".into(); MAX_LAYERS + 1]),
        ),
        (
            "file relative",
            Box::new(|s| s.files = vec![file("etc/x", 1)]),
        ),
        (
            "file dotdot",
            Box::new(|s| s.files = vec![file("/../x", 1)]),
        ),
        ("file root", Box::new(|s| s.files = vec![file("/", 1)])),
        (
            "file mode",
            Box::new(|s| {
                let mut f = file("/etc/x", 1);
                f.mode = 0o10644;
                s.files = vec![f]
            }),
        ),
        (
            "big file",
            Box::new(|s| s.files = vec![file("/etc/x", MAX_FILE_BYTES + 1)]),
        ),
        (
            "big files",
            Box::new(|s| s.files = vec![file("/a", MAX_FILE_BYTES); 3]),
        ),
        ("tmpfs root", Box::new(|s| s.tmpfs = vec![tmpfs("/", None)])),
        (
            "tmpfs relative",
            Box::new(|s| s.tmpfs = vec![tmpfs("run", None)]),
        ),
        (
            "tmpfs size",
            Box::new(|s| s.tmpfs = vec![tmpfs("/run", Some("64m,uid=0"))]),
        ),
        (
            "tmpfs unit only",
            Box::new(|s| s.tmpfs = vec![tmpfs("/run", Some("m"))]),
        ),
        (
            "tmpfs two units",
            Box::new(|s| s.tmpfs = vec![tmpfs("/run", Some("1km"))]),
        ),
        (
            "many tmpfs",
            Box::new(|s| s.tmpfs = vec![tmpfs("/run", None); MAX_TMPFS + 1]),
        ),
        (
            "many files",
            Box::new(|s| s.files = vec![file("/a", 1); MAX_FILES + 1]),
        ),
        (
            "sysctl path",
            Box::new(|s| s.sysctls = vec![sysctl("net/ipv4/ip_forward", "1")]),
        ),
        (
            "sysctl dotdot",
            Box::new(|s| s.sysctls = vec![sysctl("net..x", "1")]),
        ),
        (
            "sysctl nul",
            Box::new(|s| s.sysctls = vec![sysctl("net.ipv4.ip_forward", "1\0")]),
        ),
        (
            "many sysctls",
            Box::new(|s| s.sysctls = vec![sysctl("kernel.x", "1"); MAX_SYSCTLS + 1]),
        ),
    ];
    for (name, mutate) in cases {
        let mut s = spec();
        mutate(&mut s);
        assert!(check_container(&s).is_err(), "{name} accepted");
    }
}

fn share(source: &str, target: &str) -> ShareMount {
    ShareMount {
        source: source.into(),
        target: target.into(),
        read_only: false,
    }
}

#[test]
fn shares_are_checked() {
    let mut s = spec();
    s.shares = vec![share("0", "/src"), share("1/app.yml", "/etc/app.yml")];
    check_container(&s).unwrap();
    let bad_shares = [
        share("", "/x"),
        share("/0", "/x"),
        share("0/../..", "/x"),
        share("..", "/x"),
        share("0/a/b", "/x"),
        share("0/.", "/x"),
        share("0", "x"),
        share("0", "/"),
        share("0", "/a/../b"),
    ];
    for bad in bad_shares {
        let mut s = spec();
        s.shares = vec![bad.clone()];
        assert!(check_container(&s).is_err(), "{bad:?} accepted");
    }
    let mut s = spec();
    s.shares = (0..=MAX_SHARES)
        .map(|i| share(&i.to_string(), "/x"))
        .collect();
    assert!(check_container(&s).is_err(), "too many shares accepted");
    let mut s = spec();
    s.root = disk("disk0", "ext4");
    s.shares = vec![share("0", "/src")];
    assert!(check_container(&s).is_err(), "shares on a plain disk root");
}

#[test]
fn exec_requests_are_checked() {
    let mut req = ExecRequest {
        argv: vec!["sh".into()],
        env: vec![],
        cwd: "/work".into(),
        user: String::new(),
        tty: false,
        stdin: false,
        size: None,
        security: Default::default(),
    };
    check_exec(&req).unwrap();
    req.cwd = "rel".into();
    assert!(check_exec(&req).is_err());
    req.cwd = String::new();
    check_exec(&req).unwrap();
    req.size = Some((0, 80));
    assert!(check_exec(&req).is_err());
    req.size = None;
    req.security.umask = Some(0o077);
    check_exec(&req).unwrap();
    req.security.umask = Some(0o1022);
    assert!(check_exec(&req).is_err());
    req.security.umask = None;
    req.argv.clear();
    assert!(check_exec(&req).is_err());
}

#[test]
fn paths_resolve_without_escaping_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("real/sub")).unwrap();
    symlink("/real", root.join("abs")).unwrap();
    symlink("real/sub", root.join("rel")).unwrap();
    symlink("../../../../..", root.join("real/up")).unwrap();
    symlink("loop", root.join("loop")).unwrap();
    assert_eq!(
        resolve_in_root(root, "/abs/sub/x").unwrap(),
        root.join("real/sub/x")
    );
    assert_eq!(
        resolve_in_root(root, "/rel").unwrap(),
        root.join("real/sub")
    );
    assert_eq!(
        resolve_in_root(root, "/real/up/etc").unwrap(),
        root.join("etc")
    );
    assert_eq!(
        resolve_in_root(root, "/new/dir").unwrap(),
        root.join("new/dir")
    );
    assert!(resolve_in_root(root, "/loop/x").is_err());
}
