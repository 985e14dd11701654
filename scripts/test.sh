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
# Each VM test appends its name and how long it held its VM slot; the
# slowest are listed at the end with how busy the CPUs were, so a run that
# got slower says where (the suite's time is mostly guest CPU time).
HUSK_TEST_TIMES="$(mktemp /tmp/husk-test-times.XXXXXX)"
export HUSK_TEST_TIMES
trap 'rm -f "$HUSK_TEST_TIMES"' EXIT
cpu_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
read -r busy0 all0 < <(cpu_ticks)
start=$SECONDS
log "cargo test (HUSK_KERNEL=$HUSK_KERNEL, HUSK_TEST_STRICT=1)"
cd "$HUSK_REPO"
rc=0
cargo test --release --workspace --no-fail-fast || rc=$?
read -r busy1 all1 < <(cpu_ticks)
log "tests took $((SECONDS - start)) s, CPUs $(( 100 * (busy1 - busy0) / (all1 - all0 + 1) ))% busy; slowest VM tests (s):"
sort -k2 -n -r "$HUSK_TEST_TIMES" | head -15 >&2
exit "$rc"
