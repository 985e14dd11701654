#!/usr/bin/env bash
# Builds a small ext4 root filesystem from Debian's busybox-static.
#   scripts/mkrootfs.sh OUT.ext4
set -euo pipefail
out="${1:?usage: mkrootfs.sh OUT.ext4}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir"/{bin,sbin,etc,proc,sys,dev,tmp,root,usr/bin,usr/sbin}
cp /bin/busybox "$dir/bin/busybox"
for applet in $("$dir/bin/busybox" --list); do
    [ -e "$dir/bin/$applet" ] || ln -s busybox "$dir/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$dir/etc/passwd"
echo 'root:x:0:' > "$dir/etc/group"
rm -f "$out.tmp"
mkfs.ext4 -q -F -d "$dir" "$out.tmp" 64M
mv "$out.tmp" "$out"
