#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) and runs the main job: builds a
# busybox image and runs a container from it, each in its own microVM. Installs packages, builds the guest kernel (cached) and the
# workspace, installs husk (its containerd shim and its OCI runtime CLI) to /usr/local.
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
# The jailed VMM process every VM runs in (found next to husk's lib dir).
install -m 0755 "$HUSK_VMM" /usr/local/lib/husk/husk-vmm
install -m 0755 "$HUSK_BIN" /usr/local/bin/husk
# containerd finds its runtime v2 shims on PATH (--runtime io.containerd.husk.v2).
install -m 0755 "$HUSK_SHIM" /usr/local/bin/containerd-shim-husk-v2
# The OCI runtime CLI (podman --runtime, ctr run --runc-binary).
install -m 0755 "$HUSK_OCI" /usr/local/bin/husk-oci
unset HUSK_KERNEL HUSK_AGENT HUSK_VMM

log "main job: build a busybox image (FROM scratch) and run a container in a microVM"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin"
cp /bin/busybox "$ctx/bin/busybox"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY bin/busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["sh"]
DOCKERFILE
husk build --network none -t busybox:husk "$ctx"
husk run --rm busybox:husk echo hello from a microVM
