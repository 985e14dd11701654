//! End-to-end tests of the day-2 operations (issue #14) through the
//! `husk` binary on real VMs: events, pause/unpause, restart policies,
//! health checks. Each test boots as few VMs as its assertions allow.
//!
//! Skipped (with a message) without `HUSK_KERNEL` or without root; a skip
//! fails under `HUSK_TEST_STRICT=1`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use husk_tests::Running;

#[allow(dead_code)]
#[path = "images/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "containers/support.rs"]
mod csupport;

use csupport::{Env, IMAGE, VM_TIMEOUT};

/// How long one step inside a running guest may take (minutes when other
/// VMs share the two cores).
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The actions of `husk events --format '{{json .}}'` output, checking
/// each line is Docker's JSON shape.
fn actions(json_lines: &str) -> Vec<String> {
    json_lines
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(v["Type"], "container", "{l}");
            assert_eq!(v["scope"], "local", "{l}");
            assert!(v["timeNano"].as_i64().unwrap_or(0) > 0, "{l}");
            assert_eq!(v["Actor"]["Attributes"]["name"], "ev1", "{l}");
            let action = v["Action"].as_str().unwrap_or_default().to_string();
            if action == "die" {
                assert_eq!(v["Actor"]["Attributes"]["exitCode"], "3", "{l}");
            }
            action
        })
        .collect()
}

/// An `--until` for a follower: it ends by itself even if the test fails
/// before it signals it.
fn follow_until() -> String {
    (unix_now() + VM_TIMEOUT.as_secs()).to_string()
}

/// The number of lines the container logged so far.
fn log_lines(env: &Env, name: &str) -> usize {
    env.ok(&["logs", name]).lines().count()
}

