//! What a snapshot keeps of a disk slot: its capacity, serial and
//! read-only flag as they were when it was saved. The backing is not
//! saved: a restore opens the backing it is given (or none, an empty
//! slot), and the shared restore ([`crate::devices::virtio::persist`])
//! tells the driver when the capacity changed.

use serde::{Deserialize, Serialize};

use super::device::Block;
use super::BlockConfig;
use crate::config::DiskConfig;

/// A disk slot's own state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockState {
    /// Capacity in bytes (a multiple of 512; 0 for an empty slot).
    pub capacity: u64,
    /// The serial GET_ID answered.
    pub serial: String,
    /// Whether the device refused writes.
    pub read_only: bool,
}

impl Block {
    /// The slot's state for a snapshot.
    pub fn save_state(&self) -> BlockState {
        BlockState {
            capacity: self.capacity_bytes(),
            serial: self.serial(),
            read_only: self.is_read_only(),
        }
    }
}

impl From<&DiskConfig> for BlockConfig {
    fn from(disk: &DiskConfig) -> Self {
        BlockConfig {
            path: disk.path.clone(),
            read_only: disk.read_only,
            serial: disk.serial.clone(),
            rate_limit: disk.rate_limit,
        }
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
