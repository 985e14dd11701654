//! The build engine: stages in order (only those the target needs), each
//! step either reused from the cache or executed — config-only steps as
//! new image configs, COPY/ADD as layers written on the host, RUN in a
//! microVM — with Docker's classic builder output.

mod layers;
mod meta;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

use images::{Image, NewImage, Reference, Store};
use serde_json::Value;

use crate::cache::{self, Cache};
use crate::config::Config;
use crate::dockerfile::{self, words, Dockerfile, Instruction, Stage, Step};
use crate::ignore::Ignore;
use crate::vm::VmSettings;
use husk_sandbox::signals::Signals;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile.
    pub dockerfile: PathBuf,
    /// Its name in messages (`Dockerfile`, or as given with `-f`).
    pub dockerfile_name: String,
    /// Tags for the result.
    pub tags: Vec<Reference>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// The stage to build (default: the last).
    pub target: Option<String>,
    /// Execute every step, ignoring the cache.
    pub no_cache: bool,
    /// The build cache directory.
    pub cache_dir: PathBuf,
    /// RUN steps' VMs.
    pub vm: VmSettings,
}

/// Errors of a build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse.
    #[error(transparent)]
    Parse(#[from] dockerfile::ParseError),
    /// A step failed; `at` is `Dockerfile:LINE`.
    #[error("{at}")]
    Step {
        /// File and line.
        at: String,
        /// What went wrong.
        #[source]
        source: StepError,
    },
    /// Anything before or after the steps.
    #[error("{0}")]
    Setup(String),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] images::StoreError),
    /// Reading the context or Dockerfile failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why one step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The RUN command failed.
    #[error("The command '{command}' returned a non-zero code: {code}")]
    NonZero {
        /// The command as in the history.
        command: String,
        /// Its exit code.
        code: i32,
    },
    /// An argument is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A COPY/ADD failure.
    #[error(transparent)]
    Copy(#[from] crate::copy::CopyError),
    /// A source problem (COPY/ADD).
    #[error(transparent)]
    Source(#[from] crate::context::SourceError),
    /// The VM of a RUN step.
    #[error(transparent)]
    Vm(#[from] crate::vm::VmError),
    /// Host mounts.
    #[error(transparent)]
    Mount(#[from] crate::mount::MountError),
    /// A RUN step's layer tar (from the guest) was refused.
    #[error("the layer the RUN step's VM sent was refused")]
    BadLayer(#[source] images::layer::ExtractError),
    /// A RUN step's layer changed between its arrival and its storage.
    #[error("the RUN step's layer changed on the host: received {received}, stored {stored}")]
    LayerChanged {
        /// The digest hashed as it arrived.
        received: images::Digest,
        /// The digest of the stored blob.
        stored: images::Digest,
    },
    /// The store.
    #[error(transparent)]
    Store(#[from] images::StoreError),
    /// Layer disks.
    #[error(transparent)]
    Layers(#[from] images::LayerError),
    /// A host-side I/O operation.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_step(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StepError {
    let context = context.into();
    move |source| StepError::Io { context, source }
}

/// A stage being built.
struct StageState {
    image: Option<Image>,
    config: Config,
    /// ARGs in scope, in declaration order, with their values.
    args: Vec<(String, Option<String>)>,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
    author: Option<String>,
}

impl StageState {
    /// Substitution variables: ENV wins over ARG.
    fn lookup(&self, name: &str) -> Option<String> {
        self.config.get_env(name).or_else(|| {
            self.args
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.clone())
        })
    }
}

struct Builder<'a> {
    store: &'a Store,
    opts: &'a BuildOptions,
    out: &'a mut dyn Write,
    signals: &'a Signals,
    df: Dockerfile,
    cache: Cache,
    ignore: Ignore,
    /// Work files (RUN disks, mounts), removed at the end.
    work: tempfile::TempDir,
    step: usize,
    total: usize,
    /// Results of the stages built so far.
    results: Vec<Option<Image>>,
    /// Global ARGs (before the first FROM) with their values.
    meta: Vec<(String, Option<String>)>,
    used_args: BTreeSet<String>,
}

/// Builds the image described by `opts`, writing progress to `out`, and
/// records it in the store with its tags.
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    out: &mut dyn Write,
    signals: &Signals,
) -> Result<Image, BuildError> {
    let source = std::fs::read(&opts.dockerfile).map_err(|source| BuildError::Io {
        context: format!("reading {}", opts.dockerfile.display()),
        source,
    })?;
    let df = dockerfile::parse(&source, &opts.dockerfile_name)?;
    let ignore_path = opts.context.join(".dockerignore");
    let ignore = match std::fs::read_to_string(&ignore_path) {
        Ok(text) => {
            Ignore::parse(&text).map_err(|e| BuildError::Setup(format!(".dockerignore: {e}")))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
        Err(source) => {
            return Err(BuildError::Io {
                context: format!("reading {}", ignore_path.display()),
                source,
            })
        }
    };
    let _use = store.use_lock()?;
    let cache = Cache::open(&opts.cache_dir).map_err(|source| BuildError::Io {
        context: format!("opening the build cache {}", opts.cache_dir.display()),
        source,
    })?;
    let work = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(store.staging_dir())
        .map_err(|source| BuildError::Io {
            context: "creating a build directory".into(),
            source,
        })?;
    let mut b = Builder {
        store,
        opts,
        out,
        signals,
        results: vec![None; df.stages.len()],
        df,
        cache,
        ignore,
        work,
        step: 0,
        total: 0,
        meta: Vec::new(),
        used_args: BTreeSet::new(),
    };
    b.run()
}

impl Builder<'_> {
    fn say(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    fn at(&self, step: &Step) -> String {
        format!("{}:{}", self.opts.dockerfile_name, step.line)
    }

    fn fail(&self, step: &Step, source: StepError) -> BuildError {
        BuildError::Step {
            at: self.at(step),
            source,
        }
    }

    fn run(&mut self) -> Result<Image, BuildError> {
        self.meta_args()?;
        let target = match &self.opts.target {
            Some(t) => self.df.stage_index(t).ok_or_else(|| {
                BuildError::Setup(format!("failed to reach build target {t} in Dockerfile"))
            })?,
            None => self.df.stages.len() - 1,
        };
        let needed = self.needed_stages(target);
        self.total = needed
            .iter()
            .map(|i| 1 + self.df.stages[*i].steps.len())
            .sum();
        for i in needed {
            let stage = self.df.stages[i].clone();
            let image = self.stage(i, &stage)?;
            self.results[i] = Some(image);
        }
        let image = self.results[target]
            .clone()
            .ok_or_else(|| BuildError::Setup("the target stage produced no image".into()))?;
        let unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k))
            .collect();
        if !unused.is_empty() {
            let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            self.say(&format!(
                "[Warning] One or more build-args [{}] were not consumed",
                names.join(" ")
            ));
        }
        let recorded = self.store.add_image(
            &image.manifest_digest,
            images::image::OCI_MANIFEST,
            &self.opts.tags,
            None,
        )?;
        self.say(&format!("Successfully built {}", &recorded.id.hex()[..12]));
        for t in &self.opts.tags {
            let tagged = t.with_tag(t.tag.as_deref().unwrap_or("latest"));
            let name = tagged
                .familiar_tagged()
                .unwrap_or_else(|| tagged.to_string());
            self.say(&format!("Successfully tagged {name}"));
        }
        Ok(recorded)
    }

    /// Values of the ARGs before the first FROM.
    fn meta_args(&mut self) -> Result<(), BuildError> {
        for step in self.df.meta_args.clone() {
            let Instruction::Arg(decls) = &step.instruction else {
                continue;
            };
            for (name, default) in decls {
                let value = self
                    .arg_value(name, default.as_deref(), |me, d| me.expand_meta(d), None)
                    .map_err(|m| self.fail(&step, StepError::Invalid(m)))?;
                self.meta.push((name.clone(), value));
            }
        }
        Ok(())
    }

    /// An ARG's value: its `--build-arg` (which is then used), else its
    /// default expanded by `expand`, else `undeclared`.
    fn arg_value<E>(
        &mut self,
        name: &str,
        default: Option<&str>,
        expand: impl FnOnce(&Self, &str) -> Result<String, E>,
        undeclared: Option<String>,
    ) -> Result<Option<String>, E> {
        if let Some(v) = self.opts.build_args.get(name).cloned() {
            self.used_args.insert(name.to_string());
            return Ok(Some(v));
        }
        match default {
            Some(d) => expand(self, d).map(Some),
            None => Ok(undeclared),
        }
    }

    fn meta_value(&self, name: &str) -> Option<String> {
        self.meta
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }

    fn expand_meta(&self, word: &str) -> Result<String, String> {
        words::expand(word, self.df.escape, &|n| self.meta_value(n))
    }

    /// The target and the stages it depends on (FROM <stage>, COPY --from),
    /// in order.
    fn needed_stages(&self, target: usize) -> Vec<usize> {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            let stage = &self.df.stages[i];
            let mut refs = Vec::new();
            if let Instruction::From { image, .. } = &stage.from.instruction {
                refs.push(image.clone());
            }
            for s in &stage.steps {
                if let Instruction::Copy(c) = &s.instruction {
                    refs.extend(c.from.clone());
                }
            }
            for r in refs {
                let name = self.expand_meta(&r).unwrap_or(r);
                if let Some(j) = self.df.stage_index(&name).filter(|j| *j < i) {
                    todo.push(j);
                }
            }
        }
        needed.into_iter().collect()
    }

    fn header(&mut self, step: &Step) {
        self.step += 1;
        let line = format!("Step {}/{} : {}", self.step, self.total, step.original);
        self.say(&line);
    }

    /// Builds one stage; returns its image.
    fn stage(&mut self, index: usize, stage: &Stage) -> Result<Image, BuildError> {
        self.header(&stage.from);
        let Instruction::From { image, .. } = &stage.from.instruction else {
            return Err(BuildError::Setup("a stage without FROM".into()));
        };
        let name = self
            .expand_meta(image)
            .map_err(|m| self.fail(&stage.from, StepError::Invalid(m)))?;
        let base = self
            .base_image(index, &name)
            .map_err(|e| self.fail(&stage.from, e))?;
        let doc = match &base {
            Some(img) => Some(
                self.config_doc(img)
                    .map_err(|e| self.fail(&stage.from, e))?,
            ),
            None => None,
        };
        match &base {
            Some(img) => self.say(&format!(" ---> {}", &img.id.hex()[..12])),
            None => self.say(" ---> scratch"),
        }
        let mut state = StageState {
            image: base,
            config: Config::from_image_config(doc.as_ref()),
            args: Vec::new(),
            cmd_set: false,
            author: None,
        };
        for step in &stage.steps {
            if let Some(sig) = self.signals.received() {
                return Err(BuildError::Setup(format!("interrupted by signal {sig}")));
            }
            self.header(step);
            self.step_in(&mut state, step)
                .map_err(|e| self.fail(step, e))?;
        }
        match state.image {
            Some(i) => Ok(i),
            // FROM scratch and nothing else: an empty image.
            None => self
                .commit(&mut state, None, "/bin/sh -c #(nop) FROM scratch")
                .map_err(|e| self.fail(&stage.from, e)),
        }
    }

    /// The image a FROM names: an earlier stage, `scratch`, or the store's.
    fn base_image(&self, index: usize, name: &str) -> Result<Option<Image>, StepError> {
        if name.eq_ignore_ascii_case("scratch") {
            return Ok(None);
        }
        let lower = name.to_ascii_lowercase();
        let earlier = self.df.stages[..index]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()));
        if let Some(j) = earlier {
            return Ok(self.results[j].clone());
        }
        match self.store.resolve(name) {
            Ok(i) => Ok(Some(i)),
            Err(images::StoreError::NoSuchImage(_)) => Err(StepError::Invalid(format!(
                "image {name} is not in the store (husk pull or husk load it first)"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// An image's config document.
    fn config_doc(&self, image: &Image) -> Result<Value, StepError> {
        let bytes = self.store.read_blob(&image.id)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            StepError::Invalid(format!("image {} has an invalid config: {e}", image.id))
        })
    }

    /// Executes (or reuses) one step.
    fn step_in(&mut self, state: &mut StageState, step: &Step) -> Result<(), StepError> {
        match &step.instruction {
            Instruction::Run { cmd, network } => self.run_step(state, cmd, network.as_deref()),
            Instruction::Copy(args) => self.copy_step(state, args, "COPY"),
            Instruction::Add(args) => self.copy_step(state, args, "ADD"),
            other => {
                let created_by = self.apply_meta(state, other)?;
                self.config_step(state, &created_by)
            }
        }
    }

    /// A step that changes only the config: cached like the others.
    fn config_step(&mut self, state: &mut StageState, created_by: &str) -> Result<(), StepError> {
        let key = cache::key(
            state.image.as_ref().map(|i| &i.id),
            created_by,
            &state.config.to_value().to_string(),
        );
        if self.try_cache(state, &key) {
            return Ok(());
        }
        let image = self.commit(state, None, created_by)?;
        self.remember(&key, &image);
        Ok(())
    }

    /// Looks `key` up; on a hit the stage moves to the cached image.
    fn try_cache(&mut self, state: &mut StageState, key: &str) -> bool {
        if self.opts.no_cache {
            return false;
        }
        let Some(image) = self.cache.get(self.store, key) else {
            return false;
        };
        self.say(" ---> Using cache");
        self.say(&format!(" ---> {}", &image.id.hex()[..12]));
        state.image = Some(image);
        true
    }

    fn remember(&mut self, key: &str, image: &Image) {
        if let Err(e) = self.cache.put(key, image) {
            log::warn!("could not record the build cache: {e}");
        }
    }

    /// Commits the stage's config (and `layer`, a tar) as the stage's new image.
    fn commit(
        &mut self,
        state: &mut StageState,
        layer: Option<&mut dyn std::io::Read>,
        created_by: &str,
    ) -> Result<Image, StepError> {
        let config = state.config.to_value();
        let new = NewImage {
            base: state.image.as_ref(),
            config: &config,
            created_by,
            author: state.author.as_deref(),
            comment: None,
        };
        let image = self.store.commit(&new, layer)?;
        self.say(&format!(" ---> {}", &image.id.hex()[..12]));
        state.image = Some(image.clone());
        Ok(image)
    }
}
