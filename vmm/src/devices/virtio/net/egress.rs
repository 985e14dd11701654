//! The egress policy: IPv4 destinations the guest may not send to. Frame
//! inspection, applied by the device to every frame the guest transmits
//! before it reaches the backend ([`EgressFilter::outbound`]).
//!
//! What a guest frame gets:
//! - an empty policy passes everything without looking (TAP mode);
//! - IPv4 (ethertype 0x0800, after at most two 802.1Q/802.1ad tags) to a
//!   blocked destination:
//!   - a TCP connection request (SYN without ACK) is answered with a TCP
//!     RST the device hands back to the guest: the connection is refused
//!     at once instead of timing out;
//!   - other TCP segments pass: they only belong to connections that came
//!     in through a published port (passt shows a host-loopback client as
//!     coming from the gateway), and passt opens nothing for a segment
//!     without a connection;
//!   - UDP passes only as an answer to a datagram that came from that
//!     address and port to that guest port within [`UDP_REPLY_WINDOW`]
//!     (a published UDP port used from the host's loopback), noted by
//!     [`EgressFilter::inbound`]; other UDP is dropped;
//!   - everything else (ICMP, later fragments...) is dropped;
//! - an IPv4 frame too short or malformed to read its destination, or a
//!   truncated VLAN tag, is dropped (fail closed);
//! - every other ethertype passes: ARP (the guest must resolve the
//!   gateway's MAC to reach anything), IPv6 (the policy is IPv4-only; passt
//!   runs with `-4` and ignores IPv6), and the rest.
//!
//! The policy is part of the VM's identity, not of its saved state: a
//! snapshot does not keep it, each boot or restore is given its own
//! ([`crate::NetConfig::egress`]).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::frame::{fold, ones_sum};

const ETH_HDR_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
/// 802.1Q, 802.1ad and the old QinQ ethertype.
const VLAN_TYPES: [u16; 3] = [0x8100, 0x88a8, 0x9100];
const MAX_VLAN_TAGS: usize = 2;
const IPV4_MIN_HDR: usize = 20;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
/// How long the guest may answer a UDP datagram from a blocked address
/// after the last one (passt's UDP flow timeout).
pub const UDP_REPLY_WINDOW: Duration = Duration::from_secs(180);
/// Most UDP flows from blocked addresses remembered at once.
const MAX_UDP_REPLIES: usize = 1024;
const TCP_MIN_HDR: usize = 20;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const RESET_TTL: u8 = 64;
/// Ethernet's minimum frame (without FCS).
const ETH_MIN_FRAME: usize = 60;

/// A malformed IPv4 range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 range {0:?} (expected A.B.C.D or A.B.C.D/PREFIX, PREFIX 0..=32)")]
pub struct Ipv4NetError(pub String);

/// An IPv4 range: an address and a prefix length (host bits cleared).
/// Serialised as `A.B.C.D/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Net {
    /// The range of `addr`/`prefix_len` (host bits of `addr` cleared);
    /// `None` if `prefix_len` exceeds 32.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 32).then(|| Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & Self::mask(prefix_len)),
            prefix_len,
        })
    }

    /// The range holding only `addr`.
    pub const fn host(addr: Ipv4Addr) -> Self {
        Ipv4Net {
            addr,
            prefix_len: 32,
        }
    }

    /// The first address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.prefix_len) == u32::from(self.addr)
    }

    fn mask(prefix_len: u8) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0)
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Net {
    type Err = Ipv4NetError;

    /// `A.B.C.D/PREFIX`, or `A.B.C.D` for one address.
    fn from_str(s: &str) -> Result<Self, Ipv4NetError> {
        let bad = || Ipv4NetError(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().map_err(|_| bad())?),
            None => (s, 32),
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        Ipv4Net::new(addr, prefix).ok_or_else(bad)
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = Ipv4NetError;

    fn try_from(s: String) -> Result<Self, Ipv4NetError> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(net: Ipv4Net) -> String {
        net.to_string()
    }
}

/// Which guest traffic the device keeps from the backend. The default
/// blocks nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressPolicy {
    /// IPv4 destinations the guest may not reach.
    #[serde(default)]
    pub blocked: Vec<Ipv4Net>,
}

/// What becomes of one guest frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the backend.
    Pass,
    /// Discard it.
    Drop,
    /// Discard it and deliver this frame (a TCP RST) to the guest.
    Reset(Vec<u8>),
}

impl EgressPolicy {
    /// Whether the policy blocks nothing (frames are not inspected).
    pub fn is_open(&self) -> bool {
        self.blocked.is_empty()
    }

