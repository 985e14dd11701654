//! End-to-end tests of `husk build`: FROM scratch + COPY, ARG/ENV
//! substitution and every config instruction, .dockerignore, ADD of a tar
//! archive, multi-stage COPY --from, the build cache, Dockerfile errors
//! with line numbers, and RUN in a real microVM whose deletions are
//! whiteouts and whose recreated directories are opaque (checked with
//! `husk run`), with no host mount of the disk the guest wrote, and a
//! layer size cap.
//!
//! They need root (loop and overlay mounts, whiteouts); the RUN test also
//! needs `HUSK_KERNEL` and `HUSK_AGENT` (scripts/test.sh sets them) and is
//! skipped with a message otherwise. Only two VMs boot for a successful RUN
//! (the build and `husk run`), one more for a failing RUN and one for an
//! oversized layer.

use std::path::{Path, PathBuf};

use husk_tests::{agent_or_skip, kernel_or_skip, leftovers, root_or_skip, tools_or_skip, vm_lock};

#[allow(dead_code)]
#[path = "images/support.rs"]
mod support;

use support::{build_image, write_docker_save, Comp, Env, LayerTar, Tree};

/// Whether `test` cannot run here (not root, mkfs.erofs missing); then it
/// has been [`husk_tests::skip`]ped.
fn skip(test: &str) -> bool {
    !(root_or_skip(test, "loop and overlay mounts, whiteouts")
        && tools_or_skip(test, &["/usr/bin/mkfs.erofs"], "apt install erofs-utils"))
}

/// Writes `files` (path, content) under `dir`.
fn write(dir: &Path, files: &[(&str, &str)]) {
    for (p, content) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
    }
}

fn context(env: &Env, name: &str, dockerfile: &str) -> PathBuf {
    let dir = env.path().join(name);
    write(&dir, &[("Dockerfile", dockerfile)]);
    dir
}

fn busybox_into(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("apt install busybox-static");
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).expect("symlink");
}

/// The image's files: its layer blobs applied in order (whiteouts and
/// opaque markers honoured), as (kind:content, mode, uid, gid).
fn image_tree(env: &Env, name: &str) -> Tree {
    let v = env.inspect(name);
    let mut tree = Tree::new();
    for l in v["RootFS"]["Layers"].as_array().expect("layers") {
        let diff_id = l.as_str().expect("diff_id").trim_start_matches("sha256:");
        let blob = env.root().join("image/blobs/sha256").join(diff_id);
        let data = std::fs::read(blob).expect("layer blob (stored uncompressed)");
        let mut ar = tar::Archive::new(&data[..]);
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").display().to_string();
            let path = path.trim_end_matches('/').to_string();
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (format!("{d}/"), b.to_string()),
                None => (String::new(), path.clone()),
            };
            if base == ".wh..wh..opq" {
                tree.retain(|k, _| !k.starts_with(&dir));
                continue;
            }
            if let Some(gone) = base.strip_prefix(".wh.") {
                let gone = format!("{dir}{gone}");
                tree.retain(|k, _| *k != gone && !k.starts_with(&format!("{gone}/")));
                continue;
            }
            let h = e.header().clone();
            let kind = match h.entry_type() {
                tar::EntryType::Directory => "dir".to_string(),
                tar::EntryType::Symlink => format!(
                    "link:{}",
                    e.link_name().expect("link").expect("link").display()
                ),
                tar::EntryType::Link => format!(
                    "hardlink:{}",
                    e.link_name().expect("link").expect("link").display()
                ),
                _ => {
                    let mut body = Vec::new();
                    std::io::Read::read_to_end(&mut e, &mut body).expect("content");
                    format!("file:{}", String::from_utf8_lossy(&body))
                }
            };
            let mode = h.mode().expect("mode");
            let (uid, gid) = (h.uid().expect("uid") as u32, h.gid().expect("gid") as u32);
            tree.insert(path, (kind, mode, uid, gid));
        }
    }
    tree
}

