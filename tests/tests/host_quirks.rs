//! The AVX workaround of PVM hosts (docs/HOSTS.md, "AVX state"), end to
//! end: on a PVM host every guest process — the agent (PID 1 of the guest),
//! a container's init process, an exec'd process — starts with
//! `GLIBC_TUNABLES`, `OPENSSL_ia32cap` and `GODEBUG` set so that it keeps
//! off AVX, and glibc in a container reports AVX and AVX2 as not usable.
//! On other hosts none of these variables is set.
//!
//! The image is built here `FROM scratch` with the host's dynamic loader
//! and libc beside busybox: the loader's `--list-diagnostics` prints the
//! CPU features glibc found (`cpuid`) and the ones it uses (`active`).
//!
//! Skipped (with a message) without `HUSK_KERNEL` (outside
//! scripts/test.sh) or without root; under scripts/test.sh it fails then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "images/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "containers/support.rs"]
mod csupport;

use csupport::{s, Env, VM_TIMEOUT};
use husk_tests::tools_or_skip;

/// The image with busybox, the host's dynamic loader and libc.
const GLIBC_IMAGE: &str = "glibc:test";
/// The dynamic loader, at the path the x86-64 ABI gives it.
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
/// The host's libc, copied into the image at the same path.
const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

/// The last line of every environment listing, so that a listing cut
/// short (lost output) fails as such, not as a missing variable.
const END: &str = "--end--";

/// Prints a process's initial environment (`/proc/<pid>/environ`), one
/// variable per line, then [`END`].
fn environ_of(pid: &str) -> String {
    format!("tr '\\0' '\\n' < /proc/{pid}/environ; echo {END}")
}

/// The variables of an environment listing that ends with [`END`].
fn complete_listing(what: &str, listing: &str) -> BTreeMap<String, String> {
    let Some(vars) = listing.strip_suffix(&format!("{END}\n")) else {
        panic!("{what}: the listing did not arrive complete: {listing:?}");
    };
    parse_env(vars)
}

#[test]
fn guest_processes_keep_off_avx_on_pvm_hosts() {
    let test = "guest_processes_keep_off_avx_on_pvm_hosts";
    if !tools_or_skip(
        test,
        &["/usr/bin/mkfs.erofs", LOADER, LIBC],
        "apt install erofs-utils libc6",
    ) {
        return;
    }
    let Some(env) = Env::new(test) else {
        return;
    };
    let pvm = vmm::HostKind::detect() == vmm::HostKind::Pvm;
    eprintln!("host kind: {:?}", vmm::HostKind::detect());

    let ctx = glibc_image_context(env.dir.path());
    env.ok(&["build", "-t", GLIBC_IMAGE, s(&ctx)]);

    // One VM: the init process records its own environment, then an
    // exec'd process reports its own, the agent's and glibc's view.
    let init = format!(
        "{{ {}; }} > /init.env; echo ready; exec sleep 1000",
        environ_of("$$")
    );
    env.ok(&[
        "run",
        "-d",
        "--name",
        "quirks",
        GLIBC_IMAGE,
        "sh",
        "-c",
        &init,
    ]);
    env.eventually(
        "the init process to record its environment",
        VM_TIMEOUT,
        || env.ok(&["logs", "quirks"]) == "ready\n",
    );
    let init_env = complete_listing(
        "the init process's environment",
        &env.ok(&["exec", "quirks", "cat", "/init.env"]),
    );
    let exec_env = complete_listing(
        "an exec'd process's environment",
        &env.ok(&["exec", "quirks", "sh", "-c", &environ_of("$$")]),
    );
    // Reading the agent's environ is ptrace-like access: the agent has
    // every capability, so only a process with all of them may (Docker's
    // default set is not enough).
    let pid1 = env.ok(&[
        "exec",
        "--privileged",
        "quirks",
        "sh",
        "-c",
        &format!("cat /proc/1/comm && {}", environ_of("1")),
    ]);
    let diagnostics = env.ok(&["exec", "quirks", LOADER, "--list-diagnostics"]);
    assert_eq!(env.ok(&["rm", "-f", "quirks"]), "quirks\n");
    env.assert_clean();

    assert_eq!(init_env.get("IMG").map(String::as_str), Some("image"));
    assert_quirk_env("the container's init process", &init_env, pvm);
    assert_quirk_env("an exec'd process", &exec_env, pvm);
    // Without a PID namespace of its own, the container sees the agent as
    // PID 1. Should containers get one, this part has nothing to look at.
    let (comm, agent_env) = pid1.split_once('\n').unwrap_or((pid1.as_str(), ""));
    if comm == "husk-agent" {
        let agent_env = complete_listing("the agent's environment", agent_env);
        assert_quirk_env("the agent (PID 1)", &agent_env, pvm);
    } else {
        eprintln!("{test}: PID 1 in the container is {comm:?}, not the agent (a PID namespace of its own?): the agent's environment is not checked");
    }

    let features = CpuFeatures::parse(&diagnostics);
    eprintln!("{test}: {features:?}");
    if pvm {
        for (name, present, active) in [
            ("AVX", features.avx_cpuid, features.avx_active),
            ("AVX2", features.avx2_cpuid, features.avx2_active),
        ] {
            if present {
                assert!(
                    !active,
                    "glibc in the guest uses {name} on a PVM host:\n{diagnostics}"
                );
            } else {
                eprintln!("{test}: the CPU lacks {name}; nothing to keep glibc off");
            }
        }
    }
    // On VMX/SVM hosts the guest kernel manages AVX state itself, and
    // whether glibc uses AVX there depends on the CPU: nothing to assert.
}

