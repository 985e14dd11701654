//! Warm start end to end: containers, `vm run` and `build` restore their
//! VMs from templates unless `--cold`; clones differ; damaged templates
//! and templates of another kernel are rebuilt; a template build killed
//! half way leaves no template.
//!
//! Tests that look at templates use a private `HUSK_CACHE`, so each of
//! them builds its own (one cold boot each); the container tests use the
//! shared cache like every other test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use husk_tests::{busybox_rootfs, Finished, Running};

#[allow(dead_code)]
#[path = "images/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "containers/support.rs"]
mod csupport;

use csupport::{Env, IMAGE, VM_TIMEOUT};

/// A private template cache (and a busybox root disk) for `vm run`s.
struct Cache {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
}

impl Cache {
    fn new(env: &Env) -> Cache {
        let dir = tempfile::tempdir_in(env.dir.path()).unwrap();
        let rootfs = dir.path().join("root.ext4");
        busybox_rootfs(&dir.path().join("build"), &rootfs).unwrap();
        Cache { dir, rootfs }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn templates(&self) -> PathBuf {
        self.path().join("templates")
    }

    /// A husk command of `env` with this cache and debug lines on.
    fn cmd(&self, env: &Env, args: &[&str]) -> Command {
        let mut cmd = env.cmd(args);
        cmd.env("HUSK_CACHE", self.path()).env("HUSK_DEBUG", "1");
        cmd
    }

    fn run(&self, env: &Env, args: &[&str]) -> Finished {
        let done = husk_tests::run(self.cmd(env, args), VM_TIMEOUT).unwrap();
        eprintln!(
            "husk {args:?} -> {:?}\n  stdout: {:?}\n  stderr: {:?}",
            done.status, done.stdout, done.stderr
        );
        done
    }

    /// `husk vm run --disk ROOT ARGS... -- /bin/echo hi`, expecting "hi";
    /// returns the template it was restored from ("" for a cold boot).
    fn echo(&self, env: &Env, flags: &[&str]) -> String {
        let root = self.rootfs.to_str().unwrap();
        let mut args = vec!["vm", "run", "--disk", root];
        args.extend(flags);
        args.extend(["--", "/bin/echo", "hi"]);
        let done = self.run(env, &args);
        assert_eq!(
            (done.code(), done.stdout.as_str()),
            (0, "hi\n"),
            "{}",
            done.stderr
        );
        restored_from(&done.stderr)
    }

    /// Keys of the complete templates.
    fn keys(&self, env: &Env) -> Vec<String> {
        let done = self.run(env, &["system", "templates", "-q"]);
        assert_eq!(done.code(), 0, "{}", done.stderr);
        done.stdout.lines().map(String::from).collect()
    }
}

/// The template key of a `vm run`'s debug line, "" if it booted cold.
fn restored_from(stderr: &str) -> String {
    if stderr.contains("husk: debug: booted from the kernel") {
        return String::new();
    }
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("husk: debug: restored from template "))
        .unwrap_or_else(|| panic!("no start line in {stderr:?}"))
        .trim()
        .to_string()
}

fn state_file(cache: &Cache, key: &str) -> PathBuf {
    cache.templates().join(key).join("state")
}

#[test]
fn restored_containers_behave_and_differ() {
    let Some(env) = Env::new("restored_containers_behave_and_differ") else {
        return;
    };
    let done = env.husk(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(done.code(), 3, "{}", done.stderr);
    assert_eq!(done.stdout, "out\n");
    assert!(done.stderr.ends_with("err\n"), "{}", done.stderr);
    assert!(!done.stderr.contains("warning"), "{}", done.stderr);

    // Two clones of one template at once.
    let starts: Vec<Running> = ["ca", "cb"]
        .iter()
        .map(|name| {
            Running::start(env.cmd(&["run", "-d", "--name", name, IMAGE, "sleep", "1000"])).unwrap()
        })
        .collect();
    for r in starts {
        let done = r.finish(VM_TIMEOUT).unwrap();
        assert_eq!(done.code(), 0, "{}", done.stderr);
    }
    let template = env.inspect("ca", "{{.State.Template}}");
    assert_eq!(template.len(), 16, "restored from a template: {template:?}");
    assert_eq!(env.inspect("cb", "{{.State.Template}}"), template);
    let probe = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; \
                 cat /sys/class/net/eth0/address; hostname; \
                 cat /sys/block/vdb/serial; echo; cat /sys/block/vdb/size; \
                 test -x /bin/busybox && echo layer-ok";
    let a = env.ok(&["exec", "ca", "sh", "-c", probe]);
    let b = env.ok(&["exec", "cb", "sh", "-c", probe]);
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    assert_eq!(a.len(), 6, "{a:?}");
    for (i, what) in ["random bytes", "MAC address", "hostname"]
        .iter()
        .enumerate()
    {
        assert_ne!(a[i], b[i], "clones share their {what}");
        assert!(!a[i].is_empty(), "{what}: {a:?}");
    }
    // The first layer disk, attached at restore: its serial and its size.
    let id = env.inspect("ca", "{{.Id}}");
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.root().join("containers").join(&id).join("config.json")).unwrap(),
    )
    .unwrap();
    let layer = PathBuf::from(config["layers"][0].as_str().unwrap());
    let sectors = std::fs::metadata(&layer).unwrap().len() / 512;
    assert_eq!(a[3], "layer0");
    assert_eq!(a[4], sectors.to_string());
    assert_eq!(a[5], "layer-ok");
    env.ok(&["rm", "-f", "ca", "cb"]);

    // --cold boots from the kernel, with the same result.
    let done = env.husk(&["run", "--cold", "--name", "cc", IMAGE, "sh", "-c", "exit 4"]);
    assert_eq!(done.code(), 4, "{}", done.stderr);
    assert_eq!(env.inspect("cc", "{{.State.Template}}"), "");
    env.ok(&["rm", "cc"]);
    env.assert_clean();
}

