//! Guest network configuration: brings up loopback and the container's
//! virtio-net interface (address, netmask, MTU, default route) with plain
//! ioctls on an AF_INET socket, no netlink and no tools in the guest.
//!
//! The interface is found by its MAC address (names depend on probe
//! order); when none has it, the only Ethernet interface is taken and gets
//! that address before it comes up (a VM restored from a snapshot still
//! has the snapshot's). Loopback comes up in every case; the kernel gives
//! it 127.0.0.1 and ::1 itself.

use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use husk_protocol::NetworkSpec;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// Why configuring the network failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The spec is malformed.
    #[error("invalid network spec: {0}")]
    Spec(String),
    /// No interface has the spec's MAC address.
    #[error("no network interface with MAC address {0}")]
    NoInterface(String),
    /// A configuration step failed.
    #[error("{op} on {iface}")]
    Ioctl {
        /// The step.
        op: &'static str,
        /// The interface.
        iface: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// What the agent applies, parsed and checked from a [`NetworkSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The interface's MAC address.
    pub mac: [u8; 6],
    /// Address, netmask and gateway; `None`: link up only.
    pub ipv4: Option<(Ipv4Addr, Ipv4Addr, Option<Ipv4Addr>)>,
    /// The MTU.
    pub mtu: u32,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Checks a spec and turns it into a [`Plan`].
pub fn plan(spec: &NetworkSpec) -> Result<Plan, NetError> {
    let bad = |what: &str| NetError::Spec(what.to_string());
    let mac = parse_mac(&spec.mac).ok_or_else(|| bad(&format!("MAC address {:?}", spec.mac)))?;
    if !(68..=65535).contains(&spec.mtu) {
        return Err(bad(&format!("MTU {}", spec.mtu)));
    }
    let ipv4 = if spec.ipv4.is_empty() {
        None
    } else {
        let (ip, prefix) = spec
            .ipv4
            .split_once('/')
            .ok_or_else(|| bad(&format!("address {:?} (expected A.B.C.D/N)", spec.ipv4)))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| bad(&format!("address {:?}", spec.ipv4)))?;
        let prefix: u32 = match prefix.parse() {
            Ok(p) if p <= 32 => p,
            _ => return Err(bad(&format!("prefix length in {:?}", spec.ipv4))),
        };
        let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0));
        let gateway = if spec.gateway4.is_empty() {
            None
        } else {
            Some(
                spec.gateway4
                    .parse::<Ipv4Addr>()
                    .map_err(|_| bad(&format!("gateway {:?}", spec.gateway4)))?,
            )
        };
        Some((ip, mask, gateway))
    };
    Ok(Plan {
        mac,
        ipv4,
        mtu: spec.mtu,
    })
}

/// Configures loopback and, when given, the interface described by `spec`.
pub fn configure(spec: Option<&NetworkSpec>) -> Result<(), NetError> {
    let plan = spec.map(plan).transpose()?;
    let sock = Socket::new().map_err(|source| NetError::Ioctl {
        op: "socket",
        iface: "lo".into(),
        source,
    })?;
    sock.set_up("lo")?;
    let Some(plan) = plan else {
        return Ok(());
    };
    let mac_str = spec.map(|s| s.mac.clone()).unwrap_or_default();
    let links = sock.links();
    let (iface, change_mac) = choose(&links, &plan.mac).ok_or(NetError::NoInterface(mac_str))?;
    let iface = iface.to_string();
    if change_mac {
        sock.set_mac(&iface, &plan.mac)?;
    }
    sock.set_mtu(&iface, plan.mtu)?;
    if let Some((ip, mask, _)) = plan.ipv4 {
        sock.set_addr(&iface, libc::SIOCSIFADDR, "SIOCSIFADDR", ip)?;
        sock.set_addr(&iface, libc::SIOCSIFNETMASK, "SIOCSIFNETMASK", mask)?;
    }
    sock.set_up(&iface)?;
    if let Some((_, _, Some(gw))) = plan.ipv4 {
        sock.add_default_route(&iface, gw)?;
    }
    Ok(())
}

/// A network interface as `SIOCGIFHWADDR` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    /// The interface name.
    name: String,
    /// The hardware type (`ARPHRD_*`).
    hw_type: u16,
    /// The hardware address's first six bytes.
    mac: [u8; 6],
}

