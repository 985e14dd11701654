//! End-to-end tests of the image store through the `husk` binary: load
//! (docker-save, OCI layout), save, tag/rmi/prune, `husk images`, push and
//! pull against a real registry (Debian's docker-registry on 127.0.0.1), the
//! EROFS layer disks (mounted and stacked with overlayfs), and hostile input.
//! They need root (mknod whiteouts, trusted xattrs, mount); otherwise they
//! are skipped with a printed reason.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use husk_tests::{husk, Finished};

#[path = "images/support.rs"]
mod support;

use support::*;

// ------------------------------------------------------------------ tests

#[test]
fn load_docker_save_busybox_and_list() {
    if skip("load_docker_save_busybox_and_list") {
        return;
    }
    let env = Env::new();
    let img = busybox_image();
    let tar = env.path().join("busybox.tar");
    write_docker_save(&tar, &img, "busybox:test");
    let out = env.ok(&["load", "-i", tar.to_str().expect("utf8")]);
    assert_eq!(out.trim(), "Loaded image: busybox:test");
    let id = &sha(&img.config)["sha256:".len()..][..12];
    let rows = env.images();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][..3], ["busybox", "test", id]);
    assert!(rows[0][3].ends_with(" ago"), "{:?}", rows[0]);
    let v = env.inspect("busybox:test");
    assert_eq!(v["Id"], sha(&img.config));
    assert_eq!(v["RepoTags"][0], "busybox:test");
    assert_eq!(v["Config"]["Cmd"][0], "/bin/sh");
    assert_eq!(v["RootFS"]["Layers"][0], img.diff_ids[0]);
    // The layer disk holds exactly the layer.
    let m = Mount::erofs(&env.disk(&img.diff_ids[0]), &env.path().join("mnt"));
    let bb = std::fs::read("/bin/busybox").expect("busybox");
    assert_eq!(std::fs::read(m.path.join("bin/busybox")).expect("read"), bb);
    assert_eq!(
        std::fs::read_link(m.path.join("bin/sh")).expect("link"),
        Path::new("busybox")
    );
    let tree = walk(&m.path);
    assert_eq!(
        tree.keys().collect::<Vec<_>>(),
        ["bin", "bin/busybox", "bin/sh"]
    );
    assert_eq!(tree["bin/busybox"].1, 0o755);
    // By ID prefix too.
    env.ok(&["image", "inspect", id]);
    let err = env.fail(&["image", "inspect", "nosuch:tag"]);
    assert!(err.contains("No such image"), "{err}");
}

#[test]
fn multi_layer_oci_layout_overlay_equals_image_tree() {
    if skip("multi_layer_oci_layout_overlay_equals_image_tree") {
        return;
    }
    let env = Env::new();
    let img = multi_layer_image();
    let dir = env.path().join("layout");
    write_oci_dir(&dir, &img, "docker.io/library/multi:1");
    let out = env.ok(&["load", "-i", dir.to_str().expect("utf8")]);
    assert_eq!(out.trim(), "Loaded image: multi:1");
    check_multi_layer_disks(&env, &img.diff_ids);
    // Loading again is idempotent and reuses the cached disks.
    let before = std::fs::metadata(env.disk(&img.diff_ids[1]))
        .expect("disk")
        .modified()
        .ok();
    env.ok(&["load", "-i", dir.to_str().expect("utf8")]);
    let after = std::fs::metadata(env.disk(&img.diff_ids[1]))
        .expect("disk")
        .modified()
        .ok();
    assert_eq!(before, after);
}

