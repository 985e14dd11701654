//! `husk commit`: a running container's changes (the overlayfs upper
//! directory, streamed by the agent as a layer tar, as a build's RUN step
//! is) stored as a new top layer over its image. The container keeps
//! running meanwhile (Docker pauses it by default; a VM cannot be paused
//! here yet), so a commit of a container that is writing files captures
//! some moment of that.

use anyhow::{bail, Context, Result};
use clap::Args;
use husk_build::config::Config;
use husk_build::dockerfile::{self, Command, Instruction};
use images::{NewImage, Reference, Store};
use serde_json::json;

use super::RootArgs;

/// `husk commit` flags.
#[derive(Args, Debug)]
pub struct CommitArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Author (e.g. "Jane Doe <jane@example.com>").
    #[arg(short, long)]
    author: Option<String>,
    /// Apply a Dockerfile instruction to the image config (CMD,
    /// ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR).
    #[arg(short, long)]
    change: Vec<String>,
    /// Commit message.
    #[arg(short, long)]
    message: Option<String>,
    /// Accepted for Docker's sake: the container is never paused.
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pause: bool,
    /// The container.
    container: String,
    /// The new image's name[:tag].
    repository: Option<String>,
}

/// A command as the config stores it (shell form through /bin/sh -c).
fn argv(cmd: &Command) -> Vec<String> {
    match cmd {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
    }
}

/// Applies `--change` lines (Dockerfile syntax, parsed by the builder's
/// parser; no variable substitution) to `config`.
fn apply_changes(config: &mut Config, changes: &[String]) -> Result<()> {
    for change in changes {
        let text = format!("FROM scratch\n{change}\n");
        let df = dockerfile::parse(text.as_bytes(), "--change")
            .map_err(|e| anyhow::anyhow!("invalid change {change:?}: {e}"))?;
        let steps = df
            .stages
            .first()
            .map(|s| s.steps.as_slice())
            .unwrap_or_default();
        for step in steps {
            match &step.instruction {
                Instruction::Cmd(c) => config.set("Cmd", json!(argv(c))),
                Instruction::Entrypoint(c) => config.set("Entrypoint", json!(argv(c))),
                Instruction::Env(pairs) => {
                    for (k, v) in pairs {
                        config.set_env(k, v);
                    }
                }
                Instruction::Expose(ports) => {
                    for p in ports {
                        let key = if p.contains('/') {
                            p.clone()
                        } else {
                            format!("{p}/tcp")
                        };
                        config.add_to_set("ExposedPorts", &key);
                    }
                }
                Instruction::Label(pairs) => {
                    for (k, v) in pairs {
                        config.set_label(k, v);
                    }
                }
                Instruction::StopSignal(s) => config.set("StopSignal", json!(s)),
                Instruction::User(u) => config.set("User", json!(u)),
                Instruction::Volume(paths) => {
                    for p in paths {
                        config.add_to_set("Volumes", p);
                    }
                }
                Instruction::Workdir(w) => config.set("WorkingDir", json!(w)),
                _ => bail!("{change:?}: this instruction cannot be used with --change"),
            }
        }
    }
    Ok(())
}

/// `husk commit`: prints the new image's ID.
pub fn commit(a: CommitArgs) -> Result<i32> {
    let tag: Option<Reference> = a
        .repository
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("invalid reference format: {e}"))?;
    let rt = super::runtime(&a.root)?;
    let store = Store::open(&a.root.root)
        .with_context(|| format!("opening the image store in {}", a.root.root.display()))?;
    let c = rt.container(&a.container)?;
    let base = store
        .resolve(&c.config.image_id)
        .with_context(|| format!("the image of container {}", a.container))?;
    let base_doc = serde_json::to_value(&base.config).context("reading the image config")?;
    let mut config = Config::from_image_config(Some(&base_doc));
    apply_changes(&mut config, &a.change)?;
    let mut layer = rt.changes_layer(&a.container)?;
    let created_by = c.config.process.argv.join(" ");
    let new = NewImage {
        base: Some(&base),
        config: &config.to_value(),
        created_by: &created_by,
        author: a.author.as_deref(),
        comment: a.message.as_deref(),
    };
    let image = store.commit(&new, Some(&mut layer))?;
    let tags: Vec<Reference> = tag.into_iter().collect();
    let image = store.add_image(
        &image.manifest_digest,
        images::image::OCI_MANIFEST,
        &tags,
        None,
    )?;
    println!("{}", image.id);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_edit_the_config() {
        let mut c = Config::from_image_config(None);
        let changes = [
            "CMD [\"sleep\", \"1\"]".to_string(),
            "ENV A=b".into(),
            "WORKDIR /srv".into(),
            "EXPOSE 80".into(),
        ];
        apply_changes(&mut c, &changes).unwrap();
        let v = c.to_value();
        assert_eq!(v["Cmd"], json!(["sleep", "1"]));
        assert_eq!(v["WorkingDir"], "/srv");
        assert!(c.env().contains(&"A=b".to_string()));
        assert!(v["ExposedPorts"]["80/tcp"].is_object());
        assert!(apply_changes(&mut c, &["RUN true".into()]).is_err());
        assert!(apply_changes(&mut c, &["BOGUS x".into()]).is_err());
    }
}