#[test]
fn templates_are_rebuilt_when_damaged_or_for_another_kernel() {
    let Some(env) = Env::new("templates_are_rebuilt_when_damaged_or_for_another_kernel") else {
        return;
    };
    let cache = Cache::new(&env);
    let kernel = cache.dir.path().join("vmlinux");
    std::fs::copy(husk_tests::kernel_or_skip("copy").unwrap(), &kernel).unwrap();
    let flags = ["--kernel", kernel.to_str().unwrap()];

    let first = cache.echo(&env, &flags);
    assert_eq!(first.len(), 16, "{first:?}");
    assert_eq!(cache.keys(&env), vec![first.clone()]);
    let built = std::fs::metadata(state_file(&cache, &first)).unwrap();
    assert_eq!(cache.echo(&env, &flags), first);
    let reused = std::fs::metadata(state_file(&cache, &first)).unwrap();
    assert_eq!(
        built.modified().unwrap(),
        reused.modified().unwrap(),
        "not rebuilt"
    );

    // A truncated state file is detected and the template rebuilt.
    let state = state_file(&cache, &first);
    let len = std::fs::metadata(&state).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&state)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let root = cache.rootfs.to_str().unwrap();
    let done = cache.run(
        &env,
        &[
            "vm",
            "run",
            "--kernel",
            flags[1],
            "--disk",
            root,
            "--",
            "/bin/echo",
            "hi",
        ],
    );
    assert_eq!(
        (done.code(), done.stdout.as_str()),
        (0, "hi\n"),
        "{}",
        done.stderr
    );
    assert!(done.stderr.contains("is damaged"), "{}", done.stderr);
    assert_eq!(restored_from(&done.stderr), first);
    assert_eq!(std::fs::metadata(&state).unwrap().len(), len);

    // Another kernel (the same one with a byte appended) gets its own.
    let mut bytes = std::fs::read(&kernel).unwrap();
    bytes.push(0);
    std::fs::write(&kernel, bytes).unwrap();
    let second = cache.echo(&env, &flags);
    assert_ne!(second, first);
    let mut keys = cache.keys(&env);
    keys.sort();
    let mut want = vec![first, second];
    want.sort();
    assert_eq!(keys, want);
    let done = cache.run(&env, &["system", "templates", "prune"]);
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(cache.keys(&env).is_empty());
}

#[test]
fn a_killed_template_build_leaves_no_template() {
    let Some(env) = Env::new("a_killed_template_build_leaves_no_template") else {
        return;
    };
    let cache = Cache::new(&env);
    let root = cache.rootfs.to_str().unwrap();
    let running = Running::start(cache.cmd(
        &env,
        &["vm", "run", "--disk", root, "--", "/bin/echo", "hi"],
    ))
    .unwrap();
    // Kill it while the template VM boots (its staging directory exists
    // from the build's start to its publication, a boot later).
    let deadline = Instant::now() + VM_TIMEOUT;
    while !building(&cache.templates()) {
        assert!(
            Instant::now() < deadline,
            "the template build never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    csupport::kill(running.pid(), rustix::process::Signal::KILL);
    let done = running.finish(VM_TIMEOUT).unwrap();
    assert_ne!(done.code(), 0);
    assert!(
        cache.keys(&env).is_empty(),
        "a half-built template is listed"
    );
    // The next run builds it, and removes the dead build's staging dir.
    let key = cache.echo(&env, &[]);
    assert_eq!(cache.keys(&env), vec![key.clone()]);
    let left: Vec<String> = std::fs::read_dir(cache.templates())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("staging"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Whether a template build is in progress (its staging directory exists).
fn building(templates: &Path) -> bool {
    std::fs::read_dir(templates)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains(".staging-"))
}

#[test]
fn build_starts_warm_unless_cold() {
    // `run --cold` and `vm run --cold` are covered above and in vm.rs.
    let Some(env) = Env::new("build_starts_warm_unless_cold") else {
        return;
    };
    let cache = Cache::new(&env);
    let context = cache.dir.path().join("ctx");
    std::fs::create_dir(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN echo built > /built\n"),
    )
    .unwrap();
    let ctx = context.to_str().unwrap();
    let done = cache.run(&env, &["build", "--cold", "-t", "cold:1", ctx]);
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(cache.keys(&env).is_empty(), "--cold built a template");

    // Without --cold: `build` makes (and uses) a template.
    let done = cache.run(&env, &["build", "--no-cache", "-t", "warm:1", ctx]);
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(cache.keys(&env).len(), 1);
    assert_eq!(
        env.ok(&["run", "--rm", "warm:1", "cat", "/built"]),
        "built\n"
    );
    env.ok(&["rmi", "cold:1", "warm:1"]);
    env.assert_clean();
}
