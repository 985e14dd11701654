#!/usr/bin/env bash
# VM boot benchmark (docs, not a timed test): husk vs QEMU's microvm machine
# (Debian's qemu-system-x86) booting the same guest kernel and the same
# busybox ext4 root disk, 1 vCPU and 256 MiB each, run alternately.
#
# Per run it measures, from process start (fork) of the VMM:
#   ready: QEMU: the first line PID 1 (/sbin/benchinit) prints on the serial
#          console; husk: the guest agent's vsock connection reaching husk's
#          Unix socket <rundir>/vsock.sock_1024 (seen in /proc/net/unix).
#   exit:  the VMM process has exited after running /bin/true in the guest
#          and powering the guest off.
#   RSS:   peak RSS of the VMM process (ru_maxrss from wait4), and the RSS
#          beyond guest memory: /proc/PID/smaps sampled every 100 ms, total
#          Rss minus the Rss of the guest RAM mapping; the peak over the run.
# Reports medians over RUNS runs (after one unmeasured warm-up run of each),
# prints a markdown table and replaces the generated parts of the "VM boot"
# section of docs/BENCHMARKS.md. With BENCH_PROFILE=1 (default) it also boots
# the kernel once under QEMU with initcall_debug and records the slowest
# initcalls and the biggest gaps in the boot log ("Guest boot profile").
#
#   scripts/bench-vm.sh
# Environment:
#   RUNS=5              measured runs per VMM
#   BENCH_VMMS="qemu husk"   which VMMs to run (e.g. just "qemu")
#   BENCH_PROFILE=1     0: skip the initcall_debug profile boot
#   BENCH_DOCS=1        0: only print, leave docs/BENCHMARKS.md alone
#   BENCH_TIMEOUT=180   seconds one VM run may take before it is killed
#   BENCH_KEEP_PROFILE=FILE  keep the profile boot's kernel log there
#   HUSK_BIN, HUSK_AGENT, HUSK_KERNEL: use these instead of building them
#   CARGO_TARGET_DIR    where to build husk and the agent
# Needs root (or access to /dev/kvm), qemu-system-x86, busybox-static,
# e2fsprogs, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
die() { echo "bench-vm: $*" >&2; exit 1; }

[ -w /dev/kvm ] || die "needs read-write access to /dev/kvm"
for t in python3 debugfs mkfs.ext4 busybox; do
    command -v "$t" >/dev/null || die "$t missing (see scripts/setup.sh)"
done
VMMS=${BENCH_VMMS:-qemu husk}
case " $VMMS " in *" qemu "*) command -v qemu-system-x86_64 >/dev/null ||
    die "qemu-system-x86_64 missing: apt-get install qemu-system-x86" ;; esac
RUNS=${RUNS:-5}
[[ "$RUNS" =~ ^[1-9][0-9]?$ ]] || die "RUNS must be 1..99"

# --- assets: kernel, husk, static agent
if [ -z "${HUSK_KERNEL:-}" ]; then
    HUSK_KERNEL=$("$REPO/guest-kernel/build.sh" | tail -1)
fi
[ -f "$HUSK_KERNEL" ] || die "guest kernel $HUSK_KERNEL not found"
export HUSK_KERNEL
if [[ " $VMMS " == *" husk "* ]]; then
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
    [ -x "$HUSK_BIN" ] || die "husk binary $HUSK_BIN not found"
    [ -f "$HUSK_AGENT" ] || die "agent $HUSK_AGENT not found"
    export HUSK_BIN HUSK_AGENT
fi