/// A build context for [`GLIBC_IMAGE`]: busybox with the applets the test
/// uses, the loader and libc at their usual paths.
fn glibc_image_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("glibc-ctx");
    let root = ctx.join("rootfs");
    for d in ["bin", "lib64", "lib/x86_64-linux-gnu", "tmp"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("apt install busybox-static");
    for applet in ["sh", "cat", "tr", "sleep", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    // fs::copy follows the host's symlinks: the image gets the files.
    for file in [LOADER, LIBC] {
        std::fs::copy(file, root.join(file.trim_start_matches('/'))).expect("copy glibc");
    }
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin IMG=image\nCMD [\"sh\"]\n",
    )
    .expect("Dockerfile");
    ctx
}

/// `KEY=value` lines as a map (lines without `=` are ignored).
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Asserts that `vars` (the environment of `who`) keeps glibc, OpenSSL and
/// Go off AVX on a PVM host, and holds none of these variables elsewhere.
fn assert_quirk_env(who: &str, vars: &BTreeMap<String, String>, pvm: bool) {
    let [glibc, openssl, go] = husk_protocol::HOST_QUIRK_ENV.map(|k| vars.get(k));
    if !pvm {
        assert_eq!(
            [glibc, openssl, go],
            [None, None, None],
            "{who}: no quirk variable on a VMX/SVM host: {vars:?}"
        );
        return;
    }
    let hwcaps: Vec<&str> = glibc
        .and_then(|t| {
            t.split(':')
                .find_map(|t| t.strip_prefix("glibc.cpu.hwcaps="))
        })
        .map(|list| list.split(',').collect())
        .unwrap_or_default();
    for feature in ["-AVX", "-AVX2"] {
        assert!(
            hwcaps.contains(&feature),
            "{who}: GLIBC_TUNABLES must mask {feature} on a PVM host: {vars:?}"
        );
    }
    // OpenSSL: `~mask` words; bit 60 of the first is CPUID.1:ECX.AVX, bit 5
    // of the second CPUID.7:EBX.AVX2.
    let masks: Vec<u64> = openssl
        .map(|v| {
            v.split(':')
                .map(|w| {
                    w.strip_prefix("~0x")
                        .and_then(|h| u64::from_str_radix(h, 16).ok())
                        .unwrap_or(0)
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        masks.first().is_some_and(|m| m & (1 << 60) != 0)
            && masks.get(1).is_some_and(|m| m & (1 << 5) != 0),
        "{who}: OPENSSL_ia32cap must mask AVX and AVX2 on a PVM host: {vars:?}"
    );
    let go: Vec<&str> = go.map(|v| v.split(',').collect()).unwrap_or_default();
    for option in ["cpu.avx=off", "cpu.avx2=off"] {
        assert!(
            go.contains(&option),
            "{who}: GODEBUG must hold {option} on a PVM host: {vars:?}"
        );
    }
}

/// What glibc's `ld.so --list-diagnostics` says about AVX and AVX2: whether
/// the CPU reports them (`cpuid`) and whether glibc uses them (`active`;
/// `usable` in older glibc).
#[derive(Debug)]
struct CpuFeatures {
    avx_cpuid: bool,
    avx_active: bool,
    avx2_cpuid: bool,
    avx2_active: bool,
}

impl CpuFeatures {
    fn parse(diagnostics: &str) -> CpuFeatures {
        let word = |leaf: u32, kind: &str, reg: u32| -> u32 {
            let keys = [kind, if kind == "active" { "usable" } else { kind }]
                .map(|k| format!("x86.cpu_features.features[{leaf:#x}].{k}[{reg:#x}]="));
            diagnostics
                .lines()
                .find_map(|l| keys.iter().find_map(|k| l.strip_prefix(k.as_str())))
                .and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                .unwrap_or_else(|| panic!("no {} in the diagnostics:\n{diagnostics}", keys[0]))
        };
        // glibc's feature words: index 0 is CPUID leaf 1, index 1 leaf 7;
        // registers eax, ebx, ecx, edx. AVX is leaf 1 ECX bit 28, AVX2 is
        // leaf 7 EBX bit 5.
        let bit = |w: u32, b: u32| w & (1 << b) != 0;
        CpuFeatures {
            avx_cpuid: bit(word(0, "cpuid", 2), 28),
            avx_active: bit(word(0, "active", 2), 28),
            avx2_cpuid: bit(word(1, "cpuid", 1), 5),
            avx2_active: bit(word(1, "active", 1), 5),
        }
    }
}

#[test]
fn cpu_features_parse_glibc_diagnostics() {
    // From glibc 2.36 on a PVM host, without and with the tunables.
    let plain = "x86.cpu_features.features[0x0].cpuid[0x2]=0xfffa3203\n\
                 x86.cpu_features.features[0x0].active[0x2]=0x7ed83203\n\
                 x86.cpu_features.features[0x1].cpuid[0x1]=0x219c07ab\n\
                 x86.cpu_features.features[0x1].active[0x1]=0x218c0328\n";
    let f = CpuFeatures::parse(plain);
    assert!(f.avx_cpuid && f.avx_active && f.avx2_cpuid && f.avx2_active);
    let masked = plain
        .replace("0x7ed83203", "0x6ed82203")
        .replace("0x218c0328", "0x218c0308");
    let f = CpuFeatures::parse(&masked);
    assert!(f.avx_cpuid && !f.avx_active && f.avx2_cpuid && !f.avx2_active);
    let older = plain.replace("active", "usable");
    assert!(CpuFeatures::parse(&older).avx_active);
}

/// The values from docs/HOSTS.md.
fn documented_quirks() -> BTreeMap<String, String> {
    parse_env(
        "GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512BW,-AVX512CD,-AVX512DQ,-AVX512VL,-FMA,-AVX_Fast_Unaligned_Load\n\
         OPENSSL_ia32cap=~0x1000000000000000:~0x10020\n\
         GODEBUG=cpu.avx=off,cpu.avx2=off\n\
         PATH=/bin\n",
    )
}

#[test]
fn documented_quirk_values_pass_the_check() {
    assert_quirk_env("documented", &documented_quirks(), true);
    assert_quirk_env("plain", &parse_env("PATH=/bin\n"), false);
}

#[test]
#[should_panic(expected = "no quirk variable on a VMX/SVM host")]
fn quirk_variables_on_a_hardware_host_fail_the_check() {
    assert_quirk_env("documented", &documented_quirks(), false);
}

#[test]
#[should_panic(expected = "GODEBUG must hold cpu.avx2=off")]
fn an_incomplete_quirk_fails_the_check() {
    let mut vars = documented_quirks();
    vars.insert("GODEBUG".into(), "cpu.avx=off".into());
    assert_quirk_env("incomplete", &vars, true);
}
