//! `create`: the bundle becomes a husk container (husk-bundle's
//! translation, layer disks of the root directory), its monitor boots
//! the VM and creates the container in the guest, and the process waits
//! for `start` (`Runtime::start_held`).
//!
//! The monitor is the container's host process: it is a descendant of
//! this process (re-parented to the caller when it is a subreaper, as
//! conmon and containerd's runc shim are), lives exactly as long as the
//! container and exits with its exit status; `--pid-file` names it. This
//! process's own stdin, stdout and stderr become the container's (or,
//! with `--console-socket`, a new terminal's slave). A failure leaves
//! nothing behind: no container, monitor or disk.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use husk_bundle::{rootfs, Bundle, DiskDirs, LayerCache};
use husk_runtime::{DeleteOptions, StdioWiring, VmBoot};

use crate::cli::CreateArgs;
use crate::console;
use crate::container::{check_id, store_name, Oci, OciError};

/// Seconds a guest may take to boot (`$HUSK_BOOT_TIMEOUT`, default 90).
const DEFAULT_BOOT_TIMEOUT: u64 = 90;

/// Runs `create`.
pub fn create(oci: &Oci, args: &CreateArgs) -> Result<()> {
    check_id(&args.id)?;
    if args.preserve_fds > 0 {
        bail!(
            "--preserve-fds {}: host file descriptors cannot be passed into the container's VM",
            args.preserve_fds
        );
    }
    if oci.exists(&args.id)? {
        return Err(OciError::Exists(args.id.clone()).into());
    }
    let dir = std::path::absolute(&args.bundle)
        .with_context(|| format!("resolving the bundle {}", args.bundle.display()))?;
    let bundle = Bundle::load(&dir)?;
    let translation = bundle.translate()?;
    match (translation.process.tty, &args.console_socket) {
        (true, None) => {
            bail!("process.terminal is true: a --console-socket is needed for the terminal")
        }
        (false, Some(_)) => bail!("--console-socket was given but process.terminal is false"),
        _ => {}
    }
    let mut made = Made {
        oci,
        name: store_name(&args.id),
        layers: oci.layers_dir(&args.id),
        container: false,
    };
    let layers = rootfs::from_dir(
        &bundle.root_dir(),
        &DiskDirs {
            cache: LayerCache::new(LayerCache::default_dir()),
            scratch: made.layers.clone(),
        },
    )?;
    let mut plan = translation.into_plan(layers.disks, vm_boot()?);
    plan.name = Some(made.name.clone());
    plan.image = dir.display().to_string();
    // runc's process always has the runtime's stdin (/dev/null gives EOF).
    plan.process.stdin = true;
    let husk_id = oci.rt.create_from(plan)?;
    made.container = true;
    let stdio = match &args.console_socket {
        Some(socket) => {
            let slave = console::send_console(socket)?;
            terminal_stdio(slave)?
        }
        None => own_stdio()?,
    };
    oci.rt.start_held(husk_id.as_str(), stdio)?;
    let pid = oci
        .find(&args.id)?
        .pid()
        .context("the container's monitor is gone")?;
    if let Some(path) = &args.pid_file {
        write_pid_file(path, pid)?;
    }
    made.keep();
    Ok(())
}

/// What `create` made so far; removed unless kept.
struct Made<'a> {
    oci: &'a Oci,
    name: String,
    layers: PathBuf,
    container: bool,
}

impl Made<'_> {
    fn keep(mut self) {
        self.container = false;
        self.layers = PathBuf::new();
    }
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if self.container {
            let opts = DeleteOptions {
                force: true,
                volumes: true,
            };
            if let Err(e) = self.oci.rt.delete(&self.name, opts) {
                eprintln!("husk-oci: removing the half-created container: {e}");
            }
        }
        if !self.layers.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.layers);
        }
    }
}

/// The kernel and agent disk found the way `husk` finds them, the boot
/// timeout and start mode from the environment.
pub fn vm_boot() -> Result<VmBoot> {
    use husk_sandbox::assets;
    let kernel = assets::kernel(None)?;
    let agent = assets::agent()?;
    let agent_disk = assets::agent_disk(&agent, &assets::cache_dir())?;
    let boot_timeout = std::env::var("HUSK_BOOT_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_BOOT_TIMEOUT);
    Ok(VmBoot {
        kernel,
        agent_disk,
        boot_timeout,
        start: husk_sandbox::StartMode::from_env(),
    })
}

/// This process's stdin, stdout and stderr, for the monitor.
fn own_stdio() -> Result<StdioWiring> {
    let dup = |fd: std::os::fd::BorrowedFd<'_>| -> Result<OwnedFd> {
        fd.try_clone_to_owned().context("duplicating stdio")
    };
    Ok(StdioWiring::Fds {
        stdin: Some(dup(std::io::stdin().as_fd())?),
        stdout: Some(dup(std::io::stdout().as_fd())?),
        stderr: Some(dup(std::io::stderr().as_fd())?),
    })
}

