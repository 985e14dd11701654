//! runc's command line: global flags, then a command and its flags. A
//! usage error is one line and exit status 1, as runc's.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where container state lives unless `--root` says otherwise.
pub const DEFAULT_ROOT: &str = "/run/husk-oci";

/// The OCI runtime spec versions this runtime reads (config.json's
/// `ociVersion` must be 1.x; see husk-bundle).
pub const OCI_VERSION_MIN: &str = "1.0.0";
/// The newest spec version whose fields are known.
pub const OCI_VERSION_MAX: &str = "1.2.0";

/// An OCI runtime whose containers each run in their own KVM microVM.
#[derive(Parser, Debug)]
#[command(
    name = "husk-oci",
    disable_version_flag = true,
    about,
    after_help = "Global flags go before the command, as with runc."
)]
pub struct Cli {
    /// Directory of the container state.
    #[arg(long, global = true, default_value = DEFAULT_ROOT, value_name = "DIR")]
    pub root: PathBuf,
    /// File errors are appended to (as well as printed).
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Format of the --log file.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Accepted for runc compatibility (a VM has no host cgroup to place).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for runc compatibility (ignored).
    #[arg(long, global = true, hide = true, value_name = "VALUE")]
    pub rootless: Option<String>,
    /// Accepted for runc compatibility (checkpoints are not supported).
    #[arg(long, global = true, hide = true, value_name = "PATH")]
    pub criu: Option<PathBuf>,
    /// Print the version.
    #[arg(long, short = 'v')]
    pub version: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Format of the `--log` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `time="..." level=error msg="..."` lines.
    Text,
    /// `{"level":"error","msg":"...","time":"..."}` lines.
    Json,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Start the process of a created container.
    Start(IdArg),
    /// Print a container's state (OCI state JSON).
    State(IdArg),
    /// Send a signal to a container's process.
    Kill(KillArgs),
    /// Remove a container.
    Delete(DeleteArgs),
    /// Run a new process in a running container.
    Exec(ExecArgs),
    /// List a container's host processes.
    Ps(PsArgs),
    /// Print what this runtime supports (JSON).
    Features,
    /// Print the version.
    Version,
}

/// `create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The bundle directory (config.json and the root filesystem).
    #[arg(long, short = 'b', default_value = ".", value_name = "DIR")]
    pub bundle: PathBuf,
    /// Write the pid of the process that lives as long as the container.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the terminal's master fd (SCM_RIGHTS).
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility (the guest agent sets up the root).
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Host fds to pass on; only 0 is possible (a VM cannot get host fds).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub preserve_fds: u32,
    /// The container ID.
    pub id: String,
}

/// A command that takes only the container ID.
#[derive(Args, Debug)]
pub struct IdArg {
    /// The container ID.
    pub id: String,
}

/// `kill`.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal every process of the container (the init process: the rest
    /// end with it).
    #[arg(long, short = 'a')]
    pub all: bool,
    /// The container ID.
    pub id: String,
    /// Signal name or number.
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

/// `delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Kill a running container first; a missing one is not an error.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// The container ID.
    pub id: String,
}

/// `exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// OCI process spec (JSON) of the process; replaces the arguments.
    #[arg(long, short = 'p', value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Allocate a terminal.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Unix socket that receives the terminal's master fd (SCM_RIGHTS).
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Write the pid of the process that lives as long as this one.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Return once the process runs (a host process relays it).
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Working directory.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// Environment variable (KEY=VALUE), added to the container's.
    #[arg(long, short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// User as uid[:gid] or a name of the container's /etc/passwd.
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: Option<String>,
    /// Supplementary group IDs.
    #[arg(long, short = 'g', value_name = "GID")]
    pub additional_gids: Vec<u32>,
    /// Set no_new_privs for the process.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Host fds to pass on; only 0 is possible.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub preserve_fds: u32,
    /// Accepted for runc compatibility (host security labels do not apply
    /// behind the VM boundary).
    #[arg(long, hide = true, value_name = "LABEL")]
    pub process_label: Option<String>,
    /// Accepted for runc compatibility (see --process-label).
    #[arg(long, hide = true, value_name = "PROFILE")]
    pub apparmor: Option<String>,
    /// The container ID.
    pub id: String,
    /// The command and its arguments (without --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `ps`.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// `table`, or `json` (a list of host pids).
    #[arg(long, short = 'f', value_enum, default_value_t = PsFormat::Table)]
    pub format: PsFormat,
    /// The container ID.
    pub id: String,
    /// ps(1) options (accepted; the table has fixed columns).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// Output of `ps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PsFormat {
    /// PID and command columns.
    Table,
    /// A JSON list of pids.
    Json,
}

/// The outcome of parsing.
#[derive(Debug)]
pub enum Parsed {
    /// Run this.
    Run(Box<Cli>, Box<Command>),
    /// Print `text` to stdout (help, version) or stderr (an error) and exit
    /// with `code`.
    Exit {
        /// What to print.
        text: String,
        /// Exit status.
        code: i32,
    },
}