/// The image config document (with history) from the store.
fn config_doc(env: &Env, name: &str) -> serde_json::Value {
    let id = env.inspect(name)["Id"].as_str().expect("id").to_string();
    let blob = env
        .root()
        .join("image/blobs/sha256")
        .join(id.trim_start_matches("sha256:"));
    serde_json::from_slice(&std::fs::read(blob).expect("config blob")).expect("json")
}

/// Nothing left behind in the store's work directories or mounted.
fn assert_clean(env: &Env) {
    for d in ["image/staging", "image/tmp"] {
        let left = leftovers(&env.root().join(d));
        assert!(left.is_empty(), "{d}: {left:?}");
    }
    let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
    let root = env.root().display().to_string();
    assert!(
        !mounts.contains(&root),
        "mounts left under {root}: {mounts}"
    );
}

fn gzip_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut t = LayerTar::new();
    t.dir("pkg", 0o750, 7, 7);
    for (p, data) in entries {
        t.file(p, data, 0o640, 7, 7);
    }
    support::compress(&t.finish(), Comp::Gzip)
}

const FULL: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=scratch
FROM ${BASE}
ARG DIR=/opt/app
ARG VERSION
ENV APP_HOME=$DIR \
    VERSION=${VERSION:-0.0}
LABEL version="$VERSION" home=${APP_HOME}
WORKDIR $APP_HOME
COPY bin /bin/
COPY --chown=10:20 app/ ./
ADD data.tar.gz /data/
COPY ["hello world.txt", "rel/"]
USER 10:20
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s CMD ["/bin/true"]
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo $VERSION"]
"#;

