//! `start`, `state`, `kill`, `delete` and `ps`: the lifecycle after
//! `create`, on the husk runtime's operations.

use anyhow::{bail, Result};
use husk_bundle::LayerCache;
use husk_runtime::{DeleteOptions, Signal, Status};

use crate::cli::{DeleteArgs, KillArgs, PsArgs, PsFormat};
use crate::container::{Oci, OciError, OciStatus};

/// `start`: lets the held process start; returns once it runs.
pub fn start(oci: &Oci, id: &str) -> Result<()> {
    let c = oci.find(id)?;
    c.require(&[OciStatus::Created], "start it")?;
    oci.rt.release(c.husk.id.as_str())?;
    Ok(())
}

/// `state`: the OCI state document.
pub fn state(oci: &Oci, id: &str) -> Result<String> {
    let c = oci.find(id)?;
    Ok(serde_json::to_string_pretty(&c.state())?)
}

/// `kill`: the signal goes to the init process through the agent; a
/// created container (no process yet) is stopped: its VM is shut down
/// and it ends with status 137.
pub fn kill(oci: &Oci, args: &KillArgs) -> Result<()> {
    let signal: Signal = args.signal.parse()?;
    let c = oci.find(&args.id)?;
    c.require(&[OciStatus::Created, OciStatus::Running], "signal it")?;
    if c.husk.state.status == Status::Exited {
        // The process is over and the VM on its way out.
        return Ok(());
    }
    match oci.rt.kill(c.husk.id.as_str(), signal) {
        // It ended in the meantime.
        Err(husk_runtime::Error::NotRunning(_)) => Ok(()),
        other => Ok(other?),
    }
}

/// `delete`: removes a created or stopped container (a running one only
/// with `--force`), its VM if any, its layer disks, and the cached disks
/// of image layers that no longer exist.
pub fn delete(oci: &Oci, args: &DeleteArgs) -> Result<()> {
    let c = match oci.find(&args.id) {
        Ok(c) => c,
        Err(OciError::NotExist(_)) if args.force => {
            let _ = std::fs::remove_dir_all(oci.layers_dir(&args.id));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if c.status == OciStatus::Running && !args.force {
        bail!(
            "cannot delete container \"{}\" that is not stopped: running (use --force)",
            args.id
        );
    }
    let opts = DeleteOptions {
        force: true,
        volumes: true,
    };
    match oci.rt.delete(c.husk.id.as_str(), opts) {
        Ok(_) | Err(husk_runtime::Error::NoSuchContainer(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let layers = oci.layers_dir(&args.id);
    if layers.exists() {
        std::fs::remove_dir_all(&layers)
            .map_err(|e| anyhow::anyhow!("removing {}: {e}", layers.display()))?;
    }
    // Disks of image layers that are gone (removed images) go too; a
    // failure here leaves them for the next delete.
    let _ = LayerCache::new(LayerCache::default_dir()).prune();
    Ok(())
}

/// `ps`: the container's host process (its VM's), as a JSON list of pids
/// or a table.
pub fn ps(oci: &Oci, args: &PsArgs) -> Result<String> {
    let c = oci.find(&args.id)?;
    let pids: Vec<i32> = c.pid().into_iter().collect();
    Ok(match args.format {
        PsFormat::Json => serde_json::to_string(&pids)?,
        PsFormat::Table => {
            let mut out = String::from("PID   CMD");
            for pid in pids {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                    .unwrap_or_default();
                out.push_str(&format!("\n{pid:<5} {}", cmd.trim_end()));
            }
            out
        }
    })
}
