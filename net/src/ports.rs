//! Published ports: Docker's `-p` syntax, `-P` over the image's exposed
//! ports, and the host-side checks (free port, ephemeral port choice).

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One published port: host `host_ip:host_port` forwards to the guest's
/// `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address to listen on; `None`: all addresses (0.0.0.0).
    pub host_ip: Option<Ipv4Addr>,
    /// The host port; 0: any free port, chosen when the network starts.
    pub host_port: u16,
    /// The port inside the container.
    pub container_port: u16,
    /// TCP or UDP.
    pub proto: Proto,
}

impl PortMapping {
    /// The host address the port listens on.
    pub fn host_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
        )
    }
}

impl PortMapping {
    /// As `ps` shows it: `0.0.0.0:8080->80/tcp`.
    pub fn ps_form(&self) -> String {
        format!(
            "{}->{}/{}",
            self.host_addr(),
            self.container_port,
            self.proto
        )
    }

    /// Whether this port matches `husk port`'s filter
    /// `PRIVATE_PORT[/PROTO]` (the protocol defaults to tcp).
    pub fn matches(&self, filter: &str) -> bool {
        let (port, proto) = filter.split_once('/').unwrap_or((filter, "tcp"));
        port.parse() == Ok(self.container_port) && proto == self.proto.to_string()
    }
}

impl fmt::Display for PortMapping {
    /// Docker's `husk port` format: `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}",
            self.container_port,
            self.proto,
            self.host_addr()
        )
    }
}

/// Errors in port specifications and host ports.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The specification does not parse.
    #[error("invalid port specification {spec:?}: {why}")]
    Syntax {
        /// What the user wrote.
        spec: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The host port is taken.
    #[error("host port {addr}/{proto} is already in use")]
    InUse {
        /// The address and port.
        addr: SocketAddrV4,
        /// The protocol.
        proto: Proto,
    },
    /// The host port cannot be bound for another reason.
    #[error("cannot bind host port {addr}/{proto}")]
    Bind {
        /// The address and port.
        addr: SocketAddrV4,
        /// The protocol.
        proto: Proto,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The same host port is published twice.
    #[error("host port {addr}/{proto} is published twice")]
    Duplicate {
        /// The address and port.
        addr: SocketAddrV4,
        /// The protocol.
        proto: Proto,
    },
}

fn syntax(spec: &str, why: &'static str) -> PortError {
    PortError::Syntax {
        spec: spec.to_string(),
        why,
    }
}

/// A port or an inclusive range `a-b`.
fn parse_range(spec: &str, s: &str) -> Result<(u16, u16), PortError> {
    let port = |p: &str| -> Result<u16, PortError> {
        match p.parse::<u16>() {
            Ok(0) => Err(syntax(spec, "port 0 is not a valid port")),
            Ok(n) => Ok(n),
            Err(_) => Err(syntax(spec, "ports are numbers from 1 to 65535")),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(syntax(spec, "a port range must go upwards"));
            }
            Ok((a, b))
        }
        None => {
            let p = port(s)?;
            Ok((p, p))
        }
    }
}

/// Parses one `-p` value: `[ip:][hostPort:]containerPort[/tcp|udp]`, where
/// ports may be ranges (`8000-8010:80-90`, or a host range for one
/// container port... of equal length). A missing host port means any free
/// port. Returns one [`PortMapping`] per port.
pub fn parse_port_spec(spec: &str) -> Result<Vec<PortMapping>, PortError> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, "tcp")) => (r, Proto::Tcp),
        Some((r, "udp")) => (r, Proto::Udp),
        Some(_) => return Err(syntax(spec, "the protocol must be tcp or udp")),
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => (None, None, *c),
        [h, c] => (None, Some(*h), *c),
        [ip, h, c] => (Some(*ip), Some(*h), *c),
        _ => {
            return Err(syntax(
                spec,
                "expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO] (IPv6 host addresses are not supported)",
            ))
        }
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(ip) => Some(
            ip.parse::<Ipv4Addr>()
                .map_err(|_| syntax(spec, "the host address must be an IPv4 address"))?,
        ),
    };
    let (c_lo, c_hi) = parse_range(spec, container)?;
    let host = match host {
        None | Some("") => None,
        Some(h) => Some(parse_range(spec, h)?),
    };
    let count = usize::from(c_hi - c_lo) + 1;
    let host_ports: Vec<u16> = match host {
        None => vec![0; count],
        Some((h_lo, h_hi)) if usize::from(h_hi - h_lo) + 1 == count => (h_lo..=h_hi).collect(),
        Some(_) => {
            return Err(syntax(
                spec,
                "host and container port ranges differ in length",
            ))
        }
    };
    Ok((c_lo..=c_hi)
        .zip(host_ports)
        .map(|(container_port, host_port)| PortMapping {
            host_ip,
            host_port,
            container_port,
            proto,
        })
        .collect())
}

