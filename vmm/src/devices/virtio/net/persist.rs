//! What a snapshot keeps of the network device: its MAC and MTU. The
//! backend is not saved: a restore opens the one it is given, and the
//! config space shows the new MAC (the guest agent sets the interface's
//! address itself). Nor is the egress policy: it belongs to the VM that
//! runs, not to the template it may be restored from, and comes with each
//! restore's [`crate::NetConfig`].

use serde::{Deserialize, Serialize};

use super::device::Net;

/// The network device's own state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    /// The MAC address in its config space.
    pub mac: [u8; 6],
    /// The MTU it offered.
    pub mtu: u16,
}

impl Net {
    /// The device's state for a snapshot.
    pub fn save_state(&self) -> NetState {
        NetState {
            mac: self.mac(),
            mtu: self.mtu(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    use super::*;
    use crate::devices::virtio::net::{NetDeviceConfig, StreamBackend};
    use crate::devices::virtio::VirtioDevice;

    #[test]
    fn state_round_trips_and_the_mac_is_in_the_config_space() {
        let (ours, _peer) = UnixStream::pair().unwrap();
        let backend = StreamBackend::new(Arc::new(ours)).unwrap();
        let mac = [0x52, 0x54, 0, 1, 2, 3];
        let config = NetDeviceConfig {
            mac,
            mtu: 65520,
            trusted_checksums: true,
            egress: Default::default(),
        };
        let net = Net::new(config, Box::new(backend)).unwrap();
        let state = net.save_state();
        assert_eq!(state, NetState { mac, mtu: 65520 });
        let bytes = postcard::to_stdvec(&state).unwrap();
        assert_eq!(postcard::from_bytes::<NetState>(&bytes).unwrap(), state);
        let mut cfg = [0u8; 6];
        net.read_config(0, &mut cfg);
        assert_eq!(cfg, mac);
    }
}