    /// Whether traffic to `ip` is blocked.
    pub fn blocks(&self, ip: Ipv4Addr) -> bool {
        self.blocked.iter().any(|net| net.contains(ip))
    }

    /// The verdict on an Ethernet frame the guest transmits (no virtio
    /// header), UDP answers aside (see [`EgressFilter`]). Never panics,
    /// whatever the bytes.
    pub fn check(&self, frame: &[u8]) -> Verdict {
        if self.is_open() {
            return Verdict::Pass;
        }
        let Some(l3) = ipv4_offset(frame) else {
            return Verdict::Pass;
        };
        let Ok(l3) = l3 else {
            return Verdict::Drop;
        };
        let Some(ip) = frame.get(l3..).and_then(Ipv4Header::parse) else {
            return Verdict::Drop;
        };
        if !self.blocks(ip.dst) {
            return Verdict::Pass;
        }
        let tcp_flags = match ip.l4(frame, l3) {
            Some(l4) if ip.proto == PROTO_TCP && ip.first_fragment => l4.get(13).copied(),
            _ => None,
        };
        match tcp_flags {
            Some(f) if f & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN => {
                tcp_reset(frame, l3, &ip).map_or(Verdict::Drop, Verdict::Reset)
            }
            Some(_) => Verdict::Pass,
            None => Verdict::Drop,
        }
    }
}

/// A UDP flow as the guest sees it: its port, the peer's address and port.
type UdpFlow = (u16, Ipv4Addr, u16);

/// An [`EgressPolicy`] with what it needs to let the guest answer UDP
/// datagrams from blocked addresses.
#[derive(Debug, Default)]
pub struct EgressFilter {
    policy: EgressPolicy,
    /// When a datagram of each flow last came in.
    udp_replies: HashMap<UdpFlow, Instant>,
}

impl EgressFilter {
    /// A filter applying `policy`.
    pub fn new(policy: EgressPolicy) -> Self {
        EgressFilter {
            policy,
            udp_replies: HashMap::new(),
        }
    }

    /// Whether the policy blocks nothing (frames need not be shown).
    pub fn is_open(&self) -> bool {
        self.policy.is_open()
    }

    /// The verdict on a frame the guest transmits, at `now`.
    pub fn outbound(&mut self, frame: &[u8], now: Instant) -> Verdict {
        let verdict = self.policy.check(frame);
        if verdict != Verdict::Drop {
            return verdict;
        }
        let answer = udp_flow(frame)
            .and_then(|(_src, sport, dst, dport)| self.udp_replies.get(&(sport, dst, dport)));
        match answer {
            Some(&seen) if now.saturating_duration_since(seen) < UDP_REPLY_WINDOW => Verdict::Pass,
            _ => Verdict::Drop,
        }
    }

    /// Notes a frame the backend delivers to the guest at `now`: UDP from
    /// a blocked address may be answered.
    pub fn inbound(&mut self, frame: &[u8], now: Instant) {
        if self.policy.is_open() {
            return;
        }
        let Some((src, sport, _dst, dport)) = udp_flow(frame) else {
            return;
        };
        if !self.policy.blocks(src) {
            return;
        }
        let flow = (dport, src, sport);
        if self.udp_replies.len() >= MAX_UDP_REPLIES && !self.udp_replies.contains_key(&flow) {
            self.udp_replies
                .retain(|_, seen| now.saturating_duration_since(*seen) < UDP_REPLY_WINDOW);
            if self.udp_replies.len() >= MAX_UDP_REPLIES {
                return;
            }
        }
        self.udp_replies.insert(flow, now);
    }
}

/// (source, source port, destination, destination port) of a complete,
/// unfragmented IPv4 UDP datagram in `frame`.
fn udp_flow(frame: &[u8]) -> Option<(Ipv4Addr, u16, Ipv4Addr, u16)> {
    let l3 = ipv4_offset(frame)?.ok()?;
    let ip = Ipv4Header::parse(frame.get(l3..)?)?;
    if ip.proto != PROTO_UDP || !ip.first_fragment || ip.more_fragments {
        return None;
    }
    let udp = ip.l4(frame, l3)?;
    Some((ip.src, be16(udp, 0)?, ip.dst, be16(udp, 2)?))
}

