//! Helpers for tests/tests/images.rs: a private store, test image builders
//! (layer tars, OCI layouts, docker-save archives), mounts, a registry.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use husk_tests::{husk, root_or_skip, run, tools_or_skip, Finished};
use sha2::{Digest as _, Sha256};

// ---------------------------------------------------------------- helpers

/// Whether `test` cannot run here (not root, a tool missing); then it has
/// been [`husk_tests::skip`]ped.
pub fn skip(test: &str) -> bool {
    !(root_or_skip(test, "mknod whiteouts, trusted xattrs, loop mounts")
        && tools_or_skip(
            test,
            &[
                "/usr/bin/mkfs.erofs",
                "/usr/bin/docker-registry",
                "/usr/bin/skopeo",
            ],
            "apt install erofs-utils docker-registry skopeo",
        ))
}

/// A private store and helpers to run husk against it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn root(&self) -> PathBuf {
        self.path().join("root")
    }
    pub fn husk(&self, args: &[&str]) -> Finished {
        run(self.command(args), Duration::from_secs(300)).expect("running husk")
    }
    /// `husk args` with this env's store and a private Docker config
    /// directory (registry credentials), not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = husk(&self.path().join("run"), args);
        cmd.env("HUSK_ROOT", self.root())
            .env("DOCKER_CONFIG", self.docker_config());
        cmd
    }
    /// This env's Docker config directory.
    pub fn docker_config(&self) -> PathBuf {
        self.path().join("docker")
    }
    pub fn ok(&self, args: &[&str]) -> String {
        let f = self.husk(args);
        assert_eq!(
            f.code(),
            0,
            "husk {args:?} failed: {}{}",
            f.stdout,
            f.stderr
        );
        f.stdout
    }
    pub fn fail(&self, args: &[&str]) -> String {
        let f = self.husk(args);
        assert_ne!(f.code(), 0, "husk {args:?} should fail: {}", f.stdout);
        assert!(
            f.stderr.starts_with("husk: "),
            "one-line error expected: {}",
            f.stderr
        );
        assert!(!f.stderr.contains("panicked"), "{}", f.stderr);
        f.stderr
    }
    pub fn layers_dir(&self) -> PathBuf {
        self.root().join("image/layers")
    }
    pub fn disk(&self, diff_id: &str) -> PathBuf {
        self.layers_dir()
            .join(format!("{}.erofs", diff_id.trim_start_matches("sha256:")))
    }
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["image", "inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
        v[0].clone()
    }
    /// Rows of `husk images` (header checked) as column vectors.
    pub fn images(&self) -> Vec<Vec<String>> {
        let out = self.ok(&["images"]);
        let mut lines = out.lines();
        let header = lines.next().expect("header");
        let cols: Vec<&str> = header
            .split("   ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(cols, ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
        lines
            .map(|l| {
                l.split("   ")
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .collect()
    }
}

pub fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Builds layer tarballs entry by entry (raw names allowed for hostile cases).
pub struct LayerTar {
    b: tar::Builder<Vec<u8>>,
}

impl LayerTar {
    pub fn new() -> LayerTar {
        LayerTar {
            b: tar::Builder::new(Vec::new()),
        }
    }
    pub fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    }
    pub fn raw(
        &mut self,
        mut h: tar::Header,
        name: &str,
        link: Option<&str>,
        data: &[u8],
    ) -> &mut Self {
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            old.linkname = [0; 100];
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        self.b.append(&h, data).expect("append");
        self
    }
    pub fn dir(&mut self, p: &str, mode: u32, uid: u64, gid: u64) -> &mut Self {
        let h = Self::header(tar::EntryType::Directory, mode, uid, gid, 0);
        self.raw(h, &format!("{p}/"), None, b"")
    }
    pub fn file(&mut self, p: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> &mut Self {
        let h = Self::header(tar::EntryType::Regular, mode, uid, gid, data.len() as u64);
        self.raw(h, p, None, data)
    }
    pub fn xattr(&mut self, key: &str, value: &str) -> &mut Self {
        let rec = |n: usize| format!("{n} SCHILY.xattr.{key}={value}\n");
        let mut n = rec(0).len();
        while rec(n).len() != n {
            n = rec(n).len();
        }
        let data = rec(n);
        let h = Self::header(tar::EntryType::XHeader, 0o644, 0, 0, data.len() as u64);
        self.raw(h, "PaxHeader", None, data.as_bytes())
    }
    pub fn symlink(&mut self, p: &str, target: &str) -> &mut Self {
        let h = Self::header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
        self.raw(h, p, Some(target), b"")
    }
    pub fn hardlink(&mut self, p: &str, target: &str) -> &mut Self {
        let h = Self::header(tar::EntryType::Link, 0o644, 0, 0, 0);
        self.raw(h, p, Some(target), b"")
    }
    pub fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().expect("tar")
    }
}

#[derive(Clone, Copy)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

pub fn compress(data: &[u8], c: Comp) -> Vec<u8> {
    match c {
        Comp::None => data.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("gzip");
            e.finish().expect("gzip")
        }
        Comp::Zstd => zstd::encode_all(data, 3).expect("zstd"),
    }
}

