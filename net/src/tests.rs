//! Network lifecycle tests with the real passt (Debian's), on 127.0.0.1.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use super::*;

fn passt_installed() -> bool {
    if passt::find_passt().is_ok() {
        return true;
    }
    eprintln!("skipped: passt is not installed (apt-get install passt)");
    false
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; check its state too.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn user(ports: &str) -> NetworkOptions {
    NetworkOptions {
        ports: ports
            .split(',')
            .filter(|s| !s.is_empty())
            .flat_map(|s| parse_port_spec(s).unwrap())
            .collect(),
        ..NetworkOptions::default()
    }
}

/// Reads frames from passt until an IPv4 TCP SYN shows up; returns
/// (source ip, destination ip, destination port).
fn wait_for_syn(stream: &std::os::unix::net::UnixStream) -> ([u8; 4], [u8; 4], u16) {
    let mut s = stream;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..50 {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut f).unwrap();
        let is_tcp_syn =
            f.len() >= 54 && f[12..14] == [0x08, 0x00] && f[23] == 6 && f[14 + 20 + 13] & 0x02 != 0;
        if is_tcp_syn {
            let src = [f[26], f[27], f[28], f[29]];
            let dst = [f[30], f[31], f[32], f[33]];
            return (src, dst, u16::from_be_bytes([f[36], f[37]]));
        }
    }
    panic!("no SYN from passt");
}

#[test]
fn passt_listens_forwards_and_stops() {
    if !passt_installed() {
        return;
    }
    let mut net = Network::start(user("127.0.0.1::80,127.0.0.1::53/udp")).unwrap();
    let ports = net.ports().to_vec();
    assert_eq!(ports.len(), 2);
    let tcp = ports.iter().find(|p| p.proto == Proto::Tcp).unwrap();
    assert_ne!(tcp.host_port, 0);
    assert!(ports::port_is_bound(tcp.host_port, Proto::Tcp));
    let udp = ports.iter().find(|p| p.proto == Proto::Udp).unwrap();
    assert!(ports::port_is_bound(udp.host_port, Proto::Udp));
    let pid = net.passt_pid().unwrap();
    assert!(alive(pid));

    // A host connection becomes a SYN to the guest's port 80, from the
    // gateway address.
    let stream = match net.net_config().unwrap().backend {
        vmm::NetBackend::Stream(s) => s,
        other => panic!("unexpected backend {other:?}"),
    };
    let _client = TcpStream::connect(("127.0.0.1", tcp.host_port)).unwrap();
    let (src, dst, port) = wait_for_syn(&stream);
    assert_eq!((src, dst, port), ([10, 0, 2, 2], [10, 0, 2, 15], 80));

    let spec = net.spec().unwrap();
    assert_eq!(spec.ipv4, "10.0.2.15/24");
    assert_eq!(spec.gateway4, "10.0.2.2");
    assert_eq!(spec.mtu, 65520);
    assert_eq!(spec.mac.len(), 17);
    assert_eq!(
        net.resolv_conf().unwrap().lines().next(),
        Some("nameserver 10.0.2.3")
    );
    assert_eq!(net.hosts("web"), ["10.0.2.15\tweb"]);

    net.stop();
    assert!(!alive(pid), "passt stopped");
    assert!(!ports::port_is_bound(tcp.host_port, Proto::Tcp));
    assert!(net.net_config().is_none());
    net.stop();
}

#[test]
fn passt_exits_when_the_vmm_end_closes() {
    if !passt_installed() {
        return;
    }
    let mut net = Network::start(user("")).unwrap();
    let pid = net.passt_pid().unwrap();
    let Backend::Passt(p) = &mut net.backend else {
        panic!("passt backend expected");
    };
    let mut child = p.take_child_for_test().unwrap();
    // Closes our end of the socket pair without signalling passt.
    drop(net);
    let status = (0..500).find_map(|_| {
        std::thread::sleep(Duration::from_millis(10));
        child.try_wait().unwrap()
    });
    assert!(status.is_some(), "passt {pid} exited by itself");
}

#[test]
fn two_networks_at_once() {
    if !passt_installed() {
        return;
    }
    let a = Network::start(user("127.0.0.1::80")).unwrap();
    let b = Network::start(user("127.0.0.1::80")).unwrap();
    assert_ne!(a.ports()[0].host_port, b.ports()[0].host_port);
    assert_ne!(a.passt_pid(), b.passt_pid());
    assert_ne!(a.spec().unwrap().mac, b.spec().unwrap().mac);
}

#[test]
fn port_in_use_is_named_and_nothing_starts() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = Network::start(user(&format!("127.0.0.1:{port}:80")))
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        format!("host port 127.0.0.1:{port}/tcp is already in use")
    );
}

#[test]
fn missing_passt_is_explained() {
    let opts = NetworkOptions {
        passt: Some("/nonexistent/passt".into()),
        ..NetworkOptions::default()
    };
    let err = Network::start(opts).err().unwrap();
    assert_eq!(err.to_string(), "passt not found: apt-get install passt");
}

#[test]
fn none_mode_and_options() {
    let net = Network::start(NetworkOptions {
        mode: NetworkMode::None,
        ..NetworkOptions::default()
    })
    .unwrap();
    assert!(net.spec().is_none() && net.net_config().is_none());
    assert!(net.resolv_conf().is_none());
    let err = Network::start(NetworkOptions {
        mode: NetworkMode::None,
        ..user("80")
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("--network none"));
    assert_eq!("none".parse::<NetworkMode>().unwrap(), NetworkMode::None);
    assert_eq!("passt".parse::<NetworkMode>().unwrap(), NetworkMode::User);
    assert_eq!(
        "tap:t0".parse::<NetworkMode>().unwrap(),
        NetworkMode::Tap(Some("t0".into()))
    );
    assert!("tap:a/b".parse::<NetworkMode>().is_err());
    assert!("host".parse::<NetworkMode>().is_err());
    for mode in [
        NetworkMode::User,
        NetworkMode::None,
        NetworkMode::Tap(None),
        NetworkMode::Tap(Some("t0".into())),
    ] {
        let json = serde_json::to_string(&mode).unwrap();
        assert_eq!(json, format!("\"{mode}\""));
        assert_eq!(serde_json::from_str::<NetworkMode>(&json).unwrap(), mode);
    }
    // Configs written before the mode was typed hold "" for the default.
    assert_eq!(
        serde_json::from_str::<NetworkMode>("\"\"").unwrap(),
        NetworkMode::User
    );
    assert!(serde_json::from_str::<NetworkMode>("\"host\"").is_err());
    let m = random_mac();
    assert_eq!(m[0], 0x02);
}

#[test]
fn resolv_conf_content() {
    let host = "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch example.org\noptions edns0\n";
    assert_eq!(
        resolv_conf_for(host, Some(DNS_IP)),
        "nameserver 10.0.2.3\nsearch example.org\noptions edns0\n"
    );
    assert_eq!(
        resolv_conf_for(host, None),
        "nameserver 192.0.2.53\nsearch example.org\noptions edns0\n"
    );
    // Only loopback (or unparsable) servers: public ones instead.
    assert_eq!(
        resolv_conf_for(
            "nameserver 127.0.0.1\nnameserver ::1\nnameserver x\nsearch lan\n",
            None
        ),
        "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch lan\n"
    );
}