WORK=$(mktemp -d /var/tmp/husk-bench-vm.XXXXXX)
PY_PID=
cleanup() {
    # The harness kills its VMM on SIGTERM, and every VMM it starts has
    # PR_SET_PDEATHSIG=SIGKILL, so no VM outlives the harness.
    if [ -n "$PY_PID" ]; then
        kill "$PY_PID" 2>/dev/null || true
        wait "$PY_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- root disks: the busybox image for husk, and a copy with /sbin/benchinit
# (PID 1 for QEMU; the kernel opens /dev/console in its built-in initramfs
# before mounting the root, so the disk needs no device nodes).
"$REPO/scripts/mkrootfs.sh" "$WORK/root.ext4" >&2
cat >"$WORK/benchinit" <<'EOF'
#!/bin/sh
echo HUSK-BENCH-READY
if [ "$benchmode" = profile ]; then
    /bin/mount -t proc proc /proc
    echo HUSK-BENCH-DMESG-BEGIN
    /bin/dmesg
    echo HUSK-BENCH-DMESG-END
    echo "HUSK-BENCH-UPTIME $(/bin/cat /proc/uptime)"
else
    /bin/true
    echo "HUSK-BENCH-EXIT $?"
fi
/bin/poweroff -f
EOF
cp "$WORK/root.ext4" "$WORK/qemu-root.ext4"
debugfs -w "$WORK/qemu-root.ext4" >/dev/null 2>&1 <<EOF
write $WORK/benchinit /sbin/benchinit
set_inode_field /sbin/benchinit mode 0100755
EOF
debugfs -R "stat /sbin/benchinit" "$WORK/qemu-root.ext4" 2>/dev/null | grep -q "Mode:  0755" ||
    die "could not add /sbin/benchinit to the QEMU root disk"

# --- the same kernel command line husk uses (vmm/src/cmdline.rs BASE_CMDLINE,
# the PVM quirks of vmm/src/host.rs on PVM hosts, husk's own `quiet panic=-1`)
# minus what differs by design: QEMU adds the virtio_mmio.device= flags itself,
# and its root is the ext4 disk with /sbin/benchinit as PID 1.
if [ -e /sys/module/kvm_pvm ] || ! grep -qwE 'vmx|svm' /proc/cpuinfo; then
    HOST_KIND=PVM
else
    HOST_KIND=$(grep -qw vmx /proc/cpuinfo && echo VMX || echo SVM)
fi
export HOST_KIND
rust_strings() { # FILE START: the string literals from line START up to the next `;`
    awk -v s="$2" 'index($0, s) {on=1} on {print} on && /;/ {exit}' "$1" |
        sed 's/\\$//' | tr '\n' ' ' | grep -o '"[^"]*"' | tr -d '"' | tr '\n' ' ' | tr -s ' '
}
BASE_CMDLINE=$(rust_strings "$REPO/vmm/src/cmdline.rs" "pub const BASE_CMDLINE")
[[ "$BASE_CMDLINE" == *console=ttyS0* ]] || die "cannot read BASE_CMDLINE from vmm/src/cmdline.rs"
QUIRKS=""
if [ "$HOST_KIND" = PVM ]; then
    QUIRKS=$(rust_strings "$REPO/vmm/src/host.rs" "const PVM_QUIRKS")
    [[ "$QUIRKS" == *noxsave* ]] || die "cannot read PVM_QUIRKS from vmm/src/host.rs"
fi
QEMU_CMDLINE=$(echo $BASE_CMDLINE $QUIRKS quiet panic=-1 root=/dev/vda rw init=/sbin/benchinit)
export QEMU_CMDLINE
export WORK RUNS VMMS REPO
export BENCH_PROFILE=${BENCH_PROFILE:-1} BENCH_DOCS=${BENCH_DOCS:-1} BENCH_TIMEOUT=${BENCH_TIMEOUT:-180}
export QEMU_VERSION
QEMU_VERSION=$(qemu-system-x86_64 --version 2>/dev/null | head -1 || true)
export HUSK_REV
HUSK_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$REPO" status --porcelain 2>/dev/null | head -1)" ] || HUSK_REV="$HUSK_REV+dirty"

cat >"$WORK/bench_vm.py" <<'PY'
import ctypes, datetime, os, platform, re, select, signal, statistics, subprocess, sys, time

