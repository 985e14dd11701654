//! Published ports and the container's network: checked at create time,
//! started by the monitor, reported by `husk port` and `ps`.

use husk_net::{NetworkMode, NetworkOptions};

use crate::config::ContainerConfig;
use crate::Error;

/// The `--network` mode of `network` (empty: the default).
pub fn network_mode(network: &str) -> Result<NetworkMode, Error> {
    Ok(network.parse::<NetworkMode>()?)
}

/// The port specifications a container is created with: `publish` (`-p`,
/// each checked), then with `publish_all` (`-P`) the image's `exposed`
/// ports on free host ports (ignored without a network, like Docker).
pub fn published(
    publish: &[String],
    publish_all: bool,
    exposed: &[String],
    network: &str,
) -> Result<Vec<String>, Error> {
    let mode = network_mode(network)?;
    for p in publish {
        husk_net::parse_port_spec(p).map_err(husk_net::NetError::from)?;
    }
    if !publish.is_empty() && mode != NetworkMode::User {
        return Err(Error::Invalid(format!(
            "ports cannot be published with --network {network}"
        )));
    }
    let mut out = publish.to_vec();
    if publish_all && mode == NetworkMode::User {
        husk_net::publish_all(exposed).map_err(husk_net::NetError::from)?;
        out.extend(exposed.iter().cloned());
    }
    Ok(out)
}

/// What the monitor passes to [`husk_net::Network::start`] for `cfg`.
pub fn network_options(cfg: &ContainerConfig) -> Result<NetworkOptions, Error> {
    let mut ports = Vec::new();
    for p in &cfg.ports {
        ports.extend(husk_net::parse_port_spec(p).map_err(husk_net::NetError::from)?);
    }
    Ok(NetworkOptions {
        mode: network_mode(&cfg.network)?,
        ports,
        // For tests and unusual installs.
        passt: std::env::var_os("HUSK_PASST").map(std::path::PathBuf::from),
        ..NetworkOptions::default()
    })
}

/// `80/tcp -> 0.0.0.0:8080` (`husk port`) as `ps` shows it:
/// `0.0.0.0:8080->80/tcp`.
pub fn ps_form(port: &str) -> String {
    match port.split_once(" -> ") {
        Some((container, host)) => format!("{host}->{container}"),
        None => port.to_string(),
    }
}

/// Whether `port` (`80/tcp -> ...`) matches `husk port`'s filter
/// `PRIVATE_PORT[/PROTO]` (the protocol defaults to tcp).
pub fn matches(port: &str, filter: &str) -> bool {
    let container = port.split(" -> ").next().unwrap_or_default();
    let filter = if filter.contains('/') {
        filter.to_string()
    } else {
        format!("{filter}/tcp")
    };
    container == filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_checked_and_exposed_ones_added() {
        let p = published(&["127.0.0.1:8080:80".into()], true, &["53/udp".into()], "").unwrap();
        assert_eq!(p, ["127.0.0.1:8080:80", "53/udp"]);
        assert!(published(&["80:x".into()], false, &[], "").is_err());
        assert!(published(&["80".into()], false, &[], "none").is_err());
        assert!(published(&[], false, &[], "bogus").is_err());
        assert!(published(&[], true, &["80/tcp".into()], "none")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn ps_form_and_filters() {
        let p = "80/tcp -> 0.0.0.0:8080";
        assert_eq!(ps_form(p), "0.0.0.0:8080->80/tcp");
        assert!(matches(p, "80"));
        assert!(matches(p, "80/tcp"));
        assert!(!matches(p, "80/udp"));
        assert!(!matches(p, "8080"));
    }
}
