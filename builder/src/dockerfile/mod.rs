//! The Dockerfile parser: untrusted text in, typed instructions out, every
//! error naming the file and line (`Dockerfile:7: unknown instruction: FORM`).
//!
//! Parsing is purely syntactic: variables are substituted later, by the
//! build engine, when ARG and ENV values are known ([`words::expand`]).

mod instr;
mod lines;
pub mod words;

#[cfg(test)]
mod tests;

pub use lines::{logical_lines, Lines, Logical};

/// Largest Dockerfile accepted.
pub const MAX_SIZE: usize = 4 << 20;

/// A parse error at a line of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ParseError {
    /// The Dockerfile's name as the user gave it.
    pub file: String,
    /// 1-based line number (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    fn render(&self) -> String {
        match self.line {
            0 => format!("{}: {}", self.file, self.message),
            l => format!("{}:{l}: {}", self.file, self.message),
        }
    }
}

/// A command in shell form (run by the stage's SHELL) or exec form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `RUN echo hi`: one string for the shell.
    Shell(String),
    /// `RUN ["echo", "hi"]`: argv as given.
    Exec(Vec<String>),
}

/// COPY and ADD arguments (words not yet substituted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyArgs {
    /// Source words.
    pub sources: Vec<String>,
    /// Destination word.
    pub dest: String,
    /// `--from=stage|image`.
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=octal`.
    pub chmod: Option<String>,
}

/// HEALTHCHECK settings, stored in the image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK [opts] CMD ...`.
    Check {
        /// The test command.
        cmd: Command,
        /// Nanoseconds (0: default).
        interval: u64,
        /// Nanoseconds.
        timeout: u64,
        /// Nanoseconds.
        start_period: u64,
        /// Nanoseconds.
        start_interval: u64,
        /// Consecutive failures before unhealthy (0: default).
        retries: u64,
    },
}

/// One instruction with its (unsubstituted) arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM [--platform=p] image [AS name]`.
    From {
        /// The image (or stage) word.
        image: String,
        /// The stage name (lower-cased).
        name: Option<String>,
        /// `--platform`, if given.
        platform: Option<String>,
    },
    /// `RUN [--network=default|none] cmd`.
    Run {
        /// The command.
        cmd: Command,
        /// `--network`, if given.
        network: Option<String>,
    },
    /// `COPY`.
    Copy(CopyArgs),
    /// `ADD`.
    Add(CopyArgs),
    /// `WORKDIR path`.
    Workdir(String),
    /// `ENV k=v ...` (or the legacy `ENV k v`).
    Env(Vec<(String, String)>),
    /// `ARG name[=default] ...`.
    Arg(Vec<(String, Option<String>)>),
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `EXPOSE port[/proto] ...`.
    Expose(Vec<String>),
    /// `USER user[:group]`.
    User(String),
    /// `LABEL k=v ...`.
    Label(Vec<(String, String)>),
    /// `VOLUME path ...` or JSON.
    Volume(Vec<String>),
    /// `SHELL ["exe", "arg"]`.
    Shell(Vec<String>),
    /// `STOPSIGNAL sig`.
    StopSignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `MAINTAINER name` (deprecated; sets the author).
    Maintainer(String),
    /// `ONBUILD instruction` (stored in the image, not run).
    Onbuild(String),
}

/// An instruction as written, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based line number where it starts.
    pub line: usize,
    /// The instruction text (continuations joined), for output and history.
    pub original: String,
    /// The parsed instruction.
    pub instruction: Instruction,
}

/// A build stage: its FROM and the steps after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The FROM step.
    pub from: Step,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// The steps after FROM.
    pub steps: Vec<Step>,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character.
    pub escape: char,
    /// ARG steps before the first FROM (usable in FROM lines).
    pub meta_args: Vec<Step>,
    /// The stages in order.
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// The index of the stage named `name` (or numbered, `0`, `1`...).
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) = self
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(i);
        }
        name.parse::<usize>()
            .ok()
            .filter(|i| *i < self.stages.len())
    }
}

/// Parses a Dockerfile; `file` names it in errors.
pub fn parse(source: &[u8], file: &str) -> Result<Dockerfile, ParseError> {
    let err = |line: usize, message: String| ParseError {
        file: file.to_string(),
        line,
        message,
    };
    if source.len() > MAX_SIZE {
        return Err(err(0, format!("larger than {MAX_SIZE} bytes")));
    }
    let text = std::str::from_utf8(source).map_err(|e| {
        let line = source[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        err(line, "not valid UTF-8".into())
    })?;
    let lines = logical_lines(text).map_err(|(l, m)| err(l, m))?;
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for logical in &lines.lines {
        let instruction =
            instr::parse_line(&logical.text, lines.escape).map_err(|m| err(logical.line, m))?;
        let step = Step {
            line: logical.line,
            original: logical.text.clone(),
            instruction,
        };
        match (&step.instruction, stages.last_mut()) {
            (Instruction::From { name, .. }, _) => {
                if let Some(n) = name {
                    if stages.iter().any(|s| s.name.as_ref() == Some(n)) {
                        return Err(err(step.line, format!("duplicate stage name {n:?}")));
                    }
                }
                stages.push(Stage {
                    name: name.clone(),
                    from: step,
                    steps: Vec::new(),
                });
            }
            (Instruction::Arg(_), None) => meta_args.push(step),
            (_, None) => return Err(err(
                step.line,
                "no build stage in current context: the first instruction must be FROM (or ARG)"
                    .into(),
            )),
            (_, Some(stage)) => stage.steps.push(step),
        }
    }
    if stages.is_empty() {
        return Err(err(
            0,
            "file with no instructions: a Dockerfile needs a FROM".into(),
        ));
    }
    Ok(Dockerfile {
        escape: lines.escape,
        meta_args,
        stages,
    })
}
