//! `--add-host`: extra /etc/hosts entries, and Docker's special address
//! `host-gateway`, which names the host and is the only way a container
//! reaches it (see [`crate::passt::egress_policy`]).

use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::NetError;

/// Docker's special `--add-host` address for the host.
pub const HOST_GATEWAY: &str = "host-gateway";

/// Where an `--add-host` name points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostAddr {
    /// An address.
    Ip(IpAddr),
    /// The host, as the guest reaches it (passt's gateway address); also
    /// lifts the block on it.
    HostGateway,
}

/// One `--add-host NAME:ADDR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    /// The host name.
    pub name: String,
    /// Its address.
    pub addr: HostAddr,
}

impl FromStr for ExtraHost {
    type Err = NetError;

    /// Docker's spellings: `NAME:ADDR` or `NAME=ADDR`, where ADDR is an
    /// IPv4 or IPv6 address (IPv6 possibly in brackets) or `host-gateway`.
    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = || NetError::AddHost(s.to_string());
        let (name, addr) = s
            .split_once('=')
            .or_else(|| s.split_once(':'))
            .ok_or_else(bad)?;
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_name {
            return Err(bad());
        }
        let addr = if addr == HOST_GATEWAY {
            HostAddr::HostGateway
        } else {
            let bare = addr
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .unwrap_or(addr);
            HostAddr::Ip(bare.parse().map_err(|_| bad())?)
        };
        Ok(ExtraHost {
            name: name.to_string(),
            addr,
        })
    }
}

impl std::fmt::Display for ExtraHost {
    /// `NAME:ADDR`, as `docker inspect` shows `HostConfig.ExtraHosts`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addr {
            HostAddr::Ip(ip) => write!(f, "{}:{ip}", self.name),
            HostAddr::HostGateway => write!(f, "{}:{HOST_GATEWAY}", self.name),
        }
    }
}

/// Whether any entry is `host-gateway` (the container may reach the host).
pub fn wants_host(hosts: &[ExtraHost]) -> bool {
    hosts.iter().any(|h| h.addr == HostAddr::HostGateway)
}

/// Checks `hosts` against the network mode: `host-gateway` needs passt
/// (TAP networks reach the host as the host's own setup says; `none`
/// has no host to reach).
pub fn check_extra_hosts(mode: &crate::NetworkMode, hosts: &[ExtraHost]) -> Result<(), NetError> {
    if wants_host(hosts) && *mode != crate::NetworkMode::User {
        return Err(NetError::Options(
            "--add-host NAME:host-gateway needs the default network (passt)",
        ));
    }
    Ok(())
}

/// The /etc/hosts lines of `hosts`, `host-gateway` being `gateway`.
pub fn hosts_lines(hosts: &[ExtraHost], gateway: IpAddr) -> Vec<String> {
    hosts
        .iter()
        .map(|h| {
            let ip = match h.addr {
                HostAddr::Ip(ip) => ip,
                HostAddr::HostGateway => gateway,
            };
            format!("{ip}\t{}", h.name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ExtraHost, NetError> {
        s.parse()
    }

    #[test]
    fn docker_spellings_parse() {
        let h = parse("host.docker.internal:host-gateway").unwrap();
        assert_eq!(h.name, "host.docker.internal");
        assert_eq!(h.addr, HostAddr::HostGateway);
        assert_eq!(h.to_string(), "host.docker.internal:host-gateway");
        let h = parse("db:10.1.2.3").unwrap();
        assert_eq!(h.addr, HostAddr::Ip("10.1.2.3".parse().unwrap()));
        assert_eq!(h.to_string(), "db:10.1.2.3");
        for v6 in ["v6:2001:db8::1", "v6=2001:db8::1", "v6:[2001:db8::1]"] {
            let h = parse(v6).unwrap();
            assert_eq!(h.name, "v6", "{v6}");
            assert_eq!(h.addr, HostAddr::Ip("2001:db8::1".parse().unwrap()));
        }
        assert_eq!(parse("a_b=1.2.3.4").unwrap().name, "a_b");
        for bad in [
            "",
            "noaddr",
            ":1.2.3.4",
            "name:",
            "name:300.1.1.1",
            "na me:1.2.3.4",
            "name:host_gateway",
            "n#:1.2.3.4",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains("--add-host"), "{bad}: {e}");
        }
    }

    #[test]
    fn stored_typed_and_rendered_as_hosts_lines() {
        let hosts = vec![
            parse("host.docker.internal:host-gateway").unwrap(),
            parse("db:10.1.2.3").unwrap(),
        ];
        let json = serde_json::to_string(&hosts).unwrap();
        assert_eq!(
            json,
            r#"[{"name":"host.docker.internal","addr":"host_gateway"},{"name":"db","addr":{"ip":"10.1.2.3"}}]"#
        );
        assert_eq!(
            serde_json::from_str::<Vec<ExtraHost>>(&json).unwrap(),
            hosts
        );
        assert_eq!(
            hosts_lines(&hosts, "10.0.2.2".parse().unwrap()),
            ["10.0.2.2\thost.docker.internal", "10.1.2.3\tdb"]
        );
        assert!(wants_host(&hosts));
        assert!(!wants_host(&hosts[1..]));
        use crate::NetworkMode;
        assert!(check_extra_hosts(&NetworkMode::User, &hosts).is_ok());
        assert!(check_extra_hosts(&NetworkMode::None, &hosts[1..]).is_ok());
        for mode in [NetworkMode::None, NetworkMode::Tap(None)] {
            let e = check_extra_hosts(&mode, &hosts).unwrap_err();
            assert!(e.to_string().contains("host-gateway"), "{e}");
        }
    }
}
