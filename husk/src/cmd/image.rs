//! Image commands: load, pull, push, images, tag, rmi, save, and `image ...`.

mod history;
pub(crate) mod output;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use images::archive;
use images::registry::{self, Options};
use images::store::RemoveEvent;
use images::{Reference, Store};
use output::{human_age, human_size, print_table, Printer};

/// Where the store lives.
#[derive(Args, Clone, Debug)]
pub struct RootArgs {
    /// Root directory of husk's state.
    #[arg(long, env = "HUSK_ROOT", default_value = images::DEFAULT_ROOT)]
    pub root: PathBuf,
}

impl RootArgs {
    pub(crate) fn store(&self) -> anyhow::Result<Store> {
        Store::open(&self.root)
            .with_context(|| format!("opening the image store in {}", self.root.display()))
    }
}

/// Registry connection flags.
#[derive(Args, Clone, Debug)]
pub struct RegistryArgs {
    /// Use plain HTTP for this registry (always done for localhost).
    #[arg(long)]
    pub insecure: bool,
}

/// `husk load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Archive to read (docker-save or OCI layout, tar or directory); stdin if absent.
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Print only the loaded image references.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub root: RootArgs,
}

/// `husk pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Image reference, e.g. 127.0.0.1:5000/app:1.0.
    pub name: String,
    /// Suppress progress output.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub root: RootArgs,
}

/// `husk push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Image reference to push (its registry is the destination).
    pub name: String,
    /// Suppress progress output.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub root: RootArgs,
}

/// `husk images` / `husk image ls`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only images of this repository[:tag].
    pub filter: Option<String>,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate image IDs.
    #[arg(long)]
    pub no_trunc: bool,
    #[command(flatten)]
    pub root: RootArgs,
}

/// `husk tag`.
#[derive(Args, Debug)]
pub struct TagArgs {
    /// Existing image.
    pub source: String,
    /// New name[:tag].
    pub target: String,
    #[command(flatten)]
    pub root: RootArgs,
}

/// `husk rmi` / `husk image rm`.
#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Images to remove.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove an image ID with several tags.
    #[arg(short, long)]
    pub force: bool,
    #[command(flatten)]
    pub root: RootArgs,
}

/// `husk save`.
#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Output tarball.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Images to save.
    #[arg(required = true)]
    pub images: Vec<String>,
    #[command(flatten)]
    pub root: RootArgs,
}

/// `husk image inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Images to inspect.
    #[arg(required = true)]
    pub images: Vec<String>,
    #[command(flatten)]
    pub root: RootArgs,
}

/// `husk image prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Accepted for Docker compatibility (prune never asks).
    #[arg(short, long)]
    pub force: bool,
    #[command(flatten)]
    pub root: RootArgs,
}

/// Top-level image commands (flattened into `husk`).
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Load images from a docker-save tarball or an OCI layout.
    Load(LoadArgs),
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// Push an image to a registry.
    Push(PushArgs),
    /// List images.
    Images(ListArgs),
    /// Create a tag TARGET that refers to SOURCE.
    Tag(TagArgs),
    /// Remove images.
    Rmi(RmiArgs),
    /// Save images to a tarball (OCI layout + docker manifest.json).
    Save(SaveArgs),
    /// Show the history of an image.
    History(history::HistoryArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageSub),
}

