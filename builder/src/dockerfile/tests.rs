use super::*;

fn parse_ok(src: &str) -> Dockerfile {
    parse(src.as_bytes(), "Dockerfile").unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(src: &str) -> String {
    parse(src.as_bytes(), "Dockerfile").unwrap_err().to_string()
}

fn instructions(src: &str) -> Vec<Instruction> {
    let d = parse_ok(src);
    d.stages
        .into_iter()
        .flat_map(|s| std::iter::once(s.from).chain(s.steps))
        .map(|s| s.instruction)
        .collect()
}

#[test]
fn every_instruction() {
    let src = r#"
ARG BASE=busybox
FROM --platform=linux/amd64 ${BASE}:1 AS Builder
RUN echo hi && \
    echo there
RUN ["/bin/echo", "exec form"]
RUN --network=none true
COPY --from=x --chown=1:2 --chmod=644 a b* /dst/
ADD ["a b", "/c d/"]
WORKDIR /app
ENV A=1 B="two words" C=3
ENV LEGACY the rest of the line
ARG X Y=2
CMD ["run"]
ENTRYPOINT /bin/ep arg
EXPOSE 80 53/udp
USER app:staff
LABEL "com.x"="y z" v=1
VOLUME ["/data", "/logs"]
VOLUME /a /b
SHELL ["/bin/bash", "-c"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=3 CMD curl -f http://x/ || exit 1
HEALTHCHECK NONE
MAINTAINER someone <a@b>
onbuild RUN echo later
FROM scratch
"#;
    let d = parse_ok(src);
    assert_eq!(d.meta_args.len(), 1);
    assert_eq!(d.stages.len(), 2);
    assert_eq!(d.stages[0].name.as_deref(), Some("builder"));
    assert_eq!(d.stage_index("BUILDER"), Some(0));
    assert_eq!(d.stage_index("1"), Some(1));
    assert_eq!(d.stage_index("2"), None);
    assert_eq!(d.stages[0].steps[0].line, 4);
    assert_eq!(
        d.stages[0].steps[0].original,
        "RUN echo hi &&     echo there"
    );
    let all = instructions(src);
    let want = vec![
        Instruction::From {
            image: "${BASE}:1".into(),
            name: Some("builder".into()),
            platform: Some("linux/amd64".into()),
        },
        Instruction::Run {
            cmd: Command::Shell("echo hi &&     echo there".into()),
            network: None,
        },
        Instruction::Run {
            cmd: Command::Exec(vec!["/bin/echo".into(), "exec form".into()]),
            network: None,
        },
        Instruction::Run {
            cmd: Command::Shell("true".into()),
            network: Some("none".into()),
        },
        Instruction::Copy(CopyArgs {
            sources: vec!["a".into(), "b*".into()],
            dest: "/dst/".into(),
            from: Some("x".into()),
            chown: Some("1:2".into()),
            chmod: Some("644".into()),
        }),
        Instruction::Add(CopyArgs {
            sources: vec!["a b".into()],
            dest: "/c d/".into(),
            from: None,
            chown: None,
            chmod: None,
        }),
        Instruction::Workdir("/app".into()),
        Instruction::Env(vec![
            ("A".into(), "1".into()),
            ("B".into(), "\"two words\"".into()),
            ("C".into(), "3".into()),
        ]),
        Instruction::Env(vec![("LEGACY".into(), "the rest of the line".into())]),
        Instruction::Arg(vec![("X".into(), None), ("Y".into(), Some("2".into()))]),
        Instruction::Cmd(Command::Exec(vec!["run".into()])),
        Instruction::Entrypoint(Command::Shell("/bin/ep arg".into())),
        Instruction::Expose(vec!["80".into(), "53/udp".into()]),
        Instruction::User("app:staff".into()),
        Instruction::Label(vec![
            ("\"com.x\"".into(), "\"y z\"".into()),
            ("v".into(), "1".into()),
        ]),
        Instruction::Volume(vec!["/data".into(), "/logs".into()]),
        Instruction::Volume(vec!["/a".into(), "/b".into()]),
        Instruction::Shell(vec!["/bin/bash".into(), "-c".into()]),
        Instruction::StopSignal("SIGINT".into()),
        Instruction::Healthcheck(Healthcheck::Check {
            cmd: Command::Shell("curl -f http://x/ || exit 1".into()),
            interval: 5_000_000_000,
            timeout: 0,
            start_period: 0,
            start_interval: 0,
            retries: 3,
        }),
        Instruction::Healthcheck(Healthcheck::None),
        Instruction::Maintainer("someone <a@b>".into()),
        Instruction::Onbuild("RUN echo later".into()),
        Instruction::From {
            image: "scratch".into(),
            name: None,
            platform: None,
        },
    ];
    assert_eq!(all, want);
}

#[test]
fn errors_name_the_line() {
    let cases = [
        ("FROM a\nRUN x\n\n# c\nFORM b\n", "Dockerfile:5: unknown instruction: FORM"),
        ("FROM a\nCOPY onlyone\n", "Dockerfile:2: COPY requires at least two arguments, but got 1"),
        ("FROM a\nRUN --mount=type=cache true\n", "Dockerfile:2: unknown flag: --mount (for RUN)"),
        ("RUN x\n", "Dockerfile:1: no build stage in current context: the first instruction must be FROM (or ARG)"),
        ("FROM a b\n", "Dockerfile:1: FROM requires either one or three arguments: FROM <image> [AS <name>]"),
        ("FROM a AS 1x\n", "Dockerfile:1: invalid name for build stage: \"1x\", name can't start with a number or contain symbols"),
        ("FROM a AS x\nFROM b AS X\n", "Dockerfile:2: duplicate stage name \"x\""),
        ("FROM a\nENV\n", "Dockerfile:2: ENV requires at least one argument"),
        ("FROM a\nENV =x\n", "Dockerfile:2: ENV names can not be blank"),
        ("FROM a\nENV onlykey\n", "Dockerfile:2: ENV must have two arguments"),
        ("FROM a\nSHELL /bin/sh -c\n", "Dockerfile:2: SHELL requires the arguments to be in JSON form, e.g. [\"/bin/sh\", \"-c\"]"),
        ("FROM a\nHEALTHCHECK --interval=5y CMD x\n", "Dockerfile:2: --interval: invalid duration \"5y\""),
        ("FROM a\nLABEL a='unterminated\n", "Dockerfile:2: unterminated quote (') in \"a='unterminated\""),
        ("FROM a\nONBUILD FROM b\n", "Dockerfile:2: FROM isn't allowed as an ONBUILD trigger"),
        ("# escape=x\nFROM a\n", "Dockerfile:1: invalid escape directive \"x\": must be ` or \\"),
        ("\n\n# only comments\n", "Dockerfile: file with no instructions: a Dockerfile needs a FROM"),
        ("FROM a\nRUN \\\n x\nWORKDIR a b\n", "Dockerfile:4: WORKDIR requires exactly one argument"),
    ];
    for (src, want) in cases {
        assert_eq!(parse_err(src), want, "for {src:?}");
    }
    let err = parse(b"FROM a\nRUN \xff\n", "my.Dockerfile").unwrap_err();
    assert_eq!(err.to_string(), "my.Dockerfile:2: not valid UTF-8");
}

#[test]
fn flags_and_forms() {
    // A shell-form command that only looks like JSON stays shell form.
    let i = instructions("FROM a\nCMD [\"unterminated\"\nENTRYPOINT []\n");
    assert_eq!(
        i[1],
        Instruction::Cmd(Command::Shell("[\"unterminated\"".into()))
    );
    assert_eq!(i[2], Instruction::Entrypoint(Command::Exec(vec![])));
    // Keywords are case-insensitive; "--" alone is not a flag.
    let i = instructions("from a\ncopy -- /x\n");
    assert!(matches!(&i[1], Instruction::Copy(c) if c.sources == ["--"]));
}

#[test]
fn durations() {
    use super::instr::parse_duration;
    assert_eq!(parse_duration("1m30s").unwrap(), 90_000_000_000);
    assert_eq!(parse_duration("250ms").unwrap(), 250_000_000);
    assert_eq!(parse_duration("1.5h").unwrap(), 5_400_000_000_000);
    for bad in ["", "s", "5", "1e400s", "9999999999999h", "-1s", "1s2"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Random Dockerfiles from instruction fragments, quote and escape
/// characters, substitutions and raw bytes: parsing and expanding must
/// return (Ok or Err), never panic.
#[test]
fn random_input_never_panics() {
    let fragments = [
        "FROM ",
        "RUN ",
        "COPY ",
        "ADD ",
        "ENV ",
        "ARG ",
        "LABEL ",
        "CMD ",
        "SHELL ",
        "HEALTHCHECK ",
        "ONBUILD ",
        "WORKDIR ",
        "EXPOSE ",
        "USER ",
        "VOLUME ",
        "STOPSIGNAL ",
        "--from=",
        "--chown=",
        "--interval=",
        "=",
        "\"",
        "'",
        "\\",
        "`",
        "$",
        "${",
        "}",
        ":-",
        ":+",
        ":?",
        "[",
        "]",
        ",",
        "\n",
        "\r\n",
        " ",
        "\t",
        "#",
        "# escape=`\n",
        "AS ",
        "x",
        "é",
        "\u{0}",
        "\u{feff}",
        "CMD",
        "[\"a\",",
        "1s",
        "NONE",
        "--",
        "=\"",
        "\\\n",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let n = 1 + rng.next() % 40;
        let mut src = String::new();
        for _ in 0..n {
            src.push_str(rng.pick(&fragments));
        }
        let mut bytes = src.into_bytes();
        if rng.next().is_multiple_of(8) && !bytes.is_empty() {
            let at = (rng.next() % bytes.len() as u64) as usize;
            bytes[at] = (rng.next() & 0xff) as u8;
        }
        if let Ok(d) = parse(&bytes, "Dockerfile") {
            for s in d.stages.iter().flat_map(|s| s.steps.iter()) {
                for w in words::split_words(&s.original, d.escape).unwrap_or_default() {
                    let _ =
                        words::expand(&w, d.escape, &|n| (n.len() % 2 == 0).then(|| "v".into()));
                }
            }
        }
    }
}