#[test]
fn tag_rmi_prune() {
    if skip("tag_rmi_prune") {
        return;
    }
    let env = Env::new();
    let img = busybox_image();
    let tar = env.path().join("bb.tar");
    write_docker_save(&tar, &img, "busybox:test");
    env.ok(&["load", "-i", tar.to_str().expect("utf8")]);
    env.ok(&["tag", "busybox:test", "app:latest"]);
    env.ok(&["tag", "busybox:test", "example.com/x/app:2"]);
    let rows = env.images();
    let names: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    assert_eq!(names.len(), 3);
    for n in [
        ("busybox", "test"),
        ("app", "latest"),
        ("example.com/x/app", "2"),
    ] {
        assert!(names.contains(&n), "{n:?} in {names:?}");
    }
    let err = env.fail(&["rmi", &sha(&img.config)[7..19]]);
    assert!(err.contains("must be forced"), "{err}");
    assert_eq!(
        env.ok(&["rmi", "app:latest"]).trim(),
        "Untagged: app:latest"
    );
    assert_eq!(
        env.ok(&["rmi", "example.com/x/app:2"]).trim(),
        "Untagged: example.com/x/app:2"
    );
    let out = env.ok(&["rmi", "busybox:test"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "Untagged: busybox:test".to_string(),
            format!("Deleted: {}", sha(&img.config))
        ]
    );
    assert!(env.images().is_empty());
    let err = env.fail(&["rmi", "busybox:test"]);
    assert!(err.contains("No such image"), "{err}");
    let blobs = env.root().join("image/blobs/sha256");
    assert!(std::fs::read_dir(&blobs).expect("blobs").count() > 0);
    let out = env.ok(&["image", "prune"]);
    assert!(out.contains("Total reclaimed space:"), "{out}");
    assert_eq!(
        std::fs::read_dir(&blobs).expect("blobs").count(),
        0,
        "all blobs pruned"
    );
    let disks: Vec<_> = std::fs::read_dir(env.layers_dir())
        .expect("layers")
        .collect();
    assert!(disks.is_empty(), "layer disks pruned: {disks:?}");
}

#[test]
fn rmi_and_prune_keep_images_containers_use() {
    if skip("rmi_and_prune_keep_images_containers_use") {
        return;
    }
    let env = Env::new();
    let img = busybox_image();
    let tar = env.path().join("bb.tar");
    write_docker_save(&tar, &img, "bb:1");
    env.ok(&["load", "-i", tar.to_str().expect("utf8")]);
    // A created container (no VM) uses the image as much as a running one.
    let ctr = env.ok(&["create", "bb:1", "true"]).trim().to_string();
    assert_eq!(ctr.len(), 64, "container ID: {ctr}");
    let image_id = &sha(&img.config)["sha256:".len()..][..12];
    let f = env.husk(&["rmi", "bb:1"]);
    assert_eq!(f.code(), 1, "{}{}", f.stdout, f.stderr);
    assert_eq!(
        f.stderr.trim(),
        format!(
            "husk: conflict: unable to remove repository reference \"bb:1\" (must force) - container {} is using its referenced image {image_id}",
            &ctr[..12]
        )
    );
    let err = env.fail(&["rmi", image_id]);
    assert!(
        err.contains(&format!(
            "(must be forced) - image is being used by stopped container {}",
            &ctr[..12]
        )),
        "{err}"
    );
    let blobs = env.root().join("image/blobs/sha256");
    let count = |dir: &Path| std::fs::read_dir(dir).expect("listing").count();
    // docker-save layers are stored uncompressed: digest = diff_id.
    let image_blobs = [sha(&img.config), img.diff_ids[0].clone()]
        .map(|d| blobs.join(d.trim_start_matches("sha256:")));
    let disk = env.disk(&img.diff_ids[0]);
    // Forced, the tag goes but the image stays, dangling, while it is used.
    assert_eq!(env.ok(&["rmi", "-f", "bb:1"]).trim(), "Untagged: bb:1");
    let rows = env.images();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][..3], ["<none>", "<none>", image_id]);
    env.ok(&["image", "prune"]);
    assert_eq!(env.images().len(), 1, "prune keeps the used image");
    for b in &image_blobs {
        assert!(
            b.is_file(),
            "prune keeps the used image's blob {}",
            b.display()
        );
    }
    assert!(disk.is_file(), "prune keeps the used layer disk");
    // Once the container is gone, prune removes it all.
    env.ok(&["rm", &ctr]);
    let out = env.ok(&["image", "prune"]);
    assert!(
        out.contains(&format!("deleted: {}", sha(&img.config))),
        "{out}"
    );
    assert!(env.images().is_empty());
    assert_eq!(count(&blobs), 0, "all blobs pruned");
    assert!(!disk.exists(), "layer disk pruned");
}

