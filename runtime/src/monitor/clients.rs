//! The monitor's attach clients (see [`crate::attach`] for the protocol).

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use husk_protocol::{write_message, ErrorCode, FrameDecoder, Message, PROTOCOL_VERSION};

/// Most attach clients at once.
const MAX_CLIENTS: usize = 32;
/// A client that does not take its output within this time is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// It finished its handshake (sent `Ok`).
    Attached,
    /// Its terminal size.
    Resize(u16, u16),
    /// Input for the process.
    Stdin(Vec<u8>),
    /// End of its input.
    StdinEof,
    /// A signal for the process.
    Signal(i32),
    /// `husk pause` (`true`) or `unpause` from the client at this index
    /// of [`Clients::fds`] minus one, to be answered with
    /// [`Clients::answer`].
    Pause(usize, bool),
}

/// How the container ended, as told to clients.
#[derive(Clone, Debug)]
pub struct EndNotice {
    /// Exit code.
    pub code: i32,
    /// Error to report first.
    pub error: Option<(ErrorCode, String)>,
}

struct Client {
    conn: UnixStream,
    decoder: FrameDecoder,
    greeted: bool,
    attached: bool,
    dead: bool,
}

/// The attach listener's clients.
pub struct Clients {
    listener: UnixListener,
    clients: Vec<Client>,
    end: Option<EndNotice>,
    /// Some client has attached since the monitor started.
    served: bool,
}

impl Clients {
    /// Serves `listener` (non-blocking).
    pub fn new(listener: UnixListener) -> io::Result<Clients> {
        listener.set_nonblocking(true)?;
        Ok(Clients {
            listener,
            clients: Vec::new(),
            end: None,
            served: false,
        })
    }

    /// The fds to poll: the listener, then each client.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd())
            .chain(self.clients.iter().map(|c| c.conn.as_fd()))
            .collect()
    }

    /// Whether any client has attached.
    pub fn any_attached(&self) -> bool {
        self.clients.iter().any(|c| c.attached && !c.dead)
    }

    /// Accepts pending connections.
    pub fn accept(&mut self) {
        while let Ok((conn, _)) = self.listener.accept() {
            if self.clients.len() >= MAX_CLIENTS
                || conn.set_nonblocking(false).is_err()
                || conn.set_write_timeout(Some(SEND_TIMEOUT)).is_err()
            {
                continue;
            }
            self.clients.push(Client {
                conn,
                decoder: FrameDecoder::new(),
                greeted: false,
                attached: false,
                dead: false,
            });
        }
    }

    /// Reads from the client polled at position `i` of [`Self::fds`]
    /// minus one; returns what it asked for.
    pub fn read(&mut self, i: usize) -> Vec<ClientEvent> {
        let end = self.end.clone();
        let Some(c) = self.clients.get_mut(i) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        match c.conn.read(&mut buf) {
            Ok(0) | Err(_) => {
                c.dead = true;
                return events;
            }
            Ok(n) => c.decoder.push(&buf[..n]),
        }
        loop {
            match c.decoder.next_message() {
                Ok(Some(Message::Pause)) if c.greeted && !c.attached => {
                    events.push(ClientEvent::Pause(i, true))
                }
                Ok(Some(Message::Resume)) if c.greeted && !c.attached => {
                    events.push(ClientEvent::Pause(i, false))
                }
                Ok(Some(msg)) => {
                    c.on_message(msg, &mut events, end.as_ref());
                    self.served |= c.attached;
                }
                Ok(None) => break,
                Err(_) => {
                    c.dead = true;
                    break;
                }
            }
        }
        events
    }

    /// Sends `msg` to every attached client; drops those that fail.
    pub fn broadcast(&mut self, msg: &Message) {
        for c in self.clients.iter_mut().filter(|c| c.attached && !c.dead) {
            if write_message(&mut c.conn, msg).is_err() {
                c.dead = true;
            }
        }
    }

    /// Tells every attached client (and every later one) how the
    /// container ended, and closes their connections.
    pub fn finish(&mut self, end: EndNotice) {
        for c in self.clients.iter_mut().filter(|c| c.attached && !c.dead) {
            send_end(&mut c.conn, &end);
            c.dead = true;
        }
        self.end = Some(end);
    }

    /// After [`Clients::finish`], when no client ever attached (the VM
    /// failed before the container ran, while its starter was about to
    /// attach): serves the clients that come until `deadline` or until one
    /// has attached, so that the starter learns the real error rather
    /// than seeing its connection closed.
    pub fn serve_late(&mut self, deadline: std::time::Instant) {
        while !self.served {
            let ready = match husk_sandbox::wait::poll_readable(&self.fds(), Some(deadline)) {
                Ok(r) if !r.is_empty() => r,
                _ => return,
            };
            for i in ready {
                match i {
                    0 => self.accept(),
                    i => drop(self.read(i - 1)),
                }
            }
            self.reap();
        }
    }

    /// Answers a [`ClientEvent::Pause`] (`Ok`, or `Error` with `why`) and
    /// closes that client.
    pub fn answer(&mut self, i: usize, why: Option<String>) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        let msg = match why {
            None => Message::Ok,
            Some(detail) => Message::Error {
                code: ErrorCode::BadRequest,
                detail,
            },
        };
        let _ = write_message(&mut c.conn, &msg);
        c.dead = true;
    }

    /// A new run of the container (its restart policy's): clients that
    /// attach from now on see its output, not the last run's end.
    pub fn restart(&mut self) {
        self.end = None;
    }

    /// Forgets dead clients.
    pub fn reap(&mut self) {
        self.clients.retain(|c| !c.dead);
    }
}