E = os.environ
WORK, REPO = E["WORK"], E["REPO"]
RUNS, TIMEOUT = int(E["RUNS"]), float(E["BENCH_TIMEOUT"])
VMMS = E["VMMS"].split()
MEM_MIB = 256
MARK_READY = b"HUSK-BENCH-READY"
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def log(msg):
    print(f"bench-vm: {msg}", file=sys.stderr, flush=True)


def child_setup():
    # The VMM dies with the harness, whatever kills the harness.
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def qemu_argv(cmdline):
    # Plain `-cpu host` aborts on some PVM hosts ("failed to set MSR 0x10a",
    # IA32_ARCH_CAPABILITIES); without that MSR QEMU runs everywhere.
    return ["qemu-system-x86_64",
            "-M", "microvm,x-option-roms=off,rtc=off,acpi=off",
            "-enable-kvm", "-cpu", "host,-arch-capabilities", "-smp", "1", "-m", str(MEM_MIB),
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=1",
            "-kernel", E["HUSK_KERNEL"], "-append", cmdline,
            "-drive", f"id=root,file={WORK}/run-qemu.ext4,format=raw,if=none",
            "-device", "virtio-blk-device,drive=root"]


def husk_argv(console):
    return [E["HUSK_BIN"], "vm", "run", "--cpus", "1", "--memory", str(MEM_MIB),
            "--console", console, "--disk", f"{WORK}/run-husk.ext4", "--", "/bin/true"]


def smaps_sample(pid, guest_bytes):
    """(total Rss, Rss of the guest RAM mapping, anonymous memory outside
    the guest RAM mapping) in bytes, or None (gone, or exiting).

    The guest RAM mapping is the one mapping whose size is the guest memory
    size (within 1 MiB, in case a VMM adds guard pages)."""
    try:
        with open(f"/proc/{pid}/smaps", "rb") as f:
            data = f.read()
    except OSError:
        return None
    total = guest = anon = 0
    is_guest = False
    for line in data.split(b"\n"):
        if not line:
            continue
        head = line.split(b" ", 1)[0]
        if b"-" in head and not head.endswith(b":"):
            lo, hi = head.split(b"-")
            is_guest = abs(int(hi, 16) - int(lo, 16) - guest_bytes) <= (1 << 20)
        elif line.startswith(b"Rss:"):
            rss = int(line.split()[1]) * 1024
            total += rss
            if is_guest:
                guest += rss
        elif line.startswith(b"Anonymous:") and not is_guest:
            anon += int(line.split()[1]) * 1024
    if total == 0:  # a zombie has no mappings left
        return None
    return total, guest, anon


def husk_agent_connected(rundir_base):
    """True once a connected socket bound to <rundir>/vsock.sock_1024 exists:
    the VMM connected to husk's listener on behalf of the guest agent."""
    try:
        with open("/proc/net/unix", "rb") as f:
            data = f.read()
    except OSError:
        return False
    needle = rundir_base.encode()
    for line in data.split(b"\n"):
        if needle in line and line.endswith(b"vsock.sock_1024"):
            fields = line.split()
            if len(fields) >= 8 and fields[5] == b"03":
                return True
    return False


