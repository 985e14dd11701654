//! End-to-end tests of the run flags (labels, DNS, /etc/hosts, read-only
//! root, tmpfs, /dev/shm size, cidfile), `ps --filter`, `rename`, the
//! prune commands and `system df` / `info` / `version`, through the
//! `husk` binary with real VMs.

use std::time::Duration;

#[allow(dead_code)]
#[path = "images/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "containers/support.rs"]
mod csupport;

use csupport::{s, Env, IMAGE};

/// `ps -aq` with these filters, as a sorted list of short IDs.
fn ps_ids(env: &Env, filters: &[&str]) -> Vec<String> {
    let mut args = vec!["ps", "-aq"];
    for f in filters {
        args.extend(["--filter", f]);
    }
    let mut ids: Vec<String> = env.ok(&args).lines().map(String::from).collect();
    ids.sort();
    ids
}

fn short(id: &str) -> String {
    id.trim()[..12].to_string()
}

#[test]
fn run_flags_show_inside_the_guest_and_labels_filter_ps() {
    let Some(env) = Env::new("run_flags_show_inside_the_guest_and_labels_filter_ps") else {
        return;
    };
    let cid = env.dir.path().join("cid");
    let labels = env.dir.path().join("labels");
    std::fs::write(&labels, "# team\nteam=db\napp=file\n").unwrap();
    let script = "cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; \
                  touch /rootfile 2>&1 || echo root-refused; \
                  echo tmpfs-ok > /run/ok && cat /run/ok; \
                  df -k /dev/shm | tail -n 1";
    let done = env.husk(&[
        "run",
        "--name",
        "flagged",
        "-l",
        "app=web",
        "--label-file",
        s(&labels),
        "--dns",
        "10.0.2.77",
        "--dns-search",
        "corp.example",
        "--dns-option",
        "ndots:2",
        "--add-host",
        "db:10.0.2.9",
        "--read-only",
        "--tmpfs",
        "/run",
        "--shm-size",
        "256m",
        "--init",
        "--cidfile",
        s(&cid),
        // The image's WorkingDir does not exist in it: with a read-only
        // root it could not be created.
        "-w",
        "/",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(done.code(), 0, "{}{}", done.stderr, env.container_logs());
    let out = &done.stdout;
    let mut parts = out.split("---\n");
    let resolv = parts.next().unwrap_or_default();
    let hosts = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default();
    let ns: Vec<&str> = resolv
        .lines()
        .filter(|l| l.starts_with("nameserver"))
        .collect();
    assert_eq!(ns, ["nameserver 10.0.2.77"], "{resolv}");
    assert!(resolv.contains("search corp.example\n"), "{resolv}");
    assert!(resolv.contains("options ndots:2\n"), "{resolv}");
    assert!(hosts.contains("10.0.2.9\tdb\n"), "{hosts}");
    assert!(rest.contains("Read-only file system"), "{rest}");
    assert!(rest.contains("root-refused"), "{rest}");
    assert!(rest.contains("tmpfs-ok\n"), "{rest}");
    let shm_kib: Vec<&str> = rest
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(shm_kib.get(1), Some(&"262144"), "{rest}");
    assert_eq!(shm_kib.last(), Some(&"/dev/shm"), "{rest}");

    let id = env.inspect("flagged", "{{.Id}}");
    assert_eq!(std::fs::read_to_string(&cid).unwrap(), id);
    let err = env.fails(125, &["create", "--cidfile", s(&cid), IMAGE, "true"]);
    assert!(err.contains("Container ID file found"), "{err}");
    assert_eq!(
        env.inspect("flagged", "{{json .Config.Labels}}"),
        r#"{"app":"web","team":"db"}"#
    );
    assert_eq!(
        env.inspect(
            "flagged",
            "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.Init}} {{.HostConfig.ShmSize}} {{json .HostConfig.Dns}}"
        ),
        r#"true true 268435456 ["10.0.2.77"]"#
    );

    // ps --filter: labels (all must match), names, status, exited.
    let other = env.ok(&["create", "--name", "other", "-l", "app=db", IMAGE, "true"]);
    let (flagged, other) = (short(&id), short(&other));
    let both = {
        let mut v = vec![flagged.clone(), other.clone()];
        v.sort();
        v
    };
    assert_eq!(ps_ids(&env, &["label=app"]), both);
    assert_eq!(ps_ids(&env, &["label=app=web"]), vec![flagged.clone()]);
    assert_eq!(ps_ids(&env, &["label=app=db"]), vec![other.clone()]);
    assert_eq!(
        ps_ids(&env, &["label=app", "label=team"]),
        vec![flagged.clone()]
    );
    assert_eq!(ps_ids(&env, &["label=nope"]), Vec::<String>::new());
    assert_eq!(ps_ids(&env, &["name=flagged", "name=other"]), both);
    assert_eq!(ps_ids(&env, &["status=created"]), vec![other.clone()]);
    assert_eq!(ps_ids(&env, &["exited=0"]), vec![flagged.clone()]);
    assert_eq!(
        ps_ids(&env, &["ancestor=", "label=app"]),
        Vec::<String>::new()
    );
    assert_eq!(ps_ids(&env, &[&format!("ancestor={IMAGE}")]), both);
    let err = env.fails(1, &["ps", "--filter", "bogus=1"]);
    assert!(
        err.contains("Error response from daemon: invalid filter 'bogus'"),
        "{err}"
    );
    env.ok(&["rm", "flagged", "other"]);
    env.assert_clean();
}

#[test]
fn rename_prune_and_system_reports() {
    let Some(env) = Env::new("rename_prune_and_system_reports") else {
        return;
    };
    let one = env.ok(&["create", "--name", "one", IMAGE, "true"]);
    let two = env.ok(&["create", "--name", "two", "-l", "keep=1", IMAGE, "true"]);
    let live = env.ok(&["run", "-d", "--name", "live", IMAGE, "sleep", "600"]);

    env.ok(&["rename", "one", "uno"]);
    assert_eq!(env.inspect(one.trim(), "{{.Name}}"), "/uno");
    let err = env.fails(1, &["rename", "uno", "two"]);
    assert!(
        err.contains("Conflict. The container name \"/two\" is already in use by container"),
        "{err}"
    );

    // system df / info / version: real numbers.
    let images: std::collections::BTreeSet<String> = env
        .ok(&["images", "-q"])
        .lines()
        .map(String::from)
        .collect();
    let df = env.ok(&["system", "df"]);
    let row = |kind: &str| -> Vec<String> {
        let line = df
            .lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("{kind} in {df}"));
        line[kind.len()..]
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert!(df.starts_with("TYPE"), "{df}");
    assert_eq!(row("Images")[0], images.len().to_string(), "{df}");
    assert_eq!(&row("Containers")[..2], ["3", "1"], "{df}");
    let json = env.ok(&["system", "df", "--format", "{{json .}}"]);
    assert_eq!(json.lines().count(), 4, "{json}");
    let info: serde_json::Value =
        serde_json::from_str(&env.ok(&["info", "--format", "{{json .}}"])).unwrap();
    assert_eq!(info["Containers"], 3, "{info}");
    assert_eq!(info["ContainersRunning"], 1, "{info}");
    assert_eq!(info["ContainersStopped"], 2, "{info}");
    assert_eq!(info["Images"], images.len(), "{info}");
    assert_eq!(info["KVM"], true, "{info}");
    assert!(env
        .ok(&["info"])
        .contains("\n Containers: 3\n  Running: 1\n"));
    let version = env.ok(&["version", "--format", "{{.Client.Version}}"]);
    let clap_version = env.ok(&["--version"]);
    assert_eq!(format!("husk {version}"), clap_version);

    // Without -f, prune asks and a closed stdin answers no.
    let asked = env.ok(&["container", "prune"]);
    assert!(
        asked.starts_with("WARNING! This will remove all stopped containers."),
        "{asked}"
    );
    assert_eq!(ps_ids(&env, &[]).len(), 3);
    let out = env.ok(&["container", "prune", "-f", "--filter", "label!=keep"]);
    assert!(out.starts_with("Deleted Containers:\n"), "{out}");
    assert!(
        out.contains(one.trim()) && !out.contains(two.trim()),
        "{out}"
    );
    let total = out.lines().last().unwrap_or_default();
    assert!(total.starts_with("Total reclaimed space: "), "{out}");
    assert_ne!(total, "Total reclaimed space: 0B", "{out}");
    let out = env.ok(&["container", "prune", "-f"]);
    assert!(
        out.contains(two.trim()) && !out.contains(live.trim()),
        "{out}"
    );
    assert_eq!(ps_ids(&env, &[]), [short(&live)]);

    env.ok(&["volume", "create", "keepme"]);
    let out = env.ok(&["volume", "prune", "-f"]);
    assert_eq!(out, "Total reclaimed space: 0B\n");
    let out = env.ok(&["volume", "prune", "-a", "-f"]);
    assert!(out.starts_with("Deleted Volumes:\nkeepme\n"), "{out}");

    env.ok(&["rm", "-f", "live"]);
    env.eventually("the VM to go", Duration::from_secs(180), || {
        env.monitors().is_empty()
    });
    env.assert_clean();
}
