//! `husk cp`, `husk export` and `husk diff`: through the container's
//! agent (a stopped container's in a maintenance VM booted for the
//! command: see docs/OPERATIONS.md).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use husk_runtime::copy::{CopyOptions, HostPath};

use super::RootArgs;

/// `husk cp` flags.
#[derive(Args, Debug)]
pub struct CpArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Archive mode: keep owners (uid/gid) of what is copied in.
    #[arg(short, long)]
    archive: bool,
    /// Follow a symbolic link at the source path.
    #[arg(short = 'L', long)]
    follow_link: bool,
    /// CONTAINER:SRC_PATH, SRC_PATH or `-` (a tar on stdin).
    src: String,
    /// CONTAINER:DEST_PATH, DEST_PATH or `-` (a tar on stdout).
    dest: String,
}

/// A `husk cp` operand: `NAME:PATH` in a container, or a host path (`-`
/// for a tar stream; a local path with a colon starts with `/` or `.`).
fn container_path(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    arg.split_once(':').filter(|(name, _)| !name.is_empty())
}

fn host_path(arg: &str) -> HostPath {
    if arg == "-" {
        HostPath::Stream
    } else {
        HostPath::Path(PathBuf::from(arg))
    }
}

/// `husk cp`.
pub fn cp(a: CpArgs) -> Result<i32> {
    let rt = super::runtime(&a.root)?;
    let opts = CopyOptions {
        archive: a.archive,
        follow_link: a.follow_link,
    };
    match (container_path(&a.src), container_path(&a.dest)) {
        (Some((name, src)), None) => {
            let dest = host_path(&a.dest);
            if dest == HostPath::Stream && std::io::stdout().is_terminal() {
                bail!("cowardly refusing to write a tar to a terminal: redirect the output");
            }
            rt.copy_from(name, src, &dest, opts)?;
        }
        (None, Some((name, dest))) => rt.copy_into(name, &host_path(&a.src), dest, opts)?,
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("must specify at least one container source"),
    }
    Ok(0)
}

/// `husk export` flags.
#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Write to a file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// The container.
    container: String,
}

/// `husk export`: the container's root as a tar.
pub fn export(a: ExportArgs) -> Result<i32> {
    let rt = super::runtime(&a.root)?;
    match &a.output {
        None => {
            let mut out = std::io::stdout().lock();
            if out.is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            rt.export(&a.container, &mut out)?;
            out.flush().context("writing stdout")?;
        }
        Some(path) => {
            let mut f = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            if let Err(e) = rt.export(&a.container, &mut f) {
                drop(f);
                let _ = std::fs::remove_file(path);
                return Err(e.into());
            }
            f.sync_all()
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(0)
}

/// `husk diff` flags.
#[derive(Args, Debug)]
pub struct DiffArgs {
    #[command(flatten)]
    root: RootArgs,
    /// The container.
    container: String,
}

/// `husk diff`: `A`/`C`/`D` lines.
pub fn diff(a: DiffArgs) -> Result<i32> {
    let rt = super::runtime(&a.root)?;
    let mut out = std::io::stdout().lock();
    for c in rt.diff(&a.container)? {
        writeln!(out, "{} {}", c.kind.letter(), c.path).context("writing stdout")?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands_name_a_container_or_a_host_path() {
        assert_eq!(container_path("web:/etc"), Some(("web", "/etc")));
        assert_eq!(container_path("./a:b"), None);
        assert_eq!(container_path("/a:b"), None);
        assert_eq!(container_path("file"), None);
        assert_eq!(container_path(":x"), None);
        assert_eq!(host_path("-"), HostPath::Stream);
    }
}
