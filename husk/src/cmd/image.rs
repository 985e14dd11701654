//! Image commands: load, pull, images, tag, rmi, image inspect/prune, save, push.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List images.
    Images,
}

pub fn run(command: ImageCommand) -> anyhow::Result<i32> {
    match command {
        ImageCommand::Images => anyhow::bail!("not implemented yet"),
    }
}
