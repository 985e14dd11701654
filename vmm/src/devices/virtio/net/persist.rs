//! What a snapshot keeps of the network device: its MAC and MTU. The
//! backend is not saved: a restore opens the one it is given, and the
//! config space shows the new MAC (the guest agent sets the interface's
//! address itself).

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
