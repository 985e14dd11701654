#!/usr/bin/env bash
# Profile of the guest kernel work of one husk command (docs, not a test).
#
# On hosts whose KVM emulates guest kernel code (the PVM development hosts,
# docs/HOSTS.md), the host kernel's `kvm:kvm_emulate_insn` tracepoint fires
# once per emulated guest instruction with the guest's instruction pointer.
# This records it while COMMAND runs, maps each guest address to a function
# of the guest kernel (its System.map, built next to vmlinux) and prints the
# number of emulated instructions and the functions that took the most.
# On VMX/SVM hosts almost nothing is emulated and the profile is empty.
#
#   scripts/profile-guest.sh [-n TOP] -- COMMAND...
#   e.g. scripts/profile-guest.sh -- husk run --rm busybox true
# Environment:
#   HUSK_KERNEL  the guest kernel (default: the installed one); its System.map
#                must sit beside it
#   COUNT_ONLY=1 only count (perf stat; recording slows the guest about
#                threefold, which adds timer ticks to the profile)
# Needs root and perf (Debian: linux-perf), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "profile-guest: $*" >&2; exit 1; }

TOP=40
while [ $# -gt 0 ]; do
    case "$1" in
        -n) TOP=${2:?-n needs a number}; shift 2 ;;
        --) shift; break ;;
        *) die "usage: $0 [-n TOP] -- COMMAND..." ;;
    esac
done
[ $# -gt 0 ] || die "usage: $0 [-n TOP] -- COMMAND..."
[[ "$TOP" =~ ^[1-9][0-9]{0,3}$ ]] || die "TOP must be 1..9999"
[ "$(id -u)" = 0 ] || die "needs root (system-wide tracepoints)"
command -v perf >/dev/null || die "perf missing (apt-get install linux-perf)"
command -v python3 >/dev/null || die "python3 missing"
# grep -c reads all of perf's output (-q would cut the pipe under pipefail)
perf list 2>/dev/null | grep -c 'kvm:kvm_emulate_insn' >/dev/null \
    || die "this host has no kvm:kvm_emulate_insn tracepoint"

if [ "${COUNT_ONLY:-0}" = 1 ]; then
    perf stat -x, -a -e kvm:kvm_emulate_insn -- "$@" 2>&1 >/dev/null \
        | awk -F, '/kvm_emulate_insn/ { print "emulated guest instructions:", $1 }'
    exit 0
fi

KERNEL=${HUSK_KERNEL:-$(ls /var/cache/husk/guest-kernel/*/vmlinux 2>/dev/null | head -1)}
[ -n "$KERNEL" ] && [ -f "$KERNEL" ] || die "no guest kernel (set HUSK_KERNEL)"
MAP="$(dirname "$KERNEL")/System.map"
[ -f "$MAP" ] || die "no System.map beside $KERNEL"

WORK=$(mktemp -d /var/tmp/husk-profile.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
perf record -q -m 65536 -a -e kvm:kvm_emulate_insn -o "$WORK/perf.data" -- "$@" >/dev/null
perf script -i "$WORK/perf.data" -F event,trace 2>/dev/null \
    | MAP="$MAP" TOP="$TOP" python3 -c '
import bisect, collections, os, re, sys
syms = []
with open(os.environ["MAP"]) as f:
    for line in f:
        parts = line.split()
        if len(parts) >= 3 and parts[1] in "tTwW":
            syms.append((int(parts[0], 16), parts[2]))
syms.sort()
addrs = [a for a, _ in syms]
rip = re.compile(r"kvm_emulate_insn: \d+:([0-9a-f]+):")
count = collections.Counter()
for line in sys.stdin:
    m = rip.search(line)
    if not m:
        continue
    addr = int(m.group(1), 16)
    i = bisect.bisect_right(addrs, addr) - 1
    count[syms[i][1] if i >= 0 and addr >= addrs[0] else "(not kernel text)"] += 1
total = sum(count.values())
print(f"emulated guest instructions: {total}")
for name, n in count.most_common(int(os.environ["TOP"])):
    print(f"{n:10d} {100 * n / max(total, 1):5.1f}%  {name}")
'
