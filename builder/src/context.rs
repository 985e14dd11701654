//! COPY/ADD sources: resolving source words (paths and wildcards) inside a
//! source tree — the build context (with `.dockerignore`) or another
//! stage's root filesystem — walking them, and hashing their content for
//! the build cache.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::ignore::Ignore;
use crate::pattern::{has_wildcards, Pattern};
use crate::rootpath;

/// Most entries one COPY may walk.
const MAX_ENTRIES: usize = 1_000_000;
/// Deepest directory nesting walked.
const MAX_DEPTH: usize = 256;

/// Errors resolving or reading sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A source path is not there (or is excluded).
    #[error("file not found in build context or excluded by .dockerignore: stat {0}: file does not exist")]
    NotFound(String),
    /// A wildcard matched nothing.
    #[error("no source files were specified (nothing matches {0:?})")]
    NoMatch(String),
    /// A source leaves the context.
    #[error("forbidden path outside the build context: {0}")]
    Outside(String),
    /// A wildcard does not parse.
    #[error(transparent)]
    Pattern(#[from] crate::pattern::PatternError),
    /// Too many files.
    #[error("more than {MAX_ENTRIES} files to copy")]
    TooMany,
    /// Reading failed.
    #[error("{path}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_at(p: &Path) -> impl FnOnce(io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: p.display().to_string(),
        source,
    }
}

/// Where sources come from.
#[derive(Debug, Clone, Copy)]
pub struct SourceTree<'a> {
    /// The tree's root on the host.
    pub root: &'a Path,
    /// `.dockerignore` rules (the build context only).
    pub ignore: Option<&'a Ignore>,
}

/// One resolved source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Symlink-free path inside the tree.
    pub rel: PathBuf,
    /// The name as given (the last component before symlinks were followed).
    pub name: std::ffi::OsString,
    /// Whether it is a directory (its contents are copied).
    pub is_dir: bool,
}

/// One entry below a directory source.
#[derive(Debug)]
pub struct Entry {
    /// Path below the source directory.
    pub inside: PathBuf,
    /// Path inside the tree.
    pub rel: PathBuf,
    /// lstat of the entry.
    pub meta: fs::Metadata,
}

