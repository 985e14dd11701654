use super::*;

#[test]
fn the_table_follows_linux_numbering() {
    assert_eq!(Capability::LAST.bit(), 40);
    assert_eq!(Capability::LAST.name(), "CAP_CHECKPOINT_RESTORE");
    let known = [
        (0, "CAP_CHOWN"),
        (8, "CAP_SETPCAP"),
        (10, "CAP_NET_BIND_SERVICE"),
        (21, "CAP_SYS_ADMIN"),
        (24, "CAP_SYS_RESOURCE"),
        (31, "CAP_SETFCAP"),
        (38, "CAP_PERFMON"),
        (39, "CAP_BPF"),
    ];
    for (bit, name) in known {
        assert_eq!(Capability::new(bit).unwrap().name(), name);
        assert_eq!(name.parse::<Capability>().unwrap().bit(), bit);
    }
    assert_eq!(Capability::new(41), None);
    assert_eq!(Capability::all().count(), 41);
    assert!(CAPABILITY_NAMES.iter().all(|n| n.starts_with("CAP_")));
}

#[test]
fn names_parse_with_or_without_prefix_in_any_case() {
    for name in ["CAP_NET_ADMIN", "NET_ADMIN", "net_admin", "cap_Net_Admin"] {
        let cap: Capability = name.parse().unwrap();
        assert_eq!(cap.to_string(), "CAP_NET_ADMIN", "{name}");
    }
    for bad in [
        "",
        "CAP_",
        "ALL",
        "CAP_ALL",
        "NET ADMIN",
        "CAP_NOPE",
        "CAP_CAP_CHOWN",
    ] {
        assert_eq!(
            bad.parse::<Capability>(),
            Err(SecurityParseError::UnknownCapability(bad.into())),
            "{bad:?}"
        );
    }
    let err = "CAP_NOPE".parse::<Capability>().unwrap_err();
    assert_eq!(err.to_string(), "unknown capability \"CAP_NOPE\"");
}

#[test]
fn capabilities_serialize_as_names() {
    let cap: Capability = "sys_admin".parse().unwrap();
    assert_eq!(serde_json::to_string(&cap).unwrap(), "\"CAP_SYS_ADMIN\"");
    let back: Capability = serde_json::from_str("\"CAP_SYS_ADMIN\"").unwrap();
    assert_eq!(back, cap);
    assert!(serde_json::from_str::<Capability>("\"CAP_NOPE\"").is_err());
}

#[test]
fn masks_from_names_reject_unknown_ones() {
    assert_eq!(
        capability_mask(["CAP_CHOWN", "CAP_KILL"]).unwrap(),
        0b10_0001
    );
    assert_eq!(capability_mask(Vec::<String>::new()).unwrap(), 0);
    assert_eq!(
        capability_mask(["CAP_CHOWN", "CAP_NOPE"]),
        Err(SecurityParseError::UnknownCapability("CAP_NOPE".into()))
    );
    assert_eq!(
        capability_names(0x400 | 1 | (1 << 63)),
        ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]
    );
}

#[test]
fn docker_default_and_all() {
    let d = Capabilities::docker_default();
    assert_eq!(d.bounding, 0xa80425fb);
    assert_eq!((d.effective, d.permitted), (d.bounding, d.bounding));
    assert_eq!((d.inheritable, d.ambient), (0, 0));
    assert_eq!(Capability::in_mask(d.bounding).count(), 14);
    let all = Capabilities::all();
    assert_eq!(all.bounding, 0x1ff_ffff_ffff);
    assert_eq!(all.bounding, Capabilities::ALL_MASK);
    assert_eq!((all.effective, all.permitted), (all.bounding, all.bounding));
    assert_eq!((all.inheritable, all.ambient), (0, 0));
}

#[test]
fn rlimit_names_of_oci_and_docker() {
    for (name, want) in [
        ("RLIMIT_NOFILE", RlimitResource::RlimitNofile),
        ("nofile", RlimitResource::RlimitNofile),
        ("NOFILE", RlimitResource::RlimitNofile),
        ("rlimit_nproc", RlimitResource::RlimitNproc),
        ("as", RlimitResource::RlimitAs),
        ("RLIMIT_RTTIME", RlimitResource::RlimitRttime),
    ] {
        assert_eq!(name.parse::<RlimitResource>(), Ok(want), "{name}");
    }
    for bad in ["", "RLIMIT_", "files", "RLIMIT_NOFILES", "nofile "] {
        assert_eq!(
            bad.parse::<RlimitResource>(),
            Err(SecurityParseError::UnknownRlimit(bad.into()))
        );
    }
    assert_eq!(RlimitResource::all().count(), 16);
    for r in RlimitResource::all() {
        assert_eq!(r.docker_name().parse::<RlimitResource>(), Ok(r));
        assert_eq!(r.linux_name().parse::<RlimitResource>(), Ok(r));
        // The wire names are the Linux ones.
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, format!("\"{}\"", r.linux_name()));
    }
    assert_eq!(RlimitResource::RlimitMemlock.to_string(), "memlock");
}
