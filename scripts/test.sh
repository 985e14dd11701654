#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and end-to-end tests that boot real
# KVM microVMs and start a real registry. Installs what it needs first.
# A test that cannot run here (no KVM, not root, a tool missing) fails
# instead of skipping: HUSK_TEST_STRICT=1 (a plain `cargo test` skips them).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
install_packages
check_kvm
build_kernel
build_workspace
export HUSK_TEST_STRICT=1
log "cargo test (HUSK_KERNEL=$HUSK_KERNEL, HUSK_TEST_STRICT=1)"
cd "$HUSK_REPO"
cargo test --release --workspace --no-fail-fast