#[test]
fn save_load_round_trip_is_docker_compatible() {
    if skip("save_load_round_trip_is_docker_compatible") {
        return;
    }
    let env = Env::new();
    let img = multi_layer_image();
    let dir = env.path().join("layout");
    write_oci_dir(&dir, &img, "docker.io/library/multi:1");
    env.ok(&["load", "-i", dir.to_str().expect("utf8")]);
    let out = env.path().join("out.tar");
    env.ok(&["save", "-o", out.to_str().expect("utf8"), "multi:1"]);
    // skopeo reads it both as a docker-save archive and as an OCI archive.
    for transport in ["docker-archive", "oci-archive"] {
        let o = Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                &format!("{transport}:{}", out.display()),
            ])
            .output()
            .expect("skopeo");
        assert!(
            o.status.success(),
            "skopeo {transport}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    env.ok(&["rmi", "multi:1"]);
    env.ok(&["image", "prune"]);
    let loaded = env.ok(&["load", "-i", out.to_str().expect("utf8")]);
    assert_eq!(loaded.trim(), "Loaded image: multi:1");
    assert_eq!(env.inspect("multi:1")["Id"], sha(&img.config));
    check_multi_layer_disks(&env, &img.diff_ids);
}

#[test]
fn push_and_pull_through_a_real_registry() {
    if skip("push_and_pull_through_a_real_registry") {
        return;
    }
    let reg = Registry::start();
    let env = Env::new();
    let img = multi_layer_image();
    let dir = env.path().join("layout");
    write_oci_dir(&dir, &img, "docker.io/library/multi:1");
    env.ok(&["load", "-i", dir.to_str().expect("utf8")]);
    let remote = format!("{}/app:1.0", reg.addr);
    env.ok(&["tag", "multi:1", &remote]);
    let out = env.ok(&["push", &remote]);
    let manifest_digest = sha(&img.manifest);
    assert!(
        out.contains(&format!("1.0: digest: {manifest_digest}")),
        "{out}"
    );
    assert!(out.contains("Pushed"), "{out}");
    // A second push finds every blob there.
    let out = env.ok(&["push", &remote]);
    assert!(
        out.contains("Layer already exists") && !out.contains("Pushed"),
        "{out}"
    );

    // Pull into an empty store.
    let env2 = Env::new();
    let out = env2.ok(&["pull", &remote]);
    assert!(out.contains(&format!("Digest: {manifest_digest}")), "{out}");
    assert!(out.contains("Status: Downloaded newer image"), "{out}");
    assert_eq!(out.lines().last(), Some(remote.as_str()));
    let rows = env2.images();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0][..3],
        [
            format!("{}/app", reg.addr),
            "1.0".into(),
            sha(&img.config)[7..19].to_string()
        ]
    );
    check_multi_layer_disks(&env2, &img.diff_ids);
    let out = env2.ok(&["pull", &remote]);
    assert!(out.contains("Status: Image is up to date"), "{out}");
    // By digest.
    let by_digest = format!("{}/app@{manifest_digest}", reg.addr);
    env2.ok(&["pull", &by_digest]);
    assert_eq!(env2.inspect(&by_digest)["Id"], sha(&img.config));
    // Two processes pulling into one store at once (flock-serialised blobs and disks).
    let env3 = Env::new();
    let pulls: Vec<husk_tests::Running> = (0..2)
        .map(|_| {
            let mut cmd = husk(&env3.path().join("run"), &["pull", "-q", &remote]);
            cmd.env("HUSK_ROOT", env3.root());
            husk_tests::Running::start(cmd).expect("start pull")
        })
        .collect();
    for p in pulls {
        let f = p.finish(Duration::from_secs(300)).expect("pull");
        assert_eq!(f.code(), 0, "{}", f.stderr);
    }
    assert_eq!(env3.images().len(), 1);
    check_multi_layer_disks(&env3, &img.diff_ids);
    // Missing tag: clean error.
    let err = env2.fail(&["pull", &format!("{}/app:nope", reg.addr)]);
    assert!(err.contains("manifest unknown"), "{err}");
}

