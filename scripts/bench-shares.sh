#!/usr/bin/env bash
# Shared-directory benchmark (docs, not a timed test): inside one husk
# container, the same work on a host directory shared over virtio-fs
# (`-v DIR:/share`) and on the container's own writable disk (/rw, the
# overlay on its ext4 disk), in the same run:
#   write: dd SIZE_MIB MiB from /dev/zero, then fsync -> MB/s
#   read:  dd the file back after dropping the guest's page cache -> MB/s
#   create: FILES empty files (echo > fN) -> files/s
#   stat:   ls -l of those files -> files/s
# Prints a markdown table and replaces the generated part of the
# "Shared directories" section of docs/BENCHMARKS.md (BENCH_DOCS=0: print only).
#
#   scripts/bench-shares.sh
# Environment:
#   SIZE_MIB=16   size of the sequential file
#   FILES=100     small files created and listed
#   BENCH_DOCS=1  0: leave docs/BENCHMARKS.md alone
#   HUSK_BIN      husk binary (default: husk on PATH, as scripts/setup.sh installs it)
#   IMAGE         image with busybox (default busybox:husk, built by scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "bench-shares: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (virtiofsd, /dev/kvm)"
SIZE_MIB=${SIZE_MIB:-16}
FILES=${FILES:-100}
IMAGE=${IMAGE:-busybox:husk}
HUSK=${HUSK_BIN:-$(command -v husk || true)}
[ -x "$HUSK" ] || die "no husk binary (run scripts/setup.sh or set HUSK_BIN)"
[[ "$SIZE_MIB" =~ ^[1-9][0-9]{0,3}$ ]] || die "SIZE_MIB must be 1..9999"
[[ "$FILES" =~ ^[1-9][0-9]{0,4}$ ]] || die "FILES must be 1..99999"

share=$(mktemp -d /var/tmp/husk-bench-shares.XXXXXX)
trap 'rm -rf "$share"' EXIT

# One guest script, run once per directory: prints "name value" lines.
# Times come from the guest's /proc/uptime (10 ms resolution), in ns.
script='
set -e
now() { read u _ < /proc/uptime; echo $(( ${u%.*}${u#*.} * 10000000 )); }
for d in /share /rw; do
  mkdir -p $d/bench && cd $d/bench
  t0=$(now); dd if=/dev/zero of=seq bs=1M count='"$SIZE_MIB"' conv=fsync 2>/dev/null; t1=$(now)
  echo "$d write_ns $((t1-t0))"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now); dd if=seq of=/dev/null bs=1M 2>/dev/null; t1=$(now)
  echo "$d read_ns $((t1-t0))"
  mkdir files && cd files
  t0=$(now); i=0; while [ $i -lt '"$FILES"' ]; do echo > f$i; i=$((i+1)); done; t1=$(now)
  echo "$d create_ns $((t1-t0))"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now); ls -l >/dev/null; t1=$(now)
  echo "$d stat_ns $((t1-t0))"
  cd /; rm -rf $d/bench
done
'
out=$("$HUSK" run --rm --privileged -v "$share":/share "$IMAGE" sh -c "$script")
val() { echo "$out" | awk -v d="$1" -v k="$2" '$1 == d && $2 == k { print $3 }'; }
mbs() { awk -v n="$1" -v mib="$SIZE_MIB" 'BEGIN { printf "%.1f", mib * 1048576 / (n / 1e9) / 1e6 }'; }
rate() { awk -v n="$1" -v f="$FILES" 'BEGIN { printf "%.0f", f / (n / 1e9) }'; }

table="| measure | virtio-fs share (\`-v DIR:/share\`) | container's own disk (/rw) |
|---|---|---|
| sequential write, ${SIZE_MIB} MiB + fsync (MB/s) | $(mbs "$(val /share write_ns)") | $(mbs "$(val /rw write_ns)") |
| sequential read, cold cache (MB/s) | $(mbs "$(val /share read_ns)") | $(mbs "$(val /rw read_ns)") |
| create ${FILES} empty files (files/s) | $(rate "$(val /share create_ns)") | $(rate "$(val /rw create_ns)") |
| stat them (\`ls -l\`, cold cache) (files/s) | $(rate "$(val /share stat_ns)") | $(rate "$(val /rw stat_ns)") |"
echo "$table"

[ "${BENCH_DOCS:-1}" = 1 ] || exit 0
doc=docs/BENCHMARKS.md
begin='<!-- bench-shares:begin -->'
end='<!-- bench-shares:end -->'
grep -q "$begin" "$doc" || die "$doc has no $begin marker"
python3 - "$doc" "$begin" "$end" "$table" "$(date -u +%Y-%m-%d)" <<'PY'
import sys
path, begin, end, table, day = sys.argv[1:]
text = open(path).read()
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
body = f"\nMeasured {day} by `scripts/bench-shares.sh`:\n\n{table}\n\n"
open(path, "w").write(head + begin + body + end + tail)
PY