def run_vm(kind, argv, env=None, ready=None):
    """Runs one VMM to completion; returns a dict of measurements."""
    out_path = f"{WORK}/{kind}.out"
    err = open(f"{WORK}/{kind}.err", "wb")
    guest_bytes = MEM_MIB << 20
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=err, env=env, preexec_fn=child_setup)
    err.close()
    pid = proc.pid
    os.set_blocking(proc.stdout.fileno(), False)
    out = bytearray()
    t_ready = None
    next_sample = 0.0
    overhead_peak = anon_peak = guest_peak = 0
    status = rusage = None
    try:
        while True:
            now = time.monotonic()
            if now - t0 > TIMEOUT:
                tail = bytes(out[-600:]).decode(errors="replace")
                raise RuntimeError(f"{kind}: no exit within {TIMEOUT:.0f} s; output:\n{tail}")
            r, _, _ = select.select([proc.stdout], [], [], 0.005)
            if r:
                chunk = proc.stdout.read() or b""
                out += chunk
                if t_ready is None and kind.startswith("qemu") and MARK_READY in out:
                    t_ready = time.monotonic() - t0
            if t_ready is None and ready is not None and ready():
                t_ready = time.monotonic() - t0
            if now >= next_sample:
                s = smaps_sample(pid, guest_bytes)
                if s is not None:
                    overhead_peak = max(overhead_peak, s[0] - s[1])
                    anon_peak = max(anon_peak, s[2])
                    guest_peak = max(guest_peak, s[1])
                next_sample = now + 0.1
            wpid, status, rusage = os.wait4(pid, os.WNOHANG)
            if wpid == pid:
                t_exit = time.monotonic() - t0
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        try:
            rest = proc.stdout.read()
            if rest:
                out += rest
        except (OSError, ValueError):
            pass
        proc.stdout.close()
        with open(out_path, "wb") as f:
            f.write(out)
    return {"ready": t_ready, "exit": t_exit, "code": proc.returncode, "out": bytes(out),
            "maxrss": rusage.ru_maxrss * 1024, "overhead": overhead_peak, "anon": anon_peak,
            "guest_touched": guest_peak}


def fresh_disk(src, dst):
    """Each run boots a pristine copy of the disk (no journal replay)."""
    subprocess.run(["cp", "--sparse=always", src, dst], check=True)


def run_qemu():
    fresh_disk(f"{WORK}/qemu-root.ext4", f"{WORK}/run-qemu.ext4")
    r = run_vm("qemu", qemu_argv(E["QEMU_CMDLINE"]))
    # isa-debug-exit: a guest write of 0 to port 0xf4 -> QEMU exit status (0<<1)|1.
    if r["code"] != 1 or b"HUSK-BENCH-EXIT 0" not in r["out"] or r["ready"] is None:
        tail = r["out"][-600:].decode(errors="replace")
        raise RuntimeError(f"qemu run failed (exit {r['code']}):\n{tail}")
    return r


def run_husk():
    base = f"{WORK}/run"
    os.makedirs(base, exist_ok=True)
    env = dict(E, HUSK_RUN_DIR=base)
    console = f"{WORK}/husk-console.log"
    fresh_disk(f"{WORK}/root.ext4", f"{WORK}/run-husk.ext4")
    r = run_vm("husk", husk_argv(console), env=env, ready=lambda: husk_agent_connected(base))
    if r["code"] != 0 or r["ready"] is None:
        err = open(f"{WORK}/husk.err", errors="replace").read()[-600:]
        con = open(console, errors="replace").read()[-600:] if os.path.exists(console) else ""
        raise RuntimeError(f"husk run failed (exit {r['code']}, agent seen: "
                           f"{r['ready'] is not None}):\n{err}\n--- console:\n{con}")
    return r


RUNNERS = {"qemu": run_qemu, "husk": run_husk}


def mib(b):
    return f"{b / (1 << 20):.1f}"


