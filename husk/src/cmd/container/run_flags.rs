//! `husk run`/`create` flags for labels, DNS, the read-only root, tmpfs
//! mounts, `--init`, `--shm-size` and `--cidfile` (the typed values are
//! `husk_runtime::run_flags`'s).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use husk_runtime::options::parse_bytes;
use husk_runtime::run_flags::{self, DnsConfig, RunFlags};

/// The flags (flattened into `create` and `run`).
#[derive(Args, Debug, Default)]
pub struct RunFlagArgs {
    /// Set metadata on the container (KEY=VALUE); wins over the image's.
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Read labels from a file of KEY=VALUE lines.
    #[arg(long = "label-file", value_name = "FILE")]
    label_files: Vec<PathBuf>,
    /// Set a DNS server of the container (/etc/resolv.conf).
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<String>,
    /// Set a DNS search domain (`.`: none).
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// Set a DNS resolver option (e.g. ndots:2).
    #[arg(long = "dns-option", value_name = "OPT")]
    dns_option: Vec<String>,
    /// Mount the container's root filesystem read-only (volumes and
    /// --tmpfs mounts stay writable).
    #[arg(long = "read-only")]
    read_only: bool,
    /// Mount a tmpfs: PATH[:OPTIONS] (rw, ro, exec, noexec, suid, dev,
    /// size=SIZE, mode=OCTAL; default nosuid,nodev,noexec).
    #[arg(long = "tmpfs", value_name = "PATH[:OPTS]")]
    tmpfs: Vec<String>,
    /// Run an init inside the container that reaps processes and forwards
    /// signals: husk's guest agent is that init already (recorded only).
    #[arg(long)]
    init: bool,
    /// Size of /dev/shm (e.g. 256m; default 64m).
    #[arg(long = "shm-size", value_name = "SIZE")]
    shm_size: Option<String>,
    /// Write the container ID to the file.
    #[arg(long, value_name = "FILE")]
    cidfile: Option<PathBuf>,
}

/// What the flags add to the library's create options.
pub struct Parsed {
    /// Labels in order (`--label-file` first, then `-l`).
    pub labels: Vec<(String, String)>,
    /// `--tmpfs` mounts.
    pub tmpfs: Vec<husk_protocol::TmpfsMount>,
    /// The rest.
    pub run_flags: RunFlags,
}

impl RunFlagArgs {
    /// The typed values; errors are one line.
    pub fn parse(&self) -> Result<Parsed> {
        let mut labels = Vec::new();
        for f in &self.label_files {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading label file {}", f.display()))?;
            labels.extend(run_flags::parse_label_file(&text)?);
        }
        for l in &self.labels {
            labels.push(run_flags::parse_label(l)?);
        }
        let tmpfs = self
            .tmpfs
            .iter()
            .map(|t| run_flags::parse_tmpfs(t))
            .collect::<Result<Vec<_>, _>>()?;
        let shm_size = match &self.shm_size {
            None => None,
            Some(s) => match parse_bytes(s) {
                Some(n) if n > 0 => Some(n),
                _ => bail!("invalid size: '{s}'"),
            },
        };
        Ok(Parsed {
            labels,
            tmpfs,
            run_flags: RunFlags {
                dns: DnsConfig::parse(&self.dns, &self.dns_search, &self.dns_option)?,
                read_only: self.read_only,
                init: self.init,
                shm_size,
            },
        })
    }

    /// Refuses an existing `--cidfile` before anything is created, with
    /// Docker's message.
    pub fn check_cidfile(&self) -> Result<()> {
        match &self.cidfile {
            Some(f) if f.exists() => bail!(
                "Container ID file found, make sure the other container isn't running or delete {}",
                f.display()
            ),
            _ => Ok(()),
        }
    }

    /// Writes the new container's ID to `--cidfile` (created exclusively:
    /// a file that appeared meanwhile is not overwritten).
    pub fn write_cidfile(&self, id: &str) -> Result<()> {
        let Some(f) = &self.cidfile else {
            return Ok(());
        };
        write_new(f, id).with_context(|| format!("writing the container ID file {}", f.display()))
    }
}

fn write_new(path: &Path, content: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::BTreeMap;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: RunFlagArgs,
    }

    fn parse(args: &[&str]) -> Result<Parsed> {
        let argv = ["husk"].iter().chain(args);
        Cli::try_parse_from(argv).unwrap().flags.parse()
    }

    #[test]
    fn flags_become_typed_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("labels");
        std::fs::write(&file, "# c\nteam=db\nenv=file\n").unwrap();
        let p = parse(&[
            "--label-file",
            file.to_str().unwrap(),
            "-l",
            "env=flag",
            "--label",
            "solo",
            "--dns",
            "1.1.1.1",
            "--dns-search",
            "example.org",
            "--dns-option",
            "ndots:2",
            "--read-only",
            "--tmpfs",
            "/run:size=1m",
            "--init",
            "--shm-size",
            "256m",
        ])
        .unwrap();
        let labels = run_flags::merge_labels(&BTreeMap::new(), &p.labels);
        assert_eq!(labels["env"], "flag");
        assert_eq!(labels["team"], "db");
        assert_eq!(labels["solo"], "");
        assert_eq!(p.tmpfs[0].size.as_deref(), Some("1024k"));
        let f = p.run_flags;
        assert!(f.read_only && f.init);
        assert_eq!(f.shm_size, Some(256 << 20));
        assert_eq!(
            f.dns.servers,
            ["1.1.1.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(f.dns.search, ["example.org"]);
        assert_eq!(f.dns.options, ["ndots:2"]);
        let none = parse(&[]).unwrap();
        assert!(none.labels.is_empty() && none.tmpfs.is_empty());
        assert!(none.run_flags.is_default());
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        for (args, want) in [
            (vec!["--dns", "nope"], "nope is not an ip address"),
            (vec!["--shm-size", "lots"], "invalid size: 'lots'"),
            (vec!["--tmpfs", "run"], "invalid --tmpfs \"run\""),
            (vec!["-l", "=x"], "invalid label \"=x\""),
            (
                vec!["--label-file", "/nonexistent/labels"],
                "reading label file",
            ),
        ] {
            let err = format!("{:#}", parse(&args).err().unwrap());
            assert!(err.starts_with(want), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn cidfile_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cid");
        let cli = Cli::try_parse_from(["husk", "--cidfile", path.to_str().unwrap()]).unwrap();
        cli.flags.check_cidfile().unwrap();
        cli.flags.write_cidfile("abc").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abc");
        let err = cli.flags.check_cidfile().unwrap_err().to_string();
        assert!(err.starts_with("Container ID file found"), "{err}");
        assert!(cli.flags.write_cidfile("def").is_err());
    }
}