/// The interface the spec's `mac` names, and whether its address must be
/// changed to `mac`: the interface that has it, otherwise the only
/// Ethernet interface (a VM restored from a snapshot still carries the
/// snapshot's MAC address and gets its own here). `None` when neither
/// exists.
fn choose<'a>(links: &'a [Link], mac: &[u8; 6]) -> Option<(&'a str, bool)> {
    if let Some(link) = links.iter().find(|l| &l.mac == mac) {
        return Some((&link.name, false));
    }
    let mut ether = links.iter().filter(|l| l.hw_type == libc::ARPHRD_ETHER);
    match (ether.next(), ether.next()) {
        (Some(link), None) => Some((&link.name, true)),
        _ => None,
    }
}

/// `struct ifreq`: a name and a 24-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> Self {
        let mut r = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        let n = name.len().min(libc::IFNAMSIZ - 1);
        r.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        r
    }
}

/// A `struct sockaddr_in` as 16 bytes.
fn sockaddr_in(ip: Ipv4Addr) -> [u8; 16] {
    let mut sa = [0u8; 16];
    sa[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    sa[4..8].copy_from_slice(&ip.octets());
    sa
}

/// `struct rtentry` (x86_64 layout).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: [u8; 16],
    rt_gateway: [u8; 16],
    rt_genmask: [u8; 16],
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_tos: libc::c_uchar,
    rt_class: libc::c_uchar,
    rt_pad4: [libc::c_short; 3],
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

struct Socket(OwnedFd);

impl Socket {
    fn new() -> io::Result<Self> {
        let fd = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok(Socket(fd))
    }

    /// Runs one ifreq ioctl on `iface`.
    fn ioctl(
        &self,
        iface: &str,
        req: libc::c_ulong,
        op: &'static str,
        ifr: &mut IfReq,
    ) -> Result<(), NetError> {
        // SAFETY: every request used here reads or writes a `struct ifreq`,
        // which `IfReq` is laid out as (40 bytes); it outlives the call.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), req, ifr as *mut IfReq) } < 0 {
            return Err(NetError::Ioctl {
                op,
                iface: iface.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn set_up(&self, iface: &str) -> Result<(), NetError> {
        let mut ifr = IfReq::new(iface);
        self.ioctl(iface, libc::SIOCGIFFLAGS, "SIOCGIFFLAGS", &mut ifr)?;
        let flags = i16::from_ne_bytes([ifr.data[0], ifr.data[1]]) | libc::IFF_UP as i16;
        ifr.data[0..2].copy_from_slice(&flags.to_ne_bytes());
        self.ioctl(iface, libc::SIOCSIFFLAGS, "SIOCSIFFLAGS", &mut ifr)
    }

    fn set_mtu(&self, iface: &str, mtu: u32) -> Result<(), NetError> {
        let mut ifr = IfReq::new(iface);
        let mtu = i32::try_from(mtu).unwrap_or(i32::MAX);
        ifr.data[0..4].copy_from_slice(&mtu.to_ne_bytes());
        self.ioctl(iface, libc::SIOCSIFMTU, "SIOCSIFMTU", &mut ifr)
    }

    fn set_addr(
        &self,
        iface: &str,
        req: libc::c_ulong,
        op: &'static str,
        ip: Ipv4Addr,
    ) -> Result<(), NetError> {
        let mut ifr = IfReq::new(iface);
        ifr.data[..16].copy_from_slice(&sockaddr_in(ip));
        self.ioctl(iface, req, op, &mut ifr)
    }

    /// The interface's hardware type and address.
    fn link(&self, iface: &str) -> Option<Link> {
        let mut ifr = IfReq::new(iface);
        self.ioctl(iface, libc::SIOCGIFHWADDR, "SIOCGIFHWADDR", &mut ifr)
            .ok()?;
        // struct sockaddr: family (the ARPHRD_ type), then the address.
        Some(Link {
            name: iface.to_string(),
            hw_type: u16::from_ne_bytes([ifr.data[0], ifr.data[1]]),
            mac: ifr.data[2..8].try_into().ok()?,
        })
    }

    /// Every interface with its hardware type and address.
    fn links(&self) -> Vec<Link> {
        interface_names()
            .iter()
            .filter_map(|name| self.link(name))
            .collect()
    }

    /// Sets an Ethernet interface's MAC address (while it is down).
    fn set_mac(&self, iface: &str, mac: &[u8; 6]) -> Result<(), NetError> {
        let mut ifr = IfReq::new(iface);
        ifr.data[0..2].copy_from_slice(&libc::ARPHRD_ETHER.to_ne_bytes());
        ifr.data[2..8].copy_from_slice(mac);
        self.ioctl(iface, libc::SIOCSIFHWADDR, "SIOCSIFHWADDR", &mut ifr)
    }

    fn add_default_route(&self, iface: &str, gw: Ipv4Addr) -> Result<(), NetError> {
        let mut dev = IfReq::new(iface).name;
        let mut rt = RtEntry {
            rt_pad1: 0,
            rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            rt_gateway: sockaddr_in(gw),
            rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            rt_flags: (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_tos: 0,
            rt_class: 0,
            rt_pad4: [0; 3],
            rt_metric: 0,
            rt_dev: dev.as_mut_ptr().cast(),
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        // SAFETY: SIOCADDRT reads a `struct rtentry`, which `RtEntry` is laid
        // out as; `rt` and the device name it points to outlive the call.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::SIOCADDRT, &mut rt) };
        if rc < 0 {
            let source = io::Error::last_os_error();
            // A default route already there (agent restarted) is fine.
            if source.raw_os_error() != Some(libc::EEXIST) {
                return Err(NetError::Ioctl {
                    op: "SIOCADDRT (default route)",
                    iface: iface.to_string(),
                    source,
                });
            }
        }
        Ok(())
    }
}

/// Every interface name (if_nameindex(3)).
fn interface_names() -> Vec<String> {
    let mut names = Vec::new();
    // SAFETY: if_nameindex returns a heap array terminated by an entry with
    // index 0 (or NULL on failure); it is freed with if_freenameindex below
    // and not used afterwards.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return names;
        }
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            names.push(CStr::from_ptr((*p).if_name).to_string_lossy().into_owned());
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ipv4: &str, gw: &str, mtu: u32) -> NetworkSpec {
        NetworkSpec {
            mac: "02:00:00:aa:bb:cc".into(),
            ipv4: ipv4.into(),
            gateway4: gw.into(),
            ipv6: None,
            gateway6: None,
            mtu,
        }
    }

    #[test]
    fn plans() {
        let p = plan(&spec("10.0.2.15/24", "10.0.2.2", 65520)).unwrap();
        assert_eq!(p.mac, [2, 0, 0, 0xaa, 0xbb, 0xcc]);
        assert_eq!(
            p.ipv4,
            Some((
                Ipv4Addr::new(10, 0, 2, 15),
                Ipv4Addr::new(255, 255, 255, 0),
                Some(Ipv4Addr::new(10, 0, 2, 2))
            ))
        );
        let p = plan(&spec("10.1.2.3/0", "", 1500)).unwrap();
        assert_eq!(
            p.ipv4,
            Some((Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::UNSPECIFIED, None))
        );
        let p = plan(&spec("10.1.2.3/32", "", 1500)).unwrap();
        assert_eq!(p.ipv4.unwrap().1, Ipv4Addr::BROADCAST);
        assert_eq!(plan(&spec("", "", 1500)).unwrap().ipv4, None);
        for (ip, gw, mtu) in [
            ("10.0.2.15", "10.0.2.2", 1500),
            ("10.0.2.15/33", "", 1500),
            ("10.0.2/24", "", 1500),
            ("10.0.2.15/24", "gw", 1500),
            ("10.0.2.15/24", "", 67),
            ("10.0.2.15/24", "", 70000),
        ] {
            assert!(plan(&spec(ip, gw, mtu)).is_err(), "{ip} {gw} {mtu}");
        }
        let mut s = spec("", "", 1500);
        s.mac = "02:00:00:aa:bb".into();
        assert!(plan(&s).is_err());
        assert_eq!(parse_mac("02:00:00:aa:bb:cc:dd"), None);
        assert_eq!(parse_mac("2:00:00:aa:bb:cc"), None);
    }

    #[test]
    fn the_interface_is_found_by_mac_or_is_the_only_ethernet_one() {
        let link = |name: &str, hw_type: u16, last: u8| Link {
            name: name.into(),
            hw_type,
            mac: [2, 0, 0, 0, 0, last],
        };
        let lo = Link {
            name: "lo".into(),
            hw_type: libc::ARPHRD_LOOPBACK,
            mac: [0; 6],
        };
        let wanted = [2, 0, 0, 0, 0, 9];
        let has_it = [lo.clone(), link("eth0", libc::ARPHRD_ETHER, 9)];
        assert_eq!(choose(&has_it, &wanted), Some(("eth0", false)));
        // Restored from a snapshot: eth0 has the template's address.
        let template = [lo.clone(), link("eth0", libc::ARPHRD_ETHER, 1)];
        assert_eq!(choose(&template, &wanted), Some(("eth0", true)));
        let two = [
            lo.clone(),
            link("eth0", libc::ARPHRD_ETHER, 1),
            link("eth1", libc::ARPHRD_ETHER, 2),
        ];
        assert_eq!(choose(&two, &wanted), None, "ambiguous");
        let two_one_right = [two[1].clone(), link("eth1", libc::ARPHRD_ETHER, 9)];
        assert_eq!(choose(&two_one_right, &wanted), Some(("eth1", false)));
        assert_eq!(choose(&[lo], &wanted), None, "loopback only");
        let sit = [link("sit0", libc::ARPHRD_SIT, 1)];
        assert_eq!(choose(&sit, &wanted), None, "not Ethernet");
    }

    #[test]
    fn layouts() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
    }

    /// In a private network namespace (root; skipped otherwise): loopback
    /// comes up, and a missing interface is reported by MAC.
    #[test]
    fn loopback_and_missing_interface_in_a_private_netns() {
        std::thread::spawn(|| {
            // SAFETY: unshare(2) on this thread only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("skipped: cannot create a network namespace (not root)");
                return;
            }
            configure(None).unwrap();
            let sock = Socket::new().unwrap();
            let mut ifr = IfReq::new("lo");
            sock.ioctl("lo", libc::SIOCGIFFLAGS, "SIOCGIFFLAGS", &mut ifr)
                .unwrap();
            assert!(i16::from_ne_bytes([ifr.data[0], ifr.data[1]]) & libc::IFF_UP as i16 != 0);
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let err = configure(Some(&spec("10.0.2.15/24", "10.0.2.2", 1500))).unwrap_err();
            assert_eq!(
                err.to_string(),
                "no network interface with MAC address 02:00:00:aa:bb:cc"
            );
        })
        .join()
        .unwrap();
    }

    /// A TAP device in a private network namespace (root; skipped
    /// otherwise) is found by MAC and gets address, MTU, link and route.
    #[test]
    fn configures_an_interface_in_a_private_netns() {
        std::thread::spawn(|| {
            // SAFETY: unshare(2) on this thread only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("skipped: cannot create a network namespace (not root)");
                return;
            }
            let tun = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .unwrap();
            let mut ifr = IfReq::new("hsktest");
            ifr.data[0..2].copy_from_slice(&(0x0002i16 | 0x1000).to_ne_bytes());
            // SAFETY: TUNSETIFF reads and writes a `struct ifreq`.
            let rc = unsafe { libc::ioctl(tun.as_raw_fd(), 0x4004_54ca, &mut ifr) };
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
            let sock = Socket::new().unwrap();
            let mac = sock.link("hsktest").unwrap().mac;
            let mut s = spec("10.0.2.15/24", "10.0.2.2", 9000);
            s.mac = mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            configure(Some(&s)).unwrap();
            let mut ifr = IfReq::new("hsktest");
            sock.ioctl("hsktest", libc::SIOCGIFADDR, "SIOCGIFADDR", &mut ifr)
                .unwrap();
            assert_eq!(&ifr.data[4..8], &[10, 0, 2, 15]);
            let mut ifr = IfReq::new("hsktest");
            sock.ioctl("hsktest", libc::SIOCGIFMTU, "SIOCGIFMTU", &mut ifr)
                .unwrap();
            assert_eq!(i32::from_ne_bytes(ifr.data[0..4].try_into().unwrap()), 9000);
            // Default route via 10.0.2.2 (0202000A little-endian hex).
            let routes = std::fs::read_to_string("/proc/thread-self/net/route").unwrap();
            assert!(
                routes
                    .lines()
                    .any(|l| l.starts_with("hsktest\t00000000\t0202000A")),
                "{routes}"
            );
            // Again (an agent restart): still fine.
            configure(Some(&s)).unwrap();
            // Another MAC (a clone restored from a snapshot): the only
            // Ethernet interface takes it.
            s.mac = "02:aa:bb:cc:dd:ee".into();
            configure(Some(&s)).unwrap();
            assert_eq!(
                sock.link("hsktest").unwrap().mac,
                [2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]
            );
        })
        .join()
        .unwrap();
    }
}