/// The version text (`--version`, `version`).
pub fn version_text() -> String {
    format!(
        "husk-oci version {}\nspec: {OCI_VERSION_MAX}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Parses `args` (the program name first).
pub fn parse<I, T>(args: I) -> Parsed
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    use clap::error::ErrorKind;
    let mut cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Parsed::Exit {
                    text: e.render().to_string(),
                    code: 0,
                },
                _ => Parsed::Exit {
                    text: format!("husk-oci: {}\n", first_line(&e.to_string())),
                    code: 1,
                },
            }
        }
    };
    match cli.command.take() {
        Some(Command::Version) => Parsed::Exit {
            text: version_text(),
            code: 0,
        },
        _ if cli.version => Parsed::Exit {
            text: version_text(),
            code: 0,
        },
        Some(command) => Parsed::Run(Box::new(cli), Box::new(command)),
        None => Parsed::Exit {
            text: "husk-oci: no command given (see husk-oci --help)\n".into(),
            code: 1,
        },
    }
}

/// The message of clap's error text, without its `error: ` prefix, tips
/// and usage.
fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or(text);
    line.trim_start_matches("error: ").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> (Box<Cli>, Command) {
        let argv = std::iter::once("husk-oci").chain(args.iter().copied());
        match parse(argv) {
            Parsed::Run(cli, cmd) => (cli, *cmd),
            Parsed::Exit { text, code } => panic!("{args:?}: exit {code}: {text}"),
        }
    }

    fn exit(args: &[&str]) -> (String, i32) {
        let argv = std::iter::once("husk-oci").chain(args.iter().copied());
        match parse(argv) {
            Parsed::Run(_, cmd) => panic!("{args:?} parsed as {cmd:?}"),
            Parsed::Exit { text, code } => (text, code),
        }
    }

    #[test]
    fn containerd_runc_shim_command_lines() {
        let (cli, cmd) = run(&[
            "--root",
            "/run/containerd/runc/default",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "--console-socket",
            "/tmp/pty.sock",
            "t2",
        ]);
        assert_eq!(cli.root, PathBuf::from("/run/containerd/runc/default"));
        assert_eq!(
            cli.log.as_deref(),
            Some(std::path::Path::new("/b/log.json"))
        );
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(cli.systemd_cgroup);
        let Command::Create(c) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(c.bundle, PathBuf::from("/b"));
        assert_eq!(c.pid_file, Some(PathBuf::from("/b/init.pid")));
        assert_eq!(c.console_socket, Some(PathBuf::from("/tmp/pty.sock")));
        assert_eq!((c.id.as_str(), c.preserve_fds), ("t2", 0));

        let (_, cmd) = run(&[
            "--log-format=json",
            "exec",
            "--process",
            "/tmp/runc-process1",
            "--detach",
            "--pid-file",
            "/b/e1.pid",
            "t2",
        ]);
        let Command::Exec(e) = cmd else {
            panic!("{cmd:?}")
        };
        assert!(e.detach && e.command.is_empty() && !e.tty);
        assert_eq!(e.process, Some(PathBuf::from("/tmp/runc-process1")));

        let (_, cmd) = run(&["kill", "--all", "t2", "9"]);
        let Command::Kill(k) = cmd else {
            panic!("{cmd:?}")
        };
        assert!(k.all);
        assert_eq!((k.id.as_str(), k.signal.as_str()), ("t2", "9"));
        let (_, cmd) = run(&["ps", "--format", "json", "t2"]);
        assert!(matches!(
            cmd,
            Command::Ps(PsArgs {
                format: PsFormat::Json,
                ..
            })
        ));
        let (_, cmd) = run(&["delete", "--force", "t2"]);
        assert!(matches!(
            cmd,
            Command::Delete(DeleteArgs { force: true, .. })
        ));
    }

    #[test]
    fn conmon_and_user_command_lines() {
        let (cli, cmd) = run(&["create", "-b", "/u", "--pid-file", "/u/pidfile", "abc"]);
        assert_eq!(cli.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(cli.log_format, LogFormat::Text);
        assert!(matches!(cmd, Command::Create(_)));
        let (_, cmd) = run(&["kill", "abc"]);
        let Command::Kill(k) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(k.signal, "SIGTERM");
        let (_, cmd) = run(&[
            "exec",
            "-t",
            "--cwd",
            "/tmp",
            "-e",
            "A=1",
            "-e",
            "B=2",
            "-u",
            "1000:1000",
            "abc",
            "sh",
            "-c",
            "ls -la",
        ]);
        let Command::Exec(e) = cmd else {
            panic!("{cmd:?}")
        };
        assert!(e.tty);
        assert_eq!(e.env, ["A=1", "B=2"]);
        assert_eq!(e.command, ["sh", "-c", "ls -la"]);
        assert_eq!(
            (e.cwd.as_deref(), e.user.as_deref()),
            (Some("/tmp"), Some("1000:1000"))
        );
        for args in [&["state", "abc"][..], &["start", "abc"], &["features"]] {
            run(args);
        }
    }

    #[test]
    fn version_help_and_errors() {
        for args in [&["--version"][..], &["-v"], &["version"]] {
            let (text, code) = exit(args);
            assert_eq!(code, 0);
            assert!(text.starts_with("husk-oci version "), "{text}");
            assert!(text.contains("spec: "), "{text}");
        }
        let (text, code) = exit(&["--help"]);
        assert_eq!(code, 0);
        assert!(text.contains("create"), "{text}");
        for args in [
            &["frobnicate", "x"][..],
            &["create", "--bogus", "x"],
            &["--log-format", "xml", "state", "x"],
            &["ps", "--format", "yaml", "x"],
            &["state"],
            &[],
        ] {
            let (text, code) = exit(args);
            assert_eq!(code, 1, "{args:?}");
            assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
            assert!(text.starts_with("husk-oci: "), "{text}");
        }
        let (text, _) = exit(&["create", "--bogus", "x"]);
        assert!(text.contains("--bogus"), "{text}");
    }
}
