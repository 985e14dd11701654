//! `containerd-shim-husk-v2`: containerd's runtime v2 shim for husk
//! (`--runtime io.containerd.husk.v2`). Every container runs in its own
//! KVM microVM, created and driven by the `husk-runtime` library exactly
//! as `husk run` does; this binary translates containerd's task API to it.
//!
//! The same binary is also the per-container monitor the runtime launches
//! (`containerd-shim-husk-v2 container-monitor ROOT ID MODE`), so a shim
//! needs no `husk` binary beside it.

mod errors;
mod exec;
mod service;
mod shim;
mod stats;
mod tasks;

use containerd_shim::Config;

/// The runtime's name in containerd.
pub const RUNTIME_ID: &str = "io.containerd.husk.v2";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("container-monitor") {
        // Before any thread: the monitor forks.
        let [root, id, mode] = [2, 3, 4].map(|i| args.get(i).cloned().unwrap_or_default());
        std::process::exit(husk_runtime::monitor::main(
            std::path::Path::new(&root),
            &id,
            &mode,
        ));
    }
    let config = Config {
        // Monitors are double-forked daemons that must outlive the shim
        // (containerd's `delete` action cleans up after a dead shim), and
        // the shim waits for its own children (mkfs, the monitor's
        // launcher) itself: no subreaper, no reaper thread racing those
        // waits.
        no_reaper: true,
        no_sub_reaper: true,
        ..Config::default()
    };
    containerd_shim::run::<shim::HuskShim>(RUNTIME_ID, Some(config));
}
