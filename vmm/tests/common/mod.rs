//! Helpers shared by the real-VM tests.

use std::path::{Path, PathBuf};

/// A newc cpio archive writer (the initramfs format).
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Self {
        Self {
            out: Vec::new(),
            ino: 1,
        }
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.ino += 1;
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, data: &[u8]) {
        self.entry(name, 0o100755, (0, 0), data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

/// Writes `dir/initramfs.cpio`: busybox (from the host's /bin/busybox,
/// Debian busybox-static), /dev/console and `init` as /init.
#[allow(dead_code)] // each test crate uses some of these helpers
pub fn busybox_initramfs(dir: &Path, init: &str) -> PathBuf {
    initramfs_with(dir, init, &[])
}

/// Like [`busybox_initramfs`], plus each host program of `programs` as
/// `/bin/<file name>` with the shared libraries `ldd` lists for it, at
/// their host paths.
pub fn initramfs_with(dir: &Path, init: &str, programs: &[&Path]) -> PathBuf {
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (Debian busybox-static)");
    let mut c = Cpio::new();
    for d in ["bin", "dev", "proc", "sys"] {
        c.dir(d);
    }
    c.entry("dev/console", 0o020600, (5, 1), &[]);
    c.file("bin/busybox", &busybox);
    let mut dirs = vec![String::from("bin")];
    for program in programs {
        let name = program.file_name().unwrap().to_str().unwrap();
        c.file(&format!("bin/{name}"), &std::fs::read(program).unwrap());
        for lib in shared_libraries(program) {
            let rel = lib.strip_prefix("/").unwrap();
            let mut parent = PathBuf::new();
            for part in rel.parent().unwrap().components() {
                parent.push(part);
                let p = parent.to_str().unwrap().to_string();
                if !dirs.contains(&p) {
                    c.dir(&p);
                    dirs.push(p);
                }
            }
            let data = std::fs::read(&lib).unwrap();
            c.file(rel.to_str().unwrap(), &data);
        }
    }
    c.file("init", init.as_bytes());
    let path = dir.join("initramfs.cpio");
    std::fs::write(&path, c.finish()).unwrap();
    path
}

/// The shared libraries (and dynamic loader) `ldd` lists for `program`.
fn shared_libraries(program: &Path) -> Vec<PathBuf> {
    let out = std::process::Command::new("ldd")
        .arg(program)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            // The loader's path may be a symlink: copy the file it names.
            libs.push(PathBuf::from(p));
        }
    }
    libs
}

/// The guest kernel (`$HUSK_KERNEL`), or `None` (the test is skipped).
pub fn kernel() -> Option<PathBuf> {
    match std::env::var_os("HUSK_KERNEL") {
        Some(k) => Some(PathBuf::from(k)),
        None => {
            eprintln!("skipped: HUSK_KERNEL is not set (path of the husk guest vmlinux)");
            None
        }
    }
}