/// An image as files: config, manifest, layer blobs.
pub struct TestImage {
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub diff_ids: Vec<String>,
}

pub fn build_image(layers: &[(Vec<u8>, Comp)], arch: &str, cmd: &[&str]) -> TestImage {
    let diff_ids: Vec<String> = layers.iter().map(|(l, _)| sha(l)).collect();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).expect("json");
    let blobs: Vec<(Vec<u8>, Comp)> = layers.iter().map(|(l, c)| (compress(l, *c), *c)).collect();
    let media = |c: Comp| match c {
        Comp::None => "application/vnd.oci.image.layer.v1.tar",
        Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": blobs.iter().map(|(b, c)| serde_json::json!({"mediaType": media(*c), "digest": sha(b), "size": b.len()})).collect::<Vec<_>>(),
    });
    TestImage {
        manifest: serde_json::to_vec(&manifest).expect("json"),
        config,
        layers: blobs.into_iter().map(|(b, _)| b).collect(),
        diff_ids,
    }
}

pub fn write_blob(dir: &Path, data: &[u8]) -> String {
    let d = sha(data);
    let p = dir.join("blobs/sha256");
    std::fs::create_dir_all(&p).expect("mkdir");
    std::fs::write(p.join(d.trim_start_matches("sha256:")), data).expect("write blob");
    d
}

/// Writes an OCI image layout directory holding `img` named `name`.
pub fn write_oci_dir(dir: &Path, img: &TestImage, name: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    write_blob(dir, &img.config);
    for l in &img.layers {
        write_blob(dir, l);
    }
    let md = write_blob(dir, &img.manifest);
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": img.manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(':').next()},
        }],
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("write");
}

/// Writes a legacy docker-save tarball (manifest.json, <id>.json, <n>/layer.tar).
pub fn write_docker_save(path: &Path, img: &TestImage, tag: &str) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).expect("append");
    };
    let config_name = format!("{}.json", sha(&img.config).trim_start_matches("sha256:"));
    add(&config_name, &img.config);
    let mut layers = Vec::new();
    for (i, l) in img.layers.iter().enumerate() {
        let n = format!("layer{i}/layer.tar");
        add(&n, l);
        layers.push(n);
    }
    let manifest =
        serde_json::json!([{"Config": config_name, "RepoTags": [tag], "Layers": layers}]);
    add(
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("json"),
    );
    std::fs::write(path, b.into_inner().expect("tar")).expect("write tar");
}

/// Mounts, unmounted on drop.
pub struct Mount {
    pub path: PathBuf,
}

impl Mount {
    pub fn new(path: &Path, args: &[&str]) -> Mount {
        std::fs::create_dir_all(path).expect("mkdir");
        let st = Command::new("mount")
            .args(args)
            .arg(path)
            .status()
            .expect("mount");
        assert!(st.success(), "mount {args:?} {} failed", path.display());
        Mount {
            path: path.to_path_buf(),
        }
    }
    pub fn erofs(disk: &Path, at: &Path) -> Mount {
        let d = disk.to_str().expect("utf8 path");
        Mount::new(at, &["-t", "erofs", "-o", "loop,ro", d])
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// One entry of a tree: kind+content, mode, uid, gid.
pub type Tree = BTreeMap<String, (String, u32, u32, u32)>;

pub fn walk(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p
                .strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            let kind = if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!(
                    "link:{}",
                    std::fs::read_link(&p).expect("readlink").display()
                )
            } else if m.file_type().is_char_device() {
                format!("chr:{}", m.rdev())
            } else {
                format!(
                    "file:{}",
                    String::from_utf8_lossy(&std::fs::read(&p).expect("read"))
                )
            };
            out.insert(rel, (kind, m.mode() & 0o7777, m.uid(), m.gid()));
        }
    }
    out
}

pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
    Some(buf[..n].to_vec())
}

// ------------------------------------------------------------- test images

pub fn busybox_image() -> TestImage {
    let bb = std::fs::read("/bin/busybox").expect("/bin/busybox (apt install busybox-static)");
    let layer = LayerTar::new()
        .dir("bin", 0o755, 0, 0)
        .file("bin/busybox", &bb, 0o755, 0, 0)
        .symlink("bin/sh", "busybox")
        .finish();
    build_image(&[(layer, Comp::None)], "amd64", &["/bin/sh"])
}