/// Where the IPv4 header of `frame` starts: `None` if it is not IPv4,
/// `Some(Err(()))` if a VLAN tag is cut short or nested too deep.
fn ipv4_offset(frame: &[u8]) -> Option<Result<usize, ()>> {
    let mut at = ETH_HDR_LEN - 2;
    for _ in 0..=MAX_VLAN_TAGS {
        let Some(ty) = be16(frame, at) else {
            return Some(Err(()));
        };
        if ty == ETHERTYPE_IPV4 {
            return Some(Ok(at + 2));
        }
        if !VLAN_TYPES.contains(&ty) {
            return None;
        }
        at += 4;
    }
    Some(Err(()))
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

/// The fields of an IPv4 header the policy needs.
struct Ipv4Header {
    header_len: usize,
    /// Total length (at least the header's).
    total_len: usize,
    /// Whether all `total_len` bytes are present.
    complete: bool,
    first_fragment: bool,
    more_fragments: bool,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

impl Ipv4Header {
    fn parse(p: &[u8]) -> Option<Ipv4Header> {
        let first = *p.first()?;
        let header_len = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || header_len < IPV4_MIN_HDR || p.len() < header_len {
            return None;
        }
        let total_len = usize::from(be16(p, 2)?);
        if total_len < header_len {
            return None;
        }
        Some(Ipv4Header {
            header_len,
            total_len,
            complete: total_len <= p.len(),
            first_fragment: be16(p, 6)? & 0x1fff == 0,
            more_fragments: be16(p, 6)? & 0x2000 != 0,
            proto: p[9],
            src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
            dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        })
    }

    /// The transport header and payload of the packet at `l3` in `frame`,
    /// if the packet is complete.
    fn l4<'f>(&self, frame: &'f [u8], l3: usize) -> Option<&'f [u8]> {
        if !self.complete {
            return None;
        }
        frame.get(l3 + self.header_len..l3 + self.total_len)
    }
}

/// The RST answering the connection request (a SYN without ACK) in
/// `frame`, addressed back to the guest as RFC 9293 §3.10.7.1 says
/// (RST|ACK, acknowledging the SYN and any data); `None` if the packet is
/// not a complete first-fragment TCP segment.
fn tcp_reset(frame: &[u8], l3: usize, ip: &Ipv4Header) -> Option<Vec<u8>> {
    if ip.proto != PROTO_TCP || !ip.first_fragment {
        return None;
    }
    let tcp = ip.l4(frame, l3)?;
    let data_off = usize::from(*tcp.get(12)? >> 4) * 4;
    let flags = *tcp.get(13)?;
    if data_off < TCP_MIN_HDR || tcp.len() < data_off {
        return None;
    }
    let seg_len = (tcp.len() - data_off) as u32 + 1 + u32::from(flags & TCP_FIN != 0);
    let ack = be32(tcp, 4)?.wrapping_add(seg_len);
    // The guest's own link header (tags included), the addresses swapped.
    let mut out = Vec::with_capacity((l3 + IPV4_MIN_HDR + TCP_MIN_HDR).max(ETH_MIN_FRAME));
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&frame[0..6]);
    out.extend_from_slice(&frame[12..l3]);
    let mut iph = [0u8; IPV4_MIN_HDR];
    iph[0] = 0x45;
    iph[2..4].copy_from_slice(&((IPV4_MIN_HDR + TCP_MIN_HDR) as u16).to_be_bytes());
    iph[6] = 0x40; // Don't fragment.
    iph[8] = RESET_TTL;
    iph[9] = PROTO_TCP;
    iph[12..16].copy_from_slice(&ip.dst.octets());
    iph[16..20].copy_from_slice(&ip.src.octets());
    let csum = !fold(ones_sum(&iph));
    iph[10..12].copy_from_slice(&csum.to_be_bytes());
    let mut th = [0u8; TCP_MIN_HDR];
    th[0..2].copy_from_slice(&tcp[2..4]);
    th[2..4].copy_from_slice(&tcp[0..2]);
    th[8..12].copy_from_slice(&ack.to_be_bytes());
    th[12] = ((TCP_MIN_HDR / 4) as u8) << 4;
    th[13] = TCP_RST | TCP_ACK;
    let pseudo = ones_sum(&iph[12..20]) + u32::from(PROTO_TCP) + TCP_MIN_HDR as u32;
    let csum = !fold(pseudo + ones_sum(&th));
    th[16..18].copy_from_slice(&csum.to_be_bytes());
    out.extend_from_slice(&iph);
    out.extend_from_slice(&th);
    // Ethernet's minimum payload; the IP length says where the packet ends.
    out.resize(out.len().max(ETH_MIN_FRAME), 0);
    Some(out)
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;