def med(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    m = statistics.median(values)
    if len(values) == 1:
        return fmt(m)
    return f"{fmt(m)} ({fmt(min(values))}–{fmt(max(values))})"


def host_facts():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    kind = E["HOST_KIND"]
    kind_text = {"PVM": "PVM-based nested KVM (kvm_pvm; guest kernel code is emulated)",
                 "VMX": "hardware KVM (Intel VMX)", "SVM": "hardware KVM (AMD SVM)"}[kind]
    return {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "kind": kind_text, "cpu": f"{cpu}, {os.cpu_count()} CPUs",
            "kernel": platform.release(), "qemu": E.get("QEMU_VERSION", ""),
            "rev": E["HUSK_REV"], "load": open("/proc/loadavg").read().split()[0]}


def facts_line():
    f = host_facts()
    return f"{f['date']}, {E['HOST_KIND']} host, load average {f['load']}"


def benchmark():
    results = {k: [] for k in VMMS}
    for k in VMMS:
        log(f"warm-up run: {k}")
        RUNNERS[k]()
    for i in range(RUNS):
        order = VMMS if i % 2 == 0 else list(reversed(VMMS))
        for k in order:
            r = RUNNERS[k]()
            log(f"run {i + 1}/{RUNS} {k}: ready {r['ready']:.2f} s, exit {r['exit']:.2f} s, "
                f"peak RSS {mib(r['maxrss'])} MiB, beyond guest RAM {mib(r['overhead'])} MiB")
            results[k].append(r)
    return results


def results_table(results, facts):
    names = {"qemu": "QEMU microvm", "husk": "husk"}
    rows = ["| VMM | start → agent ready (s) | start → exit (s) | peak RSS (MiB) "
            "| RSS beyond guest RAM (MiB) | of it anonymous (MiB) | guest RAM touched (MiB) |",
            "|---|---|---|---|---|---|---|"]
    s = lambda v: f"{v:.2f}"
    for k, rs in results.items():
        rows.append(f"| {names[k]} | {med([r['ready'] for r in rs], s)} "
                    f"| {med([r['exit'] for r in rs], s)} "
                    f"| {med([r['maxrss'] for r in rs], mib)} "
                    f"| {med([r['overhead'] for r in rs], mib)} "
                    f"| {med([r['anon'] for r in rs], mib)} "
                    f"| {med([r['guest_touched'] for r in rs], mib)} |")
    head = (f"{facts['date']}, husk {facts['rev']}, {RUNS} runs each (medians, min–max in "
            f"parentheses), 1 vCPU, {MEM_MIB} MiB, `/bin/true` in the guest.\n"
            f"Host: {facts['kind']}; {facts['cpu']}; host kernel {facts['kernel']}; "
            f"{facts['qemu']}; load average {facts['load']} at the start.\n"
            f"Kernel command line (QEMU; husk's is the same plus its agent-disk root and "
            f"virtio-mmio flags): `{E['QEMU_CMDLINE']}`.\n")
    return head + "\n" + "\n".join(rows) + "\n"


# --- guest boot profile (initcall_debug, log read back with dmesg)

LINE = re.compile(r"^\[\s*(\d+\.\d+)\] (.*)$")
CALL = re.compile(r"initcall (\S+) returned (-?\d+) after (\d+) usecs")


def profile():
    # No log_buf_len=: growing the log buffer costs seconds on PVM hosts
    # (zeroing memory in the guest kernel is slow there) and skews the profile.
    cmdline = E["QEMU_CMDLINE"] + " initcall_debug benchmode=profile"
    fresh_disk(f"{WORK}/qemu-root.ext4", f"{WORK}/run-qemu.ext4")
    r = run_vm("qemu-profile", qemu_argv(cmdline))
    text = r["out"].decode(errors="replace").replace("\r", "")
    if "HUSK-BENCH-DMESG-END" not in text:
        raise RuntimeError("profile boot did not print its log:\n" + text[-600:])
    body = text.split("HUSK-BENCH-DMESG-BEGIN", 1)[1].split("HUSK-BENCH-DMESG-END", 1)[0]
    lines = []
    for raw in body.split("\n"):
        m = LINE.match(raw.strip())
        if m:
            lines.append((float(m.group(1)), m.group(2)))
    calls = []
    for _, msg in lines:
        m = CALL.search(msg)
        if m:
            calls.append((int(m.group(3)), m.group(1).split("+")[0], int(m.group(2))))
    calls.sort(reverse=True)
    gaps = []
    for (ta, ma), (tb, mb) in zip(lines, lines[1:]):
        gaps.append((tb - ta, ma, mb))
    gaps.sort(key=lambda g: g[0], reverse=True)
    init_start = next((t for t, m in lines if "Run /sbin/benchinit" in m), 0.0)
    complete = bool(lines) and lines[0][0] == 0.0 and "Linux version" in lines[0][1]
    total_calls = sum(c[0] for c in calls) / 1e6
    out = []
    first_call = next((t for t, m in lines if m.startswith("calling ")), 0.0)
    out.append(f"{facts_line()}: one QEMU boot of the same kernel with `initcall_debug` "
               f"(console `quiet`; PID 1 read the log back with `dmesg`, so console output "
               f"does not inflate it). Guest clock: first initcall at {first_call:.2f} s, "
               f"PID 1 started at {init_start:.2f} s; {len(calls)} initcalls took "
               f"{total_calls:.2f} s in total. QEMU start to PID 1's first line (host clock): "
               f"{r['ready']:.2f} s."
               + ("" if complete else " The log buffer overflowed: its first lines are missing.")
               + "\n")
    out.append("Slowest initcalls:\n")
    out.append("| initcall | ms |")
    out.append("|---|---|")
    for usecs, fn, ret in calls[:15]:
        out.append(f"| `{fn}`{'' if ret == 0 else f' (returned {ret})'} | {usecs / 1000:.0f} |")
    out.append("\nBiggest gaps between consecutive log lines (time spent after the first line):\n")
    out.append("| gap (ms) | after | before |")
    out.append("|---|---|---|")
    clip = lambda s: s.replace("|", "\\|")[:90]
    for d, a, b in gaps[:10]:
        out.append(f"| {d * 1000:.0f} | `{clip(a)}` | `{clip(b)}` |")
    with open(f"{WORK}/profile.log", "w") as f:
        f.write(body)
    keep = E.get("BENCH_KEEP_PROFILE")
    if keep:
        with open(keep, "w") as f:
            f.write(body)
    return "\n".join(out) + "\n"


# --- docs/BENCHMARKS.md: only the generated blocks of the "VM boot" section

SECTION = "## VM boot"
SKELETON = f"""{SECTION}

Generated by `scripts/bench-vm.sh` (the blocks between the `bench-vm` markers
are replaced on each run; the text around them is kept).

<!-- bench-vm:results:begin -->
<!-- bench-vm:results:end -->

### Guest boot profile

<!-- bench-vm:profile:begin -->
<!-- bench-vm:profile:end -->
"""


def replace_block(doc, name, content):
    begin, end = f"<!-- bench-vm:{name}:begin -->", f"<!-- bench-vm:{name}:end -->"
    i, j = doc.find(begin), doc.find(end)
    if i < 0 or j < i:
        raise RuntimeError(f"docs/BENCHMARKS.md: markers for {name} missing")
    return doc[:i + len(begin)] + "\n" + content + doc[j:]


def update_docs(table, prof):
    path = f"{REPO}/docs/BENCHMARKS.md"
    doc = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if SECTION + "\n" not in doc:
        doc = doc.rstrip("\n") + "\n\n" + SKELETON
    doc = replace_block(doc, "results", table)
    if prof is not None:
        doc = replace_block(doc, "profile", prof)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(doc)
    os.replace(tmp, path)
    log(f"updated {path}")


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # If the calling shell dies without its cleanup, stop (and kill the VMM).
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() == 1:
        sys.exit(143)
    facts = host_facts()
    results = benchmark()
    table = results_table(results, facts)
    prof = None
    if E["BENCH_PROFILE"] == "1" and "qemu" in VMMS:
        log("profile boot (initcall_debug)")
        prof = profile()
    print(table)
    if prof:
        print(prof)
    if E["BENCH_DOCS"] == "1":
        update_docs(table, prof)


try:
    main()
except RuntimeError as e:
    log(str(e))
    sys.exit(1)
PY

python3 "$WORK/bench_vm.py" &
PY_PID=$!
wait "$PY_PID"
