#!/usr/bin/env bash
# Builds the husk guest kernel (an uncompressed vmlinux) from Debian's
# linux-source-6.1 with our config fragment and patches, and caches it outside
# the checkout, keyed by a hash of every input. Prints the vmlinux path last.
#
#   guest-kernel/build.sh            # build if not cached, print the path
#   HUSK_CACHE=/somewhere guest-kernel/build.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src_tar=/usr/src/linux-source-6.1.tar.xz
cache="${HUSK_CACHE:-/var/cache/husk}/guest-kernel"

die() { echo "guest-kernel: $*" >&2; exit 1; }
[ -f "$src_tar" ] || die "$src_tar missing: apt-get install linux-source-6.1"
for tool in make gcc flex bison bc xz; do
    command -v "$tool" >/dev/null || die "$tool missing (see scripts/setup.sh for the packages)"
done

src_version="$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || stat -c %s "$src_tar")"
hash="$( { echo "$src_version"; cat "$here/build.sh" "$here/husk.config" "$here/required.txt" "$here"/patches/*.patch; } | sha256sum | cut -c1-16)"
out="$cache/$hash"
if [ -f "$out/vmlinux" ]; then
    echo "$out/vmlinux"
    exit 0
fi

mkdir -p "$cache"
# One build at a time: a concurrent caller waits, then finds the result cached.
exec 9>"$cache/.lock"
flock 9
if [ -f "$out/vmlinux" ]; then
    echo "$out/vmlinux"
    exit 0
fi
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "guest-kernel: building $hash in $work (a few minutes)" >&2
tar -xJf "$src_tar" -C "$work"
ksrc="$work/linux-source-6.1"
for p in "$here"/patches/*.patch; do
    patch -d "$ksrc" -p1 --quiet --forward < "$p" || die "patch $(basename "$p") does not apply"
done
make -C "$ksrc" -s KCONFIG_ALLCONFIG="$here/husk.config" allnoconfig >/dev/null
missing=0
while read -r line; do
    case "$line" in ''|'#'*) continue ;; esac
    grep -qx "$line" "$ksrc/.config" || { echo "guest-kernel: $line did not take" >&2; missing=1; }
done < "$here/required.txt"
[ "$missing" = 0 ] || die "config fragment incomplete"
make -C "$ksrc" -s -j"$(nproc)" vmlinux >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; die "kernel build failed"; }
mkdir -p "$out.tmp"
cp "$ksrc/vmlinux" "$ksrc/.config" "$ksrc/System.map" "$out.tmp/"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out/vmlinux"