#[test]
fn events_of_a_run_and_a_followed_pause_unpause_stop() {
    let Some(env) = Env::new("events_of_a_run_and_a_followed_pause_unpause_stop") else {
        return;
    };
    // Refused before any VM.
    let err = env.fails(125, &["events", "--since", "yesterday"]);
    assert!(err.contains("--since"), "{err}");
    let err = env.fails(125, &["events", "--filter", "nope=1", "--until", "0s"]);
    assert!(err.contains("invalid filter"), "{err}");
    let err = env.fails(1, &["pause", "nosuch"]);
    assert!(err.contains("No such container"), "{err}");

    // A run --rm: create, start, die (exit code), destroy, in order.
    let t0 = unix_now() - 1;
    let done = env.husk(&["run", "--rm", "--name", "ev1", IMAGE, "sh", "-c", "exit 3"]);
    assert_eq!(done.code(), 3, "{}", done.stderr);
    let t1 = unix_now() + 1;
    let out = env.ok(&[
        "events",
        "--since",
        &t0.to_string(),
        "--until",
        &t1.to_string(),
        "--filter",
        "container=ev1",
        "--format",
        "{{json .}}",
    ]);
    assert_eq!(
        actions(&out),
        ["create", "start", "die", "destroy"],
        "{out}"
    );
    // Docker's default line, and the filters narrow it.
    let out = env.ok(&[
        "events",
        "--since",
        "10m",
        "--until",
        "0s",
        "--filter",
        "event=die",
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains(" container die ") && out.contains("exitCode=3") && out.contains("name=ev1"),
        "{out}"
    );

    // A follower sees what happens after it printed the first event.
    env.ok(&[
        "create",
        "--name",
        "ev2",
        IMAGE,
        "sh",
        "-c",
        "while :; do echo tick; sleep 0.2; done",
    ]);
    let mut follower = Running::start(env.cmd(&[
        "events",
        "--since",
        &t0.to_string(),
        "--until",
        &follow_until(),
        "--filter",
        "container=ev2",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]))
    .unwrap();
    follower.wait_for_line("create ev2", STEP_TIMEOUT).unwrap();
    env.ok(&["start", "ev2"]);
    follower.wait_for_line("start ev2", STEP_TIMEOUT).unwrap();
    env.eventually("ev2 to log", STEP_TIMEOUT, || log_lines(&env, "ev2") > 0);

    // Paused: status, no exec, no progress.
    assert_eq!(env.ok(&["pause", "ev2"]), "ev2\n");
    follower.wait_for_line("pause ev2", STEP_TIMEOUT).unwrap();
    assert_eq!(
        env.inspect(
            "ev2",
            "{{.State.Status}} {{.State.Paused}} {{.State.Running}}"
        ),
        "paused true true"
    );
    let ps = env.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("ev2 Up ") && ps.contains("(Paused)"), "{ps}");
    let err = env.fails(1, &["pause", "ev2"]);
    assert!(err.contains("is already paused"), "{err}");
    let err = env.husk(&["exec", "ev2", "true"]);
    assert_ne!(err.code(), 0);
    assert!(
        err.stderr
            .contains("is paused, unpause the container before exec"),
        "{}",
        err.stderr
    );
    let before = log_lines(&env, "ev2");
    // The observation window: a running ev2 logs 5 lines a second.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        log_lines(&env, "ev2"),
        before,
        "a paused container made progress"
    );

    // Unpaused: it goes on, and exec works again.
    assert_eq!(env.ok(&["unpause", "ev2"]), "ev2\n");
    follower.wait_for_line("unpause ev2", STEP_TIMEOUT).unwrap();
    assert_eq!(
        env.inspect("ev2", "{{.State.Status}} {{.State.Paused}}"),
        "running false"
    );
    env.eventually("ev2 to log again", STEP_TIMEOUT, || {
        log_lines(&env, "ev2") > before
    });
    assert_eq!(env.ok(&["exec", "ev2", "echo", "hi"]), "hi\n");
    follower
        .wait_for_line("exec_die ev2", STEP_TIMEOUT)
        .unwrap();
    let err = env.fails(1, &["unpause", "ev2"]);
    assert!(err.contains("is not paused"), "{err}");

    // A paused container stops.
    env.ok(&["pause", "ev2"]);
    env.ok(&["stop", "-t", "5", "ev2"]);
    for want in [
        "pause ev2",
        "unpause ev2",
        "kill ev2",
        "die ev2",
        "stop ev2",
    ] {
        follower.wait_for_line(want, STEP_TIMEOUT).unwrap();
    }
    assert_eq!(
        env.inspect("ev2", "{{.State.Status}} {{.State.Paused}}"),
        "exited false"
    );
    env.ok(&["rm", "ev2"]);
    follower.wait_for_line("destroy ev2", STEP_TIMEOUT).unwrap();
    follower.signal(rustix::process::Signal::INT);
    let done = follower.finish(VM_TIMEOUT).unwrap();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    env.assert_clean();
}

#[test]
fn restart_policies_on_failure_and_always() {
    let Some(env) = Env::new("restart_policies_on_failure_and_always") else {
        return;
    };
    // Docker's parsing and conflicts, before any VM.
    let err = env.fails(125, &["run", "--restart", "sometimes", IMAGE, "true"]);
    assert!(err.contains("unknown policy 'sometimes'"), "{err}");
    let err = env.fails(125, &["run", "--restart", "always:2", IMAGE, "true"]);
    assert!(err.contains("can only be used with 'on-failure'"), "{err}");
    let err = env.fails(125, &["run", "--rm", "--restart", "always", IMAGE, "true"]);
    assert!(
        err.contains("Conflicting options: --restart and --rm"),
        "{err}"
    );

    let t0 = unix_now() - 1;
    let mut follower = Running::start(env.cmd(&[
        "events",
        "--since",
        &t0.to_string(),
        "--until",
        &follow_until(),
        "--filter",
        "event=die",
        "--filter",
        "event=start",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]))
    .unwrap();

    // on-failure:2: three runs, the last exit stays.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "rf",
        "--restart",
        "on-failure:2",
        IMAGE,
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    for _ in 0..3 {
        follower.wait_for_line("start rf", VM_TIMEOUT).unwrap();
        follower.wait_for_line("die rf", VM_TIMEOUT).unwrap();
    }
    env.eventually("rf's monitor to end", STEP_TIMEOUT, || {
        env.inspect("rf", "{{.State.Status}}") == "exited"
    });
    assert_eq!(
        env.inspect("rf", "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}} {{json .HostConfig.RestartPolicy}}"),
        r#"exited 1 2 {"MaximumRetryCount":2,"Name":"on-failure"}"#
    );
    assert_eq!(env.ok(&["logs", "rf"]), "run\nrun\nrun\n");

    // always: restarted after exit 0; husk stop ends it for good.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "ra",
        "--restart",
        "always",
        IMAGE,
        "sh",
        "-c",
        "echo run; sleep 2",
    ]);
    for _ in 0..2 {
        follower.wait_for_line("start ra", VM_TIMEOUT).unwrap();
        follower.wait_for_line("die ra", VM_TIMEOUT).unwrap();
    }
    follower.wait_for_line("start ra", VM_TIMEOUT).unwrap();
    env.ok(&["stop", "-t", "1", "ra"]);
    assert_eq!(
        env.inspect("ra", "{{.State.Status}} {{.State.Restarting}}"),
        "exited false"
    );
    let count: u32 = env.inspect("ra", "{{.RestartCount}}").parse().unwrap();
    assert!(count >= 2, "{count}");
    env.eventually("ra's monitor to end", STEP_TIMEOUT, || {
        env.monitors().is_empty()
    });
    assert_eq!(
        env.inspect("ra", "{{.State.Status}}"),
        "exited",
        "restarted after stop"
    );
    env.ok(&["rm", "rf", "ra"]);
    follower.signal(rustix::process::Signal::TERM);
    let done = follower.finish(VM_TIMEOUT).unwrap();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    env.assert_clean();
}

