//! Subcommands. Each module owns its commands' flags and their execution;
//! `run` returns the process exit code (Docker's: 125 for husk's own errors).

pub mod build;
pub mod container;
mod filters;
mod flags;
pub mod image;
pub mod login;
mod mount_flag;
mod prune;
pub mod system;
mod system_info;
pub mod vm;
pub mod volume;

// Day-2 operations (issue #14).
pub mod events;
pub mod generate;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Command {
    /// Low-level microVM commands.
    #[command(subcommand)]
    Vm(vm::VmCommand),
    #[command(flatten)]
    Image(image::ImageCommand),
    #[command(flatten)]
    Container(container::ContainerCommand),
    /// Build an image from a Dockerfile.
    Build(build::BuildArgs),
    /// Log in to a registry.
    Login(login::LoginArgs),
    /// Log out from a registry.
    Logout(login::LogoutArgs),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Manage husk itself (warm-start templates, df, prune, info).
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Get real time events from the store's event log.
    Events(events::EventsArgs),
    /// Generate files for other tools (a systemd unit).
    #[command(subcommand)]
    Generate(generate::GenerateCommand),
    /// Display system-wide information.
    Info(system_info::InfoArgs),
    /// Show the husk version information.
    Version(system_info::InfoArgs),
}

/// Runs a subcommand and returns the exit code.
pub fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Vm(c) => vm::run(c),
        Command::Image(c) => image::run(c),
        Command::Container(c) => container::run(c),
        Command::Volume(c) => volume::run(c),
        Command::Build(a) => build::run(a),
        Command::Login(a) => login::login(a),
        Command::Logout(a) => login::logout(a),
        Command::System(c) => system::run(c),
        Command::Events(a) => events::events(a),
        Command::Generate(c) => generate::run(c),
        Command::Info(a) => system_info::info(a),
        Command::Version(a) => system_info::version(a),
    }
}
