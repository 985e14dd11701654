//! End-to-end tests of container networking through the `husk` binary:
//! published ports (`-p`, `husk port`, `ps`), a host port in use, and
//! outbound access through passt. One VM boot: the web container also
//! serves the outbound check (`husk exec ... wget`).
//!
//! Skipped (with a message) without `HUSK_KERNEL`, root or passt.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "images/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "containers/support.rs"]
mod csupport;

use csupport::{Env, IMAGE};

/// How long the guest may take to boot and start serving.
const SERVE_TIMEOUT: Duration = Duration::from_secs(300);

fn passt_or_skip(test: &str) -> bool {
    let found = ["/usr/bin/passt", "/usr/sbin/passt"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !found {
        eprintln!("SKIPPED {test}: passt is not installed (apt-get install passt)");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /` on 127.0.0.1:port; the body, if the server answered 200.
fn http_get(port: u16) -> Option<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.") && head.contains(" 200 ")).then(|| body.to_string())
}

/// Polls `GET /` until it answers or `timeout` passes.
fn wait_for_http(port: u16, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(body) = http_get(port) {
            return Some(body);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

/// A one-shot HTTP server on the host's loopback: answers the first
/// request with `body`, gives up after `timeout`. Returns its port and a
/// handle yielding the request line it got.
fn one_shot_server(
    body: &'static str,
    timeout: Duration,
) -> (u16, std::thread::JoinHandle<Option<String>>) {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    server.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        let mut conn = loop {
            match server.accept() {
                Ok((c, _)) => break c,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(_) => return None,
            }
        };
        conn.set_nonblocking(false).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut req = [0u8; 1024];
        let n = conn.read(&mut req).unwrap_or(0);
        let resp = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(resp.as_bytes()).ok()?;
        let req = String::from_utf8_lossy(&req[..n]).into_owned();
        req.lines().next().map(str::to_string)
    });
    (port, handle)
}

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
        "run", "-d", "--name", "web", "-p", &publish, IMAGE, "sh", "-c", script,
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

    // Outbound: the gateway is the host's loopback.
    let (hport, served) = one_shot_server("hello from the host\n", SERVE_TIMEOUT);
    let url = format!("http://10.0.2.2:{hport}/");
    let got = env.ok(&["exec", "web", "wget", "-qO-", &url]);
    assert_eq!(got, "hello from the host\n");
    let request = served.join().unwrap();
    assert_eq!(request.as_deref(), Some("GET / HTTP/1.1"));

    env.ok(&["rm", "-f", "web"]);
    // passt went with the container: the port is free again.
    env.eventually("the host port to be free", Duration::from_secs(30), || {
        TcpListener::bind(("127.0.0.1", port)).is_ok()
    });
    env.assert_clean();
}
