//! Unit tests of the egress policy on crafted frames.

use super::*;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const GW_MAC: [u8; 6] = [0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55];
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

fn policy() -> EgressPolicy {
    EgressPolicy {
        blocked: vec![
            Ipv4Net::host(GATEWAY),
            "127.0.0.0/8".parse().unwrap(),
            "0.0.0.0/8".parse().unwrap(),
        ],
    }
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = GW_MAC.to_vec();
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(proto: u8, dst: Ipv4Addr, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    h.extend_from_slice(&GUEST.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(l4);
    h
}

/// A TCP segment 40000 -> `port` (seq 1000, ack 7) with `flags`.
fn tcp(flags: u8, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = 40000u16.to_be_bytes().to_vec();
    t.extend_from_slice(&port.to_be_bytes());
    t.extend_from_slice(&1000u32.to_be_bytes());
    t.extend_from_slice(&7u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

fn tcp_frame(dst: Ipv4Addr, flags: u8, payload: &[u8]) -> Vec<u8> {
    eth(0x0800, &ipv4(6, dst, &tcp(flags, 8080, payload)))
}

fn udp_frame(dst: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut u = 5353u16.to_be_bytes().to_vec();
    u.extend_from_slice(&port.to_be_bytes());
    u.extend_from_slice(&[0, 12, 0, 0, 1, 2, 3, 4]);
    eth(0x0800, &ipv4(17, dst, &u))
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&GUEST_MAC);
    a.extend_from_slice(&GUEST.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    eth(0x0806, &a)
}

#[test]
fn ranges_parse_mask_and_match() {
    let net: Ipv4Net = "127.1.2.3/8".parse().unwrap();
    assert_eq!(net.to_string(), "127.0.0.0/8");
    assert!(net.contains(Ipv4Addr::new(127, 255, 0, 1)));
    assert!(!net.contains(Ipv4Addr::new(128, 0, 0, 1)));
    let all: Ipv4Net = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
    let one: Ipv4Net = "10.0.2.2".parse().unwrap();
    assert_eq!(one, Ipv4Net::host(GATEWAY));
    assert!(!one.contains(DNS));
    for bad in ["10.0.2.2/33", "10.0.2/24", "x", "10.0.2.2/", ""] {
        assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
    }
    let json = serde_json::to_string(&policy()).unwrap();
    assert_eq!(
        json,
        r#"{"blocked":["10.0.2.2/32","127.0.0.0/8","0.0.0.0/8"]}"#
    );
    assert_eq!(
        serde_json::from_str::<EgressPolicy>(&json).unwrap(),
        policy()
    );
    assert!(serde_json::from_str::<EgressPolicy>(r#"{"blocked":["1.2.3.4/40"]}"#).is_err());
    assert_eq!(
        serde_json::from_str::<EgressPolicy>("{}").unwrap(),
        EgressPolicy::default()
    );
}

#[test]
fn arp_dns_and_other_destinations_pass() {
    let p = policy();
    assert_eq!(p.check(&arp_request(GATEWAY)), Verdict::Pass);
    assert_eq!(p.check(&udp_frame(DNS, 53)), Verdict::Pass);
    assert_eq!(p.check(&tcp_frame(DNS, TCP_SYN, b"")), Verdict::Pass);
    assert_eq!(
        p.check(&tcp_frame(Ipv4Addr::new(93, 184, 216, 34), TCP_SYN, b"")),
        Verdict::Pass
    );
    assert_eq!(
        p.check(&udp_frame(Ipv4Addr::new(10, 0, 2, 255), 9)),
        Verdict::Pass
    );
    // IPv6 (even ::1) is not the policy's business.
    assert_eq!(p.check(&eth(0x86dd, &[0x60; 40])), Verdict::Pass);
}

#[test]
fn traffic_to_blocked_addresses_is_refused() {
    let p = policy();
    assert_eq!(p.check(&udp_frame(GATEWAY, 53)), Verdict::Drop);
    let ping = eth(0x0800, &ipv4(1, GATEWAY, &[8, 0, 0, 0, 0, 1, 0, 1]));
    assert_eq!(p.check(&ping), Verdict::Drop);
    for dst in [GATEWAY, Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED] {
        assert!(matches!(
            p.check(&tcp_frame(dst, TCP_SYN, b"")),
            Verdict::Reset(_)
        ));
    }
    // A later fragment has no TCP header: dropped.
    let mut frag = ipv4(6, GATEWAY, &[0; 24]);
    frag[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
    assert_eq!(p.check(&eth(0x0800, &frag)), Verdict::Drop);
    // An open policy passes everything, uninspected.
    let open = EgressPolicy::default();
    assert_eq!(open.check(&udp_frame(GATEWAY, 53)), Verdict::Pass);
    assert_eq!(open.check(&[0x08]), Verdict::Pass);
}

#[test]
fn vlan_tagged_frames_are_looked_into() {
    let p = policy();
    let inner = ipv4(17, GATEWAY, &[0; 8]);
    let mut tagged = vec![0, 5, 0x08, 0x00];
    tagged.extend_from_slice(&inner);
    assert_eq!(p.check(&eth(0x8100, &tagged)), Verdict::Drop);
    let mut qinq = vec![0, 5, 0x81, 0x00, 0, 6, 0x08, 0x00];
    qinq.extend_from_slice(&inner);
    assert_eq!(p.check(&eth(0x88a8, &qinq)), Verdict::Drop);
    let mut triple = vec![0, 5, 0x81, 0x00, 0, 6, 0x81, 0x00, 0, 7, 0x08, 0x00];
    triple.extend_from_slice(&ipv4(17, DNS, &[0; 8]));
    assert_eq!(p.check(&eth(0x88a8, &triple)), Verdict::Drop);
    let mut arp = vec![0, 5];
    arp.extend_from_slice(&arp_request(GATEWAY)[12..]);
    assert_eq!(p.check(&eth(0x8100, &arp)), Verdict::Pass);
}

#[test]
fn short_and_malformed_frames_never_panic() {
    let p = policy();
    let good = tcp_frame(GATEWAY, TCP_SYN, b"hello");
    // No complete ethertype, a cut IPv4 header or a cut TCP header: all
    // dropped (fail closed), none answered.
    for len in 0..good.len() {
        assert_eq!(p.check(&good[..len]), Verdict::Drop, "{len}");
    }
    // Version 6 in an IPv4 frame, an IHL below 5, an IHL past the end.
    for first in [0x65, 0x44, 0x4f] {
        let mut f = good.clone();
        f[14] = first;
        assert_eq!(p.check(&f), Verdict::Drop, "{first:#x}");
    }
    // A total length below the header's: dropped.
    let mut f = good.clone();
    f[16..18].copy_from_slice(&19u16.to_be_bytes());
    assert_eq!(p.check(&f), Verdict::Drop);
    // Ethernet padding after the packet is fine.
    let mut padded = tcp_frame(GATEWAY, TCP_SYN, b"");
    padded.extend_from_slice(&[0; 6]);
    assert!(matches!(p.check(&padded), Verdict::Reset(_)));
    // A TCP data offset below 5 or past the end: dropped, no reset.
    for off in [0x10, 0xf0] {
        let mut f = tcp_frame(GATEWAY, TCP_SYN, b"");
        f[14 + 20 + 12] = off;
        assert_eq!(p.check(&f), Verdict::Drop);
    }
    // A SYN with RST set is no connection request: passt gets it.
    assert_eq!(
        p.check(&tcp_frame(GATEWAY, TCP_SYN | TCP_RST, b"")),
        Verdict::Pass
    );
    // Random bytes.
    let mut x: u32 = 0x1234_5678;
    for len in 0..200 {
        let f: Vec<u8> = (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i == 12 {
                    8
                } else {
                    x as u8
                }
            })
            .collect();
        let _ = p.check(&f);
    }
}

/// Parses a reset frame: (ip src, ip dst, sport, dport, seq, ack, flags).
fn parse_reset(f: &[u8]) -> (Ipv4Addr, Ipv4Addr, u16, u16, u32, u32, u8) {
    assert_eq!(f.len(), 60);
    assert_eq!(&f[0..6], &GUEST_MAC);
    assert_eq!(&f[6..12], &GW_MAC);
    assert_eq!(&f[12..14], &[0x08, 0x00]);
    let ip = &f[14..34];
    assert_eq!(fold(ones_sum(ip)), 0xffff, "IPv4 checksum");
    assert_eq!(
        (ip[0], ip[9], u16::from_be_bytes([ip[2], ip[3]])),
        (0x45, 6, 40)
    );
    let t = &f[34..54];
    let pseudo = ones_sum(&ip[12..20]) + 6 + 20;
    assert_eq!(fold(pseudo + ones_sum(t)), 0xffff, "TCP checksum");
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (
        Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        u16::from_be_bytes([t[0], t[1]]),
        u16::from_be_bytes([t[2], t[3]]),
        be32(&t[4..8]),
        be32(&t[8..12]),
        t[13],
    )
}

#[test]
fn a_blocked_syn_is_answered_with_a_reset() {
    let Verdict::Reset(f) = policy().check(&tcp_frame(GATEWAY, TCP_SYN, b"")) else {
        panic!("no reset");
    };
    assert_eq!(
        parse_reset(&f),
        (GATEWAY, GUEST, 8080, 40000, 0, 1001, TCP_RST | TCP_ACK)
    );
    // A SYN with data and FIN: ack = seq + SYN + data + FIN.
    let Verdict::Reset(f) = policy().check(&tcp_frame(GATEWAY, TCP_SYN | TCP_FIN, b"abc")) else {
        panic!("no reset");
    };
    assert_eq!(parse_reset(&f).5, 1005);
}

#[test]
fn segments_of_inbound_connections_pass() {
    // A host-loopback client of a published port comes from the gateway:
    // the guest's SYN-ACK and later segments must reach passt.
    let p = policy();
    for flags in [TCP_SYN | TCP_ACK, TCP_ACK, TCP_ACK | TCP_FIN, TCP_RST] {
        assert_eq!(
            p.check(&tcp_frame(GATEWAY, flags, b"x")),
            Verdict::Pass,
            "{flags:#x}"
        );
    }
}

/// A UDP datagram `src`:`sport` -> `dst`:`dport`.
fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&[0, 9, 0, 0, b'x']);
    let mut ip = ipv4(17, dst, &u);
    ip[12..16].copy_from_slice(&src.octets());
    eth(0x0800, &ip)
}

#[test]
fn udp_answers_to_inbound_datagrams_pass_for_a_while() {
    let mut f = EgressFilter::new(policy());
    let t0 = Instant::now();
    let answer = udp(GUEST, 7, GATEWAY, 40000);
    assert_eq!(f.outbound(&answer, t0), Verdict::Drop, "nothing came in");
    // A datagram from the gateway (host loopback) to the published port 7.
    f.inbound(&udp(GATEWAY, 40000, GUEST, 7), t0);
    assert_eq!(f.outbound(&answer, t0), Verdict::Pass);
    let later = t0 + UDP_REPLY_WINDOW / 2;
    assert_eq!(f.outbound(&answer, later), Verdict::Pass);
    // Another port of the gateway, or from another guest port: dropped.
    assert_eq!(
        f.outbound(&udp(GUEST, 7, GATEWAY, 40001), t0),
        Verdict::Drop
    );
    assert_eq!(
        f.outbound(&udp(GUEST, 8, GATEWAY, 40000), t0),
        Verdict::Drop
    );
    // The window closes.
    assert_eq!(f.outbound(&answer, t0 + UDP_REPLY_WINDOW), Verdict::Drop);
    // Datagrams from open addresses are not noted; the table is bounded.
    let mut g = EgressFilter::new(policy());
    g.inbound(&udp(DNS, 53, GUEST, 9), t0);
    assert!(g.udp_replies.is_empty());
    for port in 0..=u16::MAX {
        g.inbound(&udp(GATEWAY, port, GUEST, 7), t0);
    }
    assert_eq!(g.udp_replies.len(), MAX_UDP_REPLIES);
    let much_later = t0 + UDP_REPLY_WINDOW * 2;
    g.inbound(&udp(GATEWAY, 1, GUEST, 8), much_later);
    assert_eq!(g.udp_replies.len(), 1, "expired flows are forgotten");
    // An open filter notes nothing and passes everything.
    let mut open = EgressFilter::default();
    open.inbound(&udp(GATEWAY, 1, GUEST, 7), t0);
    assert!(open.udp_replies.is_empty());
    assert_eq!(open.outbound(&answer, t0), Verdict::Pass);
}
