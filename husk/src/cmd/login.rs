//! `husk login` and `husk logout`: registry credentials kept where Docker
//! keeps them (`images::registry::CredentialStore`), checked against the
//! registry before they are stored.

use std::io::{BufRead, Write};
use std::os::fd::AsFd;

use anyhow::{bail, Context};
use clap::Args;
use images::reference::DOCKER_HUB;
use images::registry::{self, CredentialStore, Credentials, Options};
use rustix::termios::{isatty, tcgetattr, tcsetattr, LocalModes, OptionalActions};

/// `husk login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry (host[:port]); Docker Hub if absent.
    pub server: Option<String>,
    /// Username.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin: this one is visible to other users).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// Use plain HTTP for this registry (always done for localhost).
    #[arg(long)]
    pub insecure: bool,
}

/// `husk logout`.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry (host[:port]); Docker Hub if absent.
    pub server: Option<String>,
}

/// The registry host a `login`/`logout` argument names: `https://reg/v2/`
/// → `reg`, nothing → Docker Hub.
fn registry_host(server: Option<&str>) -> anyhow::Result<String> {
    let Some(s) = server else {
        return Ok(DOCKER_HUB.to_string());
    };
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '@') {
        bail!("invalid registry address {s:?}");
    }
    Ok(match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        h => h.to_string(),
    })
}

/// Runs `husk login`.
pub fn login(a: LoginArgs) -> anyhow::Result<i32> {
    let host = registry_host(a.server.as_deref())?;
    if a.password.is_some() && a.password_stdin {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    if a.password_stdin && a.username.is_none() {
        bail!("Must provide --username with --password-stdin");
    }
    if a.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let stdin = std::io::stdin();
    let interactive = isatty(stdin.as_fd());
    let username = match a.username {
        Some(u) => u,
        None if interactive => prompt("Username: ", true)?,
        None => bail!("Cannot perform an interactive login from a non TTY device"),
    };
    let password = match (a.password, a.password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            let mut line = String::new();
            stdin
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) if interactive => prompt("Password: ", false)?,
        (None, false) => bail!("Cannot perform an interactive login from a non TTY device"),
    };
    if username.is_empty() {
        bail!("Username cannot be empty");
    }
    if password.is_empty() {
        bail!("Password cannot be empty");
    }
    let creds = Credentials { username, password };
    let opts = Options {
        insecure: a.insecure,
        credentials: Some(creds.clone()),
    };
    registry::Client::verify_login(&host, &opts)
        .with_context(|| format!("logging in to {host}"))?;
    let mut store = CredentialStore::open_default()?;
    store
        .store(&host, &creds)
        .with_context(|| format!("storing the credentials in {}", store.path().display()))?;
    println!("Login Succeeded");
    Ok(0)
}

/// Runs `husk logout`.
pub fn logout(a: LogoutArgs) -> anyhow::Result<i32> {
    let host = registry_host(a.server.as_deref())?;
    let shown = registry::server_address(&host);
    let mut store = CredentialStore::open_default()?;
    if store.erase(&host)? {
        println!("Removing login credentials for {shown}");
    } else {
        println!("Not logged in to {shown}");
    }
    Ok(0)
}

/// Reads one line from the terminal on stdin, echoed or not.
fn prompt(label: &str, echo: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    eprint!("{label}");
    std::io::stderr().flush().ok();
    let fd = stdin.as_fd();
    let saved = tcgetattr(fd).context("reading the terminal's settings")?;
    if !echo {
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(fd, OptionalActions::Now, &quiet).context("turning echo off")?;
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if !echo {
        let _ = tcsetattr(fd, OptionalActions::Now, &saved);
        eprintln!();
    }
    read.context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_arguments_name_a_host() {
        assert_eq!(registry_host(None).unwrap(), DOCKER_HUB);
        assert_eq!(
            registry_host(Some("https://index.docker.io/v1/")).unwrap(),
            DOCKER_HUB
        );
        assert_eq!(
            registry_host(Some("127.0.0.1:5000")).unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(
            registry_host(Some("http://reg.example:5000/v2/")).unwrap(),
            "reg.example:5000"
        );
        for bad in ["", "https://", "a b", "user@host"] {
            assert!(registry_host(Some(bad)).is_err(), "{bad}");
        }
    }
}