#[test]
fn scratch_copy_substitution_config_and_cache() {
    if skip("scratch_copy_substitution_config_and_cache") {
        return;
    }
    let env = Env::new();
    let ctx = context(&env, "ctx", FULL);
    busybox_into(&ctx);
    write(
        &ctx,
        &[
            ("app/hello.txt", "hello\n"),
            ("app/sub/x", "x\n"),
            ("app/junk.tmp", "ignored\n"),
            ("secret", "ignored\n"),
            ("hello world.txt", "spaces\n"),
            (".dockerignore", "# comment\n**/*.tmp\nsecret\n"),
        ],
    );
    std::fs::write(ctx.join("data.tar.gz"), gzip_tar(&[("pkg/f", b"from tar")])).expect("tar");
    let c = ctx.to_str().expect("utf8");
    let args = [
        "build",
        "-t",
        "app:1",
        "-t",
        "app:latest",
        "--build-arg",
        "VERSION=1.2",
        "--build-arg",
        "UNUSED=x",
        c,
    ];
    let out = env.ok(&args);
    assert!(
        out.starts_with("Step 1/17 : FROM ${BASE}\n ---> scratch\n"),
        "{out}"
    );
    assert!(
        out.contains("Step 8/17 : COPY --chown=10:20 app/ ./\n"),
        "{out}"
    );
    assert!(
        out.contains("[Warning] One or more build-args [UNUSED] were not consumed"),
        "{out}"
    );
    assert!(!out.contains("Using cache"), "{out}");
    let id = env.inspect("app:1")["Id"].as_str().expect("id")[7..19].to_string();
    assert!(
        out.ends_with(&format!(
            "Successfully built {id}\nSuccessfully tagged app:1\nSuccessfully tagged app:latest\n"
        )),
        "{out}"
    );

    let v = env.inspect("app:latest");
    let cfg = &v["Config"];
    let env_list: Vec<&str> = cfg["Env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        env_list.contains(&"APP_HOME=/opt/app") && env_list.contains(&"VERSION=1.2"),
        "{env_list:?}"
    );
    assert!(
        env_list.iter().any(|e| e.starts_with("PATH=")),
        "scratch gets a default PATH"
    );
    assert_eq!(cfg["WorkingDir"], "/opt/app");
    assert_eq!(cfg["User"], "10:20");
    assert_eq!(cfg["StopSignal"], "SIGINT");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(cfg["Cmd"], serde_json::json!(["echo $VERSION"]));
    let doc = config_doc(&env, "app:1");
    let c2 = &doc["config"];
    assert_eq!(
        c2["Labels"],
        serde_json::json!({"version": "1.2", "home": "/opt/app"})
    );
    assert_eq!(
        c2["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}, "53/udp": {}})
    );
    assert_eq!(c2["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(
        c2["Healthcheck"],
        serde_json::json!({"Test": ["CMD", "/bin/true"], "Interval": 5_000_000_000u64})
    );
    let history = doc["history"].as_array().expect("history");
    assert_eq!(history.len(), 16, "{history:?}");
    let layers = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(layers, 4, "COPY, COPY, ADD, COPY add layers: {history:?}");
    assert_eq!(
        doc["rootfs"]["diff_ids"]
            .as_array()
            .expect("diff_ids")
            .len(),
        4
    );
    assert!(history[2]["created_by"]
        .as_str()
        .expect("s")
        .contains("ENV APP_HOME=/opt/app VERSION=1.2"));

    let tree = image_tree(&env, "app:1");
    let bb = std::fs::read("/bin/busybox").expect("busybox");
    assert_eq!(
        tree["bin/busybox"],
        (
            format!("file:{}", String::from_utf8_lossy(&bb)),
            0o755,
            0,
            0
        )
    );
    assert_eq!(tree["bin/sh"].0, "link:busybox");
    assert_eq!(
        tree["opt/app/hello.txt"],
        ("file:hello\n".into(), 0o644, 10, 20)
    );
    assert_eq!(tree["opt/app/sub/x"].2, 10, "--chown applies below too");
    assert_eq!(tree["opt/app/rel/hello world.txt"].0, "file:spaces\n");
    assert_eq!(
        tree["data/pkg/f"],
        ("file:from tar".into(), 0o640, 7, 7),
        "ADD extracts archives"
    );
    for absent in [
        "opt/app/junk.tmp",
        "opt/app/secret",
        "secret",
        "data/data.tar.gz",
        "opt/app/app",
    ] {
        assert!(
            !tree.contains_key(absent),
            "{absent} should not be in the image: {tree:?}"
        );
    }

    // Rebuild: every step from the cache, same image.
    let again = env.ok(&args);
    assert_eq!(again.matches(" ---> Using cache").count(), 16, "{again}");
    assert!(
        again.contains(&format!("Successfully built {id}")),
        "{again}"
    );
    // Another build-arg value: the steps from the first use of VERSION on miss.
    let other = env.ok(&["build", "-t", "app:2", "--build-arg", "VERSION=2", c]);
    assert_eq!(other.matches(" ---> Using cache").count(), 2, "{other}");
    // A changed source: its COPY and everything after it miss.
    write(&ctx, &[("app/sub/x", "changed\n")]);
    let changed = env.ok(&args);
    assert_eq!(changed.matches(" ---> Using cache").count(), 6, "{changed}");
    let step8 = changed
        .split("Step 8/17 : COPY --chown=10:20 app/ ./\n")
        .nth(1)
        .expect("step 8");
    assert!(!step8.starts_with(" ---> Using cache"), "{changed}");
    assert_ne!(env.inspect("app:1")["Id"].as_str().expect("id")[7..19], id);
    // --no-cache runs everything again.
    let fresh = env.ok(&["build", "--no-cache", "-t", "app:3", c]);
    assert!(!fresh.contains("Using cache"), "{fresh}");
    assert_clean(&env);
}

#[test]
fn multi_stage_copy_from_and_target() {
    if skip("multi_stage_copy_from_and_target") {
        return;
    }
    let env = Env::new();
    let df = "FROM scratch AS files\nCOPY a.txt b.txt /src/\nCOPY a.txt /other/\n\n\
              FROM scratch AS unused\nCOPY does-not-exist /\n\n\
              FROM scratch\nCOPY --from=files /src/ /copied/\nCOPY --from=0 /src/a.txt /single\n";
    let ctx = context(&env, "ctx", df);
    write(&ctx, &[("a.txt", "A"), ("b.txt", "B")]);
    let c = ctx.to_str().expect("utf8");
    let out = env.ok(&["build", "-t", "multi:1", c]);
    assert!(out.contains("Step 1/6 : FROM scratch AS files"), "{out}");
    assert!(
        !out.contains("does-not-exist"),
        "unused stages are not built: {out}"
    );
    let tree = image_tree(&env, "multi:1");
    let files: Vec<&String> = tree.keys().collect();
    assert_eq!(
        files,
        ["copied", "copied/a.txt", "copied/b.txt", "single"],
        "{tree:?}"
    );
    assert_eq!(tree["single"].0, "file:A");
    let out = env.ok(&["build", "--target", "files", "-t", "files:1", c]);
    assert!(out.contains("Step 3/3 : COPY a.txt /other/"), "{out}");
    assert_eq!(out.matches("Using cache").count(), 2, "{out}");
    let err = env.fail(&["build", "--target", "nope", c]);
    assert!(err.contains("failed to reach build target nope"), "{err}");
    assert_clean(&env);
}

#[test]
fn dockerfile_errors_name_the_line() {
    if skip("dockerfile_errors_name_the_line") {
        return;
    }
    let env = Env::new();
    let ctx = context(
        &env,
        "ctx",
        "FROM scratch\n# a comment\nCOPY a /a\n\nRUN echo \\\n  x\nFORM busybox\n",
    );
    write(
        &ctx,
        &[
            ("a", "a"),
            ("other.Dockerfile", "FROM scratch\nCOPY missing /m\n"),
        ],
    );
    let c = ctx.to_str().expect("utf8");
    let f = env.husk(&["build", c]);
    assert_eq!(f.code(), 125, "{f:?}");
    assert_eq!(f.stderr, "husk: Dockerfile:7: unknown instruction: FORM\n");
    assert!(
        f.stdout.is_empty(),
        "nothing runs before the whole file parses: {}",
        f.stdout
    );
    let other = ctx.join("other.Dockerfile");
    let err = env.fail(&["build", "-f", other.to_str().expect("utf8"), c]);
    assert!(
        err.starts_with(&format!(
            "husk: {}:2: file not found in build context",
            other.display()
        )),
        "{err}"
    );
    let err = env.fail(&["build", "-t", "Bad Tag", c]);
    assert!(err.contains("invalid reference format"), "{err}");
    let err = env.fail(&["build", &env.path().join("nope").display().to_string()]);
    assert!(err.contains("unable to prepare context"), "{err}");
    write(&ctx, &[("Dockerfile", "FROM nosuchimage:1\n")]);
    let err = env.fail(&["build", c]);
    assert!(
        err.contains("Dockerfile:1: image nosuchimage:1 is not in the store"),
        "{err}"
    );
    assert_clean(&env);
}

/// A base image with busybox applets and two files in /etc.
fn load_base(env: &Env) {
    let bb = std::fs::read("/bin/busybox").expect("/bin/busybox (apt install busybox-static)");
    let mut t = LayerTar::new();
    t.dir("bin", 0o755, 0, 0)
        .file("bin/busybox", &bb, 0o755, 0, 0);
    for a in ["sh", "echo", "cat", "rm", "mkdir", "ln", "test", "ls"] {
        t.symlink(&format!("bin/{a}"), "busybox");
    }
    t.dir("etc", 0o755, 0, 0)
        .file("etc/base.txt", b"base\n", 0o644, 0, 0)
        .file("etc/gone.txt", b"to be deleted\n", 0o644, 0, 0)
        .dir("opq", 0o755, 0, 0)
        .file("opq/old.txt", b"hidden by the RUN step\n", 0o644, 0, 0);
    let img = build_image(&[(t.finish(), Comp::Gzip)], "amd64", &["/bin/sh"]);
    let tar = env.path().join("base.tar");
    write_docker_save(&tar, &img, "base:1");
    env.ok(&["load", "-i", tar.to_str().expect("utf8")]);
}

const RUN_DF: &str = r#"FROM base:1
ARG MSG=created
RUN echo "$MSG" > /new.txt && echo modified >> /etc/base.txt && rm /etc/gone.txt && mkdir /made && ln -s /new.txt /made/link && ln /new.txt /hard.txt && rm -r /opq && mkdir /opq && echo fresh > /opq/fresh.txt && echo run-output
COPY src.txt /src.txt
CMD ["/bin/sh", "-c", "test -e /etc/gone.txt && echo gone-visible || echo gone-absent; cat /new.txt /etc/base.txt /src.txt /made/link /hard.txt; ls /opq"]
"#;

/// A directory with a `mount` that logs its arguments to `log` and runs
/// the real one: put first in husk's PATH, it records every mount a build
/// makes on the host.
fn mount_logger(dir: &Path) -> PathBuf {
    let real = ["/usr/bin/mount", "/bin/mount"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("mount(8)");
    let bin = dir.join("logbin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let log = dir.join("mounts.log");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{}'\nexec {real} \"$@\"\n",
        log.display()
    );
    let shim = bin.join("mount");
    std::fs::write(&shim, script).expect("write");
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::write(&log, "").expect("write");
    log
}

#[test]
fn run_in_a_vm_deletions_and_cache() {
    if skip("run_in_a_vm_deletions_and_cache") {
        return;
    }
    if kernel_or_skip("run_in_a_vm_deletions_and_cache").is_none() {
        return;
    }
    if agent_or_skip("run_in_a_vm_deletions_and_cache").is_none() {
        return;
    }
    let _lock = vm_lock();
    let env = Env::new();
    load_base(&env);
    let ctx = context(&env, "ctx", RUN_DF);
    write(&ctx, &[("src.txt", "src v1\n")]);
    let c = ctx.to_str().expect("utf8");
    // Every host mount of the build is logged: the RUN step's disk (what
    // the guest wrote) must never be one of them.
    let log = mount_logger(env.path());
    let mut cmd = husk_tests::husk(
        &env.path().join("run"),
        &["build", "--network", "none", "-t", "ran:1", c],
    );
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("HUSK_ROOT", env.root()).env(
        "PATH",
        format!("{}:{path}", log.with_file_name("logbin").display()),
    );
    let built = husk_tests::run(cmd, std::time::Duration::from_secs(300)).expect("husk build");
    assert_eq!(built.code(), 0, "{built:?}");
    let out = built.stdout;
    let mounts = std::fs::read_to_string(&log).expect("mount log");
    let root = env.root().display().to_string();
    for line in mounts.lines() {
        // Only COPY's read-only view of the image: EROFS disks the host
        // made from checked layers, and an overlay of them.
        let ours = (line.starts_with("-t erofs -o loop,ro ") && line.contains(&root))
            || line.starts_with("-t overlay overlay -o ro,lowerdir=");
        assert!(ours, "a host mount of something else: {line}\n{mounts}");
    }
    assert!(
        !mounts.contains("ext4"),
        "the RUN disk was mounted: {mounts}"
    );
    assert!(
        mounts.contains("-t erofs"),
        "the logger saw COPY's mounts (so it would see others): {mounts}"
    );
    assert!(out.contains(" ---> Running in "), "{out}");
    assert!(
        out.contains("\nrun-output\n"),
        "RUN output is streamed: {out}"
    );

    // The RUN layer: new and changed files, the deletion as a whiteout.
    let v = env.inspect("ran:1");
    let run_layer = v["RootFS"]["Layers"][1]
        .as_str()
        .expect("layer")
        .to_string();
    let blob = env
        .root()
        .join("image/blobs/sha256")
        .join(run_layer.trim_start_matches("sha256:"));
    let mut ar = tar::Archive::new(std::fs::File::open(blob).expect("layer blob"));
    let mut names = Vec::new();
    for e in ar.entries().expect("entries") {
        let e = e.expect("entry");
        let mut name = e.path().expect("path").display().to_string();
        if e.header().entry_type() == tar::EntryType::Link {
            let target = e.link_name().expect("link").expect("link");
            name = format!("{name} => {}", target.display());
        }
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "etc",
            "etc/.wh.gone.txt",
            "etc/base.txt",
            "hard.txt",
            "made",
            "made/link",
            "new.txt => hard.txt",
            "opq",
            "opq/.wh..wh..opq",
            "opq/fresh.txt",
        ],
        "deletions are whiteouts, the recreated /opq is opaque, the hard link is kept, no agent files (/etc/hosts...)"
    );

    // `husk run` sees the deletion and the changes.
    let f = env.husk(&["run", "--rm", "ran:1"]);
    assert_eq!(f.code(), 0, "{f:?}");
    assert_eq!(
        f.stdout,
        "gone-absent\ncreated\nbase\nmodified\nsrc v1\ncreated\ncreated\nfresh.txt\n"
    );

    // Rebuild: all cached, no VM.
    let again = env.ok(&["build", "-t", "ran:1", c]);
    assert_eq!(again.matches(" ---> Using cache").count(), 4, "{again}");
    assert!(!again.contains("Running in"), "{again}");
    // A changed source misses only from its COPY on; RUN stays cached.
    write(&ctx, &[("src.txt", "src v2\n")]);
    let changed = env.ok(&["build", "-t", "ran:2", c]);
    assert_eq!(changed.matches(" ---> Using cache").count(), 2, "{changed}");
    assert!(!changed.contains("Running in"), "{changed}");
    let step4 = changed
        .split("Step 4/5 : COPY src.txt /src.txt\n")
        .nth(1)
        .expect("step 4");
    assert!(!step4.starts_with(" ---> Using cache"), "{changed}");

    // A failing command fails the build with its code and the line.
    std::fs::write(
        ctx.join("fail.Dockerfile"),
        "FROM base:1\nRUN echo before-failing && exit 3\n",
    )
    .expect("write");
    let fail = ctx.join("fail.Dockerfile");
    let f = env.husk(&[
        "build",
        "-f",
        fail.to_str().expect("utf8"),
        "--network",
        "none",
        c,
    ]);
    assert_eq!(f.code(), 125, "{f:?}");
    assert!(f.stdout.contains("before-failing"), "{f:?}");
    assert_eq!(
        f.stderr,
        format!("husk: {}:2: The command '/bin/sh -c echo before-failing && exit 3' returned a non-zero code: 3\n", fail.display())
    );

    // A layer over --max-layer-size is refused as it streams in.
    std::fs::write(
        ctx.join("big.Dockerfile"),
        "FROM base:1\nRUN cat /bin/busybox > /big\n",
    )
    .expect("write");
    let big = ctx.join("big.Dockerfile");
    let f = env.husk(&[
        "build",
        "-f",
        big.to_str().expect("utf8"),
        "--network",
        "none",
        "--max-layer-size",
        "64k",
        c,
    ]);
    assert_eq!(f.code(), 125, "{f:?}");
    assert!(
        f.stderr.starts_with("husk: ")
            && f.stderr
                .contains("the layer tar from the agent is larger than 65536 bytes")
            && f.stderr.lines().count() == 1,
        "{f:?}"
    );
    assert_clean(&env);
    let run_left = leftovers(&env.path().join("run"));
    assert!(
        run_left.iter().all(|p| !p.starts_with("build-")),
        "{run_left:?}"
    );
}
