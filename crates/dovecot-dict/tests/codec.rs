//! Decoding of every command as Dovecot 2.3.19 sends it (lines captured
//! from `doveadm dict` against a socket), and encoding of every reply.

use dovecot_dict::{Command, CommandError, IterateFlags, Reply};

#[test]
fn hello_as_sent_by_dovecot_2_3() {
    assert_eq!(
        Command::parse("H3\t2\t0\t\tauth"),
        Ok(Command::Hello {
            major: 3,
            minor: 2,
            user: String::new(),
            dict_name: "auth".into()
        })
    );
    // Extra fields from a newer client are tolerated.
    assert!(matches!(
        Command::parse("H4\t0\t0\tuser\tmetadata\textra"),
        Ok(Command::Hello { major: 4, .. })
    ));
}

#[test]
fn lookup_with_and_without_user() {
    assert_eq!(
        Command::parse("Lshared/passdb/foo\t"),
        Ok(Command::Lookup {
            key: "shared/passdb/foo".into(),
            user: String::new()
        })
    );
    assert_eq!(
        Command::parse("Lpriv/foo\tsomeone"),
        Ok(Command::Lookup {
            key: "priv/foo".into(),
            user: "someone".into()
        })
    );
    assert_eq!(
        Command::parse("Lshared/x"),
        Ok(Command::Lookup {
            key: "shared/x".into(),
            user: String::new()
        })
    );
}

#[test]
fn lookup_key_is_unescaped() {
    // A passdb key carrying a password with a TAB and an LF in it.
    assert_eq!(
        Command::parse("Lshared/passdb/pa\u{1}tss\u{1}nword\"user@x\t"),
        Ok(Command::Lookup {
            key: "shared/passdb/pa\tss\nword\"user@x".into(),
            user: String::new()
        })
    );
}

#[test]
fn iterate_with_user_and_without() {
    assert_eq!(
        Command::parse("I0\t0\tshared/userdb/\t"),
        Ok(Command::Iterate {
            flags: IterateFlags(0),
            max_rows: 0,
            paths: vec!["shared/userdb/".into()],
            user: String::new()
        })
    );
    assert_eq!(
        Command::parse("I9\t5\tshared/a/"),
        Ok(Command::Iterate {
            flags: IterateFlags(9),
            max_rows: 5,
            paths: vec!["shared/a/".into()],
            user: String::new()
        })
    );
    let flags = IterateFlags(IterateFlags::RECURSE | IterateFlags::NO_VALUE);
    assert!(flags.contains(IterateFlags::NO_VALUE));
    assert!(!flags.contains(IterateFlags::SORT_BY_KEY));
}

#[test]
fn transaction_commands() {
    let cases = [
        (
            "B1\t",
            Command::Begin {
                id: 1,
                user: String::new(),
            },
        ),
        (
            "B7\tuser@x",
            Command::Begin {
                id: 7,
                user: "user@x".into(),
            },
        ),
        (
            "S1\tshared/last-login/x\t1234",
            Command::Set {
                id: 1,
                key: "shared/last-login/x".into(),
                value: "1234".into(),
            },
        ),
        (
            "S2\tpriv/k\t",
            Command::Set {
                id: 2,
                key: "priv/k".into(),
                value: String::new(),
            },
        ),
        (
            "U1\tshared/last-login/x",
            Command::Unset {
                id: 1,
                key: "shared/last-login/x".into(),
            },
        ),
        (
            "P1\tk\tv",
            Command::Append {
                id: 1,
                key: "k".into(),
                value: "v".into(),
            },
        ),
        (
            "A1\tshared/x\t-5",
            Command::AtomicInc {
                id: 1,
                key: "shared/x".into(),
                diff: -5,
            },
        ),
        (
            "T1\t1700000000\t5",
            Command::Timestamp {
                id: 1,
                secs: 1_700_000_000,
                nsecs: 5,
            },
        ),
        ("V1\tyes", Command::HideLogValues { id: 1, hide: true }),
        (
            "C1",
            Command::Commit {
                id: 1,
                asynchronous: false,
            },
        ),
        (
            "D3",
            Command::Commit {
                id: 3,
                asynchronous: true,
            },
        ),
        ("R4", Command::Rollback { id: 4 }),
    ];
    for (line, expected) in cases {
        assert_eq!(Command::parse(line), Ok(expected), "{line:?}");
    }
}

#[test]
fn malformed_lines() {
    let cases = [
        ("", CommandError::Empty, false),
        ("X1", CommandError::Unknown('X'), false),
        ("Habc", malformed('H', "bad major version"), false),
        ("Lkey\tuser\textra", malformed('L', "too many fields"), true),
        ("Lbad\u{1}", malformed('L', "bad escape sequence"), true),
        ("Ix\t0\tpath", malformed('I', "bad flags"), true),
        ("I0\t-1\tpath", malformed('I', "bad row limit"), true),
        ("I0\t0", malformed('I', "missing path"), true),
        ("Bx", malformed('B', "bad transaction id"), false),
        ("B-1", malformed('B', "bad transaction id"), false),
        ("C", malformed('C', "bad transaction id"), true),
        ("S1\tkey", malformed('S', "missing value"), false),
        ("U1", malformed('U', "missing key"), false),
        ("A1\tk\tx", malformed('A', "bad difference"), false),
        ("T1\tx\t0", malformed('T', "bad seconds"), false),
    ];
    for (line, expected, expects_reply) in cases {
        let error = Command::parse(line).expect_err(line);
        assert_eq!(error, expected, "{line:?}");
        assert_eq!(error.expects_reply(), expects_reply, "{line:?}");
    }
}

fn malformed(command: char, reason: &'static str) -> CommandError {
    CommandError::Malformed { command, reason }
}

#[test]
fn replies_encode_as_dovecot_expects() {
    let cases = [
        (Reply::Value("plain".into()), "Oplain\n"),
        (
            Reply::Value("{\"a\":\"x\ty\"}".into()),
            "O{\"a\":\"x\u{1}ty\"}\n",
        ),
        (Reply::NotFound, "N\n"),
        (Reply::Failed("disk\nfull".into()), "Fdisk\u{1}nfull\n"),
        (
            Reply::Row {
                key: "shared/userdb/a@x".into(),
                value: "v\t1".into(),
            },
            "Oshared/userdb/a@x\tv\u{1}t1\n",
        ),
        (Reply::IterationDone, "\n"),
        (Reply::IterationFailed, "F\n"),
        (
            Reply::Commit {
                id: 12,
                ok: true,
                asynchronous: false,
            },
            "O12\n",
        ),
        (
            Reply::Commit {
                id: 3,
                ok: false,
                asynchronous: false,
            },
            "F3\n",
        ),
        (
            Reply::Commit {
                id: 3,
                ok: true,
                asynchronous: true,
            },
            "AO3\n",
        ),
    ];
    for (reply, wire) in cases {
        assert_eq!(reply.encode(), wire, "{reply:?}");
    }
}

#[test]
fn escaped_values_round_trip_through_a_lookup_line() {
    let key = "priv/x\ty\n\0\u{1}z";
    let line = format!("L{}\tuser", dovecot_dict::escape::escape(key));
    assert_eq!(
        Command::parse(&line),
        Ok(Command::Lookup {
            key: key.into(),
            user: "user".into()
        })
    );
}
