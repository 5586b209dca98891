use std::fs;
use std::time::{Duration, UNIX_EPOCH};

use chatmail_config::{AddressError, Mailboxes, day_start};

fn layout() -> (tempfile::TempDir, Mailboxes) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mailboxes = Mailboxes::new(dir.path().join("mail"));
    (dir, mailboxes)
}

#[test]
fn unsafe_addresses_are_refused() {
    let (_dir, mailboxes) = layout();
    let cases = [
        ("", AddressError::Empty),
        ("user", AddressError::NoAt),
        ("../etc", AddressError::NoAt),
        ("a/b@example.org", AddressError::UnsafeCharacter),
        ("user@example.org/..", AddressError::UnsafeCharacter),
        ("../../etc/passwd@x", AddressError::UnsafeCharacter),
        ("user\0@example.org", AddressError::UnsafeCharacter),
        ("user\n@example.org", AddressError::UnsafeCharacter),
        ("a\\b@example.org", AddressError::UnsafeCharacter),
        ("..@example.org", AddressError::DotDot),
        ("a..b@example.org", AddressError::DotDot),
        ("user@..", AddressError::DotDot),
    ];
    for (addr, expected) in cases {
        assert_eq!(mailboxes.mailbox(addr).err(), Some(expected), "{addr:?}");
    }
    let long = format!("{}@example.org", "a".repeat(250));
    assert_eq!(mailboxes.mailbox(&long).err(), Some(AddressError::TooLong));
}

#[test]
fn safe_addresses_stay_inside_the_root() {
    let (_dir, mailboxes) = layout();
    for addr in [
        "user@example.org",
        "abc123xyz@[127.0.0.1]",
        "a.b-c_d@x.org",
        ".hidden@x.org",
    ] {
        let mailbox = mailboxes.mailbox(addr).expect("safe");
        assert_eq!(mailbox.address(), addr);
        assert_eq!(mailbox.dir().parent(), Some(mailboxes.root()));
        assert_eq!(
            mailbox.dir().file_name().and_then(|n| n.to_str()),
            Some(addr)
        );
    }
}

#[test]
fn password_round_trip_is_atomic() {
    let (_dir, mailboxes) = layout();
    let mailbox = mailboxes.mailbox("user@example.org").expect("safe");
    assert_eq!(mailbox.password_hash().expect("read"), None);
    assert_eq!(mailbox.last_login().expect("read"), None);

    mailbox
        .write_password_hash("{SHA512-CRYPT}$6$abc$def")
        .expect("write");
    assert_eq!(
        mailbox.password_hash().expect("read").as_deref(),
        Some("{SHA512-CRYPT}$6$abc$def")
    );
    mailbox
        .write_password_hash("{PLAIN}second")
        .expect("overwrite");
    assert_eq!(
        mailbox.password_hash().expect("read").as_deref(),
        Some("{PLAIN}second")
    );

    let leftovers: Vec<_> = fs::read_dir(mailbox.dir())
        .expect("list")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .filter(|name| name != "password")
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn password_with_trailing_newline_is_trimmed() {
    let (_dir, mailboxes) = layout();
    let mailbox = mailboxes.mailbox("user@example.org").expect("safe");
    fs::create_dir_all(mailbox.dir()).expect("mkdir");
    fs::write(mailbox.password_path(), "{SHA512-CRYPT}$6$x$y\n").expect("write");
    assert_eq!(
        mailbox.password_hash().expect("read").as_deref(),
        Some("{SHA512-CRYPT}$6$x$y")
    );
}

#[test]
fn flag_files() {
    let (_dir, mailboxes) = layout();
    let mailbox = mailboxes.mailbox("user@example.org").expect("safe");
    assert!(!mailbox.enforces_e2ee_incoming().expect("stat"));
    assert!(!mailbox.is_disabled().expect("stat"));
    mailbox.set_enforce_e2ee_incoming().expect("create");
    assert!(mailbox.enforces_e2ee_incoming().expect("stat"));
    assert!(mailbox.dir().join("enforceE2EEincoming").is_file());
    fs::write(mailbox.dir().join("DISABLED"), "").expect("write");
    assert!(mailbox.is_disabled().expect("stat"));
}

#[test]
fn last_login_is_the_utc_day_of_the_password_mtime() {
    let (_dir, mailboxes) = layout();
    let mailbox = mailboxes.mailbox("user@example.org").expect("safe");
    mailbox.write_password_hash("{PLAIN}x").expect("write");

    // 2024-03-05 17:23:11 UTC
    let login = 1_709_659_391;
    let midnight = 1_709_596_800;
    assert_eq!(day_start(login), midnight);
    assert!(mailbox.record_login(login).expect("record"));
    let mtime = fs::metadata(mailbox.password_path())
        .and_then(|meta| meta.modified())
        .expect("mtime");
    assert_eq!(mtime, UNIX_EPOCH + Duration::from_secs(midnight));
    assert_eq!(mailbox.last_login().expect("read"), Some(midnight));

    // A later login on the same day writes nothing.
    assert!(!mailbox.record_login(midnight + 86_399).expect("record"));
    // The next day does.
    assert!(mailbox.record_login(midnight + 86_400).expect("record"));
    assert_eq!(mailbox.last_login().expect("read"), Some(midnight + 86_400));
}

#[test]
fn record_login_without_account_is_an_error() {
    let (_dir, mailboxes) = layout();
    let mailbox = mailboxes.mailbox("nobody@example.org").expect("safe");
    assert!(mailbox.record_login(1_709_659_391).is_err());
}

#[test]
fn addresses_lists_only_mailbox_directories() {
    let (_dir, mailboxes) = layout();
    for addr in ["a@example.org", "b@example.org"] {
        mailboxes
            .mailbox(addr)
            .expect("safe")
            .write_password_hash("{PLAIN}x")
            .expect("write");
    }
    fs::create_dir_all(mailboxes.root().join("pending_notifications")).expect("mkdir");
    fs::write(mailboxes.root().join("file@example.org"), "").expect("write");
    let mut found: Vec<String> = mailboxes
        .addresses()
        .expect("list")
        .collect::<Result<_, _>>()
        .expect("entries");
    found.sort();
    assert_eq!(found, ["a@example.org", "b@example.org"]);
}

#[test]
fn create_account_happens_once() {
    let (_dir, mailboxes) = layout();
    let mailbox = mailboxes.mailbox("new@example.org").expect("safe");
    assert!(
        mailbox
            .create_account("{SHA512-CRYPT}first")
            .expect("create")
    );
    assert!(
        !mailbox
            .create_account("{SHA512-CRYPT}second")
            .expect("exists")
    );
    assert_eq!(
        mailbox.password_hash().expect("read").as_deref(),
        Some("{SHA512-CRYPT}first")
    );
    assert!(mailbox.enforces_e2ee_incoming().expect("stat"));
}

#[test]
fn concurrent_creators_make_one_account() {
    let (_dir, mailboxes) = layout();
    let created: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..32)
            .map(|i| {
                let mailboxes = &mailboxes;
                scope.spawn(move || {
                    let mailbox = mailboxes.mailbox("race@example.org").expect("safe");
                    usize::from(mailbox.create_account(&format!("hash{i}")).expect("create"))
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("thread")).sum()
    });
    assert_eq!(created, 1);
    let entries = fs::read_dir(mailboxes.mailbox("race@example.org").expect("safe").dir())
        .expect("list")
        .count();
    assert_eq!(entries, 2, "only password and enforceE2EEincoming remain");
}
