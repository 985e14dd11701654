//! Bundle translation: a containerd-like default spec, then hostile and
//! malformed ones.

use std::os::unix::fs::PermissionsExt;

use husk_net::NetworkMode;
use husk_protocol::RlimitResource;
use serde_json::{json, Value};

use super::*;

/// A config.json like `ctr run` writes.
fn ctr_spec() -> Value {
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0, "additionalGids": [10]},
            "args": ["echo", "hi"],
            "env": ["PATH=/bin", "A=b=c"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_KILL"],
                "effective": ["CAP_CHOWN", "CAP_KILL"],
                "permitted": ["CAP_CHOWN", "CAP_KILL"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "annotations": {"io.example.tier": "web"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs"},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "cgroupsPath": "/default/t1",
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                           {"type": "mount"}, {"type": "network"}],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"]
        }
    })
}

fn bundle(spec: &Value) -> (tempfile::TempDir, Result<Bundle, BundleError>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
    let b = Bundle::load(dir.path());
    (dir, b)
}

fn translate(spec: &Value) -> Result<Translation, BundleError> {
    let (_dir, b) = bundle(spec);
    b?.translate()
}

fn err(spec: &Value) -> String {
    match translate(spec) {
        Ok(_) => panic!("accepted: {spec}"),
        Err(e) => husk_runtime::error_chain(&e),
    }
}

fn boot() -> VmBoot {
    VmBoot {
        kernel: "/k".into(),
        agent_disk: "/a".into(),
        boot_timeout: 60,
        start: husk_sandbox::StartMode::Warm,
    }
}

#[test]
fn a_ctr_default_spec_translates() {
    let t = translate(&ctr_spec()).unwrap();
    assert_eq!(t.process.argv, ["echo", "hi"]);
    assert_eq!(t.process.env, ["PATH=/bin", "A=b=c"]);
    assert_eq!(t.process.user, "0:0");
    assert_eq!(t.process.cwd, "/");
    assert!(!t.process.tty);
    let s = &t.process.security;
    assert_eq!(s.additional_gids, [10]);
    assert!(s.no_new_privileges);
    assert_eq!(s.rlimits[0].resource, RlimitResource::RlimitNofile);
    assert_eq!(s.rlimits[0].soft, 1024);
    let caps = s.capabilities.unwrap();
    assert_eq!(caps.bounding, 1 | 1 << 5);
    assert_eq!(caps.ambient, 0);
    assert!(t.files.is_empty());
    assert_eq!(t.tmpfs.len(), 1);
    let run = &t.tmpfs[0];
    assert_eq!(run.target, "/run");
    assert_eq!(
        (run.mode, run.size.as_deref()),
        (Some(0o755), Some("65536k"))
    );
    assert!(run.nosuid && !run.nodev && !run.noexec && !run.read_only);
    // A new network namespace: loopback only.
    assert_eq!(t.vm.network, NetworkMode::None);
    assert_eq!((t.vm.cpus, t.vm.memory_mib), (None, None));
    let plan = t.into_plan(vec!["/l0".into()], boot());
    assert_eq!(plan.hostname, plan.id.short());
    assert_eq!(plan.annotations["io.example.tier"], "web");
    assert_eq!(plan.cpus, husk_runtime::options::DEFAULT_CPUS);
    plan.check().unwrap();
}

#[test]
fn resources_size_the_vm() {
    let mut s = ctr_spec();
    s["linux"]["resources"]["memory"] = json!({"limit": 300 * 1024 * 1024 + 1});
    s["linux"]["resources"]["cpu"] = json!({"quota": 150000, "period": 100000});
    s["hostname"] = json!("web-1");
    s["process"]["terminal"] = json!(true);
    s["process"]["consoleSize"] = json!({"height": 40, "width": 120});
    let t = translate(&s).unwrap();
    assert_eq!(t.vm.memory_mib, Some(301));
    assert_eq!(t.vm.cpus, Some(2));
    assert_eq!(t.console_size, Some((40, 120)));
    let plan = t.into_plan(vec!["/l0".into()], boot());
    assert_eq!((plan.cpus, plan.memory_mib), (2, 301));
    assert_eq!(plan.hostname, "web-1");
    assert!(plan.process.tty);
    // Unlimited, tiny quota, no network namespace.
    s["linux"]["resources"]["memory"] = json!({"limit": -1});
    s["linux"]["resources"]["cpu"] = json!({"quota": 1000, "period": 100000});
    s["linux"]["namespaces"] = json!([{"type": "pid"}]);
    let t = translate(&s).unwrap();
    assert_eq!((t.vm.cpus, t.vm.memory_mib), (Some(1), None));
    assert_eq!(t.vm.network, NetworkMode::User);
    // Below the minimum.
    s["linux"]["resources"]["memory"] = json!({"limit": 16 * 1024 * 1024});
    assert!(err(&s).contains("below husk's minimum"), "{}", err(&s));
}

