//! Steps that add a layer: RUN (in a microVM) and COPY/ADD (on the host).

use std::io::{Seek, Write};

use husk_protocol::ExecRequest;

use super::meta::{argv, join_workdir};
use super::{io_step, Builder, StageState, StepError};
use crate::config::DEFAULT_PATH;
use crate::context::SourceTree;
use crate::copy::{self, CopyPlan};
use crate::dockerfile::{Command, CopyArgs};
use crate::mount::RootfsView;
use crate::tarball::LayerWriter;
use crate::{cache, users, vm};

/// A random 12-hex-digit name (build containers, hostnames).
fn random_id() -> String {
    let mut b = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    hex::encode(b)
}

impl Builder<'_> {
    /// A temporary layer tar in the store's temp directory.
    fn layer_file(&self) -> Result<tempfile::NamedTempFile, StepError> {
        tempfile::NamedTempFile::new_in(self.store.tmp_dir())
            .map_err(io_step("creating a layer file"))
    }

    /// Commits the layer tar in `file` (written from the start); with
    /// `digest`, the stored layer must be the one hashed when it arrived.
    fn commit_file(
        &mut self,
        state: &mut StageState,
        mut file: std::fs::File,
        created_by: &str,
        key: &str,
        digest: Option<&images::Digest>,
    ) -> Result<(), StepError> {
        file.flush().map_err(io_step("writing the layer"))?;
        file.rewind().map_err(io_step("reading the layer"))?;
        let mut reader = std::io::BufReader::new(file);
        let image = self.commit(state, Some(&mut reader), created_by)?;
        let stored = image.layers.last().map(|l| &l.digest);
        if let (Some(want), Some(got)) = (digest, stored) {
            if want != got {
                return Err(StepError::LayerChanged {
                    received: want.clone(),
                    stored: got.clone(),
                });
            }
        }
        self.remember(key, &image);
        Ok(())
    }

    /// A RUN step's layer tar as it came from the guest, in `file`: checked
    /// as a pulled layer is (paths, links, entries, sizes) before it is
    /// stored.
    fn check_run_layer(&self, file: &tempfile::NamedTempFile) -> Result<(), StepError> {
        let f = file.reopen().map_err(io_step("reading the layer"))?;
        let limit = self.opts.vm.max_layer_bytes;
        images::layer::check(std::io::BufReader::new(f), limit).map_err(StepError::BadLayer)?;
        Ok(())
    }

    /// `RUN`: cache lookup, then the command in a VM and its changes as a layer.
    pub(super) fn run_step(
        &mut self,
        state: &mut StageState,
        cmd: &Command,
        network: Option<&str>,
    ) -> Result<(), StepError> {
        let network = match network {
            None | Some("default") => self.opts.vm.network,
            Some("none") => false,
            Some(other) => {
                return Err(StepError::Invalid(format!(
                    "RUN --network={other} is not supported (default or none)"
                )))
            }
        };
        let argv = argv(cmd, &state.config.shell());
        let args: Vec<String> = state
            .args
            .iter()
            .filter_map(|(k, v)| Some(format!("{k}={}", v.as_ref()?)))
            .collect();
        let command = argv.join(" ");
        let created_by = match args.len() {
            0 => command.clone(),
            n => format!("|{n} {} {command}", args.join(" ")),
        };
        let key = cache::key(state.image.as_ref().map(|i| &i.id), &created_by, "");
        if self.try_cache(state, &key) {
            return Ok(());
        }
        let Some(image) = state.image.clone().filter(|i| !i.layers.is_empty()) else {
            return Err(StepError::Invalid(
                "RUN needs a root filesystem with a shell, and this stage has no layers (FROM scratch)".into(),
            ));
        };
        let mut env = state.config.env();
        for (k, v) in &state.args {
            if let Some(v) = v {
                if state.config.get_env(k).is_none() {
                    env.push(format!("{k}={v}"));
                }
            }
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        let id = random_id();
        self.say(&format!(" ---> Running in {id}"));
        let layers: Vec<std::path::PathBuf> = self
            .store
            .layer_disks(&image)?
            .into_iter()
            .map(|d| d.path)
            .collect();
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(self.work.path())
            .map_err(io_step("creating a step directory"))?;
        let disk = dir.path().join("rw.ext4");
        vm::make_disk(&disk)?;
        let console = dir.path().join("console.log");
        let request = ExecRequest {
            argv,
            env,
            cwd: state.config.workdir(),
            user: state.config.string("User").unwrap_or_default(),
            tty: false,
            stdin: false,
            size: None,
            security: Default::default(),
        };
        let mut settings = self.opts.vm.clone();
        settings.network = network;
        // The layer tar arrives from the guest: hashed as it is written.
        let file = self.layer_file()?;
        let mut received =
            images::digest::HashingWriter::new(std::io::BufWriter::new(file.as_file()));
        let step = vm::RunStep {
            layers: &layers,
            disk: &disk,
            console: &console,
            request,
            hostname: id.clone(),
            layer: &mut received,
        };
        let code = match vm::run(&settings, step, &mut *self.out, self.signals) {
            Ok(code) => code,
            Err(vm::VmError::Failed { why, console }) => {
                // Keep the console log for the post-mortem.
                let kept = std::env::temp_dir().join(format!("husk-build-{id}-console.log"));
                let console = match std::fs::copy(&console, &kept) {
                    Ok(_) => kept.display().to_string(),
                    Err(_) => console,
                };
                return Err(vm::VmError::Failed { why, console }.into());
            }
            Err(e) => return Err(e.into()),
        };
        drop(dir); // the writable disk is no longer needed
        if code != 0 {
            return Err(StepError::NonZero { command, code });
        }
        let (mut buf, digest, _) = received.finish();
        buf.flush().map_err(io_step("writing the layer"))?;
        drop(buf);
        self.check_run_layer(&file)?;
        let f = file.reopen().map_err(io_step("reading the layer"))?;
        self.commit_file(state, f, &created_by, &key, Some(&digest))
    }

    /// `COPY` / `ADD`: sources hashed for the cache, then a layer written
    /// on the host against the image's mounted root filesystem.
    pub(super) fn copy_step(
        &mut self,
        state: &mut StageState,
        args: &CopyArgs,
        what: &'static str,
    ) -> Result<(), StepError> {
        let mut sources = Vec::new();
        for s in &args.sources {
            let s = self.expand(state, s)?;
            if what == "ADD" && copy::is_url(&s) {
                return Err(StepError::Invalid(format!(
                    "ADD from URLs is not supported ({s}): download the file into the build context"
                )));
            }
            sources.push(s);
        }
        let dest_word = self.expand(state, &args.dest)?;
        let chown = args
            .chown
            .as_ref()
            .map(|c| self.expand(state, c))
            .transpose()?;
        let chmod = match &args.chmod {
            Some(m) => {
                Some(copy::parse_chmod(&self.expand(state, m)?).map_err(StepError::Invalid)?)
            }
            None => None,
        };
        let from = args
            .from
            .as_ref()
            .map(|f| self.expand(state, f))
            .transpose()?;
        let dir_hint = dest_word.ends_with('/') || dest_word == "." || dest_word.ends_with("/.");
        let mut dest = join_workdir(&state.config.workdir(), &dest_word);
        if dir_hint && !dest.ends_with('/') {
            dest.push('/');
        }
        // Where the sources are: the context, or another stage/image.
        let from_image = match &from {
            Some(f) => Some(self.copy_source_image(f)?),
            None => None,
        };
        let mut flags = String::new();
        if let Some(f) = &from {
            flags.push_str(&format!("--from={f} "));
        }
        if let Some(c) = &chown {
            flags.push_str(&format!("--chown={c} "));
        }
        if let Some(m) = chmod {
            flags.push_str(&format!("--chmod={m:o} "));
        }
        let opts = self.opts;
        let ignore = self.ignore.clone();
        let context_tree = SourceTree {
            root: &opts.context,
            ignore: Some(&ignore),
        };
        let hash = match &from_image {
            Some(img) => {
                let mut h = <sha2::Sha256 as sha2::Digest>::new();
                sha2::Digest::update(&mut h, img.id.to_string().as_bytes());
                for s in &sources {
                    sha2::Digest::update(&mut h, b"\0");
                    sha2::Digest::update(&mut h, s.as_bytes());
                }
                format!("from:{}", hex::encode(sha2::Digest::finalize(h)))
            }
            None => {
                let resolved = context_tree.resolve(&sources)?;
                let kind = match resolved.as_slice() {
                    [one] if one.is_dir => "dir",
                    [_] => "file",
                    _ => "multi",
                };
                format!("{kind}:{}", context_tree.hash(&resolved)?)
            }
        };
        let created_by = format!("/bin/sh -c #(nop) {what} {flags}{hash} in {dest} ");
        let key = cache::key(state.image.as_ref().map(|i| &i.id), &created_by, "");
        if self.try_cache(state, &key) {
            return Ok(());
        }
        let view = RootfsView::mount(self.store, state.image.as_ref(), self.work.path())?;
        let from_view = match &from_image {
            Some(img) => Some(RootfsView::mount(self.store, Some(img), self.work.path())?),
            None => None,
        };
        let tree = match &from_view {
            Some(v) => SourceTree {
                root: v.root(),
                ignore: None,
            },
            None => context_tree,
        };
        let resolved = tree.resolve(&sources)?;
        let owner = match &chown {
            Some(c) => Some(users::resolve_chown(view.root(), c).map_err(StepError::Invalid)?),
            None => None,
        };
        let plan = CopyPlan {
            what,
            tree,
            sources: resolved,
            dest,
            owner,
            chmod,
            extract: what == "ADD" && from.is_none(),
        };
        let file = self.layer_file()?;
        {
            let mut w = LayerWriter::new(std::io::BufWriter::new(file.as_file()));
            copy::write_layer(&plan, view.root(), &mut w)?;
            let mut buf = w.finish().map_err(io_step("writing the layer"))?;
            buf.flush().map_err(io_step("writing the layer"))?;
        }
        drop(from_view);
        drop(view);
        let f = file.reopen().map_err(io_step("reading the layer"))?;
        self.commit_file(state, f, &created_by, &key, None)
    }

    /// The image `COPY --from` names: an earlier stage (name or index) or
    /// an image in the store.
    fn copy_source_image(&self, name: &str) -> Result<images::Image, StepError> {
        if let Some(j) = self.df.stage_index(name) {
            if let Some(Some(img)) = self.results.get(j) {
                return Ok(img.clone());
            }
            if self.df.stages[j].name.is_some() || name.parse::<usize>().is_ok() {
                return Err(StepError::Invalid(format!(
                    "COPY --from={name}: that stage is not built before this one"
                )));
            }
        }
        match self.store.resolve(name) {
            Ok(i) => Ok(i),
            Err(images::StoreError::NoSuchImage(_)) => Err(StepError::Invalid(format!(
                "COPY --from={name}: no such stage or image (husk pull or husk load it first)"
            ))),
            Err(e) => Err(e.into()),
        }
    }
}
