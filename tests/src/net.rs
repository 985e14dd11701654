//! Loopback networking helpers for the tests that publish ports or reach
//! the host from a guest: passt's presence, free ports, a bounded HTTP
//! client and a one-shot HTTP server. Everything talks to 127.0.0.1 only
//! and gives up after a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::skip;

/// Whether Debian's passt is installed; [`skip`]s `test` if not.
pub fn passt_or_skip(test: &str) -> bool {
    let found = ["/usr/bin/passt", "/usr/sbin/passt"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !found {
        skip(test, "passt is not installed (apt-get install passt)");
    }
    found
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /` on 127.0.0.1:port; the body, if the server answered 200.
pub fn http_get(port: u16) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
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
pub fn wait_for_http(port: u16, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(body) = http_get(port) {
            return Some(body);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

/// What a [`one_shot_server`] saw.
#[derive(Debug)]
pub struct Served {
    /// The client's address.
    pub peer: SocketAddr,
    /// The first line of the request (`GET / HTTP/1.1`).
    pub request_line: String,
}

/// A one-shot HTTP server on the host's loopback: answers the first
/// request with `body`, gives up after `timeout`. Returns its port and a
/// handle yielding what it served (None if nobody came in time).
pub fn one_shot_server(body: &'static str, timeout: Duration) -> (u16, JoinHandle<Option<Served>>) {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    server.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        let (mut conn, peer) = loop {
            match server.accept() {
                Ok(accepted) => break accepted,
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
        let request_line = req.lines().next().unwrap_or_default().to_string();
        Some(Served { peer, request_line })
    });
    (port, handle)
}
