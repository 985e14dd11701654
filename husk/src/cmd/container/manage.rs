//! `husk rename` and `husk container prune`.

use anyhow::Result;
use clap::{Args, Subcommand};
use husk_runtime::Container;

use super::{ExitWith, RootArgs};
use crate::cmd::filters::Filters;
use crate::cmd::prune;

/// `husk rename OLD NEW`.
#[derive(Args, Debug)]
pub struct RenameArgs {
    #[command(flatten)]
    root: RootArgs,
    /// The container (name or ID).
    container: String,
    /// Its new name.
    new_name: String,
}

/// `husk container ...`.
#[derive(Subcommand, Debug)]
pub enum ContainerSub {
    /// Remove all stopped containers.
    Prune(PruneArgs),
}

/// `husk container prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
    /// Filter: until=TIMESTAMP|DURATION, label=KEY[=VALUE],
    /// label!=KEY[=VALUE].
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    #[command(flatten)]
    root: RootArgs,
}

/// `husk rename`: Docker's errors, exit code 1.
pub fn rename(a: RenameArgs) -> Result<i32> {
    let rt = super::runtime(&a.root)?;
    match rt.rename(&a.container, &a.new_name) {
        Ok(_) => Ok(0),
        Err(husk_runtime::Error::NameInUse { name, id }) => Err(ExitWith {
            code: 1,
            detail: format!(
                "Error response from daemon: Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
            ),
        }
        .into()),
        Err(e) => Err(ExitWith {
            code: 1,
            detail: format!("Error response from daemon: {e}"),
        }
        .into()),
    }
}

/// `husk container ...`.
pub fn container(c: ContainerSub) -> Result<i32> {
    match c {
        ContainerSub::Prune(a) => prune_containers(a),
    }
}

fn prune_containers(a: PruneArgs) -> Result<i32> {
    let filters = Filters::parse(&a.filters, &["until", "label", "label!"])?;
    let until = filters
        .values("until")
        .iter()
        .map(|v| prune::until_age(v))
        .collect::<Result<Vec<_>>>()?;
    if !a.force && !prune::confirm("This will remove all stopped containers.")? {
        return Ok(0);
    }
    let rt = super::runtime(&a.root)?;
    let keep = |c: &Container| {
        let age = u64::try_from(husk_runtime::time::secs_since(&c.config.created)).unwrap_or(0);
        !filters.labels_match(&c.config.labels) || until.iter().any(|min| age < *min)
    };
    let pruned = rt.prune_containers(keep)?;
    prune::print_total(prune::report("Containers", &pruned));
    Ok(0)
}