impl Client {
    fn on_message(&mut self, msg: Message, events: &mut Vec<ClientEvent>, end: Option<&EndNotice>) {
        if !self.greeted {
            match msg {
                Message::Hello { version } if version == PROTOCOL_VERSION => {
                    self.greeted = true;
                    let hello = Message::Hello {
                        version: PROTOCOL_VERSION,
                    };
                    if write_message(&mut self.conn, &hello).is_err() {
                        self.dead = true;
                    }
                }
                _ => self.dead = true,
            }
            return;
        }
        match msg {
            Message::Ok if !self.attached => {
                self.attached = true;
                if let Some(end) = end {
                    send_end(&mut self.conn, end);
                    self.dead = true;
                } else {
                    events.push(ClientEvent::Attached);
                }
            }
            Message::Resize { rows, cols } => events.push(ClientEvent::Resize(rows, cols)),
            Message::Stdin(b) if self.attached => events.push(ClientEvent::Stdin(b)),
            Message::StdinEof if self.attached => events.push(ClientEvent::StdinEof),
            Message::Signal(s) if self.attached && (1..=64).contains(&s) => {
                events.push(ClientEvent::Signal(s))
            }
            _ => self.dead = true,
        }
    }
}

fn send_end(conn: &mut UnixStream, end: &EndNotice) {
    if let Some((code, detail)) = &end.error {
        let _ = write_message(
            conn,
            &Message::Error {
                code: *code,
                detail: detail.clone(),
            },
        );
    }
    let _ = write_message(conn, &Message::Exited { code: end.code });
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::read_message;

    #[test]
    fn handshake_events_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let mut clients = Clients::new(UnixListener::bind(&path).unwrap()).unwrap();
        let mut c = UnixStream::connect(&path).unwrap();
        clients.accept();
        assert_eq!(clients.fds().len(), 2);
        write_message(
            &mut c,
            &Message::Hello {
                version: PROTOCOL_VERSION,
            },
        )
        .unwrap();
        write_message(
            &mut c,
            &Message::Resize {
                rows: 30,
                cols: 100,
            },
        )
        .unwrap();
        write_message(&mut c, &Message::Ok).unwrap();
        write_message(&mut c, &Message::Stdin(b"x".to_vec())).unwrap();
        let mut events = Vec::new();
        while events.len() < 3 {
            events.extend(clients.read(0));
        }
        assert_eq!(
            events,
            [
                ClientEvent::Resize(30, 100),
                ClientEvent::Attached,
                ClientEvent::Stdin(b"x".to_vec())
            ]
        );
        assert!(matches!(
            read_message(&mut c).unwrap(),
            Some(Message::Hello { .. })
        ));
        clients.broadcast(&Message::Stdout(b"out".to_vec()));
        assert_eq!(
            read_message(&mut c).unwrap(),
            Some(Message::Stdout(b"out".to_vec()))
        );
        clients.finish(EndNotice {
            code: 127,
            error: Some((ErrorCode::NotFound, "nope".into())),
        });
        assert!(matches!(
            read_message(&mut c).unwrap(),
            Some(Message::Error { .. })
        ));
        assert_eq!(
            read_message(&mut c).unwrap(),
            Some(Message::Exited { code: 127 })
        );
        clients.reap();
        // A late client gets the end right after attaching.
        let mut late = UnixStream::connect(&path).unwrap();
        clients.accept();
        write_message(
            &mut late,
            &Message::Hello {
                version: PROTOCOL_VERSION,
            },
        )
        .unwrap();
        write_message(&mut late, &Message::Ok).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(clients.read(0).is_empty());
        assert!(matches!(
            read_message(&mut late).unwrap(),
            Some(Message::Hello { .. })
        ));
        assert!(matches!(
            read_message(&mut late).unwrap(),
            Some(Message::Error { .. })
        ));
        assert_eq!(
            read_message(&mut late).unwrap(),
            Some(Message::Exited { code: 127 })
        );
        // Garbage gets a client dropped.
        let mut bad = UnixStream::connect(&path).unwrap();
        clients.reap();
        clients.accept();
        write_message(&mut bad, &Message::Ok).unwrap();
        let n = clients.fds().len() - 2;
        let _ = clients.read(n);
        clients.reap();
        assert_eq!(clients.fds().len(), 1);
    }

    /// The VM failed before its starter attached: the starter, attaching
    /// after the end, still hears the error and the exit code.
    #[test]
    fn a_starter_attaching_after_a_failed_boot_hears_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let mut clients = Clients::new(UnixListener::bind(&path).unwrap()).unwrap();
        clients.finish(EndNotice {
            code: 125,
            error: Some((ErrorCode::Internal, "no virtiofsd".into())),
        });
        let starter = std::thread::spawn(move || {
            let mut c = UnixStream::connect(&path).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let hello = Message::Hello {
                version: PROTOCOL_VERSION,
            };
            write_message(&mut c, &hello).unwrap();
            write_message(&mut c, &Message::Ok).unwrap();
            let mut got = Vec::new();
            while let Ok(Some(m)) = husk_protocol::read_message(&mut c) {
                got.push(m);
            }
            got
        });
        clients.serve_late(std::time::Instant::now() + Duration::from_secs(10));
        let got = starter.join().unwrap();
        assert!(
            got.iter()
                .any(|m| matches!(m, Message::Error { detail, .. } if detail == "no virtiofsd")),
            "{got:?}"
        );
        assert_eq!(got.last(), Some(&Message::Exited { code: 125 }));
        // Once one has attached, nothing more is waited for.
        let start = std::time::Instant::now();
        clients.serve_late(start + Duration::from_secs(10));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