#[test]
fn file_bind_mounts_are_copied_and_directories_shared() {
    let (dir, b) = bundle(&ctr_spec());
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "10.0.0.1 db\n").unwrap();
    std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut s = ctr_spec();
    let mounts = s["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/etc/hosts", "type": "bind",
                       "source": hosts, "options": ["rbind", "ro"]}));
    // Relative to the bundle; a later mount at the same place wins.
    mounts.push(json!({"destination": "/etc/hosts", "source": "hosts",
                       "options": ["bind"]}));
    mounts.push(json!({"destination": "/dev/shm", "type": "bind",
                       "source": dir.path(), "options": ["rbind"]}));
    let spec: Spec = serde_json::from_value(s.clone()).unwrap();
    let t = Bundle::from_spec(b.unwrap().dir(), spec)
        .translate()
        .unwrap();
    assert_eq!(t.files.len(), 1);
    assert_eq!(t.files[0].path, "/etc/hosts");
    assert_eq!(t.files[0].content, b"10.0.0.1 db\n");
    assert_eq!(t.files[0].mode, 0o640);

    let with = |m: Value| {
        let mut s = ctr_spec();
        s["mounts"].as_array_mut().unwrap().push(m);
        let spec: Spec = serde_json::from_value(s).unwrap();
        let e = Bundle::from_spec(dir.path(), spec).translate().unwrap_err();
        husk_runtime::error_chain(&e)
    };
    let mut s = ctr_spec();
    s["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/data", "type": "bind", "source": dir.path(), "options": ["rbind", "ro"]}),
    );
    let spec: Spec = serde_json::from_value(s).unwrap();
    let t = Bundle::from_spec(dir.path(), spec).translate().unwrap();
    assert_eq!(
        t.binds,
        vec![husk_runtime::VolumeRequest::Bind {
            source: dir.path().display().to_string(),
            target: "/data".into(),
            read_only: true,
            create_missing: false,
        }]
    );
    let e = with(json!({"destination": "/mnt", "type": "ext4", "source": "/dev/sda"}));
    assert!(e.contains("type ext4 at /mnt"), "{e}");
    let e = with(
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                        "options": ["uid=1000"]}),
    );
    assert!(
        e.contains("tmpfs mount at /tmp: unsupported option \"uid=1000\""),
        "{e}"
    );
    for bad in ["size=1km", "size=", "mode=9", "mode=17777"] {
        let e = with(json!({"destination": "/tmp", "type": "tmpfs", "options": [bad]}));
        assert!(e.contains(bad), "{e}");
    }
    let e = with(json!({"destination": "/x", "type": "bind", "source": "/dev/null"}));
    assert!(e.contains("only regular files"), "{e}");
    let e = with(json!({"destination": "/x", "type": "bind", "source": "/nonexistent"}));
    assert!(e.contains("/nonexistent"), "{e}");
    let e = with(json!({"destination": "x/../y", "type": "bind", "source": "hosts"}));
    assert!(e.contains("destination"), "{e}");
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; husk_protocol::MAX_FILE_BYTES + 1]).unwrap();
    let e = with(json!({"destination": "/big", "type": "bind", "source": big}));
    assert!(e.contains("limited to"), "{e}");
}

