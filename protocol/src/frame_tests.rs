use super::*;
use crate::{
    Capabilities, ContainerSpec, ErrorCode, ExecRequest, ProcessSecurity, Rlimit, RlimitResource,
    RootDisk, RootFs, Sysctl, PROTOCOL_VERSION,
};

fn samples() -> Vec<Message> {
    vec![
        Message::Hello {
            version: PROTOCOL_VERSION,
        },
        Message::CreateContainer(ContainerSpec {
            root: RootFs::Disk(RootDisk {
                serial: "disk0".into(),
                fs_type: "ext4".into(),
                read_only: true,
            }),
            shares: Vec::new(),
            volumes: Vec::new(),
            hostname: "vm".into(),
            hosts: Vec::new(),
            resolv_conf: None,
            network: None,
            files: Vec::new(),
            tmpfs: Vec::new(),
            sysctls: vec![Sysctl {
                key: "net.ipv4.ping_group_range".into(),
                value: "0 0".into(),
            }],
            read_only_root: true,
        }),
        Message::Exec(ExecRequest {
            argv: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: "1:2".into(),
            tty: false,
            stdin: false,
            size: None,
            security: Default::default(),
        }),
        Message::Exec(ExecRequest {
            argv: vec!["id".into()],
            env: Vec::new(),
            cwd: String::new(),
            user: String::new(),
            tty: true,
            stdin: true,
            size: Some((24, 80)),
            security: ProcessSecurity {
                additional_gids: vec![4321, 0],
                rlimits: vec![Rlimit {
                    resource: RlimitResource::RlimitNofile,
                    soft: 100,
                    hard: u64::MAX,
                }],
                capabilities: Some(Capabilities {
                    ambient: 1 << 10,
                    inheritable: 1 << 10,
                    ..Capabilities::docker_default()
                }),
                no_new_privileges: true,
                umask: Some(0o027),
            },
        }),
        Message::Stdout(b"out\n".to_vec()),
        Message::Stderr(vec![0, 255, 10]),
        Message::Stdin(Vec::new()),
        Message::StdinEof,
        Message::Signal(15),
        Message::Exited { code: 3 },
        Message::Signaled { signal: 9 },
        Message::Error {
            code: ErrorCode::NotFound,
            detail: "no such file".into(),
        },
        Message::Seed {
            entropy: (0..64).collect(),
            unix_time_ns: 1_700_000_000_123_456_789,
        },
    ]
}

#[test]
fn roundtrip_through_decode() {
    for msg in samples() {
        let frame = encode(&msg).unwrap();
        let (back, used) = decode(&frame).unwrap().unwrap();
        assert_eq!(back, msg);
        assert_eq!(used, frame.len());
    }
}

#[test]
fn roundtrip_through_stream() {
    let mut wire = Vec::new();
    for msg in samples() {
        write_message(&mut wire, &msg).unwrap();
    }
    let mut r = wire.as_slice();
    for msg in samples() {
        assert_eq!(read_message(&mut r).unwrap(), Some(msg));
    }
    assert!(read_message(&mut r).unwrap().is_none(), "clean EOF");
}

#[test]
fn decoder_handles_byte_by_byte_input() {
    let mut wire = Vec::new();
    for msg in samples() {
        write_message(&mut wire, &msg).unwrap();
    }
    let mut dec = FrameDecoder::new();
    let mut got = Vec::new();
    for b in wire {
        dec.push(&[b]);
        while let Some(m) = dec.next_message().unwrap() {
            got.push(m);
        }
    }
    assert_eq!(got, samples());
    assert_eq!(dec.pending(), 0);
}

#[test]
fn every_truncation_is_incomplete_not_an_error() {
    let frame = encode(&samples()[1]).unwrap();
    for cut in 0..frame.len() {
        assert!(decode(&frame[..cut]).unwrap().is_none(), "cut at {cut}");
        let mut r = &frame[..cut];
        match read_message(&mut r) {
            Ok(None) => assert_eq!(cut, 0),
            Err(ReadError::Truncated) => assert!(cut > 0),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn oversize_length_is_rejected_before_the_payload() {
    let header = (MAX_FRAME as u32 + 1).to_le_bytes();
    assert!(matches!(decode(&header), Err(DecodeError::TooLarge(_))));
    let mut dec = FrameDecoder::new();
    dec.push(&u32::MAX.to_le_bytes());
    assert!(matches!(dec.next_message(), Err(DecodeError::TooLarge(_))));
    let mut r = &header[..];
    assert!(matches!(
        read_message(&mut r),
        Err(ReadError::Decode(DecodeError::TooLarge(_)))
    ));
}

#[test]
fn garbage_payloads_are_errors() {
    let cases: [&[u8]; 4] = [
        &[],                                      // empty payload
        &[200],                                   // unknown variant
        &[2, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // Stdout with absurd length
        &[0, 0x80],                               // Hello with a truncated varint
    ];
    for payload in cases {
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(payload);
        assert!(
            matches!(decode(&frame), Err(DecodeError::Malformed(_))),
            "{payload:?}"
        );
    }
}

#[test]
fn trailing_bytes_are_errors() {
    let mut frame = encode(&Message::StdinEof).unwrap();
    frame.push(0);
    frame[..4].copy_from_slice(&2u32.to_le_bytes());
    assert!(matches!(decode(&frame), Err(DecodeError::TrailingBytes(1))));
}

#[test]
fn oversize_messages_are_not_encoded() {
    let msg = Message::Stdout(vec![0; MAX_FRAME]);
    assert!(matches!(encode(&msg), Err(EncodeError::TooLarge(_))));
}

#[test]
fn pseudo_random_input_never_panics() {
    // A small deterministic fuzz loop (xorshift); cargo-fuzz can drive
    // `decode` the same way.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 40) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if buf.len() >= 4 && next() % 2 == 0 {
            let body = (buf.len() - 4) as u32;
            buf[..4].copy_from_slice(&body.to_le_bytes());
        }
        let _ = decode(&buf);
        let mut dec = FrameDecoder::new();
        dec.push(&buf);
        while let Ok(Some(_)) = dec.next_message() {}
    }
}

#[test]
fn exit_codes_follow_docker() {
    assert_eq!(ErrorCode::NotFound.exit_code(), 127);
    assert_eq!(ErrorCode::NotExecutable.exit_code(), 126);
    assert_eq!(ErrorCode::PermissionDenied.exit_code(), 126);
    assert_eq!(ErrorCode::MountFailed.exit_code(), 125);
    assert_eq!(ErrorCode::Internal.exit_code(), 125);
}

#[test]
fn sysctl_names() {
    for ok in [
        "net.ipv4.ping_group_range",
        "kernel.shm_rmid_forced",
        "net.ipv4.conf.eth-0.rp_filter",
    ] {
        assert!(Sysctl::valid_key(ok), "{ok}");
    }
    for bad in [
        "",
        "kernel",
        ".a.b",
        "a..b",
        "a.b.",
        "net/ipv4/x",
        "a.b c",
        "a.../x",
    ] {
        assert!(!Sysctl::valid_key(bad), "{bad}");
    }
    assert!(!Sysctl::valid_key(&format!("a.{}", "b".repeat(300))));
    assert!(Sysctl::valid_value("0 2147483647"));
    assert!(!Sysctl::valid_value("a\0b"));
    assert!(!Sysctl::valid_value(
        &"1".repeat(crate::MAX_SYSCTL_VALUE + 1)
    ));
    let s = Sysctl {
        key: "net.ipv4.ip_forward".into(),
        value: "1".into(),
    };
    assert_eq!(s.proc_path(), "net/ipv4/ip_forward");
}
