use super::*;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn caps(add: &[&str], drop: &[&str], privileged: bool) -> Option<Capabilities> {
    let (add, drop) = (strings(add), strings(drop));
    let raw = RawSecurityFlags {
        cap_add: &add,
        cap_drop: &drop,
        privileged,
        ..RawSecurityFlags::default()
    };
    SecurityFlags::parse(raw).unwrap().capabilities()
}

fn mask(names: &[&str]) -> u64 {
    husk_protocol::capability_mask(names).unwrap()
}

const DEFAULT: u64 = 0xa80425fb;

#[test]
fn capability_flags_follow_dockers_order() {
    assert_eq!(caps(&[], &[], false), None, "no flag: the agent decides");
    let set = |m| Some(Capabilities::from_mask(m));
    assert_eq!(caps(&[], &[], true), Some(Capabilities::all()));
    assert_eq!(
        caps(&["NET_ADMIN"], &["ALL"], true),
        Some(Capabilities::all()),
        "--privileged wins"
    );
    assert_eq!(
        caps(&["NET_BIND_SERVICE"], &["ALL"], false),
        set(mask(&["NET_BIND_SERVICE"]))
    );
    assert_eq!(caps(&[], &["all"], false), set(0));
    assert_eq!(
        caps(&["sys_admin", "CAP_NET_ADMIN"], &["chown"], false),
        set((DEFAULT & !1) | mask(&["SYS_ADMIN", "NET_ADMIN"]))
    );
    // Drop, then add: a capability both dropped and added is kept.
    assert_eq!(caps(&["CHOWN"], &["CHOWN"], false), set(DEFAULT));
    // --cap-add ALL: everything but the dropped ones.
    assert_eq!(
        caps(&["ALL"], &["SYS_ADMIN"], false),
        set(Capabilities::ALL_MASK & !mask(&["SYS_ADMIN"]))
    );
}

#[test]
fn bad_capabilities_are_errors() {
    let add = strings(&["NET_ADMIN", "CAP_NOPE"]);
    let raw = RawSecurityFlags {
        cap_add: &add,
        ..RawSecurityFlags::default()
    };
    let err = SecurityFlags::parse(raw).unwrap_err();
    assert_eq!(err, FlagError::Capability("CAP_NOPE".into()));
    assert!(err.to_string().contains("invalid capability \"CAP_NOPE\""));
    assert!("".parse::<CapFlag>().is_err());
}

#[test]
fn cap_flags_print_and_store_normalized() {
    let flags: Vec<CapFlag> = ["all", "net_admin", "CAP_KILL"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let json = serde_json::to_string(&flags).unwrap();
    assert_eq!(json, r#"["ALL","CAP_NET_ADMIN","CAP_KILL"]"#);
    let back: Vec<CapFlag> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, flags);
}

#[test]
fn ulimits_as_docker_writes_them() {
    let nofile = |soft, hard| Rlimit {
        resource: RlimitResource::RlimitNofile,
        soft,
        hard,
    };
    assert_eq!(parse_ulimit("nofile=100:200").unwrap(), nofile(100, 200));
    assert_eq!(parse_ulimit("nofile=100").unwrap(), nofile(100, 100));
    assert_eq!(
        parse_ulimit("nofile=100:unlimited").unwrap(),
        nofile(100, u64::MAX)
    );
    assert_eq!(
        parse_ulimit("nofile=-1").unwrap(),
        nofile(u64::MAX, u64::MAX)
    );
    assert_eq!(
        parse_ulimit("RLIMIT_CORE=0").unwrap().resource,
        RlimitResource::RlimitCore
    );
    for bad in [
        "nofile",
        "nofile=",
        "nofile=x",
        "nofile=1:2:3",
        "nofile=-2",
        "nofile=200:100",
        "nofile=unlimited:5",
        "files=1",
        "nofile=99999999999999999999",
    ] {
        let err = parse_ulimit(bad).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("invalid --ulimit {bad:?}: ")),
            "{err}"
        );
    }
}

#[test]
fn later_ulimits_replace_earlier_ones() {
    let u = strings(&["nofile=1:2", "nproc=5", "nofile=3:4"]);
    let raw = RawSecurityFlags {
        ulimits: &u,
        ..RawSecurityFlags::default()
    };
    let flags = SecurityFlags::parse(raw).unwrap();
    let got: Vec<(String, u64, u64)> = flags
        .ulimits
        .iter()
        .map(|l| (l.resource.to_string(), l.soft, l.hard))
        .collect();
    assert_eq!(got, [("nproc".into(), 5, 5), ("nofile".into(), 3, 4)]);
}

#[test]
fn security_opts_and_group_add() {
    for (opt, want) in [
        ("no-new-privileges", true),
        ("no-new-privileges=true", true),
        ("no-new-privileges:true", true),
        ("no-new-privileges=false", false),
        ("no-new-privileges:false", false),
    ] {
        assert_eq!(parse_security_opt(opt), Ok(want), "{opt}");
    }
    for bad in [
        "seccomp=unconfined",
        "apparmor=unconfined",
        "label=disable",
        "no-new-privileges=yes",
        "",
    ] {
        let err = parse_security_opt(bad).unwrap_err();
        assert_eq!(err, FlagError::SecurityOpt(bad.into()));
    }
    assert_eq!(
        parse_security_opt("seccomp=unconfined")
            .unwrap_err()
            .to_string(),
        "unsupported --security-opt \"seccomp=unconfined\": \
         husk supports no-new-privileges[=true|false]"
    );
    assert_eq!(parse_group_add("4321"), Ok(4321));
    assert_eq!(parse_group_add("0"), Ok(0));
    for bad in ["staff", "", "-1", "4294967296", "12a"] {
        assert_eq!(parse_group_add(bad), Err(FlagError::GroupAdd(bad.into())));
    }
}

#[test]
fn flags_become_the_process_settings() {
    let (add, drop, u, opts, groups) = (
        strings(&["NET_BIND_SERVICE"]),
        strings(&["ALL"]),
        strings(&["nofile=100:200"]),
        strings(&["no-new-privileges"]),
        strings(&["4321", "50"]),
    );
    let flags = SecurityFlags::parse(RawSecurityFlags {
        cap_add: &add,
        cap_drop: &drop,
        privileged: false,
        ulimits: &u,
        security_opts: &opts,
        group_add: &groups,
    })
    .unwrap();
    let sec = flags.process_security();
    assert_eq!(sec.additional_gids, [4321, 50]);
    assert_eq!(sec.rlimits, [parse_ulimit("nofile=100:200").unwrap()]);
    assert_eq!(sec.capabilities, Some(Capabilities::from_mask(1 << 10)));
    assert!(sec.no_new_privileges);
    assert_eq!(flags.security_opt(), ["no-new-privileges"]);
    // Stored in config.json and read back as they were.
    let json = serde_json::to_string(&flags).unwrap();
    assert_eq!(serde_json::from_str::<SecurityFlags>(&json).unwrap(), flags);
    // Configs written before these flags existed read as none.
    assert_eq!(
        serde_json::from_str::<SecurityFlags>("{}").unwrap(),
        SecurityFlags::default()
    );
    assert_eq!(
        SecurityFlags::default().process_security(),
        ProcessSecurity::default()
    );
    assert_eq!(ulimit_value(u64::MAX), -1);
    assert_eq!(ulimit_value(200), 200);
}
