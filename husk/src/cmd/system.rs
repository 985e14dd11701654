//! `husk system templates [ls|rm|prune]`: the warm-start templates cached
//! under `$HUSK_CACHE/templates` (see `husk_sandbox::template`).

use std::time::SystemTime;

use anyhow::Result;
use clap::{Args, Subcommand};
use husk_sandbox::template::Template;
use husk_sandbox::TemplateStore;

use super::image::output::{human_age, human_size, print_table};

/// `husk system ...`.
#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Warm-start templates: list (default), `rm KEY...`, `prune`.
    Templates(TemplatesArgs),
    /// Show disk usage (images, containers, volumes, build cache).
    Df(super::system_info::DfArgs),
    /// Remove stopped containers, dangling images, the build cache (and
    /// with --volumes unused anonymous volumes).
    Prune(super::system_info::SystemPruneArgs),
    /// Display system-wide information.
    Info(super::system_info::InfoArgs),
}

/// `husk system templates`.
#[derive(Args, Debug)]
pub struct TemplatesArgs {
    /// Only show keys (when listing).
    #[arg(short = 'q', long)]
    quiet: bool,
    #[command(subcommand)]
    action: Option<TemplatesAction>,
}

/// What to do with the templates.
#[derive(Subcommand, Debug)]
pub enum TemplatesAction {
    /// List the cached templates.
    #[command(alias = "list")]
    Ls {
        /// Only show keys.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Remove templates by key (or unique key prefix).
    #[command(alias = "remove")]
    Rm {
        /// Template keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Remove every template (they are rebuilt on next need).
    Prune,
}

/// Runs a system command.
pub fn run(command: SystemCommand) -> Result<i32> {
    let args = match command {
        SystemCommand::Templates(args) => args,
        SystemCommand::Df(a) => return super::system_info::df(a),
        SystemCommand::Prune(a) => return super::system_info::system_prune(a),
        SystemCommand::Info(a) => return super::system_info::info(a),
    };
    let store = TemplateStore::default_store();
    match args.action.unwrap_or(TemplatesAction::Ls { quiet: false }) {
        TemplatesAction::Ls { quiet } => list(&store, quiet || args.quiet),
        TemplatesAction::Rm { keys } => {
            let mut failed = false;
            for key in keys {
                match store.remove(&key) {
                    Ok(t) => println!("{}", t.key),
                    Err(e) => {
                        eprintln!("husk: {e}");
                        failed = true;
                    }
                }
            }
            Ok(i32::from(failed))
        }
        TemplatesAction::Prune => {
            let removed = store.prune()?;
            let bytes: u64 = removed.iter().map(|(_, bytes)| bytes).sum();
            for (t, _) in &removed {
                println!("Deleted: {}", t.key);
            }
            println!("Total reclaimed space: {}", human_size(bytes));
            Ok(0)
        }
    }
}

fn list(store: &TemplateStore, quiet: bool) -> Result<i32> {
    let templates = store.list()?;
    if quiet {
        for t in &templates {
            println!("{}", t.key);
        }
        return Ok(0);
    }
    let header = [
        "KEY", "VCPUS", "MEMORY", "SLOTS", "NETWORK", "SIZE", "CREATED",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    rows.extend(templates.iter().map(row));
    print_table(&rows);
    Ok(0)
}

fn row(t: &Template) -> Vec<String> {
    let age = t
        .created()
        .and_then(|c| SystemTime::now().duration_since(c).ok())
        .map(|d| human_age(d.as_secs() as i64))
        .unwrap_or_else(|| "unknown".into());
    let i = &t.inputs;
    vec![
        t.key.clone(),
        i.vcpus.to_string(),
        format!("{}MiB", i.memory_mib),
        i.slots.to_string(),
        match i.net_mtu {
            Some(mtu) => format!("mtu {mtu}"),
            None => "none".into(),
        },
        human_size(t.disk_usage()),
        age,
    ]
}
