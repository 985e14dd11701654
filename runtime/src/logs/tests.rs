use super::*;
use std::fs::OpenOptions;

fn unbounded() -> LogConfig {
    LogConfig {
        max_size: u64::MAX,
        max_file: 1,
    }
}

#[test]
fn lines_round_trip_and_partial_writes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log.json");
    let mut w = LogWriter::open(&p, unbounded()).unwrap();
    w.write("stdout", b"a\nb\npart").unwrap();
    w.write("stderr", b"\xffe\n").unwrap();
    let mut r = LogReader::<LogEntry>::open(&p).unwrap();
    let e = r.read_new().unwrap();
    let logs: Vec<(&str, &str)> = e
        .iter()
        .map(|e| (e.stream.as_str(), e.log.as_str()))
        .collect();
    assert_eq!(
        logs,
        [
            ("stdout", "a\n"),
            ("stdout", "b\n"),
            ("stdout", "part"),
            ("stderr", "\u{fffd}e\n")
        ]
    );
    assert!(crate::time::parse_secs(&e[0].time).is_some());
    // A line being written is not returned until complete.
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(br#"{"log":"x\n","stream":"stdout","#).unwrap();
    assert!(r.read_new().unwrap().is_empty());
    f.write_all(b"\"time\":\"2024-01-01T00:00:00Z\"}\n")
        .unwrap();
    assert_eq!(r.read_new().unwrap()[0].log, "x\n");
    assert_eq!(read_all(&p).unwrap().len(), 5);
    assert!(read_all(&dir.path().join("none")).unwrap().is_empty());
    assert!(husk_sandbox::explain::tail_text(&p, 10).ends_with("Z\"}\n"));
}

/// The length of one entry of `text` (a fixed-width timestamp).
fn entry_len(text: &str) -> u64 {
    let e = LogEntry {
        log: text.into(),
        stream: "stdout".into(),
        time: crate::time::now(),
    };
    serde_json::to_string(&e).unwrap().len() as u64 + 1
}

fn texts(entries: &[LogEntry]) -> Vec<String> {
    entries.iter().map(|e| e.log.clone()).collect()
}

fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn rotation_keeps_max_file_files_of_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log.json");
    let line = entry_len("0000\n");
    // Three entries fit in a file, not four.
    let config = LogConfig {
        max_size: 3 * line + 2,
        max_file: 3,
    };
    let mut w = LogWriter::open(&p, config).unwrap();
    // A follower from the start sees every entry across the rotations,
    // however many happen between its reads.
    let mut follower = LogReader::<LogEntry>::open(&p).unwrap();
    let mut followed = Vec::new();
    for i in 0..20 {
        // Several entries in one write rotate between them.
        let batch = if i % 5 == 0 {
            format!("{i:04}\n{:04}\n", 100 + i)
        } else {
            format!("{i:04}\n")
        };
        w.write("stdout", batch.as_bytes()).unwrap();
        if i % 4 == 0 {
            followed.extend(texts(&follower.read_new().unwrap()));
        }
    }
    followed.extend(texts(&follower.read_new().unwrap()));
    let mut all = Vec::new();
    for i in 0..20 {
        all.push(format!("{i:04}\n"));
        if i % 5 == 0 {
            all.push(format!("{:04}\n", 100 + i));
        }
    }
    // 24 entries: the follower, reading at least every 4 writes (6
    // entries, within the 9 kept), saw them all.
    assert_eq!(followed, all);
    let on_disk = files(dir.path());
    let names: Vec<&str> = on_disk.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["log.json", "log.json.1", "log.json.2"]);
    for (name, len) in &on_disk {
        assert!(*len <= config.max_size, "{name}: {len}");
    }
    // The kept files hold the last 9 entries, read back in order.
    let kept = texts(&read_all(&p).unwrap());
    assert_eq!(kept.len(), 9, "{kept:?}");
    assert_eq!(kept, all[all.len() - 9..]);
    // Reopened (a restarted container), the writer carries on.
    drop(w);
    let mut w = LogWriter::open(&p, config).unwrap();
    w.write("stdout", b"next\n").unwrap();
    let kept = texts(&read_all(&p).unwrap());
    assert_eq!(kept.last().map(String::as_str), Some("next\n"));
    assert_eq!(files(dir.path()).len(), 3);
}

#[test]
fn one_file_is_emptied_and_followers_start_over() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log.json");
    let line = entry_len("0000\n");
    let config = LogConfig {
        max_size: 2 * line,
        max_file: 1,
    };
    let mut w = LogWriter::open(&p, config).unwrap();
    w.write("stdout", b"0000\n0001\n").unwrap();
    let mut follower = LogReader::<LogEntry>::open(&p).unwrap();
    assert_eq!(follower.read_new().unwrap().len(), 2);
    w.write("stdout", b"0002\n").unwrap();
    assert_eq!(files(dir.path()), [("log.json".to_string(), line)]);
    assert_eq!(texts(&follower.read_new().unwrap()), ["0002\n"]);
    // An entry larger than max-size still goes whole into its own file.
    let big = "x".repeat(3 * line as usize);
    w.write("stderr", big.as_bytes()).unwrap();
    let kept = read_all(&p).unwrap();
    assert_eq!(texts(&kept), [big]);
    assert_eq!(kept[0].stream, "stderr");
}

#[test]
fn a_follower_whose_file_was_dropped_goes_on_with_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log.json");
    let line = entry_len("0000\n");
    let config = LogConfig {
        max_size: line,
        max_file: 2,
    };
    let mut w = LogWriter::open(&p, config).unwrap();
    w.write("stdout", b"0000\n").unwrap();
    let mut follower = LogReader::<LogEntry>::open(&p).unwrap();
    assert_eq!(texts(&follower.read_new().unwrap()), ["0000\n"]);
    // Its file is rotated out of existence: it goes on with what is kept.
    w.write("stdout", b"0001\n0002\n0003\n").unwrap();
    assert_eq!(texts(&follower.read_new().unwrap()), ["0002\n", "0003\n"]);
    assert!(follower.read_new().unwrap().is_empty());
    w.write("stdout", b"0004\n").unwrap();
    assert_eq!(texts(&follower.read_new().unwrap()), ["0004\n"]);
}
