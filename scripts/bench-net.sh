#!/usr/bin/env bash
# Networking benchmark (docs, not a timed test): the same busybox httpd
# serving the same files, reached from the host on 127.0.0.1, run by
#   husk: `husk vm run -p 127.0.0.1:PORT:80` (virtio-net + passt), and
#   crun: Debian's crun with host networking (no network namespace),
# one after the other in the same run. Measured from the host with a small
# Python client:
#   rate:       GET /index.html (1 KiB), a new connection per request, one
#               client, for DURATION seconds -> requests/s;
#   rate x4:    the same with 4 concurrent clients;
#   throughput: GET /big.bin (SIZE_MIB MiB) three times -> median MiB/s.
# Prints a markdown table and replaces the generated part of the
# "Networking" section of docs/BENCHMARKS.md (BENCH_DOCS=0: print only).
#
#   scripts/bench-net.sh
# Environment:
#   DURATION=10   seconds per request-rate measurement
#   SIZE_MIB=4    size of the throughput file
#   BENCH_DOCS=1  0: leave docs/BENCHMARKS.md alone
#   HUSK_BIN, HUSK_AGENT, HUSK_KERNEL: use these instead of building them
#   CARGO_TARGET_DIR  where to build husk and the agent
# Needs root (crun, /dev/kvm), passt, crun, busybox-static, e2fsprogs,
# python3.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
die() { echo "bench-net: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (crun)"
[ -w /dev/kvm ] || die "needs read-write access to /dev/kvm"
for t in python3 mkfs.ext4 busybox crun passt; do
    command -v "$t" >/dev/null || die "$t missing (apt-get install ${t/mkfs.ext4/e2fsprogs})"
done
DURATION=${DURATION:-10}
SIZE_MIB=${SIZE_MIB:-4}
[[ "$DURATION" =~ ^[1-9][0-9]?$ ]] || die "DURATION must be 1..99"
[[ "$SIZE_MIB" =~ ^[1-9][0-9]?$ ]] || die "SIZE_MIB must be 1..99"

# --- assets: kernel, husk, static agent
if [ -z "${HUSK_KERNEL:-}" ]; then
    HUSK_KERNEL=$("$REPO/guest-kernel/build.sh" | tail -1)
fi
[ -f "$HUSK_KERNEL" ] || die "guest kernel $HUSK_KERNEL not found"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
if [ -z "${HUSK_BIN:-}" ]; then
    cargo build --release --quiet -p husk >&2
    HUSK_BIN=$CARGO_TARGET_DIR/release/husk
fi
if [ -z "${HUSK_AGENT:-}" ]; then
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --quiet -p husk-agent --target x86_64-unknown-linux-gnu >&2
    HUSK_AGENT=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/husk-agent
fi
export HUSK_KERNEL HUSK_AGENT

WORK=$(mktemp -d /var/tmp/husk-bench-net.XXXXXX)
HUSK_PID=
CHROOT_PID=
CTR=husk-bench-net-$$
cleanup() {
    for pid in $HUSK_PID $CHROOT_PID; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    crun --root "$WORK/crun" kill "$CTR" KILL 2>/dev/null || true
    crun --root "$WORK/crun" delete -f "$CTR" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- one busybox root: ext4 image for husk, directory bundle for crun
ROOT=$WORK/bundle/rootfs
mkdir -p "$ROOT"/{bin,etc,proc,sys,dev,tmp,root,www}
cp /bin/busybox "$ROOT/bin/busybox"
for a in $("$ROOT/bin/busybox" --list); do
    [ "$a" = busybox ] || ln -s busybox "$ROOT/bin/$a"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$ROOT/etc/passwd"
head -c 1024 /dev/zero | tr '\0' 'x' >"$ROOT/www/index.html"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$ROOT/www/big.bin"
truncate -s 256M "$WORK/root.ext4"
mkfs.ext4 -q -F -d "$ROOT" "$WORK/root.ext4"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Client: waits for the server, then prints "rate rate4 throughput".
cat >"$WORK/client.py" <<'EOF'
import socket, statistics, sys, threading, time
port, duration, size = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])

def get(path, timeout=30):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n".encode())
    data = bytearray()
    while True:
        b = s.recv(262144)
        if not b:
            break
        data += b
    s.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n")[0]:
        raise RuntimeError(f"bad response {head[:60]!r}")
    return len(body)

deadline = time.time() + 600
while True:
    try:
        if get("/index.html", timeout=5) == 1024:
            break
    except Exception:
        pass
    if time.time() > deadline:
        sys.exit("server never answered")
    time.sleep(0.5)