#[test]
fn health_check_turns_healthy_then_unhealthy() {
    let Some(env) = Env::new("health_check_turns_healthy_then_unhealthy") else {
        return;
    };
    let err = env.fails(125, &["run", "--health-interval", "soon", IMAGE, "true"]);
    assert!(err.contains("--health-interval"), "{err}");
    let err = env.fails(
        125,
        &[
            "run",
            "--no-healthcheck",
            "--health-cmd",
            "true",
            IMAGE,
            "true",
        ],
    );
    assert!(err.contains("--no-healthcheck conflicts"), "{err}");

    let t0 = unix_now() - 1;
    let mut follower = Running::start(env.cmd(&[
        "events",
        "--since",
        &t0.to_string(),
        "--until",
        &follow_until(),
        "--filter",
        "container=hc",
        "--filter",
        "event=health_status",
        "--format",
        "{{.Action}}",
    ]))
    .unwrap();
    env.ok(&[
        "run",
        "-d",
        "--name",
        "hc",
        "--health-cmd",
        "test -e /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        // Generous: an exec takes tens of seconds on a loaded nested host.
        "--health-timeout",
        "150s",
        IMAGE,
        "sh",
        "-c",
        "touch /tmp/ok; exec sleep 1000",
    ]);
    follower
        .wait_for_line("health_status: healthy", STEP_TIMEOUT)
        .unwrap();
    assert_eq!(env.inspect("hc", "{{.State.Health.Status}}"), "healthy");
    let ps = env.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("hc Up ") && ps.contains("(healthy)"), "{ps}");

    // Made to fail: unhealthy after two failures in a row.
    env.ok(&["exec", "hc", "rm", "/tmp/ok"]);
    follower
        .wait_for_line("health_status: unhealthy", STEP_TIMEOUT)
        .unwrap();
    let streak: u32 = env
        .inspect("hc", "{{.State.Health.FailingStreak}}")
        .parse()
        .unwrap();
    assert!(streak >= 2, "{streak}");
    let log: Vec<serde_json::Value> =
        serde_json::from_str(&env.inspect("hc", "{{json .State.Health.Log}}")).unwrap();
    assert!(!log.is_empty() && log.len() <= 5, "{log:?}");
    assert_eq!(log.last().unwrap()["ExitCode"], 1, "{log:?}");
    assert!(
        log.last().unwrap()["Start"]
            .as_str()
            .unwrap_or_default()
            .ends_with('Z'),
        "{log:?}"
    );
    let ps = env.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("(unhealthy)"), "{ps}");
    env.ok(&["rm", "-f", "hc"]);
    follower.signal(rustix::process::Signal::TERM);
    let done = follower.finish(VM_TIMEOUT).unwrap();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    env.assert_clean();
}
