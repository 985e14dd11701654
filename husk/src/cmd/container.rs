//! Container commands: run, create, start, stop, kill, rm, ps, logs, exec,
//! wait, inspect, restart, attach (flattened into `husk`), and the hidden
//! `container-monitor` the lifecycle library re-executes.

mod commit;
mod control;
mod copy;
pub(crate) mod format;
mod inspect;
mod interactive;
mod logs;
mod manage;
mod port;
mod ps;
mod run;
mod run_flags;
mod stats;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use husk_runtime::Runtime;

use super::image::RootArgs;

pub use inspect::render;
pub use interactive::ExitWith;
pub use run::{CreateArgs, RunArgs};

/// Top-level container commands.
#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Create and start a container from an image.
    Run(Box<RunArgs>),
    /// Create a container (without starting it).
    Create(Box<CreateArgs>),
    /// Start created or stopped containers.
    Start(control::StartArgs),
    /// Stop running containers (stop signal, then SIGKILL after a timeout).
    Stop(control::StopArgs),
    /// Restart containers.
    Restart(control::StopArgs),
    /// Send a signal to containers' main processes.
    Kill(control::KillArgs),
    /// Remove containers.
    Rm(control::RmArgs),
    /// Block until containers stop, then print their exit codes.
    Wait(control::NamesArgs),
    /// Attach to a running container's output (and input with -i).
    Attach(control::AttachArgs),
    /// List containers.
    Ps(ps::PsArgs),
    /// Fetch the logs of a container.
    Logs(logs::LogsArgs),
    /// Run a command in a running container.
    Exec(interactive::ExecArgs),
    /// List a container's published ports.
    Port(port::PortArgs),
    /// Show details of containers as JSON.
    Inspect(inspect::InspectArgs),
    /// Pause all processes within containers (their VMs' vCPUs).
    Pause(control::NamesArgs),
    /// Unpause all processes within containers.
    Unpause(control::NamesArgs),
    /// Rename a container.
    Rename(manage::RenameArgs),
    /// Manage containers (`prune`).
    #[command(subcommand)]
    Container(manage::ContainerSub),
    // issue #14 part 2: stats, top, cp, diff, export
    /// Display a live stream of containers' resource usage.
    Stats(stats::StatsArgs),
    /// Display the running processes of a container.
    Top(stats::TopArgs),
    /// Copy files between a container and the host.
    Cp(copy::CpArgs),
    /// Inspect changes to files on a container's filesystem.
    Diff(copy::DiffArgs),
    /// Export a container's filesystem as a tar archive.
    Export(copy::ExportArgs),
    /// Create a new image from a container's changes.
    Commit(commit::CommitArgs),
    /// Update configuration of containers.
    Update(UpdateArgs),
    /// The per-container monitor (started by husk itself).
    #[command(hide = true, name = "container-monitor")]
    Monitor(MonitorArgs),
}

/// `husk container-monitor ROOT ID MODE`.
#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// Store root.
    root: PathBuf,
    /// Full container ID.
    id: String,
    /// Stdio mode (JSON).
    mode: String,
}

/// Runs a container command and returns husk's exit code.
pub fn run(command: ContainerCommand) -> anyhow::Result<i32> {
    match command {
        ContainerCommand::Run(a) => run::run(*a),
        ContainerCommand::Create(a) => run::create(*a),
        ContainerCommand::Start(a) => control::start(a),
        ContainerCommand::Stop(a) => control::stop(a, false),
        ContainerCommand::Restart(a) => control::stop(a, true),
        ContainerCommand::Kill(a) => control::kill(a),
        ContainerCommand::Rm(a) => control::rm(a),
        ContainerCommand::Wait(a) => control::wait(a),
        ContainerCommand::Attach(a) => control::attach(a),
        ContainerCommand::Ps(a) => ps::ps(a),
        ContainerCommand::Logs(a) => logs::logs(a),
        ContainerCommand::Exec(a) => interactive::exec(a),
        ContainerCommand::Port(a) => port::port(a),
        ContainerCommand::Inspect(a) => inspect::inspect(a),
        ContainerCommand::Pause(a) => control::pause(a, true),
        ContainerCommand::Unpause(a) => control::pause(a, false),
        ContainerCommand::Rename(a) => manage::rename(a),
        ContainerCommand::Container(c) => manage::container(c),
        ContainerCommand::Stats(a) => stats::stats(a),
        ContainerCommand::Top(a) => stats::top(a),
        ContainerCommand::Cp(a) => copy::cp(a),
        ContainerCommand::Diff(a) => copy::diff(a),
        ContainerCommand::Export(a) => copy::export(a),
        ContainerCommand::Commit(a) => commit::commit(a),
        ContainerCommand::Update(a) => update(a),
        ContainerCommand::Monitor(a) => Ok(husk_runtime::monitor::main(&a.root, &a.id, &a.mode)),
    }
}

/// Opens the runtime for `root`.
pub fn runtime(root: &RootArgs) -> anyhow::Result<Runtime> {
    Runtime::open(&root.root)
        .with_context(|| format!("opening the container store in {}", root.root.display()))
}

/// Runs `f` for each name, printing errors as Docker does; exit code 1 if
/// any failed.
fn each(names: &[String], mut f: impl FnMut(&str) -> anyhow::Result<()>) -> i32 {
    let mut code = 0;
    for n in names {
        if let Err(e) = f(n) {
            eprintln!("husk: {e:#}");
            code = 1;
        }
    }
    code
}

/// `husk update` flags (those a VM cannot follow are refused).
#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Memory limit.
    #[arg(short, long)]
    memory: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    cpus: Option<String>,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `husk update`: a VM's memory and vCPUs are fixed at boot here (no
/// memory hotplug or balloon, no vCPU hotplug), so `--memory` and
/// `--cpus` are refused for each container with Docker's per-container
/// error and exit code 1; they take effect on a new container (`run -m`,
/// `--cpus`).
fn update(a: UpdateArgs) -> anyhow::Result<i32> {
    let rt = runtime(&a.root)?;
    let what: Vec<&str> = [
        a.memory.as_ref().map(|_| "--memory"),
        a.cpus.as_ref().map(|_| "--cpus"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if what.is_empty() {
        anyhow::bail!("you must provide one or more flags when using this command");
    }
    Ok(each(&a.containers, |name| {
        let c = rt.container(name)?;
        anyhow::bail!(
            "Cannot update container {}: {} cannot change while its VM exists \
             (memory and vCPUs are fixed at boot); recreate the container with the new values",
            c.id.short(),
            what.join(" and ")
        )
    }))
}
