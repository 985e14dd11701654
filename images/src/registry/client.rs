//! HTTP plumbing: base URL, authentication, error mapping.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::Response;
use ureq::Body;

use super::auth::parse_challenge;
use super::credentials::Credentials;
use super::RegistryError;
use crate::reference::{Reference, DOCKER_HUB};

/// Connection options.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Use plain HTTP (always done for `localhost`, 127.0.0.0/8 and `::1`;
    /// see [`is_loopback`]).
    pub insecure: bool,
    /// Credentials; `None` = look them up (`Credentials::lookup`).
    pub credentials: Option<Credentials>,
}

/// A client for one repository of one registry.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    /// Whether the registry is reached over plain HTTP (then so may be its
    /// token realm).
    plain_http: bool,
    repository: String,
    credentials: Option<Credentials>,
    authorization: Mutex<Option<String>>,
    scope: String,
}

/// Whether registry `host` (`name[:port]`, `[v6][:port]`) is this
/// machine: `localhost`, an address in 127.0.0.0/8 or `::1`. Addresses
/// are parsed, so a name such as `127.example.com` is not loopback.
pub fn is_loopback(host: &str) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        let Some((addr, port)) = rest.split_once(']') else {
            return false;
        };
        let port_ok = port.is_empty() || port.strip_prefix(':').is_some_and(is_port);
        return port_ok && addr.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return false,
        None => host,
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Checks a bearer challenge's token realm: credentials go there, so it
/// must be https unless the registry itself is reached over plain HTTP
/// (`--insecure` or a loopback registry).
fn check_realm(realm: &str, plain_http_allowed: bool) -> Result<(), String> {
    let scheme = realm.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("https") => Ok(()),
        Some("http") if plain_http_allowed => Ok(()),
        _ => Err(format!(
            "refusing token realm {realm:?}: it must be an https URL for a registry reached over https"
        )),
    }
}

/// The registry's error message from a response body, if any.
fn error_message(resp: &mut Response<Body>) -> String {
    let status = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 10)
        .read_to_string()
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let msgs: Vec<String> = v["errors"]
        .as_array()
        .map(|errs| {
            errs.iter()
                .map(|e| {
                    let code = e["code"]
                        .as_str()
                        .unwrap_or("")
                        .to_lowercase()
                        .replace('_', " ");
                    let msg = e["message"].as_str().unwrap_or("");
                    format!("{code}: {msg}")
                })
                .collect()
        })
        .unwrap_or_default();
    if msgs.is_empty() {
        format!("HTTP {status}")
    } else {
        msgs.join("; ")
    }
}

impl Client {
    /// Connects to the registry of `reference` (and authenticates if asked to).
    pub fn new(reference: &Reference, opts: &Options, push: bool) -> Result<Client, RegistryError> {
        let scope = format!(
            "repository:{}:{}",
            reference.repository,
            if push { "pull,push" } else { "pull" }
        );
        let client = Client::connect(&reference.registry, &reference.repository, opts, scope);
        client.ping()?;
        Ok(client)
    }

    /// Checks that `opts`' credentials (or the stored ones) are accepted
    /// by registry `host`, as `docker login` does: `GET /v2/` answered 200
    /// once authenticated (for a bearer registry: a token was granted).
    pub fn verify_login(host: &str, opts: &Options) -> Result<(), RegistryError> {
        let client = Client::connect(host, "", opts, String::new());
        if client.credentials.is_none() {
            return Err(RegistryError::Auth(format!(
                "{}: no credentials",
                client.base
            )));
        }
        client.ping()?;
        let url = format!("{}/v2/", client.base);
        let mut req = client.agent.get(&url);
        if let Some(h) = client.auth_header() {
            req = req.header("Authorization", h);
        }
        let mut resp = req.call().map_err(|e| http_err("GET", &url, e))?;
        match resp.status().as_u16() {
            200 => Ok(()),
            401 => Err(RegistryError::Auth(format!(
                "{}: unauthorized: incorrect username or password",
                client.base
            ))),
            _ => Err(client.status_error(format!("GET {url}"), &mut resp)),
        }
    }