#[test]
fn what_cannot_be_honoured_fails_with_its_name() {
    type Case = (&'static str, fn(&mut Value));
    let cases: Vec<Case> = vec![
        ("process.args is empty", |s| {
            s["process"]["args"] = json!([])
        }),
        ("not KEY=VALUE", |s| {
            s["process"]["env"] = json!(["NOEQUALS"])
        }),
        ("not KEY=VALUE", |s| s["process"]["env"] = json!(["=x"])),
        ("not an absolute path", |s| {
            s["process"]["cwd"] = json!("work")
        }),
        ("umask 0o1000", |s| {
            s["process"]["user"]["umask"] = json!(0o1000)
        }),
        ("NUL", |s| s["process"]["args"] = json!(["a\u{0}b"])),
        ("no process", |s| {
            s.as_object_mut().unwrap().remove("process");
        }),
        ("ociVersion", |s| s["ociVersion"] = json!("2.0.0")),
        ("root.readonly", |s| s["root"]["readonly"] = json!(true)),
        ("hooks", |s| {
            s["hooks"] = json!({"prestart": [{"path": "/bin/true"}]})
        }),
        ("domainname", |s| s["domainname"] = json!("example.com")),
        ("invalid hostname", |s| s["hostname"] = json!("a b")),
        ("existing net namespace /proc/1/ns/net", |s| {
            s["linux"]["namespaces"] = json!([{"type": "network", "path": "/proc/1/ns/net"}])
        }),
        ("uidMappings", |s| {
            s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}])
        }),
        (
            "device /dev/fuse",
            |s| {
                s["linux"]["devices"] =
                    json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}])
            },
        ),
        ("linux.sysctl \"net/ipv4/ip_forward\"", |s| {
            s["linux"]["sysctl"] = json!({"net/ipv4/ip_forward": "1"})
        }),
        (
            "type overlay at /",
            |s| s["mounts"] = json!([{"destination": "/", "type": "overlay", "source": "overlay"}]),
        ),
    ];
    for (want, mutate) in cases {
        let mut s = ctr_spec();
        mutate(&mut s);
        let e = err(&s);
        assert!(e.contains(want), "{want}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    // The default devices are fine.
    let mut s = ctr_spec();
    s["linux"]["devices"] = json!([{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]);
    translate(&s).unwrap();
}

#[test]
fn malformed_config_files_are_refused() {
    for text in [
        "",
        "{",
        r#"{"ociVersion": 1}"#,
        r#"{"ociVersion": "1.0.0", "process": {"cwd": "/", "user": {"uid": -1, "gid": 0}}}"#,
        r#"{"ociVersion": "1.0.0", "process": {"cwd": "/", "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": ["CAP_NOPE"]}}}"#,
        r#"{"ociVersion": "1.0.0", "process": {"cwd": "/", "user": {"uid": 0, "gid": 0},
            "rlimits": [{"type": "RLIMIT_NOPE", "hard": 1, "soft": 1}]}}"#,
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), text).unwrap();
        let e = Bundle::load(dir.path()).unwrap_err();
        assert!(matches!(e, BundleError::Parse { .. }), "{text}: {e}");
    }
    // Serde reads a struct from an empty array too: an empty spec.
    let (_d, b) = bundle(&json!([]));
    assert!(matches!(
        b.unwrap().translate(),
        Err(BundleError::Version(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Bundle::load(dir.path()),
        Err(BundleError::Read { .. })
    ));
    let huge = format!(
        r#"{{"ociVersion": "1.0.0", "x": "{}"}}"#,
        "a".repeat(MAX_CONFIG as usize)
    );
    std::fs::write(dir.path().join("config.json"), huge).unwrap();
    assert!(matches!(
        Bundle::load(dir.path()),
        Err(BundleError::TooLarge(_))
    ));
}

#[test]
fn root_dir_is_relative_to_the_bundle() {
    let (dir, b) = bundle(&ctr_spec());
    assert_eq!(b.unwrap().root_dir(), dir.path().join("rootfs"));
    let mut s = ctr_spec();
    s["root"]["path"] = json!("/abs/root");
    let (_d, b) = bundle(&s);
    assert_eq!(b.unwrap().root_dir(), Path::new("/abs/root"));
}

#[test]
fn lowerdirs_split_top_first_with_escapes() {
    assert_eq!(
        rootfs::split_lowerdir("/s/3/fs:/s/2/fs:/a\\:b"),
        [
            PathBuf::from("/s/3/fs"),
            PathBuf::from("/s/2/fs"),
            PathBuf::from("/a:b")
        ]
    );
    assert!(rootfs::split_lowerdir("").is_empty());
}

#[test]
fn rootfs_mounts_other_than_overlay_or_bind_are_refused() {
    let dirs = DiskDirs {
        cache: LayerCache::new("/nonexistent/cache"),
        scratch: "/nonexistent/scratch".into(),
    };
    let m = |kind: &str, options: &[&str]| RootfsMount {
        kind: kind.into(),
        source: "/nonexistent/src".into(),
        options: options.iter().map(|s| s.to_string()).collect(),
    };
    let e = rootfs::from_mounts(&[m("zfs", &[])], &dirs).unwrap_err();
    assert!(e.to_string().contains("\"zfs\"") && e.to_string().contains("snapshotter"));
    let e = rootfs::from_mounts(&[], &dirs).unwrap_err();
    assert!(matches!(e, rootfs::RootfsError::Several(0)));
    let e = rootfs::from_mounts(&[m("overlay", &["upperdir=/u"])], &dirs).unwrap_err();
    assert!(matches!(e, rootfs::RootfsError::NoLower));
    let e = rootfs::from_mounts(&[m("bind", &["rbind"])], &dirs).unwrap_err();
    assert!(matches!(e, rootfs::RootfsError::NotADirectory(_)));
    let e = rootfs::from_dir(Path::new("/nonexistent/rootfs"), &dirs).unwrap_err();
    assert!(matches!(e, rootfs::RootfsError::NotADirectory(_)));
}

/// Conversion with the real mkfs.erofs (as root, where it is installed).
#[test]
fn snapshots_convert_once_and_upper_layers_only_when_used() {
    let have_mkfs = std::process::Command::new("mkfs.erofs")
        .arg("--help")
        .output()
        .is_ok();
    if !rustix::process::geteuid().is_root() || !have_mkfs {
        eprintln!("skipped: needs root and mkfs.erofs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let snap = |n: &str| {
        let d = tmp.path().join(n);
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(d.join("etc").join(n), n).unwrap();
        d
    };
    let (l1, l2, upper) = (snap("l1"), snap("l2"), tmp.path().join("upper"));
    std::fs::create_dir(&upper).unwrap();
    let dirs = DiskDirs {
        cache: LayerCache::new(tmp.path().join("cache")),
        scratch: tmp.path().join("scratch"),
    };
    let lower = format!("lowerdir={}:{}", l2.display(), l1.display());
    let mount = RootfsMount {
        kind: "overlay".into(),
        source: "overlay".into(),
        options: vec![lower, format!("upperdir={}", upper.display())],
    };
    let first = rootfs::from_mounts(std::slice::from_ref(&mount), &dirs).unwrap();
    assert_eq!(first.disks.len(), 2);
    assert_eq!(first.converted, 2);
    assert_eq!(
        first.disks[0],
        dirs.cache.disk(&l1).unwrap().path,
        "bottom first"
    );
    let second = rootfs::from_mounts(std::slice::from_ref(&mount), &dirs).unwrap();
    assert_eq!((second.converted, &second.disks), (0, &first.disks));
    std::fs::write(upper.join("new"), "x").unwrap();
    let third = rootfs::from_mounts(&[mount], &dirs).unwrap();
    assert_eq!(third.converted, 1);
    assert_eq!(third.disks.len(), 3);
    assert!(third.disks[2].starts_with(&dirs.scratch));
    // A plain directory: one uncached disk.
    let plain = rootfs::from_dir(&l1, &dirs).unwrap();
    assert_eq!(plain.converted, 1);
    assert!(plain.disks[0].starts_with(&dirs.scratch));
    // The snapshots still exist: nothing to prune; l2 removed: its disk goes.
    assert_eq!(dirs.cache.prune().unwrap(), 0);
    std::fs::remove_dir_all(&l2).unwrap();
    assert_eq!(dirs.cache.prune().unwrap(), 1);
    assert!(first.disks[0].is_file() && !first.disks[1].exists());
}

#[test]
fn every_advertised_tmpfs_flag_is_accepted() {
    for flag in mounts::TMPFS_FLAGS {
        let mut s = ctr_spec();
        s["mounts"][7]["options"] = json!([flag]);
        let t = translate(&s).unwrap_or_else(|e| panic!("{flag}: {e}"));
        assert_eq!(t.tmpfs[0].read_only, flag == "ro", "{flag}");
    }
}

#[test]
fn podmans_umask_and_sysctl_are_honoured() {
    let mut s = ctr_spec();
    s["process"]["user"]["umask"] = json!(18);
    s["linux"]["sysctl"] = json!({"net.ipv4.ping_group_range": "0 0", "kernel.shmmni": "8192"});
    let t = translate(&s).unwrap();
    assert_eq!(t.process.security.umask, Some(0o022));
    let keys: Vec<&str> = t.vm.sysctls.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["kernel.shmmni", "net.ipv4.ping_group_range"]);
    let plan = t.into_plan(vec!["/l0".into()], boot());
    assert_eq!(plan.sysctls[1].value, "0 0");
    plan.check().unwrap();
}

#[test]
fn ambient_capabilities_the_kernel_cannot_raise_are_left_out_as_runc_does() {
    let mut s = ctr_spec();
    // `runc spec`: ambient without inheritable.
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    s["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps});
    let c = translate(&s)
        .unwrap()
        .process
        .security
        .capabilities
        .unwrap();
    assert_eq!(c.ambient, 0);
    assert_eq!(c.permitted, 1 << 5 | 1 << 10 | 1 << 29);
    s["process"]["capabilities"]["inheritable"] = json!(["CAP_KILL"]);
    let c = translate(&s)
        .unwrap()
        .process
        .security
        .capabilities
        .unwrap();
    assert_eq!(c.ambient, 1 << 5);
}
