#!/usr/bin/env bash
# Container benchmark (docs, not a timed test): `husk run --rm IMAGE true`
# warm (restored from a template, the default) and cold (`--cold`) next to
# `crun run` (Debian's crun) of the same busybox root filesystem,
# alternately in the same run; host memory of MEM_CONTAINERS idle
# containers warm and cold; `husk build` of a 3-RUN Dockerfile warm and
# cold.
#
# Measures, per runtime:
#   wall:   `husk run --rm bb:bench true` (create + VM boot + agent +
#           overlay + exec + teardown + removal) vs `crun run` of a bundle
#           with the same rootfs running `true` (crun creates and deletes
#           the container itself). Medians over RUNS runs, after one
#           unmeasured warm-up run of each.
#   memory: one long-running container (`sleep 1000`) of each: the host
#           memory of every process that exists because of it, summed:
#           husk: the monitor and the processes below it (the jailed VMM,
#           so guest RAM the guest touched is included, its waiter, and
#           passt); crun: the container's process (crun
#           itself exits after `run --detach`). Both RSS and PSS (shared
#           pages divided between their users) from /proc/PID/smaps_rollup,
#           sampled after the container has been up for SETTLE seconds.
# Replaces the block between the bench-run markers in docs/BENCHMARKS.md
# (BENCH_DOCS=0 to only print).
#
#   scripts/bench-run.sh
# Environment:
#   RUNS=5            measured runs per runtime
#   SETTLE=5          seconds a long-running container runs before sampling
#   MEM_CONTAINERS=10 idle containers whose memory is summed (warm, cold)
#   BENCH_DOCS=1      0: leave docs/BENCHMARKS.md alone
#   HUSK_BIN, HUSK_AGENT, HUSK_KERNEL: use these instead of building them
#   CARGO_TARGET_DIR  where to build husk and the agent
# Needs root, /dev/kvm, crun, busybox-static, erofs-utils, e2fsprogs, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
die() { echo "bench-run: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (layer disks, crun)"
[ -w /dev/kvm ] || die "needs read-write access to /dev/kvm"
for t in python3 crun busybox mkfs.erofs mkfs.ext4; do
    command -v "$t" >/dev/null || die "$t missing (see scripts/setup.sh)"
done
RUNS=${RUNS:-5}
[[ "$RUNS" =~ ^[1-9][0-9]?$ ]] || die "RUNS must be 1..99"

if [ -z "${HUSK_KERNEL:-}" ]; then
    HUSK_KERNEL=$("$REPO/guest-kernel/build.sh" | tail -1)
fi
export HUSK_KERNEL
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
export HUSK_BIN HUSK_AGENT

WORK=$(mktemp -d /var/tmp/husk-bench-run.XXXXXX)
export WORK REPO RUNS
export SETTLE=${SETTLE:-5} BENCH_DOCS=${BENCH_DOCS:-1} MEM_CONTAINERS=${MEM_CONTAINERS:-10}
export HUSK_ROOT=$WORK/store HUSK_RUN_DIR=$WORK/run
cleanup() {
    "$HUSK_BIN" rm -f bench-long >/dev/null 2>&1 || true
    unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null; exec crun "$@"' crun \
        --root "$WORK/crun" delete -f bench-long >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export HUSK_REV
HUSK_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$REPO" status --porcelain 2>/dev/null | head -1)" ] || HUSK_REV="$HUSK_REV+dirty"

# --- the root filesystem: busybox-static with its applet links; as a
# docker-save image for husk and as an OCI bundle for crun.
ROOTFS=$WORK/bundle/rootfs
mkdir -p "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/proc" "$ROOTFS/dev" "$ROOTFS/sys" "$ROOTFS/tmp"
cp /bin/busybox "$ROOTFS/bin/busybox"
for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -s busybox "$ROOTFS/bin/$a"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$ROOTFS/etc/passwd"
echo 'root:x:0:' >"$ROOTFS/etc/group"
(cd "$WORK/bundle" && crun spec --rootless=false >/dev/null 2>&1 || crun spec)

cat >"$WORK/bench_run.py" <<'PY'
import datetime, hashlib, io, json, os, platform, statistics, subprocess, sys, tarfile, time

E = os.environ
WORK, REPO, RUNS, SETTLE = E["WORK"], E["REPO"], int(E["RUNS"]), float(E["SETTLE"])
MEM_CONTAINERS = int(E["MEM_CONTAINERS"])
HUSK = E["HUSK_BIN"]
BUNDLE = f"{WORK}/bundle"
CRUN_ROOT = f"{WORK}/crun"


def log(msg):
    print(f"bench-run: {msg}", file=sys.stderr, flush=True)


def crun_prefix():
    """crun refuses hosts whose cgroup v1/v2 hybrid has controllers on the
    v2 side ("cgroups in hybrid mode not supported"); there it runs in a
    private mount namespace without the v2 mount (cgroup v1 only)."""
    try:
        ctrl = open("/sys/fs/cgroup/unified/cgroup.controllers").read().split()
    except OSError:
        ctrl = []
    if not ctrl:
        return ["crun"]
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'umount /sys/fs/cgroup/unified && exec crun "$@"', "crun"]


