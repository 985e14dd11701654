//! The guest contract: what the host and the guest agent agree on without
//! saying it over the wire. Disk serials name disks by role, the kernel
//! command line starts the agent from its EROFS disk, the agent reaches the
//! host on fixed vsock ports. Defined here once for every VM husk starts.

use std::path::{Path, PathBuf};

use husk_protocol::RootFs;
pub use husk_protocol::{AGENT_PORT, EXEC_PORT};

/// The serial of the agent disk (EROFS, read-only, always the first disk,
/// hence `/dev/vda`, the guest's root at boot).
pub const AGENT_SERIAL: &str = "husk-agent";
/// The serial of a container's writable disk.
pub const RW_SERIAL: &str = "rw";
/// The guest's vsock context id.
pub const GUEST_CID: u64 = 3;
/// Kernel command line added to the VMM's own: the agent disk is the root
/// and the agent is PID 1; `panic=-1` makes a panic reboot at once, which
/// ends the VM (see [`crate::explain`]). `cgroup_disable=memory` turns off
/// the guest's memory cgroup accounting, which nothing in the guest reads
/// (the agent makes no cgroups and containers see no cgroup filesystem) and
/// which costs every page the guest kernel allocates a few hundred
/// instructions, emulated on PVM hosts (docs/BENCHMARKS.md).
pub const CMDLINE: &str =
    "root=/dev/vda ro rootfstype=erofs init=/husk-agent quiet panic=-1 cgroup_disable=memory";

/// What a disk is to the guest; decides its serial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskRole {
    /// Image layer `i` (0: bottom), `layer<i>`.
    Layer(usize),
    /// The container's writable disk, `rw`.
    Writable,
    /// Volume `i`, `vol<i>`.
    Volume(usize),
    /// User disk `i` of `husk vm run`, `disk<i>`.
    User(usize),
}

impl DiskRole {
    /// The virtio-blk serial the agent finds the disk by.
    pub fn serial(self) -> String {
        match self {
            DiskRole::Layer(i) => format!("layer{i}"),
            DiskRole::Writable => RW_SERIAL.to_string(),
            DiskRole::Volume(i) => format!("vol{i}"),
            DiskRole::User(i) => format!("disk{i}"),
        }
    }
}

/// The serial of an empty disk slot (of a template, or of a VM restored
/// from one with fewer disks than slots): `empty<i>`.
pub fn empty_slot_serial(index: usize) -> String {
    format!("empty{index}")
}

/// The root of a container made from an image with `layers` layers: the
/// layer disks stacked under the writable disk (the disks of
/// [`crate::Disk::image_disks`]).
pub fn image_root(layers: usize) -> RootFs {
    RootFs::Layers {
        layers: (0..layers).map(|i| DiskRole::Layer(i).serial()).collect(),
        writable: DiskRole::Writable.serial(),
    }
}

/// The Unix socket the VMM forwards the guest's connections to host port
/// `port` to, for the VM whose vsock socket is `vsock`.
pub fn host_port_socket(vsock: &Path, port: u32) -> PathBuf {
    PathBuf::from(format!("{}_{port}", vsock.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_by_role() {
        assert_eq!(DiskRole::Layer(2).serial(), "layer2");
        assert_eq!(DiskRole::Writable.serial(), "rw");
        assert_eq!(DiskRole::Volume(0).serial(), "vol0");
        assert_eq!(DiskRole::User(1).serial(), "disk1");
        assert_eq!(
            host_port_socket(Path::new("/run/x/v.sock"), AGENT_PORT),
            Path::new("/run/x/v.sock_1024")
        );
    }
}