impl SourceTree<'_> {
    /// Whether `.dockerignore` hides `rel`. Callers check the symlink-free
    /// path a source resolves to (as well as the name given), so a symlink
    /// or a wildcard cannot reach an ignored file.
    fn excluded(&self, rel: &Path) -> bool {
        self.ignore
            .is_some_and(|i| i.excluded(&rel.to_string_lossy()))
    }

    /// Resolves source words (already substituted) to sources.
    pub fn resolve(&self, words: &[String]) -> Result<Vec<Source>, SourceError> {
        let mut out = Vec::new();
        for w in words {
            let cleaned = lexical(w)?;
            if has_wildcards(&cleaned) {
                let found = self.glob(&cleaned)?;
                if found.is_empty() {
                    return Err(SourceError::NoMatch(w.clone()));
                }
                out.extend(found);
                continue;
            }
            let rel = rootpath::resolve(self.root, Path::new(&cleaned), true)
                .map_err(io_at(Path::new(w)))?;
            let host = self.root.join(&rel);
            let m = match fs::metadata(&host) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(SourceError::NotFound(w.clone()))
                }
                Err(e) => return Err(io_at(Path::new(w))(e)),
            };
            if self.excluded(Path::new(&cleaned)) || self.excluded(&rel) {
                return Err(SourceError::NotFound(w.clone()));
            }
            out.push(Source {
                name: Path::new(&cleaned)
                    .file_name()
                    .unwrap_or_default()
                    .to_os_string(),
                rel,
                is_dir: m.is_dir(),
            });
        }
        Ok(out)
    }

    /// Expands a wildcard path component by component (as `filepath.Glob`).
    fn glob(&self, pattern: &str) -> Result<Vec<Source>, SourceError> {
        let mut current: Vec<PathBuf> = vec![PathBuf::new()];
        for comp in pattern.split('/') {
            let mut next = Vec::new();
            let pat = has_wildcards(comp)
                .then(|| Pattern::new(comp))
                .transpose()?;
            for dir in &current {
                let Ok(resolved) = rootpath::resolve(self.root, dir, true) else {
                    continue;
                };
                match &pat {
                    None => next.push(resolved.join(comp)),
                    Some(p) => {
                        let Ok(entries) = fs::read_dir(self.root.join(&resolved)) else {
                            continue;
                        };
                        let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
                        names.sort();
                        for n in names {
                            if p.matches(&n.to_string_lossy()) {
                                next.push(resolved.join(n));
                            }
                        }
                    }
                }
                if next.len() > MAX_ENTRIES {
                    return Err(SourceError::TooMany);
                }
            }
            current = next;
        }
        let mut out = Vec::new();
        for p in current {
            let Ok(rel) = rootpath::resolve(self.root, &p, true) else {
                continue;
            };
            // The match and what it resolves to (a symlink's target) must
            // both be visible.
            if self.excluded(&p) || self.excluded(&rel) {
                continue;
            }
            if let Ok(m) = fs::metadata(self.root.join(&rel)) {
                out.push(Source {
                    name: p.file_name().unwrap_or_default().to_os_string(),
                    rel,
                    is_dir: m.is_dir(),
                });
            }
        }
        Ok(out)
    }

    /// Everything below directory source `dir` (not following symlinks),
    /// parents before children, sorted by name; excluded entries skipped.
    pub fn walk(&self, dir: &Path) -> Result<Vec<Entry>, SourceError> {
        let mut out = Vec::new();
        self.walk_into(dir, Path::new(""), 0, &mut out)?;
        Ok(out)
    }

    fn walk_into(
        &self,
        dir: &Path,
        inside: &Path,
        depth: usize,
        out: &mut Vec<Entry>,
    ) -> Result<(), SourceError> {
        if depth > MAX_DEPTH {
            return Err(io_at(dir)(io::Error::other(
                "directories nested too deeply",
            )));
        }
        let host = self.root.join(dir).join(inside);
        let mut names: Vec<_> = fs::read_dir(&host)
            .map_err(io_at(&host))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_at(&host))?;
        names.sort();
        for n in names {
            let inside = inside.join(&n);
            let rel = dir.join(&inside);
            let excluded = self.excluded(&rel);
            let meta = fs::symlink_metadata(self.root.join(&rel)).map_err(io_at(&rel))?;
            let walk_anyway = self.ignore.is_some_and(|i| i.has_exceptions());
            if excluded && !(meta.is_dir() && walk_anyway) {
                continue;
            }
            let is_dir = meta.is_dir();
            if !excluded {
                out.push(Entry {
                    inside: inside.clone(),
                    rel,
                    meta,
                });
                if out.len() > MAX_ENTRIES {
                    return Err(SourceError::TooMany);
                }
            }
            if is_dir {
                self.walk_into(dir, &inside, depth + 1, out)?;
            }
        }
        Ok(())
    }

    /// A digest of the sources' names, types, modes, sizes, link targets
    /// and contents (not times or owners, which COPY does not keep).
    pub fn hash(&self, sources: &[Source]) -> Result<String, SourceError> {
        let mut h = Sha256::new();
        for s in sources {
            h.update(b"source\0");
            h.update(s.rel.as_os_str().as_encoded_bytes());
            h.update(b"\0");
            h.update(s.name.as_encoded_bytes());
            h.update(b"\0");
            let meta = fs::metadata(self.root.join(&s.rel)).map_err(io_at(&s.rel))?;
            if s.is_dir {
                for e in self.walk(&s.rel)? {
                    h.update(e.inside.as_os_str().as_encoded_bytes());
                    h.update(b"\0");
                    self.hash_entry(&mut h, &e.rel, &e.meta)?;
                }
            } else {
                self.hash_entry(&mut h, &s.rel, &meta)?;
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    fn hash_entry(&self, h: &mut Sha256, rel: &Path, m: &fs::Metadata) -> Result<(), SourceError> {
        use std::os::unix::fs::MetadataExt;
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "d"
        } else if ft.is_symlink() {
            "l"
        } else if ft.is_file() {
            "f"
        } else {
            "o"
        };
        h.update(format!("{kind} {:o} {}\0", m.mode() & 0o7777, m.len()).as_bytes());
        let host = self.root.join(rel);
        if ft.is_symlink() {
            let t = fs::read_link(&host).map_err(io_at(rel))?;
            h.update(t.as_os_str().as_encoded_bytes());
        } else if ft.is_file() {
            let mut f = fs::File::open(&host).map_err(io_at(rel))?;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = f.read(&mut buf).map_err(io_at(rel))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        h.update(b"\0");
        Ok(())
    }
}

/// Cleans a source word lexically; `..` may not climb above the root.
fn lexical(word: &str) -> Result<String, SourceError> {
    let mut parts: Vec<&str> = Vec::new();
    for c in word.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(SourceError::Outside(word.to_string()));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("src/sub")).unwrap();
        fs::write(r.join("src/a.txt"), "a").unwrap();
        fs::write(r.join("src/b.log"), "b").unwrap();
        fs::write(r.join("src/sub/c.txt"), "c").unwrap();
        fs::write(r.join("top.txt"), "t").unwrap();
        std::os::unix::fs::symlink("/etc", r.join("hostetc")).unwrap();
        std::os::unix::fs::symlink("src/a.txt", r.join("alink")).unwrap();
        d
    }

    #[test]
    fn resolve_walk_and_hash() {
        let d = tree();
        let ig = Ignore::parse("**/*.log\n").unwrap();
        let t = SourceTree {
            root: d.path(),
            ignore: Some(&ig),
        };
        let s = t.resolve(&["src".into(), "./alink".into()]).unwrap();
        assert_eq!(
            s[0],
            Source {
                rel: "src".into(),
                name: "src".into(),
                is_dir: true
            }
        );
        assert_eq!(
            s[1],
            Source {
                rel: "src/a.txt".into(),
                name: "alink".into(),
                is_dir: false
            }
        );
        let names: Vec<_> = t
            .walk(Path::new("src"))
            .unwrap()
            .into_iter()
            .map(|e| e.inside)
            .collect();
        assert_eq!(
            names,
            [Path::new("a.txt"), Path::new("sub"), Path::new("sub/c.txt")]
        );
        assert!(matches!(
            t.resolve(&["src/b.log".into()]),
            Err(SourceError::NotFound(_))
        ));
        assert!(matches!(
            t.resolve(&["nope".into()]),
            Err(SourceError::NotFound(_))
        ));
        assert!(matches!(
            t.resolve(&["../x".into()]),
            Err(SourceError::Outside(_))
        ));
        // A symlink to /etc resolves inside the tree, where there is no etc.
        assert!(matches!(
            t.resolve(&["hostetc/passwd".into()]),
            Err(SourceError::NotFound(_))
        ));
        let g = t.resolve(&["src/*.*".into(), "*.txt".into()]).unwrap();
        let rels: Vec<_> = g.iter().map(|s| s.rel.clone()).collect();
        assert_eq!(rels, [PathBuf::from("src/a.txt"), PathBuf::from("top.txt")]);
        assert!(matches!(
            t.resolve(&["*.none".into()]),
            Err(SourceError::NoMatch(_))
        ));
        let h1 = t.hash(&s).unwrap();
        assert_eq!(h1, t.hash(&s).unwrap());
        fs::write(d.path().join("src/sub/c.txt"), "changed").unwrap();
        assert_ne!(h1, t.hash(&s).unwrap());
        fs::write(d.path().join("src/b.log"), "ignored change").unwrap();
        let h2 = t.hash(&s).unwrap();
        fs::write(d.path().join("src/b.log"), "ignored change 2").unwrap();
        assert_eq!(h2, t.hash(&s).unwrap());
    }

    #[test]
    fn ignored_files_stay_hidden_behind_symlinks_and_wildcards() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("private")).unwrap();
        fs::create_dir_all(r.join("data")).unwrap();
        fs::write(r.join("secret.key"), "k").unwrap();
        fs::write(r.join("private/token"), "t").unwrap();
        fs::write(r.join("data/public.txt"), "p").unwrap();
        fs::write(r.join("data/secret.txt"), "s").unwrap();
        std::os::unix::fs::symlink("secret.key", r.join("key.txt")).unwrap();
        std::os::unix::fs::symlink("/secret.key", r.join("abs.txt")).unwrap();
        std::os::unix::fs::symlink("private", r.join("pub")).unwrap();
        std::os::unix::fs::symlink("data", r.join("alias")).unwrap();
        let ig = Ignore::parse("secret.key\nprivate\ndata/secret.txt\n").unwrap();
        let t = SourceTree {
            root: r,
            ignore: Some(&ig),
        };
        let rels = |words: &[&str]| -> Vec<PathBuf> {
            let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            t.resolve(&words)
                .unwrap()
                .into_iter()
                .map(|s| s.rel)
                .collect()
        };
        // Named directly, through a symlink, or through a symlinked directory.
        for w in [
            "secret.key",
            "key.txt",
            "abs.txt",
            "pub/token",
            "alias/secret.txt",
        ] {
            assert!(
                matches!(t.resolve(&[w.into()]), Err(SourceError::NotFound(_))),
                "{w}"
            );
        }
        // Wildcards skip symlinks to ignored files and directories.
        assert!(matches!(
            t.resolve(&["*.txt".into()]),
            Err(SourceError::NoMatch(_))
        ));
        assert_eq!(rels(&["*"]), [PathBuf::from("data"), PathBuf::from("data")]);
        assert!(matches!(
            t.resolve(&["p*/token".into()]),
            Err(SourceError::NoMatch(_))
        ));
        assert_eq!(rels(&["alias/*.txt"]), [PathBuf::from("data/public.txt")]);
        // A directory reached through a symlink is walked without the
        // ignored entries of its real path.
        let dir = t.resolve(&["alias".into()]).unwrap();
        assert_eq!(dir[0].rel, PathBuf::from("data"));
        let inside: Vec<_> = t
            .walk(&dir[0].rel)
            .unwrap()
            .into_iter()
            .map(|e| e.inside)
            .collect();
        assert_eq!(inside, [PathBuf::from("public.txt")]);
        let all: Vec<_> = t
            .walk(Path::new(""))
            .unwrap()
            .into_iter()
            .map(|e| e.rel)
            .collect();
        for hidden in ["secret.key", "private", "private/token", "data/secret.txt"] {
            assert!(!all.contains(&PathBuf::from(hidden)), "{hidden} in {all:?}");
        }
    }
}