#[test]
fn pull_picks_linux_amd64_from_an_index() {
    if skip("pull_picks_linux_amd64_from_an_index") {
        return;
    }
    let reg = Registry::start();
    let env = Env::new();
    let amd = busybox_image();
    let layer = LayerTar::new().file("arm", b"arm", 0o644, 0, 0).finish();
    let arm = build_image(&[(layer, Comp::Gzip)], "arm64", &["/arm"]);
    let dir = env.path().join("multi");
    let mut entries = Vec::new();
    for (img, arch) in [(&arm, "arm64"), (&amd, "amd64")] {
        write_blob(&dir, &img.config);
        for l in &img.layers {
            write_blob(&dir, l);
        }
        let d = write_blob(&dir, &img.manifest);
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d, "size": img.manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries,
    }))
    .expect("json");
    let inner_digest = write_blob(&dir, &inner);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": inner_digest, "size": inner.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"},
    }]});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("write");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    let remote = format!("{}/multi:1", reg.addr);
    let o = Command::new("skopeo")
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:multi", dir.display()))
        .arg(format!("docker://{remote}"))
        .output()
        .expect("skopeo");
    assert!(
        o.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = env.ok(&["pull", &remote]);
    assert!(out.contains("Digest: sha256:"), "{out}");
    let v = env.inspect(&remote);
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Id"], sha(&amd.config));
    // Loading the same layout directly picks amd64 too (untagged: ref.name is a bare tag).
    let out = env.ok(&["load", "-i", dir.to_str().expect("utf8")]);
    assert_eq!(out.trim(), format!("Loaded image ID: {}", sha(&amd.config)));
}

/// Loads a one-layer docker-save archive with `layer` as its layer tar.
fn load_layer(env: &Env, layer: Vec<u8>) -> Finished {
    let img = build_image(&[(layer, Comp::None)], "amd64", &["/x"]);
    let tar = env.path().join("hostile.tar");
    write_docker_save(&tar, &img, "hostile:1");
    env.husk(&["load", "-i", tar.to_str().expect("utf8")])
}

fn assert_clean_failure(env: &Env, f: &Finished, want: &str) {
    assert_ne!(f.code(), 0, "should fail: {}", f.stdout);
    assert!(
        f.stderr.starts_with("husk: ") && f.stderr.contains(want),
        "want {want:?}: {}",
        f.stderr
    );
    assert!(!f.stderr.contains("panicked"), "{}", f.stderr);
    assert!(env.images().is_empty(), "no image left behind");
    let staging = husk_tests::leftovers(&env.root().join("image/staging"));
    assert!(staging.is_empty(), "staging cleaned: {staging:?}");
}