    /// A client of `repository` at registry `host` (nothing sent yet).
    fn connect(host: &str, repository: &str, opts: &Options, scope: String) -> Client {
        let address = if host == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            host
        };
        let plain_http = opts.insecure || is_loopback(address);
        let scheme = if plain_http { "http" } else { "https" };
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .timeout_per_write(Some(Duration::from_secs(120)))
            .user_agent("husk")
            .build()
            .new_agent();
        Client {
            agent,
            base: format!("{scheme}://{address}"),
            plain_http,
            repository: repository.to_string(),
            credentials: opts
                .credentials
                .clone()
                .or_else(|| Credentials::lookup(host)),
            authorization: Mutex::new(None),
            scope,
        }
    }

    /// `<base>/v2/<repository>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    /// Resolves a `Location` header against the registry base.
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}/{}", self.base, location.trim_start_matches('/'))
        }
    }

    fn auth_header(&self) -> Option<String> {
        self.authorization.lock().ok().and_then(|a| a.clone())
    }

    /// GET /v2/ and answer the authentication challenge, if any.
    fn ping(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base);
        let resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| http_err("GET", &url, e))?;
        if resp.status() == 401 {
            self.authenticate(&resp)?;
        }
        Ok(())
    }

    fn authenticate(&self, resp: &Response<Body>) -> Result<(), RegistryError> {
        let header = resp
            .headers()
            .get("www-authenticate")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let ch = parse_challenge(header)
            .ok_or_else(|| RegistryError::Auth(format!("{}: no usable challenge", self.base)))?;
        let value = match ch.scheme.as_str() {
            "basic" => self
                .credentials
                .as_ref()
                .map(Credentials::basic)
                .ok_or_else(|| {
                    RegistryError::Auth(format!("{}: credentials required", self.base))
                })?,
            "bearer" => format!("Bearer {}", self.token(&ch.params)?),
            other => {
                return Err(RegistryError::Auth(format!(
                    "{}: unsupported scheme {other}",
                    self.base
                )))
            }
        };
        if let Ok(mut a) = self.authorization.lock() {
            *a = Some(value);
        }
        Ok(())
    }

    fn token(
        &self,
        params: &std::collections::HashMap<String, String>,
    ) -> Result<String, RegistryError> {
        let realm = params.get("realm").ok_or_else(|| {
            RegistryError::Auth(format!("{}: bearer challenge without realm", self.base))
        })?;
        check_realm(realm, self.plain_http)
            .map_err(|m| RegistryError::Auth(format!("{}: {m}", self.base)))?;
        let mut req = self.agent.get(realm);
        if !self.scope.is_empty() {
            req = req.query("scope", &self.scope);
        }
        if let Some(s) = params.get("service") {
            req = req.query("service", s);
        }
        if let Some(c) = &self.credentials {
            req = req.header("Authorization", c.basic());
        }
        let mut resp = req.call().map_err(|e| http_err("GET", realm, e))?;
        if resp.status() != 200 {
            let m = error_message(&mut resp);
            return Err(RegistryError::Auth(format!("{realm}: {m}")));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| http_err("GET", realm, e))?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|source| RegistryError::Json {
                what: "token answer".into(),
                source,
            })?;
        v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .map(String::from)
            .ok_or_else(|| RegistryError::Auth(format!("{realm}: no token in answer")))
    }

    /// GET (or HEAD) with optional extra headers; re-authenticates once on 401.
    pub fn get(
        &self,
        method: &'static str,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response<Body>, RegistryError> {
        for attempt in 0..2 {
            let mut req = if method == "HEAD" {
                self.agent.head(url)
            } else {
                self.agent.get(url)
            };
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(a) = self.auth_header() {
                req = req.header("Authorization", a);
            }
            let resp = req.call().map_err(|e| http_err(method, url, e))?;
            if resp.status() == 401 && attempt == 0 {
                self.authenticate(&resp)?;
                continue;
            }
            return Ok(resp);
        }
        unreachable!("loop returns on its second pass")
    }

    /// POST with an empty body.
    pub fn post(&self, url: &str) -> Result<Response<Body>, RegistryError> {
        let mut req = self.agent.post(url);
        if let Some(a) = self.auth_header() {
            req = req.header("Authorization", a);
        }
        req.send_empty().map_err(|e| http_err("POST", url, e))
    }

    /// PUT a body (a file or bytes) with a content type.
    pub fn put(
        &self,
        url: &str,
        content_type: &str,
        body: impl ureq::AsSendBody,
    ) -> Result<Response<Body>, RegistryError> {
        let mut req = self.agent.put(url).header("Content-Type", content_type);
        if let Some(a) = self.auth_header() {
            req = req.header("Authorization", a);
        }
        req.send(body).map_err(|e| http_err("PUT", url, e))
    }

    /// Turns an unexpected response into an error.
    pub fn status_error(&self, what: String, resp: &mut Response<Body>) -> RegistryError {
        RegistryError::Status {
            what,
            message: error_message(resp),
        }
    }
}

pub(crate) fn http_err(method: &'static str, url: &str, e: ureq::Error) -> RegistryError {
    RegistryError::Http {
        method,
        url: url.to_string(),
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_parsed_addresses() {
        for h in [
            "localhost",
            "LOCALHOST:5000",
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.255.3.4:443",
            "[::1]",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "127.example.com",
            "127.0.0.1.nip.io:5000",
            "127.evil",
            "127.1",
            "128.0.0.1",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:5000",
            "[::ffff:127.0.0.1]",
            "[::1]x",
            "127.0.0.1:port",
            "registry-1.docker.io",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn token_realms_must_be_https_unless_the_registry_is_plain_http() {
        assert!(check_realm("https://auth.example.com/token", false).is_ok());
        assert!(check_realm("HTTPS://auth.example.com/token", false).is_ok());
        assert!(check_realm("http://auth.example.com/token", true).is_ok());
        for realm in [
            "http://auth.example.com/token",
            "HTTP://auth.example.com/token",
            "file:///etc/passwd",
            "auth.example.com/token",
            "",
        ] {
            let err = check_realm(realm, false).unwrap_err();
            assert!(err.contains("must be an https URL"), "{realm}: {err}");
        }
        assert!(check_realm("ftp://auth.example.com/token", true).is_err());
    }
}