/// `husk image <...>`.
#[derive(Subcommand, Debug)]
pub enum ImageSub {
    /// Show details of images as JSON.
    Inspect(InspectArgs),
    /// Remove dangling images, then blobs and layer disks no image uses.
    Prune(PruneArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove images.
    Rm(RmiArgs),
    /// Create a tag TARGET that refers to SOURCE.
    Tag(TagArgs),
    /// Load images.
    Load(LoadArgs),
    /// Pull an image.
    Pull(PullArgs),
    /// Push an image.
    Push(PushArgs),
    /// Save images.
    Save(SaveArgs),
    /// Show the history of an image.
    History(history::HistoryArgs),
}

/// Runs an image command.
pub fn run(command: ImageCommand) -> anyhow::Result<i32> {
    match command {
        ImageCommand::Load(a) | ImageCommand::Image(ImageSub::Load(a)) => load(a),
        ImageCommand::Pull(a) | ImageCommand::Image(ImageSub::Pull(a)) => pull(a),
        ImageCommand::Push(a) | ImageCommand::Image(ImageSub::Push(a)) => push(a),
        ImageCommand::Images(a) | ImageCommand::Image(ImageSub::Ls(a)) => list(a),
        ImageCommand::Tag(a) | ImageCommand::Image(ImageSub::Tag(a)) => tag(a),
        ImageCommand::Rmi(a) | ImageCommand::Image(ImageSub::Rm(a)) => rmi(a),
        ImageCommand::Save(a) | ImageCommand::Image(ImageSub::Save(a)) => save(a),
        ImageCommand::Image(ImageSub::Inspect(a)) => inspect(a),
        ImageCommand::Image(ImageSub::Prune(a)) => prune(a),
        ImageCommand::History(a) | ImageCommand::Image(ImageSub::History(a)) => history::history(a),
    }
}

fn parse_ref(name: &str) -> anyhow::Result<Reference> {
    Ok(name.parse::<Reference>()?)
}

/// Whether this process may build layer disks.
fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn load(a: LoadArgs) -> anyhow::Result<i32> {
    let store = a.root.store()?;
    let stdin_copy;
    let path: &Path = match &a.input {
        Some(p) => p,
        None => {
            let mut tmp = tempfile_in(&store)?;
            std::io::copy(&mut std::io::stdin().lock(), &mut tmp).context("reading stdin")?;
            stdin_copy = tmp;
            stdin_copy.path()
        }
    };
    let loaded =
        archive::load(&store, path).with_context(|| format!("loading {}", path.display()))?;
    if is_root() {
        for l in &loaded {
            if let Err(e) = store.layer_disks(&l.image) {
                // Do not leave an image whose layers cannot be used.
                for t in &l.tags {
                    let _ = store.remove(&t.to_string(), true, &[]);
                }
                if l.tags.is_empty() {
                    let _ = store.remove(&l.image.id.to_string(), true, &[]);
                }
                return Err(anyhow::Error::new(e).context("converting layers to disks"));
            }
        }
    }
    for l in &loaded {
        if l.tags.is_empty() {
            println!("Loaded image ID: {}", l.image.id);
        }
        for t in &l.tags {
            println!(
                "Loaded image: {}",
                t.familiar_tagged().unwrap_or_else(|| t.to_string())
            );
        }
    }
    Ok(0)
}

fn tempfile_in(store: &Store) -> anyhow::Result<tempfile::NamedTempFile> {
    tempfile::NamedTempFile::new_in(store.tmp_dir()).context("creating a temporary file")
}

fn pull(a: PullArgs) -> anyhow::Result<i32> {
    let reference = parse_ref(&a.name)?;
    let store = a.root.store()?;
    let printer = Printer::new(a.quiet);
    let opts = Options {
        insecure: a.registry.insecure,
        credentials: None,
    };
    let image = registry::pull(&store, &reference, &opts, is_root(), &printer)
        .with_context(|| format!("pulling {}", a.name))?;
    if is_root() {
        store
            .layer_disks(&image)
            .context("converting layers to disks")?;
    }
    let shown = reference
        .familiar_tagged()
        .unwrap_or_else(|| reference.to_string());
    if !a.quiet {
        let newer = printer.transferred.lock().map(|t| *t).unwrap_or(true);
        if newer {
            println!("Status: Downloaded newer image for {shown}");
        } else {
            println!("Status: Image is up to date for {shown}");
        }
    }
    println!("{reference}");
    image_event(&a.root, "pull", &shown, &reference.familiar_name());
    Ok(0)
}

/// Records image event `action` about `id` (Docker's `name` attribute).
fn image_event(root: &RootArgs, action: &str, id: &str, name: &str) {
    use husk_runtime::events::{Event, EventLog, EventType};
    let attrs = [("name".to_string(), name.to_string())].into();
    EventLog::at(&root.root).record(&Event::new(EventType::Image, action, id, attrs));
}

fn push(a: PushArgs) -> anyhow::Result<i32> {
    let reference = parse_ref(&a.name)?;
    let store = a.root.store()?;
    let image = store.resolve(&a.name)?;
    let printer = Printer::new(a.quiet);
    let opts = Options {
        insecure: a.registry.insecure,
        credentials: None,
    };
    registry::push(&store, &image, &reference, &opts, &printer)
        .with_context(|| format!("pushing {}", a.name))?;
    Ok(0)
}

fn list(a: ListArgs) -> anyhow::Result<i32> {
    let store = a.root.store()?;
    let filter = a.filter.as_deref().map(parse_ref).transpose()?;
    let filter_has_tag = a
        .filter
        .as_deref()
        .is_some_and(|f| f.rsplit('/').next().is_some_and(|last| last.contains(':')));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut rows = vec![vec![
        "REPOSITORY".to_string(),
        "TAG".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
    ]];
    let mut ids = Vec::new();
    for img in store.list()? {
        let id = if a.no_trunc {
            img.id.to_string()
        } else {
            img.id.short().to_string()
        };
        let created = img
            .config
            .created()
            .as_deref()
            .and_then(images::time::parse_rfc3339)
            .map_or_else(|| "N/A".to_string(), |t| human_age(now - t));
        let size = human_size(img.size());
        let mut names: Vec<(String, String)> = img
            .tags
            .iter()
            .filter_map(|t| t.parse::<Reference>().ok())
            .filter(|r| match &filter {
                Some(f) => f.name() == r.name() && (!filter_has_tag || f.tag == r.tag),
                None => true,
            })
            .map(|r| (r.familiar_name(), r.tag.clone().unwrap_or_default()))
            .collect();
        if img.tags.is_empty() && filter.is_none() {
            names.push(("<none>".into(), "<none>".into()));
        }
        if !names.is_empty() && !ids.contains(&id) {
            ids.push(id.clone());
        }
        for (repo, tag) in names {
            rows.push(vec![repo, tag, id.clone(), created.clone(), size.clone()]);
        }
    }
    if a.quiet {
        for id in ids {
            println!("{id}");
        }
    } else {
        print_table(&rows);
    }
    Ok(0)
}

fn tag(a: TagArgs) -> anyhow::Result<i32> {
    let target = parse_ref(&a.target)?;
    if target.digest.is_some() {
        bail!("refusing to create a tag with a digest reference");
    }
    let store = a.root.store()?;
    store.tag(&a.source, &target)?;
    let id = store.resolve(&a.source)?.id.to_string();
    let shown = target
        .familiar_tagged()
        .unwrap_or_else(|| target.to_string());
    image_event(&a.root, "tag", &id, &shown);
    Ok(0)
}

fn rmi(a: RmiArgs) -> anyhow::Result<i32> {
    let store = a.root.store()?;
    let users = super::container::runtime(&a.root)?.image_users()?;
    let mut failed = None;
    for name in &a.images {
        match store.remove(name, a.force, &users) {
            Ok(events) => {
                for e in events {
                    match e {
                        RemoveEvent::Untagged(t) => {
                            println!("Untagged: {t}");
                            image_event(&a.root, "untag", &t, &t);
                        }
                        RemoveEvent::Deleted(d) => {
                            println!("Deleted: {d}");
                            image_event(&a.root, "delete", &d.to_string(), &d.to_string());
                        }
                    }
                }
            }
            Err(e) => {
                eprintln!("husk: {e}");
                failed = Some(1);
            }
        }
    }
    Ok(failed.unwrap_or(0))
}

fn save(a: SaveArgs) -> anyhow::Result<i32> {
    let store = a.root.store()?;
    let mut list = Vec::new();
    for name in &a.images {
        let image = store.resolve(name)?;
        let tags: Vec<Reference> = match name.parse::<Reference>() {
            Ok(r) if r.tag.is_some() && image.tags.contains(&r.to_string()) => vec![r],
            _ => image.tags.iter().filter_map(|t| t.parse().ok()).collect(),
        };
        list.push((image, tags));
    }
    archive::save(&store, &list, &a.output)
        .with_context(|| format!("saving to {}", a.output.display()))?;
    Ok(0)
}

fn inspect(a: InspectArgs) -> anyhow::Result<i32> {
    let store = a.root.store()?;
    let mut out = Vec::new();
    for name in &a.images {
        let img = store.resolve(name)?;
        let raw: serde_json::Value = serde_json::from_slice(&store.read_blob(&img.id)?)?;
        let disks: Vec<String> = img
            .diff_ids()
            .iter()
            .map(|d| store.layers_dir().join(format!("{}.erofs", d.hex())))
            .filter(|p| p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        out.push(serde_json::json!({
            "Id": img.id.to_string(),
            "RepoTags": img.familiar_tags(),
            "RepoDigests": img.record.repo_digests,
            "Created": raw["created"],
            "Author": raw["author"],
            "Architecture": raw["architecture"],
            "Os": raw["os"],
            "Size": img.size(),
            "Config": raw["config"],
            "RootFS": {"Type": "layers", "Layers": img.diff_ids().iter().map(|d| d.to_string()).collect::<Vec<_>>()},
            "Husk": {
                "Manifest": img.manifest_digest.to_string(),
                "ManifestMediaType": img.record.media_type,
                "LayerDisks": disks,
            },
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}

fn prune(a: PruneArgs) -> anyhow::Result<i32> {
    let store = a.root.store()?;
    let users = super::container::runtime(&a.root)?.image_users()?;
    let r = store.prune(&users)?;
    if !r.images.is_empty() {
        println!("Deleted Images:");
    }
    for i in &r.images {
        println!("deleted: {i}");
    }
    for b in &r.blobs {
        println!("deleted: {b}");
    }
    for d in &r.disks {
        println!("deleted: layer disk {d}");
    }
    println!();
    println!("Total reclaimed space: {}", human_size(r.bytes));
    Ok(0)
}
