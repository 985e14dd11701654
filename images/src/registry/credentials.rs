//! Registry credentials in Docker's client configuration
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), so
//! `husk login` and `docker login` share them.
//!
//! Each credential belongs to one registry host: a lookup for `host`
//! matches only an entry whose server address names exactly that host
//! (Docker's `ConvertToHostname`: scheme and path dropped), never another
//! registry's. Where they are kept follows Docker: a credential helper for
//! that host (`credHelpers`), else the default helper (`credsStore`), else
//! base64 `auth` in `auths` (the file is then written 0600, atomically,
//! and keys husk does not know are kept). Helpers are the
//! `docker-credential-<name>` programs, spoken to as Docker does (`get`,
//! `store`, `erase`, JSON on stdin/stdout).

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::reference::DOCKER_HUB;

/// The server address Docker keys Docker Hub's credentials by.
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// The largest config file or helper answer read.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Username and password for a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl Credentials {
    /// `Basic <base64>` header value.
    pub(crate) fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// The stored credentials for registry `host` (a reference's registry
    /// part), if any. Unreadable configuration counts as none (with a
    /// warning in the log), as a pull without credentials may still work.
    pub fn lookup(host: &str) -> Option<Credentials> {
        let store = match CredentialStore::open_default() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("registry credentials: {e}");
                return None;
            }
        };
        match store.get(host) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("registry credentials for {host}: {e}");
                None
            }
        }
    }
}

/// Errors reading or writing stored credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Reading or writing the configuration file failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The configuration file is not JSON of Docker's shape.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A credential helper failed.
    #[error("credential helper docker-credential-{helper}: {message}")]
    Helper {
        /// The helper's name.
        helper: String,
        /// What went wrong (its output).
        message: String,
    },
    /// Neither `$DOCKER_CONFIG` nor `$HOME` is set.
    #[error("cannot find the Docker configuration: neither $DOCKER_CONFIG nor $HOME is set")]
    NoHome,
}

/// The key `auths` and the helpers use for registry `host`.
pub fn server_address(host: &str) -> String {
    if host == DOCKER_HUB || host == "index.docker.io" || host == "registry-1.docker.io" {
        DOCKER_HUB_SERVER.to_string()
    } else {
        host.to_string()
    }
}

/// The registry host a server address names (Docker's
/// `ConvertToHostname`): `https://reg:5000/v2/` → `reg:5000`.
fn hostname_of(address: &str) -> &str {
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    rest.split('/').next().unwrap_or(rest)
}

/// Whether `key` (an `auths` or `credHelpers` key) belongs to `server`.
fn same_registry(key: &str, server: &str) -> bool {
    key == server || hostname_of(key).eq_ignore_ascii_case(hostname_of(server))
}

/// Docker's client configuration file, as far as credentials go.
#[derive(Debug)]
pub struct CredentialStore {
    path: PathBuf,
    /// The whole file (unknown keys are written back unchanged).
    config: Map<String, Value>,
}

