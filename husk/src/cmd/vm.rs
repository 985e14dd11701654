//! `husk vm ...`: boot a microVM and run one command in it.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum VmCommand {
    /// Boot a microVM and run a command in the given root filesystem.
    Run,
}

pub fn run(command: VmCommand) -> anyhow::Result<i32> {
    match command {
        VmCommand::Run => anyhow::bail!("not implemented yet"),
    }
}
