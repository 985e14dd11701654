//! Config-only instructions: ENV, ARG, LABEL, CMD, ENTRYPOINT, WORKDIR,
//! USER, EXPOSE, VOLUME, SHELL, STOPSIGNAL, HEALTHCHECK, MAINTAINER,
//! ONBUILD. Each changes the stage's config and returns the history's
//! `created_by`.

use serde_json::{json, Value};

use super::{Builder, StageState, StepError};
use crate::dockerfile::{words, Command, Healthcheck, Instruction};

/// `/bin/sh -c #(nop) ` + text, as Docker records config-only steps.
fn nop(text: &str) -> String {
    format!("/bin/sh -c #(nop)  {text}")
}

/// A command as the config stores it (shell form through the SHELL).
pub(super) fn argv(cmd: &Command, shell: &[String]) -> Vec<String> {
    match cmd {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => {
            let mut v = shell.to_vec();
            v.push(s.clone());
            v
        }
    }
}

/// Joins a path onto the working directory and cleans it (absolute).
pub(super) fn join_workdir(workdir: &str, path: &str) -> String {
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{workdir}/{path}")
    };
    format!("/{}", crate::ignore::clean(&full))
}

impl Builder<'_> {
    pub(super) fn expand(&self, state: &StageState, word: &str) -> Result<String, StepError> {
        words::expand(word, self.df.escape, &|n| state.lookup(n)).map_err(StepError::Invalid)
    }

    pub(super) fn apply_meta(
        &mut self,
        state: &mut StageState,
        instruction: &Instruction,
    ) -> Result<String, StepError> {
        Ok(match instruction {
            Instruction::Env(pairs) => {
                let mut text = Vec::new();
                for (k, v) in pairs {
                    let (k, v) = (self.expand(state, k)?, self.expand(state, v)?);
                    if k.is_empty() || k.contains('=') {
                        return Err(StepError::Invalid(format!("invalid ENV name {k:?}")));
                    }
                    state.config.set_env(&k, &v);
                    text.push(format!("{k}={v}"));
                }
                nop(&format!("ENV {}", text.join(" ")))
            }
            Instruction::Arg(decls) => {
                let mut text = Vec::new();
                for (name, default) in decls {
                    // Without a default, a value given before the first
                    // FROM carries over.
                    let inherited = self.meta_value(name);
                    let value = self.arg_value(
                        name,
                        default.as_deref(),
                        |me, d| me.expand(state, d),
                        inherited,
                    )?;
                    text.push(match default {
                        Some(d) => format!("{name}={d}"),
                        None => name.clone(),
                    });
                    state.args.push((name.clone(), value));
                }
                nop(&format!("ARG {}", text.join(" ")))
            }
            Instruction::Label(pairs) => {
                let mut text = Vec::new();
                for (k, v) in pairs {
                    let (k, v) = (self.expand(state, k)?, self.expand(state, v)?);
                    if k.is_empty() {
                        return Err(StepError::Invalid("LABEL names can not be blank".into()));
                    }
                    state.config.set_label(&k, &v);
                    text.push(format!("{k}={v}"));
                }
                nop(&format!("LABEL {}", text.join(" ")))
            }
            Instruction::Cmd(cmd) => {
                let v = argv(cmd, &state.config.shell());
                state.config.set("Cmd", json!(v));
                state.cmd_set = true;
                nop(&format!("CMD {}", json!(v)))
            }
            Instruction::Entrypoint(cmd) => {
                let v = argv(cmd, &state.config.shell());
                state.config.set("Entrypoint", json!(v));
                if !state.cmd_set {
                    state.config.remove("Cmd");
                }
                nop(&format!("ENTRYPOINT {}", json!(v)))
            }
            Instruction::Workdir(w) => {
                let w = self.expand(state, w)?;
                let full = join_workdir(&state.config.workdir(), &w);
                state.config.set("WorkingDir", json!(full));
                nop(&format!("WORKDIR {full}"))
            }
            Instruction::User(u) => {
                let u = self.expand(state, u)?;
                state.config.set("User", json!(u));
                nop(&format!("USER {u}"))
            }
            Instruction::Expose(ports) => {
                let mut text = Vec::new();
                for p in ports {
                    let p = self.expand(state, p)?;
                    let port = expose_key(&p)?;
                    state.config.add_to_set("ExposedPorts", &port);
                    text.push(port);
                }
                nop(&format!("EXPOSE {}", text.join(" ")))
            }
            Instruction::Volume(paths) => {
                let mut text = Vec::new();
                for p in paths {
                    let p = self.expand(state, p)?;
                    if p.trim().is_empty() {
                        return Err(StepError::Invalid(
                            "VOLUME specified can not be an empty string".into(),
                        ));
                    }
                    state.config.add_to_set("Volumes", &p);
                    text.push(p);
                }
                nop(&format!("VOLUME {}", json!(text)))
            }
            Instruction::Shell(v) => {
                state.config.set("Shell", json!(v));
                nop(&format!("SHELL {}", json!(v)))
            }
            Instruction::StopSignal(s) => {
                let s = self.expand(state, s)?;
                if s.parse::<husk_sandbox::signals::Signal>().is_err() {
                    return Err(StepError::Invalid(format!("invalid STOPSIGNAL {s:?}")));
                }
                state.config.set("StopSignal", json!(s));
                nop(&format!("STOPSIGNAL {s}"))
            }
            Instruction::Healthcheck(h) => {
                let v = healthcheck_json(h);
                state.config.set("Healthcheck", v.clone());
                nop(&format!("HEALTHCHECK {v}"))
            }
            Instruction::Maintainer(m) => {
                state.author = Some(m.clone());
                nop(&format!("MAINTAINER {m}"))
            }
            Instruction::Onbuild(text) => {
                let mut list = state.config.strings("OnBuild").unwrap_or_default();
                list.push(text.clone());
                state.config.set("OnBuild", json!(list));
                nop(&format!("ONBUILD {text}"))
            }
            Instruction::From { .. }
            | Instruction::Run { .. }
            | Instruction::Copy(_)
            | Instruction::Add(_) => {
                return Err(StepError::Invalid("not a config instruction".into()))
            }
        })
    }
}

