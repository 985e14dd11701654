//! `husk volume create|ls|rm|inspect`: named volumes (ext4 disk images).

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use super::container::runtime;
use super::image::RootArgs;

/// `husk volume ...`.
#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Remove volumes (refused while a container uses them).
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Show details of volumes as JSON.
    Inspect(NamesArgs),
    /// Remove unused anonymous volumes (all unused ones with -a).
    Prune(PruneArgs),
}

/// `husk volume prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones.
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
    #[command(flatten)]
    root: RootArgs,
}

/// `husk volume create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Options: size=SIZE (e.g. size=1g; default 8g, sparse).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    opts: Vec<String>,
    #[command(flatten)]
    root: RootArgs,
    /// Volume name (random if absent).
    name: Option<String>,
}

/// `husk volume ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only show names.
    #[arg(short = 'q', long)]
    quiet: bool,
    #[command(flatten)]
    root: RootArgs,
}

/// Volume names.
#[derive(Args, Debug)]
pub struct NamesArgs {
    /// Accepted for Docker compatibility (in-use volumes are never removed).
    #[arg(short = 'f', long)]
    force: bool,
    #[command(flatten)]
    root: RootArgs,
    /// Volumes.
    #[arg(required = true)]
    names: Vec<String>,
}

/// Runs a volume command.
pub fn run(command: VolumeCommand) -> Result<i32> {
    match command {
        VolumeCommand::Create(a) => create(a),
        VolumeCommand::Ls(a) => ls(a),
        VolumeCommand::Rm(a) => rm(a),
        VolumeCommand::Inspect(a) => inspect(a),
        VolumeCommand::Prune(a) => prune(a),
    }
}

fn prune(a: PruneArgs) -> Result<i32> {
    let warning = if a.all {
        "This will remove all local volumes not used by at least one container."
    } else {
        "This will remove anonymous local volumes not used by at least one container."
    };
    if !a.force && !super::prune::confirm(warning)? {
        return Ok(0);
    }
    let pruned = runtime(&a.root)?.prune_volumes(a.all)?;
    super::prune::print_total(super::prune::report("Volumes", &pruned));
    Ok(0)
}

fn create(a: CreateArgs) -> Result<i32> {
    let mut size = husk_runtime::volume::DEFAULT_VOLUME_SIZE;
    for o in &a.opts {
        match o.split_once('=') {
            Some(("size", v)) => size = u64::from(crate::cmd::flags::parse_memory(v)?) << 20,
            _ => bail!("unsupported volume option {o:?} (supported: size=SIZE)"),
        }
    }
    let rt = runtime(&a.root)?;
    let v = rt.volumes().create(a.name.as_deref(), size, false)?;
    println!("{}", v.name);
    volume_event(&rt, "create", &v.name);
    Ok(0)
}

/// Records volume event `action` about volume `name`.
fn volume_event(rt: &husk_runtime::Runtime, action: &str, name: &str) {
    use husk_runtime::events::{Event, EventType};
    let attrs = [("driver".to_string(), "local".to_string())].into();
    rt.events()
        .record(&Event::new(EventType::Volume, action, name, attrs));
}

fn ls(a: LsArgs) -> Result<i32> {
    let rt = runtime(&a.root)?;
    let vols = rt.volumes().list()?;
    if a.quiet {
        vols.iter().for_each(|v| println!("{}", v.name));
        return Ok(0);
    }
    let mut rows = vec![vec!["DRIVER".to_string(), "VOLUME NAME".to_string()]];
    rows.extend(
        vols.iter()
            .map(|v| vec!["local".to_string(), v.name.clone()]),
    );
    super::image::output::print_table(&rows);
    Ok(0)
}

fn rm(a: NamesArgs) -> Result<i32> {
    let rt = runtime(&a.root)?;
    let mut code = 0;
    for n in &a.names {
        match rt.volume_remove(n) {
            Ok(()) => {
                println!("{n}");
                volume_event(&rt, "destroy", n);
            }
            Err(e) => {
                eprintln!("husk: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

fn inspect(a: NamesArgs) -> Result<i32> {
    let rt = runtime(&a.root)?;
    let mut docs = Vec::new();
    let mut code = 0;
    for n in &a.names {
        match rt.volumes().get(n) {
            Ok(v) => docs.push(json!({
                "Name": v.name,
                "CreatedAt": v.created,
                "Driver": "local",
                "Mountpoint": v.disk,
                "Scope": "local",
                "Options": { "size": v.size.to_string() },
                "Labels": {},
                "Anonymous": v.anonymous,
                "UsedBy": rt.volume_users(&v.name)?,
            })),
            Err(e) => {
                eprintln!("husk: {e}");
                code = 1;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&docs)?);
    Ok(code)
}
