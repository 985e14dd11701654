//! start, stop, restart, kill, rm, wait, attach.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use husk_runtime::{DeleteOptions, Signal, StdioWiring};

use super::interactive::{self, LocalStdio};
use super::{each, RootArgs};

/// Container names or IDs.
#[derive(Args, Debug)]
pub struct NamesArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Containers (name, ID or unique ID prefix).
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `husk start` flags.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach to the output and exit with the container's code.
    #[arg(short = 'a', long)]
    attach: bool,
    /// Attach stdin.
    #[arg(short = 'i', long)]
    interactive: bool,
    #[command(flatten)]
    names: NamesArgs,
}

/// `husk stop` / `husk restart` flags.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing (default: the container's).
    #[arg(short = 't', long = "time", alias = "timeout")]
    time: Option<u64>,
    /// Signal to send first (default: the container's stop signal).
    #[arg(short = 's', long)]
    signal: Option<String>,
    #[command(flatten)]
    names: NamesArgs,
}

/// `husk kill` flags.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send.
    #[arg(short = 's', long, default_value = "KILL")]
    signal: String,
    #[command(flatten)]
    names: NamesArgs,
}

/// `husk rm` flags.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill and remove running containers.
    #[arg(short = 'f', long)]
    force: bool,
    /// Also remove anonymous volumes.
    #[arg(short = 'v', long)]
    volumes: bool,
    #[command(flatten)]
    names: NamesArgs,
}

/// `husk attach` flags.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach stdin.
    #[arg(long = "no-stdin")]
    no_stdin: bool,
    /// Forward signals to the process.
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    sig_proxy: bool,
    #[command(flatten)]
    root: RootArgs,
    /// The container.
    container: String,
}

/// `husk start`.
pub fn start(a: StartArgs) -> Result<i32> {
    let rt = super::runtime(&a.names.root)?;
    if a.attach || a.interactive {
        let [name] = a.names.containers.as_slice() else {
            bail!("you cannot start and attach multiple containers at once");
        };
        let c = rt.container(name)?;
        if !c.state.status.can_start() {
            bail!("container {} is already running", c.id.short());
        }
        let how = LocalStdio {
            stdin: a.interactive && c.config.process.stdin,
            tty: c.config.process.tty,
            sig_proxy: true,
        };
        return interactive::start_attached(&rt, c.id.as_str(), &how);
    }
    Ok(each(&a.names.containers, |n| {
        match super::run::start_or_report(&rt, n, StdioWiring::Detached) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.downcast_ref(),
                    Some(husk_runtime::Error::AlreadyRunning(_))
                ) => {}
            Err(e) => return Err(e),
        }
        println!("{n}");
        Ok(())
    }))
}

/// `husk stop`, or `husk restart` when `restart`.
pub fn stop(a: StopArgs, restart: bool) -> Result<i32> {
    let rt = super::runtime(&a.names.root)?;
    let signal = a.signal.as_deref().map(str::parse::<Signal>).transpose()?;
    Ok(each(&a.names.containers, |n| {
        if let Some(sig) = signal {
            let c = rt.container(n)?;
            if c.state.status.can_kill() {
                rt.kill(n, sig)?;
            }
        }
        rt.stop(n, a.time.map(Duration::from_secs))?;
        if restart {
            super::run::start_or_report(&rt, n, StdioWiring::Detached)?;
        }
        println!("{n}");
        Ok(())
    }))
}

/// `husk kill`.
pub fn kill(a: KillArgs) -> Result<i32> {
    let rt = super::runtime(&a.names.root)?;
    let sig: Signal = a.signal.parse()?;
    Ok(each(&a.names.containers, |n| {
        rt.kill(n, sig)?;
        println!("{n}");
        Ok(())
    }))
}

/// `husk pause` (`true`) / `husk unpause`.
pub fn pause(a: NamesArgs, pause: bool) -> Result<i32> {
    let rt = super::runtime(&a.root)?;
    Ok(each(&a.containers, |n| {
        if pause {
            rt.pause(n)?;
        } else {
            rt.unpause(n)?;
        }
        println!("{n}");
        Ok(())
    }))
}

/// `husk rm`.
pub fn rm(a: RmArgs) -> Result<i32> {
    let rt = super::runtime(&a.names.root)?;
    let opts = DeleteOptions {
        force: a.force,
        volumes: a.volumes,
    };
    Ok(each(&a.names.containers, |n| {
        rt.delete(n, opts)?;
        println!("{n}");
        Ok(())
    }))
}

/// `husk wait`.
pub fn wait(a: NamesArgs) -> Result<i32> {
    let rt = super::runtime(&a.root)?;
    Ok(each(&a.containers, |n| {
        let code = rt.wait(n, None)?;
        println!("{}", code.unwrap_or(0));
        Ok(())
    }))
}

/// `husk attach`.
pub fn attach(a: AttachArgs) -> Result<i32> {
    let rt = super::runtime(&a.root)?;
    let c = rt.container(&a.container)?;
    let how = LocalStdio {
        stdin: !a.no_stdin && c.config.process.stdin,
        tty: c.config.process.tty,
        sig_proxy: a.sig_proxy,
    };
    interactive::attach_running(&rt, c.id.as_str(), &how)
}
