//! The bodies of husk's fuzz targets: every parser that reads hostile
//! input (a guest's virtqueues and MMIO writes, the agent protocol, a
//! Dockerfile, image references, registry documents, layer tars).
//!
//! `fuzz/libfuzzer` wraps each function here in a libFuzzer target
//! (`scripts/fuzz.sh` runs them with cargo-fuzz on the nightly
//! toolchain); the tests below replay the committed corpus
//! (`fuzz/corpus/<target>/`), so every input that once crashed a target
//! stays a regression test on the stable toolchain.
//!
//! A target passes an input when it returns: errors are expected, panics,
//! hangs and memory errors are the findings.

mod parsers;
mod virtio;

pub use parsers::{dockerfile, image_documents, image_reference, layer_tar, protocol_frames};
pub use virtio::{virtio_blk, virtio_net, virtio_vsock};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/libfuzzer` and the corpus name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("virtio_blk", virtio_blk),
    ("virtio_net", virtio_net),
    ("virtio_vsock", virtio_vsock),
    ("protocol_frames", protocol_frames),
    ("dockerfile", dockerfile),
    ("image_reference", image_reference),
    ("image_documents", image_documents),
    ("layer_tar", layer_tar),
];

#[cfg(test)]
mod replay {
    use std::path::Path;

    /// Runs every committed corpus input through its target.
    #[test]
    fn the_committed_corpus_passes_every_target() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for (name, target) in super::TARGETS {
            let dir = root.join(name);
            let mut inputs: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.expect("corpus entry").path())
                .collect();
            inputs.sort();
            assert!(!inputs.is_empty(), "{name}: the seed corpus is empty");
            for input in inputs {
                let data = std::fs::read(&input).expect("corpus file");
                target(&data);
            }
        }
    }
}