def rate(clients):
    counts = [0] * clients
    end = time.time() + duration
    def loop(i):
        while time.time() < end:
            get("/index.html")
            counts[i] += 1
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    start = time.time()
    for t in threads: t.start()
    for t in threads: t.join()
    return sum(counts) / (time.time() - start)

r1 = rate(1)
r4 = rate(4)
speeds = []
for _ in range(3):
    t = time.time()
    n = get("/big.bin", timeout=300)
    if n != size:
        sys.exit(f"big.bin: {n} bytes, expected {size}")
    speeds.append(n / (1024 * 1024) / (time.time() - t))
print(f"{r1:.1f} {r4:.1f} {statistics.median(speeds):.2f}")
EOF

SIZE=$((SIZE_MIB * 1024 * 1024))

# --- husk
PORT=$(free_port)
"$HUSK_BIN" vm run --boot-timeout 600 -p "127.0.0.1:$PORT:80" --disk "$WORK/root.ext4" \
    -- httpd -f -p 80 -h /www >"$WORK/husk.log" 2>&1 &
HUSK_PID=$!
echo "bench-net: husk on 127.0.0.1:$PORT ..." >&2
read -r H1 H4 HT < <(python3 "$WORK/client.py" "$PORT" "$DURATION" "$SIZE") ||
    die "husk run failed: $(cat "$WORK/husk.log")"
kill -TERM "$HUSK_PID"
wait "$HUSK_PID" 2>/dev/null || true
HUSK_PID=

# --- crun, host networking (or, where crun cannot run, e.g. on hosts with
# hybrid cgroups, the same httpd as a plain host process in a chroot: the
# same network path, host loopback, no namespace)
PORT=$(free_port)
(cd "$WORK/bundle" && crun spec)
python3 - "$WORK/bundle/config.json" "$PORT" <<'EOF2'
import json, sys
path, port = sys.argv[1], sys.argv[2]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["httpd", "-f", "-p", port, "-h", "/www"]
c["root"]["readonly"] = False
c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
json.dump(c, open(path, "w"), indent=1)
EOF2
BASELINE="crun (host network)"
if crun --root "$WORK/crun" run -d -b "$WORK/bundle" "$CTR" >"$WORK/crun.log" 2>&1; then
    echo "bench-net: crun on 127.0.0.1:$PORT ..." >&2
else
    WHY=$(tr '\n' ' ' <"$WORK/crun.log")
    echo "bench-net: crun failed ($WHY); using a chroot'ed host process instead" >&2
    BASELINE="host process, chroot (crun failed here: ${WHY% })"
    chroot "$ROOT" /bin/httpd -f -p "$PORT" -h /www &
    CHROOT_PID=$!
fi
read -r C1 C4 CT < <(python3 "$WORK/client.py" "$PORT" "$DURATION" "$SIZE") ||
    die "baseline measurement failed"
crun --root "$WORK/crun" kill "$CTR" KILL 2>/dev/null || true
crun --root "$WORK/crun" delete -f "$CTR" 2>/dev/null || true
if [ -n "$CHROOT_PID" ]; then
    kill "$CHROOT_PID" 2>/dev/null || true
    wait "$CHROOT_PID" 2>/dev/null || true
    CHROOT_PID=
fi

HOST="$(nproc) CPUs, $(uname -r), $( [ -d /sys/module/kvm_pvm ] && echo 'PVM (nested, no VMX)' || echo 'KVM')"
TABLE=$(cat <<EOF
| | husk (\`vm run -p\`, virtio-net + passt) | $BASELINE |
|---|---|---|
| requests/s, 1 client (1 KiB, new connection each) | $H1 | $C1 |
| requests/s, 4 clients | $H4 | $C4 |
| throughput, ${SIZE_MIB} MiB GET (MiB/s, median of 3) | $HT | $CT |

Measured $(date -u +%Y-%m-%d) on: $HOST; busybox httpd, ${DURATION} s per rate.
EOF
)
echo "$TABLE"

if [ "${BENCH_DOCS:-1}" = 1 ]; then
    python3 - "$REPO/docs/BENCHMARKS.md" "$TABLE" <<'EOF'
import sys
path, table = sys.argv[1], sys.argv[2]
begin, end = "<!-- bench-net:begin -->", "<!-- bench-net:end -->"
text = open(path).read()
block = f"{begin}\n{table}\n{end}"
if begin in text and end in text:
    pre, rest = text.split(begin, 1)
    _, post = rest.split(end, 1)
    text = pre + block + post
else:
    text = text.rstrip("\n") + "\n\n## Networking\n\n" + block + "\n"
open(path, "w").write(text)
EOF
    echo "bench-net: updated docs/BENCHMARKS.md" >&2
fi
