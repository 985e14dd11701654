//! `husk port`: a container's published ports.

use anyhow::Result;
use clap::Args;

use super::RootArgs;

/// `husk port` flags.
#[derive(Args, Debug)]
pub struct PortArgs {
    #[command(flatten)]
    root: RootArgs,
    /// The container.
    container: String,
    /// Only this container port: PRIVATE_PORT[/PROTO].
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    port: Option<String>,
}

/// Prints `80/tcp -> 0.0.0.0:8080` lines (only the host side with a port
/// given), for a running container.
pub fn port(a: PortArgs) -> Result<i32> {
    let rt = super::runtime(&a.root)?;
    let c = rt.container(&a.container)?;
    if !c.state.status.can_exec() {
        return Ok(0);
    }
    let Some(filter) = &a.port else {
        for p in &c.state.ports {
            println!("{p}");
        }
        return Ok(0);
    };
    let found: Vec<_> = c.state.ports.iter().filter(|p| p.matches(filter)).collect();
    if found.is_empty() {
        // Docker's exit code for this one is 1.
        eprintln!(
            "husk: No public port '{filter}' published for {}",
            a.container
        );
        return Ok(1);
    }
    for p in found {
        println!("{}", p.host_addr());
    }
    Ok(0)
}