/// A terminal's slave as stdin, stdout and stderr.
fn terminal_stdio(slave: OwnedFd) -> Result<StdioWiring> {
    let dup = || slave.try_clone().context("duplicating the terminal");
    Ok(StdioWiring::Fds {
        stdin: Some(dup()?),
        stdout: Some(dup()?),
        stderr: Some(slave),
    })
}

/// Writes `pid` to `path` atomically (a temporary file renamed into
/// place), as runc does.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("invalid pid file {}", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing the pid file {}", path.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A bundle like `runc spec` writes (minus the read-only root), with
    /// `edit` applied; `rootfs` is made only if `with_root`.
    fn bundle(dir: &Path, edit: impl FnOnce(&mut serde_json::Value), with_root: bool) {
        let mut spec = json!({
            "ociVersion": "1.0.2-dev",
            "process": {"terminal": false, "user": {"uid": 0, "gid": 0},
                        "args": ["sh"], "cwd": "/", "env": ["PATH=/bin"]},
            "root": {"path": "rootfs"},
            "hostname": "runc",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
        });
        edit(&mut spec);
        std::fs::write(dir.join("config.json"), spec.to_string()).unwrap();
        if with_root {
            std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
        }
    }

    fn push_mount(spec: &mut serde_json::Value, mount: serde_json::Value) {
        spec["mounts"].as_array_mut().unwrap().push(mount);
    }

    fn args(bundle: &Path, id: &str) -> CreateArgs {
        CreateArgs {
            bundle: bundle.to_path_buf(),
            pid_file: Some(bundle.join("pid")),
            console_socket: None,
            no_pivot: false,
            no_new_keyring: false,
            preserve_fds: 0,
            id: id.into(),
        }
    }

    /// Creating from a bad bundle fails with one line naming the problem
    /// and leaves nothing: no container, no layer disks, no pid file.
    #[test]
    fn bad_bundles_fail_and_leave_nothing() {
        let root = tempfile::tempdir().unwrap();
        let oci = Oci::open(root.path()).unwrap();
        type Edit = fn(&mut serde_json::Value);
        let cases: [(&str, Edit, bool, &str); 6] = [
            ("no-root", |_| {}, false, "is not a directory"),
            (
                "missing-bind",
                |s| {
                    push_mount(
                        s,
                        json!({"destination": "/data", "type": "bind",
                                             "source": "/nonexistent-husk-source", "options": ["rbind"]}),
                    )
                },
                true,
                "bind mount of /nonexistent-husk-source at /data",
            ),
            (
                "nfs",
                |s| {
                    push_mount(
                        s,
                        json!({"destination": "/n", "type": "nfs", "source": "x"}),
                    )
                },
                true,
                "mount of type nfs at /n is not supported",
            ),
            (
                "hooks",
                |s| s["hooks"] = json!({"prestart": [{"path": "/bin/true"}]}),
                true,
                "hooks",
            ),
            (
                "tty",
                |s| s["process"]["terminal"] = json!(true),
                true,
                "--console-socket",
            ),
            (
                "no-args",
                |s| s["process"]["args"] = json!([]),
                true,
                "process.args is empty",
            ),
        ];
        for (id, edit, with_root, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            bundle(dir.path(), edit, with_root);
            let err = format!("{:#}", create(&oci, &args(dir.path(), id)).unwrap_err());
            assert!(err.contains(want), "{id}: {err}");
            assert!(!err.contains('\n'), "{id}: {err}");
            assert!(!oci.exists(id).unwrap(), "{id}");
            assert!(!oci.layers_dir(id).exists(), "{id}");
            assert!(!dir.path().join("pid").exists(), "{id}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{\"ociVersion\": ").unwrap();
        let err = format!("{:#}", create(&oci, &args(dir.path(), "bad")).unwrap_err());
        assert!(err.contains("invalid OCI runtime config"), "{err}");
        let err = format!("{:#}", create(&oci, &args(dir.path(), "a/b")).unwrap_err());
        assert!(err.starts_with("invalid container ID"), "{err}");
        let mut a = args(dir.path(), "fds");
        a.preserve_fds = 2;
        let err = format!("{:#}", create(&oci, &a).unwrap_err());
        assert!(err.contains("--preserve-fds"), "{err}");
        let containers = std::fs::read_dir(oci.rt.layout().containers())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != ".lock")
            .count();
        assert_eq!(containers, 0);
    }

    #[test]
    fn pid_files_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init.pid");
        write_pid_file(&path, 1234).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1234");
        write_pid_file(&path, 56).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "56");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let missing = dir.path().join("nope/x.pid");
        assert!(write_pid_file(&missing, 1).is_err());
    }
}
