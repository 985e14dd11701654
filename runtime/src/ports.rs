//! Published ports and the container's network: checked at create time,
//! started by the monitor.

use husk_net::{NetworkMode, NetworkOptions, PortMapping};

use crate::config::ContainerConfig;
use crate::Error;

/// The ports a container is created with: `publish` (`-p`), then with
/// `publish_all` (`-P`) the image's `exposed` ports on free host ports
/// (ignored without a network, like Docker).
pub fn published(
    publish: &[PortMapping],
    publish_all: bool,
    exposed: &[String],
    network: &NetworkMode,
) -> Result<Vec<PortMapping>, Error> {
    if !publish.is_empty() && *network != NetworkMode::User {
        return Err(Error::Invalid(format!(
            "ports cannot be published with --network {network}"
        )));
    }
    let mut out = publish.to_vec();
    if publish_all && *network == NetworkMode::User {
        out.extend(husk_net::publish_all(exposed).map_err(husk_net::NetError::from)?);
    }
    Ok(out)
}

/// What the monitor passes to [`husk_net::Network::start`] for `cfg`.
pub fn network_options(cfg: &ContainerConfig) -> Result<NetworkOptions, Error> {
    Ok(NetworkOptions {
        mode: cfg.network.clone(),
        ports: cfg.ports.clone(),
        extra_hosts: cfg.extra_hosts.clone(),
        // For tests and unusual installs.
        passt: std::env::var_os("HUSK_PASST").map(std::path::PathBuf::from),
        ..NetworkOptions::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_ports_are_added_only_with_a_network() {
        let p = husk_net::parse_port_spec("127.0.0.1:8080:80").unwrap();
        let user = NetworkMode::User;
        let out = published(&p, true, &["53/udp".into()], &user).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], p[0]);
        assert_eq!(
            (out[1].container_port, out[1].proto),
            (53, husk_net::Proto::Udp)
        );
        assert!(published(&p, false, &[], &NetworkMode::None).is_err());
        assert!(published(&[], false, &["x:1".into()], &user).is_ok());
        assert!(published(&[], true, &["1:2/tcp".into()], &user).is_err());
        assert!(published(&[], true, &["80/tcp".into()], &NetworkMode::None)
            .unwrap()
            .is_empty());
    }
}
