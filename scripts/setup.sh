#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) and runs the main job: a command
# in a microVM. Installs packages, builds the guest kernel (cached) and the
# workspace, installs husk to /usr/local.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
install_packages
check_kvm
build_kernel
build_workspace

log "installing to /usr/local"
install -d /usr/local/lib/husk
install -m 0644 "$HUSK_KERNEL" /usr/local/lib/husk/vmlinux
install -m 0755 "$HUSK_AGENT" /usr/local/lib/husk/husk-agent
install -m 0755 "$HUSK_BIN" /usr/local/bin/husk
unset HUSK_KERNEL HUSK_AGENT

log "main job: a busybox root filesystem and a command in a microVM"
rootfs="$HUSK_CACHE/busybox-rootfs.ext4"
"$HUSK_REPO/scripts/mkrootfs.sh" "$rootfs"
husk vm run --disk "$rootfs" -- /bin/echo hello
