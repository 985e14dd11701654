//! The library API the container layer uses: commit layers, resolve images,
//! runtime config, and layer disks including flattening beyond
//! `MAX_LAYER_DISKS` (checked by mounting the disks and stacking them).
//! Needs root (whiteout device nodes, loop mounts); skipped otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use images::layer::MAX_LAYER_DISKS;
use images::{Reference, RuntimeConfig, Store};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, path, *d).expect("append");
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                h.set_cksum();
                b.append_data(&mut h, path, &b""[..]).expect("append");
            }
        }
    }
    b.into_inner().expect("tar")
}

struct Mount(PathBuf);

impl Mount {
    fn new(at: &Path, args: &[&str]) -> Mount {
        std::fs::create_dir_all(at).expect("mkdir");
        let ok = Command::new("mount")
            .args(args)
            .arg(at)
            .status()
            .expect("mount");
        assert!(ok.success(), "mount {args:?}");
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(root).expect("prefix").display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn commit_resolve_and_flattened_layer_disks() {
    if !is_root() || !Path::new("/usr/bin/mkfs.erofs").exists() {
        eprintln!("SKIPPED commit_resolve_and_flattened_layer_disks: needs root and mkfs.erofs");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("root")).expect("store");
    let runtime = RuntimeConfig {
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["echo hi".into()]),
        env: vec!["PATH=/bin".into()],
        working_dir: Some("/work".into()),
        user: Some("1000:1000".into()),
        exposed_ports: vec!["80/tcp".into()],
        volumes: vec!["/data".into()],
        stop_signal: Some("SIGINT".into()),
        labels: [("org.example.k".to_string(), "v".to_string())].into(),
    };
    let tag: Reference = "flat:test".parse().expect("ref");
    let n = MAX_LAYER_DISKS + 2;
    let mut image = None;
    for i in 0..n {
        let name = format!("f{i}");
        let mut entries: Vec<(&str, Option<&[u8]>)> = vec![(name.as_str(), Some(b"x"))];
        match i {
            0 => entries.extend([("d", None), ("d/a", Some(&b"a"[..]))]),
            1 => entries.extend([("d/.wh..wh..opq", Some(&b""[..])), ("d/b", Some(&b"b"[..]))]),
            2 => entries.push((".wh.f1", Some(&b""[..]))),
            10 => entries.push((".wh.f0", Some(&b""[..]))),
            _ => {}
        }
        let tar = layer(&entries);
        let img = store
            .commit_layer(
                image.as_ref(),
                &tar[..],
                &runtime,
                &format!("layer {i}"),
                std::slice::from_ref(&tag),
            )
            .expect("commit");
        image = Some(img);
    }
    let image = image.expect("image");
    assert_eq!(image.layers.len(), n);
    let resolved = store.resolve("flat:test").expect("resolve by tag");
    assert_eq!(resolved.id, image.id);
    let by_id = store.resolve(&image.id.hex()[..12]).expect("resolve by id");
    assert_eq!(by_id.manifest_digest, image.manifest_digest);
    assert_eq!(resolved.runtime_config(), runtime);
    assert_eq!(resolved.diff_ids().len(), n);

    let disks = store.layer_disks(&resolved).expect("layer disks");
    assert_eq!(disks.len(), MAX_LAYER_DISKS);
    assert_eq!(disks[0].diff_ids.len(), n - MAX_LAYER_DISKS + 1);
    let all: Vec<_> = disks.iter().flat_map(|d| d.diff_ids.clone()).collect();
    assert_eq!(all, resolved.diff_ids());
    let mnt = dir.path().join("mnt");
    let mounts: Vec<Mount> = disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = d.path.to_str().expect("utf8");
            Mount::new(
                &mnt.join(format!("l{i}")),
                &["-t", "erofs", "-o", "loop,ro", p],
            )
        })
        .collect();
    // The flattened disk applied its own whiteouts and opaque dir.
    assert_eq!(listing(&mounts[0].0), ["d", "d/b", "f0", "f2"]);
    let lower: Vec<String> = mounts
        .iter()
        .rev()
        .map(|m| m.0.display().to_string())
        .collect();
    let opts = format!("lowerdir={}", lower.join(":"));
    let ov = Mount::new(&mnt.join("ov"), &["-t", "overlay", "overlay", "-o", &opts]);
    let mut want: Vec<String> = (2..n).map(|i| format!("f{i}")).collect();
    want.extend(["d".to_string(), "d/b".to_string()]);
    want.sort();
    assert_eq!(listing(&ov.0), want);
    drop(ov);
    drop(mounts);
    // Prune keeps everything in use, then everything goes with the image.
    let r = store.prune(&[]).expect("prune");
    assert_eq!(r.images.len(), n - 1, "intermediate images were dangling");
    assert!(r.disks.is_empty(), "{r:?}");
    assert_eq!(store.list().expect("list").len(), 1);
    assert!(
        store.layer_disks(&resolved).is_ok(),
        "blobs of the tagged image kept"
    );
    store.remove("flat:test", false, &[]).expect("rmi");
    let r = store.prune(&[]).expect("prune");
    assert_eq!(r.disks.len(), MAX_LAYER_DISKS);
    assert!(store.list_blobs().expect("blobs").is_empty());
}
