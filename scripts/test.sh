#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and end-to-end tests that boot real
# KVM microVMs and start a real registry. Installs what it needs first.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
install_packages
check_kvm
build_kernel
build_workspace
log "cargo test (HUSK_KERNEL=$HUSK_KERNEL)"
cd "$HUSK_REPO"
cargo test --release --workspace --no-fail-fast