/// `-P`: every exposed port of the image (`"80/tcp"`, `"53/udp"`, `"8080"`,
/// ranges allowed) published on a free host port.
pub fn publish_all<S: AsRef<str>>(exposed: &[S]) -> Result<Vec<PortMapping>, PortError> {
    let mut out = Vec::new();
    for e in exposed {
        let e = e.as_ref();
        let (ports, proto) = match e.rsplit_once('/') {
            Some((p, proto)) => (p, proto),
            None => (e, "tcp"),
        };
        if ports.contains(':') {
            return Err(syntax(e, "an exposed port has no host part"));
        }
        out.extend(parse_port_spec(&format!("{ports}/{proto}"))?);
    }
    Ok(out)
}

/// Checks that every fixed host port can be bound now and is not
/// published twice; ports of 0 get a free port of the kernel's choosing.
/// Returns the specs with every host port set.
pub fn resolve_host_ports(specs: &[PortMapping]) -> Result<Vec<PortMapping>, PortError> {
    let mut out: Vec<PortMapping> = Vec::with_capacity(specs.len());
    for spec in specs {
        let mut spec = *spec;
        spec.host_port = probe(spec.host_addr(), spec.proto)?;
        let clash = out.iter().any(|o| {
            o.proto == spec.proto
                && o.host_port == spec.host_port
                && (o.host_ip.is_none() || spec.host_ip.is_none() || o.host_ip == spec.host_ip)
        });
        if clash {
            return Err(PortError::Duplicate {
                addr: spec.host_addr(),
                proto: spec.proto,
            });
        }
        out.push(spec);
    }
    Ok(out)
}

/// Binds `addr` (and releases it) to see whether it is free; returns the
/// bound port (the chosen one when `addr`'s port is 0).
fn probe(addr: SocketAddrV4, proto: Proto) -> Result<u16, PortError> {
    let bound = match proto {
        // std sets SO_REUSEADDR, as passt does: TIME_WAIT leftovers do not
        // count as "in use", listeners do.
        Proto::Tcp => TcpListener::bind(addr).and_then(|l| l.local_addr()),
        Proto::Udp => UdpSocket::bind(addr).and_then(|s| s.local_addr()),
    };
    match bound {
        Ok(a) => Ok(a.port()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(PortError::InUse { addr, proto }),
        Err(source) => Err(PortError::Bind {
            addr,
            proto,
            source,
        }),
    }
}

/// Whether some socket listens (TCP) or is bound (UDP) on `port` in this
/// network namespace, per /proc/net/{tcp,tcp6,udp,udp6}.
pub fn port_is_bound(port: u16, proto: Proto) -> bool {
    let (files, state) = match proto {
        Proto::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], "0A"),
        Proto::Udp => (["/proc/net/udp", "/proc/net/udp6"], "07"),
    };
    files.iter().any(|f| {
        std::fs::read_to_string(f)
            .map(|text| proc_net_has(&text, port, state))
            .unwrap_or(false)
    })
}

