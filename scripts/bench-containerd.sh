#!/usr/bin/env bash
# containerd benchmark (docs, not a timed test): `ctr run --rm IMAGE ID true`
# of the same busybox image through a private containerd, alternately in the
# same run, with
#   - husk's shim (`--runtime io.containerd.husk.v2`): the first container of
#     the image (its layer becomes a read-only layer disk: converted once and
#     cached) and the following ones (nothing converted);
#   - containerd's runc shim driving husk-oci (`--runc-binary husk-oci`);
#   - containerd's runc shim with runc (`--runtime io.containerd.runc.v2`).
# Wall time of `ctr run --rm` (create, start, the process, its exit, delete)
# as containerd's client sees it. Medians over RUNS runs after one unmeasured
# warm-up run of each (husk's first warm-up builds the warm-start template if
# none is cached). The first-container time is measured RUNS times too: before
# each of those runs the image's cached layer disk is removed.
# Replaces the block between the bench-containerd markers in
# docs/BENCHMARKS.md (BENCH_DOCS=0 to only print).
#
#   scripts/bench-containerd.sh
# Environment:
#   RUNS=5            measured runs per kind
#   BENCH_DOCS=1      0: leave docs/BENCHMARKS.md alone
#   HUSK_KERNEL, HUSK_AGENT: use these instead of building them
#   CARGO_TARGET_DIR  where to build the shim, husk-oci and the agent
# Needs root, /dev/kvm, containerd, ctr, runc, busybox-static, erofs-utils,
# python3 (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
die() { echo "bench-containerd: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (containerd, layer disks)"
[ -w /dev/kvm ] || die "needs read-write access to /dev/kvm"
for t in python3 containerd ctr runc busybox mkfs.erofs; do
    command -v "$t" >/dev/null || die "$t missing (see scripts/setup.sh)"
done
RUNS=${RUNS:-5}
[[ "$RUNS" =~ ^[1-9][0-9]?$ ]] || die "RUNS must be 1..99"

source scripts/lib.sh
build_kernel >/dev/null
build_workspace >&2
[ -x "$HUSK_SHIM" ] && [ -x "$HUSK_OCI" ] || die "the shim or husk-oci was not built"

WORK=$(mktemp -d /var/tmp/husk-bench-containerd.XXXXXX)
export WORK REPO RUNS HUSK_KERNEL HUSK_AGENT HUSK_SHIM HUSK_OCI
export BENCH_DOCS=${BENCH_DOCS:-1} HUSK_REV
HUSK_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$REPO" status --porcelain 2>/dev/null | head -1)" ] || HUSK_REV="$HUSK_REV+dirty"
CONTAINERD_PID=
cleanup() {
    if [ -n "$CONTAINERD_PID" ]; then
        # Shims and monitors of this containerd name its directory.
        pkill -KILL -f "$WORK" 2>/dev/null || true
        kill "$CONTAINERD_PID" 2>/dev/null || true
        wait "$CONTAINERD_PID" 2>/dev/null || true
    fi
    # The layer disks made from this containerd's snapshots.
    for src in "$HUSK_CACHE"/snapshot-layers/*.src; do
        [ -e "$src" ] || continue
        case "$(cat "$src")" in
        "$WORK"/*) rm -f "${src%.src}".{erofs,src,lock} ;;
        esac
    done
    umount -R "$WORK/root" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- a private containerd (its own root, state, socket), the shim first on
# its PATH.
mkdir -p "$WORK/bin"
ln -s "$HUSK_SHIM" "$WORK/bin/containerd-shim-husk-v2"
cat >"$WORK/config.toml" <<EOF
version = 2
root = "$WORK/root"
state = "$WORK/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$WORK/c.sock"
[ttrpc]
  address = "$WORK/c.sock.ttrpc"
EOF
PATH="$WORK/bin:$PATH" HUSK_CONTAINERD_ROOT="$WORK/husk" \
    containerd --config "$WORK/config.toml" >"$WORK/containerd.log" 2>&1 &
CONTAINERD_PID=$!
for _ in $(seq 100); do
    ctr -a "$WORK/c.sock" version >/dev/null 2>&1 && break
    kill -0 "$CONTAINERD_PID" 2>/dev/null || die "containerd exited: $(tail -3 "$WORK/containerd.log")"
    sleep 0.1
done
ctr -a "$WORK/c.sock" version >/dev/null || die "containerd did not serve its socket"

cat >"$WORK/bench.py" <<'PY'
import datetime, hashlib, io, json, os, platform, statistics, subprocess, sys, tarfile, time

E = os.environ
WORK, REPO, RUNS = E["WORK"], E["REPO"], int(E["RUNS"])
CACHE = os.path.join(E.get("HUSK_CACHE", "/var/cache/husk"), "snapshot-layers")
IMAGE = "docker.io/library/bb:bench"
CTR = ["ctr", "-a", f"{WORK}/c.sock", "-n", "bench"]


def log(msg):
    print(f"bench-containerd: {msg}", file=sys.stderr, flush=True)


def sh(argv):
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{argv} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return r.stdout


def import_image():
    """busybox-static with its applet links, as a one-layer docker-save image."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        def entry(name, kind, data=b"", target=""):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode = kind, 0o755
            if kind == tarfile.SYMTYPE:
                ti.linkname = target
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data) if data else None)
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
            entry(d, tarfile.DIRTYPE)
        entry("bin/busybox", tarfile.REGTYPE, open("/bin/busybox", "rb").read())
        for a in sh(["/bin/busybox", "--list"]).split():
            if a != "busybox":
                entry(f"bin/{a}", tarfile.SYMTYPE, target="busybox")
        entry("etc/passwd", tarfile.REGTYPE, b"root:x:0:0:root:/root:/bin/sh\n")
        entry("etc/group", tarfile.REGTYPE, b"root:x:0:\n")
    layer = buf.getvalue()
    diff = "sha256:" + hashlib.sha256(layer).hexdigest()
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
                      "rootfs": {"type": "layers", "diff_ids": [diff]}}).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": ["bb:bench"],
                            "Layers": ["l0/layer.tar"]}]).encode()
    path = f"{WORK}/bb.tar"
    with tarfile.open(path, "w") as t:
        for name, data in ((cfg_name, cfg), ("l0/layer.tar", layer), ("manifest.json", manifest)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    sh(CTR + ["image", "import", path])


def own_layer_disks():
    """The cached layer disks made from this containerd's snapshots."""
    out = []
    for name in os.listdir(CACHE) if os.path.isdir(CACHE) else []:
        if name.endswith(".src"):
            src = open(os.path.join(CACHE, name)).read()
            if src.startswith(WORK + "/"):
                out.append(os.path.join(CACHE, name[:-4]))
    return out


def drop_layer_disks():
    for base in own_layer_disks():
        for ext in (".erofs", ".src", ".lock"):
            try:
                os.remove(base + ext)
            except FileNotFoundError:
                pass


KINDS = {
    "husk-first": ["--runtime", "io.containerd.husk.v2"],
    "husk": ["--runtime", "io.containerd.husk.v2"],
    "husk-oci": ["--runtime", "io.containerd.runc.v2", "--runc-binary", E["HUSK_OCI"]],
    "runc": ["--runtime", "io.containerd.runc.v2"],
}
seq = 0


def run(kind):
    global seq
    seq += 1
    if kind == "husk-first":
        drop_layer_disks()
    argv = CTR + ["run", "--rm"] + KINDS[kind] + [IMAGE, f"b{seq}", "true"]
    t0 = time.monotonic()
    sh(argv)
    dt = time.monotonic() - t0
    if kind.startswith("husk") and not own_layer_disks():
        raise RuntimeError("no layer disk was made for the image")
    return dt


def med(values):
    m = statistics.median(values)
    return f"{m:.2f} ({min(values):.2f}–{max(values):.2f})"


def main():
    import_image()
    log("warm-up runs (the first husk run may build the warm-start template)")
    for kind in ("husk", "husk-oci", "runc"):
        run(kind)
    kinds = list(KINDS)
    times = {k: [] for k in kinds}
    for i in range(RUNS):
        for kind in (kinds if i % 2 == 0 else kinds[::-1]):
            dt = run(kind)
            times[kind].append(dt)
            log(f"run {i + 1}/{RUNS} {kind}: {dt:.2f} s")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    pvm = os.path.exists("/sys/module/kvm_pvm")
    versions = ", ".join(sh([tool, "--version"]).splitlines()[0] for tool in ("containerd", "runc"))
    head = (f"{datetime.datetime.now():%Y-%m-%d %H:%M}, husk {E['HUSK_REV']}, {versions}; "
            f"{RUNS} runs each (medians, min–max in parentheses); husk VMs: 1 vCPU, 256 MiB.\n"
            f"Host: {'PVM-based nested KVM (guest kernel code is emulated: boots take seconds, not milliseconds)' if pvm else 'hardware KVM'}; "
            f"{cpu}, {os.cpu_count()} CPUs; host kernel {platform.release()}; "
            f"load average {open('/proc/loadavg').read().split()[0]} at the end.\n")
    rows = ["| `ctr run --rm IMAGE ID true` | wall (s) |", "|---|---|",
            f"| husk shim (`io.containerd.husk.v2`), first container of the image (layer converted) | {med(times['husk-first'])} |",
            f"| husk shim, next containers (layer disk cached) | {med(times['husk'])} |",
            f"| runc shim with `--runc-binary husk-oci` | {med(times['husk-oci'])} |",
            f"| runc shim with runc (`io.containerd.runc.v2`) | {med(times['runc'])} |"]
    conv = statistics.median(times["husk-first"]) - statistics.median(times["husk"])
    rows += ["", f"Layer conversion of the first container (difference of the medians): {conv:.2f} s."]
    table = head + "\n" + "\n".join(rows) + "\n"
    print(table)
    if E["BENCH_DOCS"] == "1":
        path = f"{REPO}/docs/BENCHMARKS.md"
        doc = open(path).read()
        begin, end = "<!-- bench-containerd:results:begin -->", "<!-- bench-containerd:results:end -->"
        i, j = doc.find(begin), doc.find(end)
        if i < 0 or j < i:
            raise RuntimeError("docs/BENCHMARKS.md: bench-containerd markers missing")
        doc = doc[:i + len(begin)] + "\n" + table + doc[j:]
        tmp = path + ".tmp"
        open(tmp, "w").write(doc)
        os.replace(tmp, path)
        log(f"updated {path}")


try:
    main()
except RuntimeError as e:
    log(str(e))
    sys.exit(1)
PY
python3 "$WORK/bench.py"
