//! End-to-end tests of container networking through the `husk` binary:
//! published ports (`-p`, `husk port`, `ps`), a host port in use, and
//! outbound access through passt. One VM boot: the web container also
//! serves the outbound check (`husk exec ... wget`).
//!
//! Skipped (with a message) without `HUSK_KERNEL`, root or passt.

use std::net::TcpListener;
use std::time::Duration;

#[allow(dead_code)]
#[path = "images/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "containers/support.rs"]
mod csupport;

use csupport::{Env, IMAGE};
use husk_tests::net::{free_port, one_shot_server, passt_or_skip, wait_for_http};

/// How long the guest may take to boot and start serving.
const SERVE_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn published_port_port_command_port_in_use_and_outbound() {
    let test = "published_port_port_command_port_in_use_and_outbound";
    if !passt_or_skip(test) {
        return;
    }
    let Some(env) = Env::new(test) else {
        return;
    };
    // Refused at create time, before any VM.
    let err = env.fails(
        125,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-p",
            "80",
            IMAGE,
            "true",
        ],
    );
    assert!(err.contains("--network none"), "{err}");
    let err = env.fails(125, &["run", "--rm", "-p", "80:x", IMAGE, "true"]);
    assert!(err.contains("invalid port specification"), "{err}");

    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    let script = "mkdir -p /www && echo hello-from-container > /www/index.html \
                  && exec httpd -f -p 80 -h /www";
    let id = env.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &publish,
        "--add-host",
        "host.docker.internal:host-gateway",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let body = wait_for_http(port, SERVE_TIMEOUT);
    assert_eq!(body.as_deref(), Some("hello-from-container\n"));

    assert_eq!(
        env.ok(&["port", "web"]),
        format!("80/tcp -> 127.0.0.1:{port}\n")
    );
    assert_eq!(
        env.ok(&["port", "web", "80/tcp"]),
        format!("127.0.0.1:{port}\n")
    );
    let err = env.fails(1, &["port", "web", "81"]);
    assert!(err.contains("No public port '81'"), "{err}");
    let ps = env.ok(&["ps", "--format", "{{.Names}} {{.Ports}}"]);
    assert_eq!(ps, format!("web 127.0.0.1:{port}->80/tcp\n"));
    assert_eq!(
        env.inspect("web", "{{json .NetworkSettings.Ports}}"),
        format!("{{\"80/tcp\":[{{\"HostIp\":\"127.0.0.1\",\"HostPort\":\"{port}\"}}]}}")
    );

    // The same host port again: refused before the VM boots, named, and
    // the --rm container is gone.
    let same = format!("{port}:80");
    let err = env.fails(125, &["run", "--rm", "-p", &same, IMAGE, "true"]);
    assert!(err.contains(&format!(":{port}/tcp")), "{err}");
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(env.ok(&["ps", "-aq"]).lines().count(), 1);
    // Without --rm it stays created, as with Docker.
    env.fails(
        125,
        &["run", "-d", "--name", "busy", "-p", &same, IMAGE, "true"],
    );
    assert_eq!(env.inspect("busy", "{{.State.Status}}"), "created");
    env.ok(&["rm", "busy"]);
    assert_eq!(env.monitors().len(), 1, "one monitor: web's");

    // Outbound to the host's loopback: opted in with host-gateway (the
    // refusal without it is tests/net.rs's).
    let (hport, served) = one_shot_server("hello from the host\n", SERVE_TIMEOUT);
    let url = format!("http://host.docker.internal:{hport}/");
    let got = env.ok(&["exec", "web", "wget", "-qO-", &url]);
    assert_eq!(got, "hello from the host\n");
    let served = served
        .join()
        .unwrap()
        .expect("the guest's request reached the host");
    assert_eq!(served.request_line, "GET / HTTP/1.1");

    env.ok(&["rm", "-f", "web"]);
    // passt went with the container: the port is free again.
    env.eventually("the host port to be free", Duration::from_secs(30), || {
        TcpListener::bind(("127.0.0.1", port)).is_ok()
    });
    env.assert_clean();
}
