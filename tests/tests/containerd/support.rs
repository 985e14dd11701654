//! Helpers for tests/tests/containerd.rs: the shared private containerd
//! (`husk_tests::containerd`) with husk's shim on its PATH and the busybox
//! test image imported.

pub use husk_tests::containerd::{layers_made_under, Containerd, IMAGE, SHORT, VM_TIMEOUT};
use husk_tests::shim_bin;

use crate::csupport::{busybox_layer, image};
use crate::support::write_docker_save;

/// The runtime under test.
pub const RUNTIME: &str = "io.containerd.husk.v2";

/// Starts containerd with the shim and the test image, or `None`
/// (skipped).
pub fn start(test: &str) -> Option<Containerd> {
    Containerd::start(test, &shim_bin(), |tar| {
        write_docker_save(
            tar,
            &image(&busybox_layer(), serde_json::json!({})),
            "bb:test",
        )
    })
}
