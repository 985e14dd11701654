//! `husk build`: an image from a Dockerfile and a context directory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use husk_build::{BuildOptions, VmSettings};
use images::Reference;

use super::image::RootArgs;
use husk_sandbox::assets;

/// `husk build` flags.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name and optionally a tag (name:tag); may be repeated.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// The Dockerfile (default: PATH/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Build-time variables (KEY=VALUE, or KEY to take husk's environment).
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_args: Vec<String>,
    /// The stage to build.
    #[arg(long)]
    target: Option<String>,
    /// Do not use the build cache.
    #[arg(long)]
    no_cache: bool,
    /// Print only the image ID.
    #[arg(short, long)]
    quiet: bool,
    /// Network of RUN steps: default (outbound through passt) or none.
    #[arg(long, default_value = "default")]
    network: String,
    /// Memory of RUN steps' VMs (e.g. 512m, 1g).
    #[arg(short = 'm', long, default_value = "512m")]
    memory: String,
    /// CPUs of RUN steps' VMs.
    #[arg(long, default_value = "1")]
    cpus: String,
    /// Guest kernel (vmlinux); default: $HUSK_KERNEL, then the installed one.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Seconds a RUN step's VM may take to boot.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 90,
        env = "HUSK_BOOT_TIMEOUT"
    )]
    boot_timeout: u64,
    /// Boot the VM from the kernel instead of restoring it from a
    /// warm-start template (also: `HUSK_COLD=1`).
    #[arg(long)]
    cold: bool,
    /// The largest layer a RUN step may produce (e.g. 512m, 10g): its
    /// changes as a tar, streamed out of the VM.
    #[arg(long, value_name = "SIZE", default_value = "64g")]
    max_layer_size: String,
    #[command(flatten)]
    root: RootArgs,
    /// The build context directory.
    #[arg(value_name = "PATH")]
    context: PathBuf,
}

/// `--build-arg` values; `KEY` alone takes husk's environment (or is unset).
fn build_args(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some(("", _)) => bail!("invalid --build-arg {a:?}: the name is empty"),
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// Runs `husk build`.
pub fn run(a: BuildArgs) -> Result<i32> {
    let context = std::fs::canonicalize(&a.context)
        .with_context(|| format!("unable to prepare context: path {:?} not found", a.context))?;
    if !context.is_dir() {
        bail!(
            "unable to prepare context: {} is not a directory",
            a.context.display()
        );
    }
    let (dockerfile, dockerfile_name) = match &a.file {
        Some(f) => (f.clone(), f.display().to_string()),
        None => (context.join("Dockerfile"), "Dockerfile".to_string()),
    };
    if !dockerfile.is_file() {
        bail!(
            "unable to prepare context: no Dockerfile at {}",
            dockerfile.display()
        );
    }
    let tags = a
        .tags
        .iter()
        .map(|t| {
            t.parse::<Reference>()
                .ok()
                .filter(|r| r.digest.is_none())
                .with_context(|| format!("invalid tag {t:?}: invalid reference format"))
        })
        .collect::<Result<Vec<_>>>()?;
    let network = match a.network.as_str() {
        "default" | "passt" | "user" | "bridge" => true,
        "none" => false,
        other => bail!("--network {other:?}: must be default or none"),
    };
    let memory_mib = crate::cmd::flags::parse_memory(&a.memory)?;
    let cpus = crate::cmd::flags::parse_cpus(&a.cpus)?;
    let max_layer_bytes = husk_runtime::options::parse_bytes(&a.max_layer_size)
        .filter(|n| *n > 0)
        .with_context(|| {
            format!(
                "invalid --max-layer-size {:?}: a size such as 512m or 10g",
                a.max_layer_size
            )
        })?;
    // Needed only by RUN steps: a missing kernel or agent fails those.
    let vm_assets = assets::kernel(a.kernel.as_deref())
        .and_then(|k| {
            let agent = assets::agent()?;
            Ok((k, assets::agent_disk(&agent, &assets::cache_dir())?))
        })
        .map_err(|e| format!("{e:#}"));
    let opts = BuildOptions {
        context,
        dockerfile,
        dockerfile_name,
        tags,
        build_args: build_args(&a.build_args)?,
        target: a.target.clone(),
        no_cache: a.no_cache,
        cache_dir: a.root.root.join("build/cache"),
        vm: VmSettings {
            assets: vm_assets,
            cpus,
            memory_mib,
            boot_timeout: Duration::from_secs(a.boot_timeout),
            network,
            start: husk_sandbox::StartMode::choose(a.cold),
            max_layer_bytes,
        },
    };
    let store = images::Store::open(&a.root.root)
        .with_context(|| format!("opening the image store in {}", a.root.root.display()))?;
    let signals =
        husk_runtime::signals::Signals::install().context("installing signal handlers")?;
    let image = if a.quiet {
        husk_build::build(&store, &opts, &mut std::io::sink(), &signals)?
    } else {
        husk_build::build(&store, &opts, &mut std::io::stdout(), &signals)?
    };
    if a.quiet {
        println!("{}", image.id);
    }
    Ok(0)
}