impl CredentialStore {
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn default_path() -> Result<PathBuf, CredentialsError> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Ok(PathBuf::from(dir).join("config.json"));
        }
        let home = std::env::var_os("HOME").ok_or(CredentialsError::NoHome)?;
        Ok(PathBuf::from(home).join(".docker/config.json"))
    }

    /// Opens the default configuration (missing: empty).
    pub fn open_default() -> Result<CredentialStore, CredentialsError> {
        Self::open(&Self::default_path()?)
    }

    /// Opens the configuration at `path` (missing: empty).
    pub fn open(path: &Path) -> Result<CredentialStore, CredentialsError> {
        let io_err = |source| CredentialsError::Io {
            path: path.display().to_string(),
            source,
        };
        let invalid = |message: String| CredentialsError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let config = match std::fs::File::open(path) {
            Ok(f) => {
                let mut data = Vec::new();
                io::Read::read_to_end(&mut io::Read::take(f, MAX_CONFIG_BYTES + 1), &mut data)
                    .map_err(io_err)?;
                if data.len() as u64 > MAX_CONFIG_BYTES {
                    return Err(invalid("larger than 4 MiB".into()));
                }
                if data.iter().all(u8::is_ascii_whitespace) {
                    Map::new()
                } else {
                    match serde_json::from_slice(&data).map_err(|e| invalid(e.to_string()))? {
                        Value::Object(m) => m,
                        _ => return Err(invalid("not a JSON object".into())),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(io_err(e)),
        };
        Ok(CredentialStore {
            path: path.to_path_buf(),
            config,
        })
    }

    /// The file this store reads and writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The helper keeping `server`'s credentials, if any.
    fn helper_for(&self, server: &str) -> Option<String> {
        let specific = self.config.get("credHelpers").and_then(Value::as_object);
        let specific = specific.and_then(|m| {
            m.iter()
                .find(|(k, _)| same_registry(k, server))
                .and_then(|(_, v)| v.as_str())
        });
        let default = self.config.get("credsStore").and_then(Value::as_str);
        specific
            .or(default)
            .filter(|h| !h.is_empty())
            .map(String::from)
    }

    fn auths(&self) -> Option<&Map<String, Value>> {
        self.config.get("auths").and_then(Value::as_object)
    }

    /// The credentials stored for registry `host`.
    pub fn get(&self, host: &str) -> Result<Option<Credentials>, CredentialsError> {
        let server = server_address(host);
        if let Some(helper) = self.helper_for(&server) {
            return helper_get(&helper, &server);
        }
        let Some(entry) = self
            .auths()
            .and_then(|a| a.iter().find(|(k, _)| same_registry(k, &server)))
            .map(|(_, v)| v)
        else {
            return Ok(None);
        };
        let invalid = |message: String| CredentialsError::Invalid {
            path: self.path.display().to_string(),
            message,
        };
        let Some(auth) = entry.get("auth").and_then(Value::as_str) else {
            return Ok(None);
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| invalid(format!("auths.{server}.auth: {e}")))?;
        let text = String::from_utf8(raw)
            .map_err(|_| invalid(format!("auths.{server}.auth: not UTF-8")))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| invalid(format!("auths.{server}.auth: not user:password")))?;
        Ok(Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        }))
    }

    /// Stores `creds` for registry `host` (in its helper, or in the file).
    pub fn store(&mut self, host: &str, creds: &Credentials) -> Result<(), CredentialsError> {
        let server = server_address(host);
        let entry = match self.helper_for(&server) {
            Some(helper) => {
                helper_store(&helper, &server, creds)?;
                // Docker records that a login exists, without secrets.
                Value::Object(Map::new())
            }
            None => {
                let raw = format!("{}:{}", creds.username, creds.password);
                let auth = base64::engine::general_purpose::STANDARD.encode(raw);
                serde_json::json!({ "auth": auth })
            }
        };
        let auths = self
            .config
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Some(a) = auths.as_object_mut() {
            a.retain(|k, _| !same_registry(k, &server));
            a.insert(server, entry);
        }
        self.save()
    }

    /// Removes the credentials of registry `host`; false if there were
    /// none.
    pub fn erase(&mut self, host: &str) -> Result<bool, CredentialsError> {
        let server = server_address(host);
        let mut found = false;
        if let Some(a) = self.config.get_mut("auths").and_then(Value::as_object_mut) {
            let before = a.len();
            a.retain(|k, _| !same_registry(k, &server));
            found = a.len() != before;
        }
        if let Some(helper) = self.helper_for(&server) {
            found |= helper_erase(&helper, &server)?;
        }
        if found {
            self.save()?;
        }
        Ok(found)
    }

    /// Writes the file: 0600, in a 0700 directory if it creates one,
    /// through a temporary file renamed over the old one.
    fn save(&self) -> Result<(), CredentialsError> {
        let io_err = |source| CredentialsError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
        let mut data =
            serde_json::to_vec_pretty(&self.config).map_err(|e| CredentialsError::Io {
                path: self.path.display().to_string(),
                source: io::Error::other(e),
            })?;
        data.push(b'\n');
        let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&data).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io_err)
    }
}

/// Runs `docker-credential-<helper> <verb>` with `input` on stdin; its
/// exit status and bounded stdout.
fn run_helper(helper: &str, verb: &str, input: &str) -> Result<(bool, String), CredentialsError> {
    let fail = |message: String| CredentialsError::Helper {
        helper: helper.to_string(),
        message,
    };
    if helper.contains('/') {
        return Err(fail("a helper name must not contain '/'".into()));
    }
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.stdout.len() as u64 > MAX_CONFIG_BYTES {
        return Err(fail("answer larger than 4 MiB".into()));
    }
    let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if text.is_empty() {
        text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    }
    Ok((out.status.success(), text))
}

/// Whether a helper's failure text means "nothing stored".
fn is_not_found(text: &str) -> bool {
    text.contains("credentials not found")
}

fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>, CredentialsError> {
    let (ok, text) = run_helper(helper, "get", server)?;
    if !ok {
        return match is_not_found(&text) {
            true => Ok(None),
            false => Err(CredentialsError::Helper {
                helper: helper.to_string(),
                message: text,
            }),
        };
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| CredentialsError::Helper {
        helper: helper.to_string(),
        message: format!("invalid answer: {e}"),
    })?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (username, password) = (field("Username"), field("Secret"));
    Ok(
        (!username.is_empty() || !password.is_empty())
            .then_some(Credentials { username, password }),
    )
}

fn helper_store(helper: &str, server: &str, creds: &Credentials) -> Result<(), CredentialsError> {
    let input = serde_json::json!({
        "ServerURL": server,
        "Username": creds.username,
        "Secret": creds.password,
    });
    match run_helper(helper, "store", &input.to_string())? {
        (true, _) => Ok(()),
        (false, message) => Err(CredentialsError::Helper {
            helper: helper.to_string(),
            message,
        }),
    }
}

fn helper_erase(helper: &str, server: &str) -> Result<bool, CredentialsError> {
    match run_helper(helper, "erase", server)? {
        (true, _) => Ok(true),
        (false, text) if is_not_found(&text) => Ok(false),
        (false, message) => Err(CredentialsError::Helper {
            helper: helper.to_string(),
            message,
        }),
    }
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
