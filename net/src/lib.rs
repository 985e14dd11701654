//! Host side of husk container networking.
//!
//! A container's network is one virtio-net interface in its VM plus a host
//! backend, set up before the VM starts and torn down after it ends:
//! - [`NetworkMode::User`] (default): a passt process ([`passt`]) gives the
//!   guest outbound TCP/UDP and DNS without root, and listens on the
//!   published ports ([`ports`]); the guest does not reach the host
//!   itself unless an `--add-host NAME:host-gateway` entry ([`hosts`])
//!   asks for it ([`passt::egress_policy`]);
//! - [`NetworkMode::Tap`]: a persistent TAP device ([`tap`]) for hosts that
//!   bring their own bridge/CNI setup (root);
//! - [`NetworkMode::None`]: no interface, loopback only.
//!
//! ```no_run
//! # fn main() -> Result<(), husk_net::NetError> {
//! use husk_net::{parse_port_spec, Network, NetworkMode, NetworkOptions};
//! let mut net = Network::start(NetworkOptions {
//!     ports: parse_port_spec("127.0.0.1:8080:80/tcp")?,
//!     ..NetworkOptions::default()
//! })?;
//! let vm_net = net.net_config(); // -> vmm::VmConfig::net
//! let spec = net.spec(); // -> ContainerSpec::network
//! // ... run the VM ...
//! net.stop();
//! # Ok(()) }
//! ```

pub mod hosts;
pub mod passt;
pub mod ports;
pub mod tap;

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use husk_protocol::NetworkSpec;

pub use hosts::{check_extra_hosts, ExtraHost, HostAddr, HOST_GATEWAY};
pub use passt::{Passt, PasstError, DNS_IP, GATEWAY_IP, GUEST_IP};
pub use ports::{parse_port_spec, publish_all, PortError, PortMapping, Proto};
pub use tap::{Tap, TapError};

/// The interface MTU in TAP mode.
pub const TAP_MTU: u16 = 1500;

/// Errors setting up a container's network. Messages are one line.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A port specification or a host port.
    #[error(transparent)]
    Port(#[from] PortError),
    /// passt.
    #[error(transparent)]
    Passt(#[from] PasstError),
    /// The TAP device.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// Options that do not go together.
    #[error("{0}")]
    Options(&'static str),
    /// A bad address in the options.
    #[error("invalid address {0:?} (expected A.B.C.D/PREFIX)")]
    Address(String),
    /// A bad `--add-host` value.
    #[error("invalid --add-host {0:?} (expected NAME:IP or NAME:host-gateway)")]
    AddHost(String),
}

/// Which network a container gets. Stored (serde) as its `--network`
/// spelling.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum NetworkMode {
    /// passt: outbound access and published ports, no privileges.
    #[default]
    User,
    /// A TAP device of this name (default: `husk` + random hex), root only.
    Tap(Option<String>),
    /// Loopback only.
    None,
}

impl std::str::FromStr for NetworkMode {
    type Err = NetError;

    /// `--network` values: `passt`/`user`/`default`/`bridge`, `tap`,
    /// `tap:NAME`, `none`.
    fn from_str(s: &str) -> Result<Self, NetError> {
        match s {
            "" | "default" | "user" | "passt" | "bridge" => Ok(NetworkMode::User),
            "none" => Ok(NetworkMode::None),
            "tap" => Ok(NetworkMode::Tap(None)),
            _ => match s.strip_prefix("tap:") {
                Some(name) if tap::valid_name(name) => Ok(NetworkMode::Tap(Some(name.into()))),
                _ => Err(NetError::Options(
                    "--network must be one of: passt (default), tap, tap:NAME, none",
                )),
            },
        }
    }
}

impl std::fmt::Display for NetworkMode {
    /// The canonical `--network` value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetworkMode::User => f.write_str("passt"),
            NetworkMode::None => f.write_str("none"),
            NetworkMode::Tap(None) => f.write_str("tap"),
            NetworkMode::Tap(Some(name)) => write!(f, "tap:{name}"),
        }
    }
}

impl TryFrom<String> for NetworkMode {
    type Error = NetError;

    fn try_from(s: String) -> Result<Self, NetError> {
        s.parse()
    }
}

impl From<NetworkMode> for String {
    fn from(mode: NetworkMode) -> String {
        mode.to_string()
    }
}