/// Three layers (plain, gzip, zstd) with deletions, an opaque dir, owners,
/// set-id bits, xattrs, hard links and symlinks.
pub fn multi_layer_image() -> TestImage {
    let l1 = LayerTar::new()
        .dir("etc", 0o755, 0, 0)
        .file("etc/hostname", b"base\n", 0o644, 0, 0)
        .file("etc/removed", b"gone", 0o644, 0, 0)
        .dir("data", 0o755, 0, 0)
        .file("data/old", b"old", 0o644, 0, 0)
        .dir("data/sub", 0o755, 0, 0)
        .file("data/sub/x", b"x", 0o644, 0, 0)
        .dir("bin", 0o755, 0, 0)
        .file("bin/tool", b"tool", 0o4755, 1000, 1000)
        .hardlink("bin/tool2", "bin/tool")
        .symlink("bin/link", "/etc/hostname")
        .dir("home", 0o755, 0, 0)
        .dir("home/user", 0o700, 1000, 1000)
        .xattr("user.test", "hello")
        .file("home/user/f", b"f", 0o600, 1000, 100)
        .finish();
    let l2 = LayerTar::new()
        .dir("etc", 0o755, 0, 0)
        .file("etc/.wh.removed", b"", 0o644, 0, 0)
        .file("etc/hostname", b"changed\n", 0o644, 0, 0)
        .dir("data", 0o755, 0, 0)
        .file("data/.wh..wh..opq", b"", 0o644, 0, 0)
        .file("data/new", b"new", 0o640, 0, 0)
        .finish();
    let l3 = LayerTar::new()
        .dir("bin", 0o755, 0, 0)
        .file("bin/.wh.link", b"", 0o644, 0, 0)
        .dir("opt", 0o755, 0, 0)
        .file("opt/readme", b"r", 0o444, 0, 0)
        .finish();
    build_image(
        &[(l1, Comp::None), (l2, Comp::Gzip), (l3, Comp::Zstd)],
        "amd64",
        &["/bin/tool"],
    )
}

pub fn expected_multi_tree() -> Tree {
    let e = |k: &str, mode, uid, gid| (k.to_string(), mode, uid, gid);
    [
        ("etc", e("dir", 0o755, 0, 0)),
        ("etc/hostname", e("file:changed\n", 0o644, 0, 0)),
        ("data", e("dir", 0o755, 0, 0)),
        ("data/new", e("file:new", 0o640, 0, 0)),
        ("bin", e("dir", 0o755, 0, 0)),
        ("bin/tool", e("file:tool", 0o4755, 1000, 1000)),
        ("bin/tool2", e("file:tool", 0o4755, 1000, 1000)),
        ("home", e("dir", 0o755, 0, 0)),
        ("home/user", e("dir", 0o700, 1000, 1000)),
        ("home/user/f", e("file:f", 0o600, 1000, 100)),
        ("opt", e("dir", 0o755, 0, 0)),
        ("opt/readme", e("file:r", 0o444, 0, 0)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Mounts every layer disk of `diff_ids`, stacks them with overlayfs and
/// compares the result with the multi-layer image's intended tree.
pub fn check_multi_layer_disks(env: &Env, diff_ids: &[String]) {
    let mnt = env.path().join("mnt");
    let mut mounts = Vec::new();
    for (i, d) in diff_ids.iter().enumerate() {
        let disk = env.disk(d);
        assert!(disk.is_file(), "layer disk {} missing", disk.display());
        mounts.push(Mount::erofs(&disk, &mnt.join(format!("l{i}"))));
    }
    // Layer 1 alone: hard link shares the inode; xattr kept.
    let l0 = &mounts[0].path;
    let (a, b) = (
        std::fs::metadata(l0.join("bin/tool")).expect("tool"),
        std::fs::metadata(l0.join("bin/tool2")).expect("tool2"),
    );
    assert_eq!(a.ino(), b.ino(), "hard link preserved");
    assert_eq!(a.nlink(), 2);
    assert_eq!(
        xattr(&l0.join("home/user/f"), "user.test").as_deref(),
        Some(&b"hello"[..])
    );
    // Layer 2: overlayfs whiteout and opaque forms.
    let l1 = &mounts[1].path;
    let wh = std::fs::symlink_metadata(l1.join("etc/removed")).expect("whiteout");
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is a 0:0 char device"
    );
    assert_eq!(
        xattr(&l1.join("data"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    // The stack.
    let lower: Vec<String> = mounts
        .iter()
        .rev()
        .map(|m| m.path.display().to_string())
        .collect();
    let opts = format!("lowerdir={}", lower.join(":"));
    let ov = Mount::new(
        &mnt.join("overlay"),
        &["-t", "overlay", "overlay", "-o", &opts],
    );
    let got = walk(&ov.path);
    assert_eq!(got, expected_multi_tree());
    drop(ov);
}

/// Debian's docker-registry on a free 127.0.0.1 port, killed on drop.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// A registry that lets only `user` with `password` in (htpasswd,
    /// basic authentication).
    pub fn with_login(user: &str, password: &str) -> Registry {
        let hash = bcrypt::hash(password, 4).expect("bcrypt");
        Registry::start_with(Some(format!("{user}:{hash}\n")))
    }

    fn start_with(htpasswd: Option<String>) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some(lines) = htpasswd {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, lines).expect("htpasswd");
            config += &format!(
                "auth:\n  htpasswd:\n    realm: husk-test\n    path: {}\n",
                file.display()
            );
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).expect("config");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        let reg = Registry {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reg.answers() {
            assert!(
                Instant::now() < deadline,
                "registry did not answer on {}",
                reg.addr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        reg
    }

    pub fn answers(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(&self.addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
        let mut resp = String::new();
        s.write_all(req.as_bytes()).is_ok()
            && s.read_to_string(&mut resp).is_ok()
            && (resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.0 401"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
