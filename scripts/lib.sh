# Shared steps of scripts/setup.sh and scripts/test.sh. Source it; don't run it.
# shellcheck shell=bash

HUSK_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HUSK_CACHE="${HUSK_CACHE:-/var/cache/husk}"
AGENT_TARGET=x86_64-unknown-linux-gnu

# Debian packages husk needs to build, run and test.
HUSK_PACKAGES=(
    build-essential flex bison bc libelf-dev xz-utils patch  # guest kernel build
    linux-source-6.1                                         # guest kernel source
    busybox-static e2fsprogs erofs-utils                     # root filesystems, layer disks
    passt                                                    # user-mode networking
    docker-registry skopeo                                   # registry tests, image benchmark
    qemu-system-x86                                          # the peer VMM in benchmarks
    crun                                                     # the peer runtime in benchmarks
    containerd runc                                          # containerd shim tests (runc: containerd's own shim, podman)
    podman conmon                                            # husk-oci tests (podman --runtime husk-oci, through conmon)
)

log() { echo "==> $*" >&2; }

install_packages() {
    local missing=()
    for p in "${HUSK_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # docker-registry's package starts a daemon on :5000; tests start their own.
    if command -v systemctl >/dev/null && systemctl is-active -q docker-registry 2>/dev/null; then
        systemctl stop docker-registry || true
    fi
}

# rustfmt and clippy, for scripts/check.sh; added with rustup when missing.
install_rust_components() {
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    if [ ${#missing[@]} -gt 0 ]; then
        command -v rustup >/dev/null || { echo "cargo lacks ${missing[*]} and rustup is not installed" >&2; return 1; }
        log "rustup component add ${missing[*]}"
        rustup component add "${missing[@]}"
    fi
}

check_kvm() {
    [ -e /dev/kvm ] || { echo "husk needs /dev/kvm (KVM enabled in the host kernel)" >&2; return 1; }
}

build_kernel() {
    log "guest kernel"
    HUSK_KERNEL="$("$HUSK_REPO/guest-kernel/build.sh")"
    export HUSK_KERNEL
}

build_workspace() {
    log "cargo build --release"
    (cd "$HUSK_REPO" && cargo build --release --quiet)
    log "static agent"
    (cd "$HUSK_REPO" && CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --quiet -p husk-agent --target "$AGENT_TARGET")
    local target_dir="${CARGO_TARGET_DIR:-$HUSK_REPO/target}"
    export HUSK_AGENT="$target_dir/$AGENT_TARGET/release/husk-agent"
    export HUSK_BIN="$target_dir/release/husk"
    export HUSK_SHIM="$target_dir/release/containerd-shim-husk-v2"
    export HUSK_OCI="$target_dir/release/husk-oci"
    export HUSK_VMM="$target_dir/release/husk-vmm"
}