/// What [`Network::start`] sets up.
#[derive(Debug, Clone, Default)]
pub struct NetworkOptions {
    /// The backend.
    pub mode: NetworkMode,
    /// Published ports (`-p`, `-P`); only with [`NetworkMode::User`].
    pub ports: Vec<PortMapping>,
    /// The guest's MAC address; default: a random locally administered one.
    pub mac: Option<[u8; 6]>,
    /// TAP mode: the guest's address and prefix (`192.168.1.10/24`) and
    /// gateway; default: the interface is only brought up.
    pub tap_ipv4: Option<(String, Ipv4Addr)>,
    /// The passt binary; default: `passt` in `PATH`.
    pub passt: Option<PathBuf>,
    /// `--add-host` entries; a `host-gateway` one (passt only) lets the
    /// guest reach the host.
    pub extra_hosts: Vec<ExtraHost>,
}

enum Backend {
    None,
    Passt(Passt),
    Tap(Tap),
}

/// A container's network, from [`Network::start`] until [`Network::stop`]
/// (or drop).
pub struct Network {
    backend: Backend,
    mac: [u8; 6],
    ports: Vec<PortMapping>,
    spec: Option<NetworkSpec>,
    extra_hosts: Vec<ExtraHost>,
}

impl Network {
    /// Checks the options and host ports, then starts the backend. On
    /// error nothing is left running.
    pub fn start(opts: NetworkOptions) -> Result<Network, NetError> {
        let mac = opts.mac.unwrap_or_else(random_mac);
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(NetError::Options("the MAC address must be unicast"));
        }
        check_extra_hosts(&opts.mode, &opts.extra_hosts)?;
        let extra_hosts = opts.extra_hosts;
        let mac_str = vmm::devices::virtio::net::format_mac(&mac);
        match opts.mode {
            NetworkMode::None => {
                if !opts.ports.is_empty() {
                    return Err(NetError::Options(
                        "ports cannot be published with --network none",
                    ));
                }
                Ok(Network {
                    backend: Backend::None,
                    mac,
                    ports: Vec::new(),
                    spec: None,
                    extra_hosts,
                })
            }
            NetworkMode::User => {
                let binary = match opts.passt {
                    Some(p) if p.is_file() => p,
                    Some(_) => return Err(PasstError::NotFound.into()),
                    None => passt::find_passt()?,
                };
                let ports = ports::resolve_host_ports(&opts.ports)?;
                let passt = Passt::start(&binary, &ports)?;
                Ok(Network {
                    backend: Backend::Passt(passt),
                    mac,
                    ports,
                    spec: Some(NetworkSpec {
                        mac: mac_str,
                        ipv4: format!("{GUEST_IP}/{}", passt::PREFIX_LEN),
                        gateway4: GATEWAY_IP.to_string(),
                        ipv6: None,
                        gateway6: None,
                        mtu: u32::from(passt::MTU),
                    }),
                    extra_hosts,
                })
            }
            NetworkMode::Tap(name) => {
                if !opts.ports.is_empty() {
                    return Err(NetError::Options(
                        "ports cannot be published with --network tap (the host's own setup routes to the container)",
                    ));
                }
                let (ipv4, gateway4) = match &opts.tap_ipv4 {
                    Some((addr, gw)) => (check_cidr(addr)?, gw.to_string()),
                    None => (String::new(), String::new()),
                };
                let name = name.unwrap_or_else(|| format!("husk{}", hex(&random_bytes::<4>())));
                let tap = Tap::create(&name)?;
                Ok(Network {
                    backend: Backend::Tap(tap),
                    mac,
                    ports: Vec::new(),
                    spec: Some(NetworkSpec {
                        mac: mac_str,
                        ipv4,
                        gateway4,
                        ipv6: None,
                        gateway6: None,
                        mtu: u32::from(TAP_MTU),
                    }),
                    extra_hosts,
                })
            }
        }
    }

    /// The guest interface for the agent (`ContainerSpec::network`); `None`
    /// in loopback-only mode. An empty `ipv4` means: link up, no address.
    pub fn spec(&self) -> Option<NetworkSpec> {
        self.spec.clone()
    }

    /// The VMM's virtio-net device (`VmConfig::net`); `None` in
    /// loopback-only mode or after [`Network::stop`].
    pub fn net_config(&self) -> Option<vmm::NetConfig> {
        let backend = match &self.backend {
            Backend::None => return None,
            Backend::Passt(p) => vmm::NetBackend::Stream(p.stream()),
            Backend::Tap(t) => vmm::NetBackend::Tap(t.name().to_string()),
        };
        let (mtu, egress) = match &self.backend {
            Backend::Tap(_) => (TAP_MTU, vmm::EgressPolicy::default()),
            _ => (
                passt::MTU,
                passt::egress_policy(hosts::wants_host(&self.extra_hosts)),
            ),
        };
        Some(vmm::NetConfig {
            mac: self.mac,
            mtu,
            backend,
            egress,
            rate_limit: Default::default(),
        })
    }

    /// The published ports with their actual host ports (`husk port`).
    pub fn ports(&self) -> &[PortMapping] {
        &self.ports
    }

    /// The container's /etc/resolv.conf: passt's DNS forwarder, or in TAP
    /// mode the host's resolvers; `None` in loopback-only mode.
    pub fn resolv_conf(&self) -> Option<String> {
        match &self.backend {
            Backend::None => None,
            Backend::Passt(_) => Some(resolv_conf_for(&host_resolv_conf(), Some(DNS_IP))),
            Backend::Tap(_) => Some(resolv_conf_for(&host_resolv_conf(), None)),
        }
    }

    /// /etc/hosts lines naming the container by its address, then the
    /// `--add-host` entries (`host-gateway`: the gateway address).
    pub fn hosts(&self, hostname: &str) -> Vec<String> {
        let mut lines = match self.spec.as_ref().and_then(|s| s.ipv4.split('/').next()) {
            Some(ip) if !ip.is_empty() => vec![format!("{ip}\t{hostname}")],
            _ => Vec::new(),
        };
        lines.extend(hosts::hosts_lines(&self.extra_hosts, GATEWAY_IP.into()));
        lines
    }

    /// passt's pid (diagnostics, tests).
    pub fn passt_pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Passt(p) => p.pid(),
            _ => None,
        }
    }

    /// The TAP device's name, in TAP mode.
    pub fn tap_name(&self) -> Option<&str> {
        match &self.backend {
            Backend::Tap(t) => Some(t.name()),
            _ => None,
        }
    }

    /// Stops passt or deletes the TAP device. Idempotent; also done on drop.
    pub fn stop(&mut self) {
        match std::mem::replace(&mut self.backend, Backend::None) {
            Backend::None => {}
            Backend::Passt(mut p) => p.stop(),
            Backend::Tap(mut t) => {
                if let Err(e) = t.delete() {
                    log::warn!("{e}");
                }
            }
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.stop();
    }
}