#[test]
fn hostile_layers_are_rejected_or_neutralised() {
    if skip("hostile_layers_are_rejected_or_neutralised") {
        return;
    }
    let env = Env::new();
    let outside = env.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let h = |k, size| LayerTar::header(k, 0o644, 0, 0, size);
    use tar::EntryType as T;

    let depth = "../".repeat(12);
    let escape = format!(
        "{depth}{}/escaped",
        outside.display().to_string().trim_start_matches('/')
    );
    let f = load_layer(
        &env,
        LayerTar::new()
            .raw(h(T::Regular, 1), &escape, None, b"x")
            .finish(),
    );
    assert_clean_failure(&env, &f, "unsafe path");
    let abs = format!("{}/abs", outside.display());
    let f = load_layer(
        &env,
        LayerTar::new()
            .raw(h(T::Regular, 1), &abs, None, b"x")
            .finish(),
    );
    assert_clean_failure(&env, &f, "unsafe path");
    let target = outside.display().to_string();
    let f = load_layer(
        &env,
        LayerTar::new()
            .symlink("evil", &target)
            .file("evil/pwned", b"x", 0o644, 0, 0)
            .finish(),
    );
    assert_clean_failure(&env, &f, "non-directory");
    let f = load_layer(
        &env,
        LayerTar::new()
            .hardlink("h", &format!("{depth}etc/passwd"))
            .finish(),
    );
    assert_clean_failure(&env, &f, "hard link");
    // Data shorter than the header says (incl. an absurd size).
    let mut t = LayerTar::new()
        .file("a", b"0123456789", 0o644, 0, 0)
        .finish();
    t.truncate(512 + 5);
    let f = load_layer(&env, t);
    assert_clean_failure(&env, &f, "truncated");
    let f = load_layer(
        &env,
        LayerTar::new()
            .raw(h(T::Regular, 1 << 40), "big", None, b"")
            .finish(),
    );
    assert_clean_failure(&env, &f, "unpacks to more than");
    assert!(
        husk_tests::leftovers(&outside).is_empty(),
        "nothing written outside"
    );

    // Device nodes are dropped (with a warning), the rest of the layer kept.
    let mut dev = h(T::Char, 0);
    dev.set_device_major(1).expect("major");
    dev.set_device_minor(3).expect("minor");
    let layer = LayerTar::new()
        .dir("dev", 0o755, 0, 0)
        .raw(dev, "dev/null", None, b"")
        .file("ok", b"ok", 0o644, 0, 0)
        .finish();
    let diff = sha(&layer);
    let f = load_layer(&env, layer);
    assert_eq!(f.code(), 0, "{}", f.stderr);
    let m = Mount::erofs(&env.disk(&diff), &env.path().join("mnt"));
    assert_eq!(walk(&m.path).keys().collect::<Vec<_>>(), ["dev", "ok"]);
}

#[test]
fn corrupt_archives_are_rejected() {
    if skip("corrupt_archives_are_rejected") {
        return;
    }
    let env = Env::new();
    let img = busybox_image();
    // OCI layout whose layer blob does not match its name.
    let dir = env.path().join("bad-digest");
    write_oci_dir(&dir, &img, "docker.io/library/bad:1");
    let name = sha(&img.layers[0]);
    let p = dir.join("blobs/sha256").join(&name[7..]);
    let mut data = std::fs::read(&p).expect("read");
    data[600] ^= 0xff;
    std::fs::write(&p, data).expect("write");
    let err = env.fail(&["load", "-i", dir.to_str().expect("utf8")]);
    assert!(err.contains("digest mismatch"), "{err}");
    // Config whose diff_id does not match the layer.
    let mut bad = busybox_image();
    let mut cfg: serde_json::Value = serde_json::from_slice(&bad.config).expect("json");
    cfg["rootfs"]["diff_ids"][0] = serde_json::json!(sha(b"other"));
    bad.config = serde_json::to_vec(&cfg).expect("json");
    let tar = env.path().join("bad-diff.tar");
    write_docker_save(&tar, &bad, "bad:2");
    let err = env.fail(&["load", "-i", tar.to_str().expect("utf8")]);
    assert!(err.contains("config says"), "{err}");
    // A truncated archive.
    let tar = env.path().join("cut.tar");
    write_docker_save(&tar, &img, "cut:1");
    let data = std::fs::read(&tar).expect("read");
    std::fs::write(&tar, &data[..data.len() / 2]).expect("write");
    env.fail(&["load", "-i", tar.to_str().expect("utf8")]);
    // Not an archive at all.
    let junk = env.path().join("junk");
    std::fs::write(&junk, b"hello").expect("write");
    env.fail(&["load", "-i", junk.to_str().expect("utf8")]);
    assert!(env.images().is_empty());
    let tmp = husk_tests::leftovers(&env.root().join("image/tmp"));
    assert!(tmp.is_empty(), "no temp files left: {tmp:?}");
}

#[path = "images/login.rs"]
mod login;
