use super::*;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn dns_flags_replace_their_lines_only() {
    let host = "nameserver 10.0.2.3\nsearch corp.example\noptions ndots:5\n";
    let none = DnsConfig::default();
    assert_eq!(none.apply(host), host);
    let servers = DnsConfig::parse(&strings(&["1.1.1.1", "2606:4700::1111"]), &[], &[]).unwrap();
    assert_eq!(
        servers.apply(host),
        "nameserver 1.1.1.1\nnameserver 2606:4700::1111\nsearch corp.example\noptions ndots:5\n"
    );
    let all = DnsConfig::parse(
        &strings(&["9.9.9.9"]),
        &strings(&["a.example", "b.example"]),
        &strings(&["ndots:2", "timeout:1"]),
    )
    .unwrap();
    assert_eq!(
        all.apply(host),
        "nameserver 9.9.9.9\nsearch a.example b.example\noptions ndots:2 timeout:1\n"
    );
    let cleared = DnsConfig::parse(&[], &strings(&["."]), &[]).unwrap();
    assert_eq!(
        cleared.apply(host),
        "nameserver 10.0.2.3\noptions ndots:5\n"
    );
}

#[test]
fn bad_dns_values_are_refused() {
    let err = DnsConfig::parse(&strings(&["1.1.1"]), &[], &[]).unwrap_err();
    assert_eq!(err.to_string(), "1.1.1 is not an ip address");
    assert!(DnsConfig::parse(&[], &strings(&["a b"]), &[]).is_err());
    assert!(DnsConfig::parse(&[], &[], &strings(&["x\ny"])).is_err());
    assert!(DnsConfig::parse(&[], &[], &strings(&[""])).is_err());
}

#[test]
fn labels_parse_and_the_container_wins() {
    assert_eq!(parse_label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
    assert_eq!(parse_label("flag").unwrap(), ("flag".into(), String::new()));
    assert!(parse_label("=v").is_err());
    assert!(parse_label("").is_err());
    let file = parse_label_file("# comment\n\nk1=v1\n  k2  \n").unwrap();
    assert_eq!(
        file,
        vec![("k1".into(), "v1".into()), ("k2".into(), String::new())]
    );
    let image: BTreeMap<String, String> = [
        ("k1".to_string(), "image".to_string()),
        ("only".into(), "i".into()),
    ]
    .into();
    let merged = merge_labels(
        &image,
        &[("k1".into(), "first".into()), ("k1".into(), "ctr".into())],
    );
    assert_eq!(merged["k1"], "ctr");
    assert_eq!(merged["only"], "i");
}

#[test]
fn tmpfs_values_with_docker_defaults() {
    let m = parse_tmpfs("/run").unwrap();
    assert_eq!(m.target, "/run");
    assert!(m.nosuid && m.nodev && m.noexec && !m.read_only);
    assert_eq!((m.size, m.mode), (None, None));
    let m = parse_tmpfs("/cache/:rw,exec,size=64m,mode=1777").unwrap();
    assert_eq!(m.target, "/cache");
    assert!(!m.noexec);
    assert_eq!(m.size.as_deref(), Some("65536k"));
    assert_eq!(m.mode, Some(0o1777));
    for bad in [
        "run",
        "/",
        "/a/../b",
        "/x:size=lots",
        "/x:mode=99",
        "/x:bogus",
        "/x:uid=1",
    ] {
        assert!(parse_tmpfs(bad).is_err(), "{bad}");
    }
}

#[test]
fn shm_size_becomes_a_dev_shm_tmpfs() {
    assert_eq!(RunFlags::default().tmpfs(), None);
    let flags = RunFlags {
        shm_size: Some(256 << 20),
        ..RunFlags::default()
    };
    let m = flags.tmpfs().unwrap();
    assert_eq!(m.target, "/dev/shm");
    assert_eq!(m.size.as_deref(), Some("262144k"));
    assert!(!flags.is_default());
}