/// Parses the text of a /proc/net/{tcp,udp}[6] file.
fn proc_net_has(text: &str, port: u16, state: &str) -> bool {
    text.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1).unwrap_or_default();
        let st = fields.nth(1).unwrap_or_default();
        let local_port = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        local_port == Some(port) && st == state
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(spec: &str) -> PortMapping {
        let v = parse_port_spec(spec).unwrap();
        assert_eq!(v.len(), 1, "{spec}");
        v[0]
    }

    #[test]
    fn docker_forms() {
        let p = one("5000:5000");
        assert_eq!(
            (p.host_ip, p.host_port, p.container_port, p.proto),
            (None, 5000, 5000, Proto::Tcp)
        );
        let p = one("127.0.0.1:8080:80/tcp");
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!((p.host_port, p.container_port), (8080, 80));
        let p = one("5353:53/udp");
        assert_eq!(
            (p.host_port, p.container_port, p.proto),
            (5353, 53, Proto::Udp)
        );
        let p = one("80");
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = one("127.0.0.1::80");
        assert_eq!((p.host_ip, p.host_port), (Some(Ipv4Addr::LOCALHOST), 0));
        assert_eq!(p.to_string(), "80/tcp -> 127.0.0.1:0");
        let r = parse_port_spec("8000-8002:80-82/udp").unwrap();
        assert_eq!(
            r.iter()
                .map(|p| (p.host_port, p.container_port))
                .collect::<Vec<_>>(),
            [(8000, 80), (8001, 81), (8002, 82)]
        );
        assert_eq!(parse_port_spec("80-81").unwrap().len(), 2);
    }

    #[test]
    fn bad_specs() {
        for (spec, why) in [
            ("", "ports are numbers"),
            ("0:80", "port 0"),
            ("70000:80", "ports are numbers"),
            ("80/sctp", "tcp or udp"),
            ("a:b:c:d", "expected"),
            ("::1:80:80", "expected"),
            ("localhost:80:80", "IPv4"),
            ("90-80:80-90", "upwards"),
            ("8000-8001:80", "differ in length"),
            ("8080:", "ports are numbers"),
        ] {
            let err = parse_port_spec(spec).unwrap_err().to_string();
            assert!(err.contains(why), "{spec}: {err}");
            assert!(err.contains(&format!("{spec:?}")), "{err}");
        }
    }

    #[test]
    fn exposed_ports() {
        let v = publish_all(&["80/tcp", "53/udp", "8080"]).unwrap();
        assert_eq!(
            v.iter()
                .map(|p| (p.host_port, p.container_port, p.proto))
                .collect::<Vec<_>>(),
            [
                (0, 80, Proto::Tcp),
                (0, 53, Proto::Udp),
                (0, 8080, Proto::Tcp)
            ]
        );
        assert!(publish_all(&["1:2/tcp"]).is_err());
    }

    #[test]
    fn host_ports_in_use_and_ephemeral() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let spec = one(&format!("127.0.0.1:{port}:80"));
        let err = resolve_host_ports(&[spec]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("host port 127.0.0.1:{port}/tcp is already in use")
        );
        // All addresses clash with a loopback listener too.
        assert!(resolve_host_ports(&[one(&format!("{port}:80"))]).is_err());
        // The same number over UDP is free.
        let udp = resolve_host_ports(&[one(&format!("127.0.0.1:{port}:80/udp"))]);
        assert!(udp.is_ok() || port_is_bound(port, Proto::Udp));
        let r = resolve_host_ports(&[one("127.0.0.1::80"), one("127.0.0.1::81")]).unwrap();
        assert!(r.iter().all(|p| p.host_port != 0));
        assert_ne!(r[0].host_port, r[1].host_port);
        let twice = resolve_host_ports(&[one("127.0.0.1:1:80"), one("127.0.0.1:1:81")]);
        assert!(twice.is_err());
    }

    #[test]
    fn ps_form_filters_and_serde() {
        let p = PortMapping {
            host_port: 8080,
            ..one("80")
        };
        assert_eq!(p.to_string(), "80/tcp -> 0.0.0.0:8080");
        assert_eq!(p.ps_form(), "0.0.0.0:8080->80/tcp");
        assert!(p.matches("80"));
        assert!(p.matches("80/tcp"));
        assert!(!p.matches("80/udp"));
        assert!(!p.matches("8080"));
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""proto":"tcp""#), "{json}");
        assert_eq!(serde_json::from_str::<PortMapping>(&json).unwrap(), p);
    }

    #[test]
    fn proc_net_parsing() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(port_is_bound(port, Proto::Tcp));
        drop(l);
        assert!(!port_is_bound(port, Proto::Tcp));
        let text = "  sl  local_address rem_address   st\n   0: 0100007F:1F90 00000000:0000 0A 0\n";
        assert!(proc_net_has(text, 8080, "0A"));
        assert!(!proc_net_has(text, 8081, "0A"));
        assert!(!proc_net_has(text, 8080, "07"));
        assert!(!proc_net_has("garbage\n:::\n", 1, "0A"));
    }
}