fn check_cidr(s: &str) -> Result<String, NetError> {
    let bad = || NetError::Address(s.to_string());
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    ip.parse::<Ipv4Addr>().map_err(|_| bad())?;
    match prefix.parse::<u8>() {
        Ok(p) if p <= 32 => Ok(s.to_string()),
        _ => Err(bad()),
    }
}

/// The host's /etc/resolv.conf (empty when unreadable).
pub fn host_resolv_conf() -> String {
    std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
}

/// Public resolvers for a guest when the host has none it can reach, as
/// Docker does.
const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// A resolv.conf for the guest: `nameserver` lines replaced by `dns` when
/// given, else the host's minus loopback ones the guest cannot reach (public
/// resolvers when none remain); `search`, `domain` and `options` lines kept.
pub fn resolv_conf_for(host: &str, dns: Option<Ipv4Addr>) -> String {
    let mut out = String::new();
    match dns {
        Some(ip) => out.push_str(&format!("nameserver {ip}\n")),
        None => {
            for line in host.lines() {
                let mut w = line.split_whitespace();
                if w.next() == Some("nameserver") {
                    let reachable = w
                        .next()
                        .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                        .filter(|a| !a.is_loopback());
                    if let Some(addr) = reachable {
                        out.push_str(&format!("nameserver {addr}\n"));
                    }
                }
            }
            if out.is_empty() {
                for addr in FALLBACK_NAMESERVERS {
                    out.push_str(&format!("nameserver {addr}\n"));
                }
            }
        }
    }
    for line in host.lines() {
        let first = line.split_whitespace().next();
        if matches!(first, Some("search") | Some("domain") | Some("options")) {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    out
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if read.is_err() {
        // Unlikely; fall back to time and pid, good enough for a MAC.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id()) << 64;
        for (i, x) in b.iter_mut().enumerate() {
            *x = (seed >> ((i % 16) * 8)) as u8;
        }
    }
    b
}

/// A random locally administered unicast MAC address (`02:xx:...`).
pub fn random_mac() -> [u8; 6] {
    let r = random_bytes::<5>();
    [0x02, r[0], r[1], r[2], r[3], r[4]]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