/// `80` → `80/tcp`; `53/udp` kept; ranges and junk rejected.
fn expose_key(p: &str) -> Result<String, StepError> {
    let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let proto = proto.to_ascii_lowercase();
    let valid_port = port.parse::<u16>().is_ok_and(|n| n > 0);
    if !valid_port || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(StepError::Invalid(format!("invalid EXPOSE port {p:?}")));
    }
    Ok(format!("{port}/{proto}"))
}

fn healthcheck_json(h: &Healthcheck) -> Value {
    match h {
        Healthcheck::None => json!({"Test": ["NONE"]}),
        Healthcheck::Check {
            cmd,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => {
            let test = match cmd {
                Command::Exec(v) => {
                    let mut t = vec!["CMD".to_string()];
                    t.extend(v.iter().cloned());
                    t
                }
                Command::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
            };
            let mut v = json!({"Test": test});
            for (k, n) in [
                ("Interval", interval),
                ("Timeout", timeout),
                ("StartPeriod", start_period),
                ("StartInterval", start_interval),
                ("Retries", retries),
            ] {
                if *n != 0 {
                    v[k] = json!(n);
                }
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(join_workdir("/app", "sub/../x"), "/app/x");
        assert_eq!(join_workdir("/app", "/abs"), "/abs");
        assert_eq!(join_workdir("/", "."), "/");
        assert_eq!(expose_key("80").unwrap(), "80/tcp");
        assert_eq!(expose_key("53/UDP").unwrap(), "53/udp");
        assert!(expose_key("0").is_err());
        assert!(expose_key("80/xyz").is_err());
        assert_eq!(
            argv(
                &Command::Shell("echo hi".into()),
                &["/bin/sh".into(), "-c".into()]
            ),
            ["/bin/sh", "-c", "echo hi"]
        );
    }
}