CRUN = crun_prefix()


def sh(argv, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{argv} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return r.stdout


def load_image():
    """The bundle's rootfs as a one-layer docker-save image `bb:bench`."""
    buf = io.BytesIO()
    def owner(ti):
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name in sorted(os.listdir(f"{BUNDLE}/rootfs")):
            t.add(f"{BUNDLE}/rootfs/{name}", arcname=name, filter=owner)
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
    sh([HUSK, "load", "-q", "-i", path])


def crun_config(args, terminal=False):
    spec = json.load(open(f"{BUNDLE}/config.json"))
    spec["process"]["args"] = args
    spec["process"]["terminal"] = terminal
    spec["root"]["readonly"] = False
    # Same isolation scope as a husk container without networking: no
    # network namespace setup cost difference worth modelling here.
    json.dump(spec, open(f"{BUNDLE}/config.json", "w"))


def timed(argv):
    t0 = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{argv} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return dt


def cold_flag(cold):
    return ["--cold"] if cold else []


def run_husk(cold=False):
    return timed([HUSK, "run", "--rm", *cold_flag(cold), "bb:bench", "true"])


def build_husk(cold):
    ctx = f"{WORK}/ctx"
    os.makedirs(ctx, exist_ok=True)
    with open(f"{ctx}/Dockerfile", "w") as f:
        f.write("FROM bb:bench\nRUN echo one > /one\nRUN echo two > /two\nRUN cat /one /two > /three\n")
    return timed([HUSK, "build", "--no-cache", *cold_flag(cold), "-t", "bb:built", ctx])


def run_crun(i):
    return timed(CRUN + ["--root", CRUN_ROOT, "run", "--bundle", BUNDLE, f"bench-{os.getpid()}-{i}"])


def rollup(pid):
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    return rss, pss


def with_descendants(pid):
    """`pid` and every process below it."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            pids.pop()  # it exited meanwhile
    return pids


def husk_memory(n=1, cold=False):
    """RSS and PSS summed over the monitors of `n` idle containers and
    what they started (the jailed VMM and its waiter, passt)."""
    names = [f"bench-long-{i}" for i in range(n)]
    for name in names:
        sh([HUSK, "run", "-d", *cold_flag(cold), "--name", name, "bb:bench", "sleep", "1000"])
    time.sleep(SETTLE)
    total = [0, 0]
    for name in names:
        monitor = int(sh([HUSK, "inspect", "-f", "{{.State.MonitorPid}}", name]).strip())
        for pid in with_descendants(monitor):
            rss, pss = rollup(pid)
            total[0] += rss
            total[1] += pss
    sh([HUSK, "rm", "-f", *names])
    return tuple(total)


def crun_memory():
    crun_config(["sleep", "1000"])
    # The detached container keeps crun's stdio: give it /dev/null, not pipes.
    subprocess.run(CRUN + ["--root", CRUN_ROOT, "run", "--detach", "--bundle", BUNDLE, "bench-long"],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    time.sleep(SETTLE)
    state = json.loads(sh(CRUN + ["--root", CRUN_ROOT, "state", "bench-long"]))
    mem = rollup(state["pid"])
    sh(CRUN + ["--root", CRUN_ROOT, "delete", "-f", "bench-long"])
    crun_config(["true"])
    return mem


def mib(b):
    return f"{b / (1 << 20):.1f}"


def med(values):
    m = statistics.median(values)
    return f"{m:.2f} ({min(values):.2f}–{max(values):.2f})"


def main():
    load_image()
    crun_config(["true"])
    log("warm-up runs (the first warm run builds the template)")
    run_husk()
    run_husk(cold=True)
    run_crun("warm")
    kinds = ["husk", "husk-cold", "crun"]
    times = {k: [] for k in kinds}
    for i in range(RUNS):
        for kind in (kinds if i % 2 == 0 else kinds[::-1]):
            if kind == "crun":
                dt = run_crun(i)
            else:
                dt = run_husk(cold=kind == "husk-cold")
            times[kind].append(dt)
            log(f"run {i + 1}/{RUNS} {kind}: {dt:.2f} s")
    log("memory of one long-running container each")
    hm, cm = husk_memory(), crun_memory()
    log(f"memory of {MEM_CONTAINERS} idle containers, warm then cold")
    many = {cold: husk_memory(MEM_CONTAINERS, cold) for cold in (False, True)}
    log("husk build of 3 RUN steps, warm then cold")
    build_husk(False)  # the build VMs' template (512 MiB) is made here
    builds = {cold: build_husk(cold) for cold in (False, True)}
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    pvm = os.path.exists("/sys/module/kvm_pvm")
    crun_v = sh(["crun", "--version"]).splitlines()[0]
    if CRUN[0] != "crun":
        crun_v += " (cgroup v1: run in a mount namespace without the v2 hierarchy)"
    head = (f"{datetime.datetime.now():%Y-%m-%d %H:%M}, husk {E['HUSK_REV']}, {crun_v}, {RUNS} runs each "
            f"(medians, min–max in parentheses); husk VMs: 1 vCPU, 256 MiB.\n"
            f"Host: {'PVM-based nested KVM (guest kernel code is emulated: boots take seconds, not milliseconds)' if pvm else 'hardware KVM'}; "
            f"{cpu}, {os.cpu_count()} CPUs; host kernel {platform.release()}; "
            f"load average {open('/proc/loadavg').read().split()[0]} at the end.\n")
    cold_s, warm_s = statistics.median(times["husk-cold"]), statistics.median(times["husk"])
    rows = ["| runtime | `run --rm IMAGE true` wall (s) | host memory per container: RSS (MiB) | PSS (MiB) |",
            "|---|---|---|---|",
            f"| husk, warm (restored from a template) | {med(times['husk'])} | {mib(hm[0])} | {mib(hm[1])} |",
            f"| husk, cold (`--cold`) | {med(times['husk-cold'])} | | |",
            f"| crun (namespaces) | {med(times['crun'])} | {mib(cm[0])} | {mib(cm[1])} |",
            "",
            f"Warm vs cold `run --rm`: {cold_s / warm_s:.1f}x faster.",
            "",
            f"| {MEM_CONTAINERS} idle containers (`sleep 1000`) | RSS total (MiB) | PSS total (MiB) | PSS per container (MiB) |",
            "|---|---|---|---|"]
    for cold in (False, True):
        rss, pss = many[cold]
        rows.append(f"| husk, {'cold' if cold else 'warm'} | {mib(rss)} | {mib(pss)} | {mib(pss / MEM_CONTAINERS)} |")
    rows += ["",
             "| `husk build --no-cache` of a 3-RUN Dockerfile | wall (s) |",
             "|---|---|",
             f"| warm | {builds[False]:.2f} |",
             f"| cold (`--cold`) | {builds[True]:.2f} |"]
    table = head + "\n" + "\n".join(rows) + "\n"
    print(table)
    if E["BENCH_DOCS"] == "1":
        path = f"{REPO}/docs/BENCHMARKS.md"
        doc = open(path).read()
        begin, end = "<!-- bench-run:results:begin -->", "<!-- bench-run:results:end -->"
        i, j = doc.find(begin), doc.find(end)
        if i < 0 or j < i:
            raise RuntimeError("docs/BENCHMARKS.md: bench-run markers missing")
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

python3 "$WORK/bench_run.py"
