//! `husk`: the command-line interface.

// Flag doc comments are clap's help texts, written in the usual usage
// syntax (`[IP:][HOST_PORT:]PORT`, `NAME[:tag]`), not intra-doc links.
#![allow(rustdoc::broken_intra_doc_links)]

mod cmd;

use clap::Parser;

/// Containers in KVM microVMs.
#[derive(Parser)]
#[command(name = "husk", version, about)]
struct Cli {
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() {
    let cli = Cli::parse();
    let code = match cmd::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("husk: {err:#}");
            match err.downcast_ref::<cmd::container::ExitWith>() {
                Some(e) => e.code,
                None => 125,
            }
        }
    };
    std::process::exit(code);
}
