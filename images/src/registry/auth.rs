//! `WWW-Authenticate` challenges, bearer tokens and credentials.

use std::collections::HashMap;

use base64::Engine as _;

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// `bearer` or `basic` (lowercase).
    pub scheme: String,
    /// Parameters such as realm, service, scope.
    pub params: HashMap<String, String>,
}

/// Parses `Scheme k="v",k2=v2`.
pub(crate) fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// Username and password for a registry.
#[derive(Clone, Debug)]
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

    /// Credentials for `registry`: `HUSK_REGISTRY_USERNAME`/`_PASSWORD`, else
    /// `~/.docker/config.json` (`auths.<host>.auth`).
    pub fn lookup(registry: &str) -> Option<Credentials> {
        if let (Ok(u), Ok(p)) = (
            std::env::var("HUSK_REGISTRY_USERNAME"),
            std::env::var("HUSK_REGISTRY_PASSWORD"),
        ) {
            return Some(Credentials {
                username: u,
                password: p,
            });
        }
        let home = std::env::var_os("HOME")?;
        let path = std::path::Path::new(&home).join(".docker/config.json");
        let data = std::fs::read(path).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&data).ok()?;
        let keys = if registry == crate::reference::DOCKER_HUB {
            vec![
                "https://index.docker.io/v1/".to_string(),
                registry.to_string(),
            ]
        } else {
            vec![registry.to_string(), format!("https://{registry}")]
        };
        let auth = keys.iter().find_map(|k| v["auths"][k]["auth"].as_str())?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .ok()?;
        let (u, p) = std::str::from_utf8(&raw).ok()?.split_once(':')?;
        Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull,push");
        let b = parse_challenge(r#"Basic realm=registry"#).unwrap();
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.params["realm"], "registry");
    }
}
