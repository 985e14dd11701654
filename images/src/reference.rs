//! Image references: `[registry/]repository[:tag][@digest]`, normalised the
//! way Docker does (`busybox` = `docker.io/library/busybox:latest`).

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";

/// Errors parsing a reference.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The reference does not follow the grammar.
    #[error("invalid reference format: {0:?}")]
    Invalid(String),
    /// The digest part is malformed.
    #[error("invalid reference {0:?}")]
    Digest(String, #[source] crate::digest::DigestError),
}

/// A normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    /// Registry `host[:port]`, e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, if any (`latest` is filled in when neither tag nor digest is given).
    pub tag: Option<String>,
    /// Manifest digest, if any.
    pub digest: Option<Digest>,
}

impl Reference {
    /// `registry/repository` (no tag, no digest).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The name as Docker shows it: Docker Hub's prefix and `library/` dropped.
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(r) if !r.contains('/') => r.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        }
    }

    /// `name:tag` in familiar form, if the reference has a tag.
    pub fn familiar_tagged(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}:{t}", self.familiar_name()))
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository at a digest, no tag.
    pub fn with_digest(&self, digest: &Digest) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest.clone()),
            ..self.clone()
        }
    }

    /// Whether `s` looks like a (possibly abbreviated) image ID rather than a name.
    pub fn looks_like_id(s: &str) -> bool {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        hex.len() >= 4 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || b"._-".contains(&x))
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || b"_.-".contains(&x))
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && (!h.starts_with('[') || h.ends_with(']')) => {
            (h, Some(p))
        }
        _ => (r, None),
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !v6.is_empty() && v6.bytes().all(|x| x.is_ascii_hexdigit() || x == b':')
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|x| x.is_ascii_alphanumeric() || b".-".contains(&x))
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok && r.len() <= 255
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        let invalid = || ReferenceError::Invalid(s.to_string());
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse::<Digest>()
                        .map_err(|e| ReferenceError::Digest(s.to_string(), e))?,
                ),
            ),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(invalid());
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if !valid_registry(&registry) {
            return Err(invalid());
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        // At most 255 characters, counted on the canonical name (so that
        // what `Display` prints parses again; found by fuzzing).
        if registry.len() + 1 + repository.len() > 255 {
            return Err(invalid());
        }
        if !repository.split('/').all(valid_component) {
            return Err(invalid());
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn normalisation() {
        assert_eq!(r("busybox").to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r("busybox").familiar_name(), "busybox");
        assert_eq!(r("user/app:1").to_string(), "docker.io/user/app:1");
        let l = r("127.0.0.1:5000/app:1.0");
        assert_eq!(l.registry, "127.0.0.1:5000");
        assert_eq!(l.repository, "app");
        assert_eq!(l.familiar_name(), "127.0.0.1:5000/app");
        assert_eq!(r("localhost/a/b").registry, "localhost");
        assert_eq!(r("[::1]:5000/a").registry, "[::1]:5000");
        let hex = "a".repeat(64);
        let d = r(&format!("app@sha256:{hex}"));
        assert_eq!(d.tag, None);
        assert!(d.digest.is_some());
    }

    #[test]
    fn the_length_limit_counts_the_canonical_name() {
        // "docker.io/library/" + 237 = 255.
        let longest = "a".repeat(237);
        assert_eq!(r(&r(&longest).to_string()), r(&longest));
        for too_long in ["a".repeat(238), "a".repeat(254)] {
            assert!(too_long.parse::<Reference>().is_err());
        }
        let host = format!("reg.example/{}", "b".repeat(243));
        assert_eq!(r(&r(&host).to_string()), r(&host));
        assert!(format!("{host}b").parse::<Reference>().is_err());
    }

    #[test]
    fn rejects_bad() {
        for s in [
            "",
            "UPPER",
            "a/../b",
            "app:",
            "app:/x",
            "a//b",
            "app@sha256:zz",
            "-a",
        ] {
            assert!(s.parse::<Reference>().is_err(), "{s}");
        }
    }
}
