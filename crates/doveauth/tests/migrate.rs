use std::fs;
use std::time::{Duration, UNIX_EPOCH};

use chatmail_config::Mailboxes;
use doveauth::migrate::migrate_legacy_passdb;
use rusqlite::Connection;

#[test]
fn legacy_passdb_moves_into_mailbox_directories_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("passdb.sqlite");
    let connection = Connection::open(&db).expect("open");
    connection
        .execute_batch(
            "CREATE TABLE users (addr TEXT PRIMARY KEY, password TEXT, last_login INTEGER);
             INSERT INTO users VALUES ('alice1234@example.org', '{SHA512-CRYPT}$6$a$b', 1709659391);
             INSERT INTO users VALUES ('bob123456@example.org', '{SHA512-CRYPT}$6$c$d', NULL);
             INSERT INTO users VALUES ('ci-abcdef@example.org', '{SHA512-CRYPT}$6$e$f', 1);
             INSERT INTO users VALUES ('ac_abcdef@example.org', '{SHA512-CRYPT}$6$g$h', 1);
             INSERT INTO users VALUES ('../escape@example.org', '{SHA512-CRYPT}$6$i$j', 1);
             INSERT INTO users VALUES ('kept12345@example.org', '{SHA512-CRYPT}$6$old$old', 5);",
        )
        .expect("schema");
    drop(connection);
    fs::write(dir.path().join("passdb.sqlite-wal"), "").expect("wal");
    fs::write(dir.path().join("passdb.sqlite-shm"), "").expect("shm");

    let mailboxes = Mailboxes::new(dir.path().join("mail"));
    let kept = mailboxes.mailbox("kept12345@example.org").expect("safe");
    kept.write_password_hash("{SHA512-CRYPT}$6$new$new")
        .expect("existing account");

    let report = migrate_legacy_passdb(&db, &mailboxes)
        .expect("migrates")
        .expect("there was a database");
    assert_eq!(report.migrated, 3);
    assert_eq!(report.skipped, 3);
    assert_eq!(report.renamed_to, dir.path().join("passdb.sqlite.old"));
    assert!(!db.exists());
    assert!(report.renamed_to.is_file());
    assert!(!dir.path().join("passdb.sqlite-wal").exists());
    assert!(!dir.path().join("passdb.sqlite-shm").exists());

    let alice = mailboxes.mailbox("alice1234@example.org").expect("safe");
    assert_eq!(
        alice.password_hash().expect("read").as_deref(),
        Some("{SHA512-CRYPT}$6$a$b")
    );
    assert_eq!(alice.last_login().expect("read"), Some(1_709_596_800));
    assert!(
        !alice.enforces_e2ee_incoming().expect("stat"),
        "old accounts keep accepting cleartext"
    );
    let bob = mailboxes.mailbox("bob123456@example.org").expect("safe");
    assert!(bob.password_hash().expect("read").is_some());
    // The account that already had a mailbox keeps its current password.
    assert_eq!(
        kept.password_hash().expect("read").as_deref(),
        Some("{SHA512-CRYPT}$6$new$new")
    );
    for skipped in ["ci-abcdef@example.org", "ac_abcdef@example.org"] {
        assert!(!mailboxes.root().join(skipped).exists(), "{skipped}");
    }
    assert!(!dir.path().join("escape@example.org").exists());
    let mtime = fs::metadata(alice.password_path())
        .and_then(|meta| meta.modified())
        .expect("mtime");
    assert_eq!(mtime, UNIX_EPOCH + Duration::from_secs(1_709_596_800));

    // Second start: nothing left to migrate.
    assert_eq!(migrate_legacy_passdb(&db, &mailboxes).expect("no-op"), None);
}

#[test]
fn unreadable_database_is_an_error_and_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("passdb.sqlite");
    fs::write(&db, "this is not sqlite").expect("write");
    let mailboxes = Mailboxes::new(dir.path().join("mail"));
    let err = migrate_legacy_passdb(&db, &mailboxes).expect_err("must fail");
    assert!(err.to_string().contains("passdb.sqlite"), "{err}");
    assert!(db.exists());
}
