#!/usr/bin/env bash
# The quality lane: formatting, lints and docs, all warnings denied. CI runs
# it before the test suite (.ci/run); run it before sending a change.
#
# clippy and rustdoc use the release profile, the one scripts/test.sh builds
# with: build scripts and proc macros are then compiled once for both, and
# rustdoc reuses the dependency metadata clippy produced.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
install_packages  # a C compiler for the -sys crates
install_rust_components
cd "$HUSK_REPO"
log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy (warnings denied)"
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
log "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --release --workspace --no-deps --quiet
