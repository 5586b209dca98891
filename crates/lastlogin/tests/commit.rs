use std::fs;
use std::time::{Duration, UNIX_EPOCH};

use chatmail_config::Mailboxes;
use dovecot_dict::{Change, DictHandler, Transaction};
use lastlogin::LastLoginDict;

fn set(key: &str, value: &str) -> Transaction {
    Transaction {
        id: 1,
        user: String::new(),
        dict_name: "lastlogin".into(),
        changes: vec![Change::Set {
            key: key.into(),
            value: value.into(),
        }],
    }
}

#[tokio::test]
async fn login_sets_password_mtime_to_the_utc_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mailboxes = Mailboxes::new(dir.path());
    let mailbox = mailboxes.mailbox("user@example.org").expect("safe");
    mailbox.write_password_hash("{PLAIN}x").expect("account");
    let dict = LastLoginDict::new(mailboxes.clone());

    dict.commit(set("shared/last-login/user@example.org", "1709659391"))
        .await
        .expect("commit");
    let mtime = fs::metadata(mailbox.password_path())
        .and_then(|meta| meta.modified())
        .expect("mtime");
    assert_eq!(mtime, UNIX_EPOCH + Duration::from_secs(1_709_596_800));
    // Later the same day: still that day.
    dict.commit(set("shared/last-login/user@example.org", "1709680000"))
        .await
        .expect("commit");
    assert_eq!(mailbox.last_login().expect("read"), Some(1_709_596_800));
}

#[tokio::test]
async fn unknown_accounts_and_foreign_keys_are_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dict = LastLoginDict::new(Mailboxes::new(dir.path()));
    for key in [
        "shared/last-login/nobody@example.org",
        "shared/last-login/../../etc/passwd",
        "shared/other/user@example.org",
    ] {
        dict.commit(set(key, "1709659391")).await.expect("ignored");
    }
    assert_eq!(
        fs::read_dir(dir.path()).expect("ls").count(),
        0,
        "nothing created"
    );
    assert!(
        dict.commit(set("shared/last-login/user@example.org", "soon"))
            .await
            .is_err()
    );
    assert_eq!(dict.lookup("shared/last-login/x@y", "").await, Ok(None));
}

#[tokio::test]
async fn odd_times_fail_the_commit_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mailboxes = Mailboxes::new(dir.path());
    let mailbox = mailboxes.mailbox("user@example.org").expect("safe");
    mailbox.write_password_hash("{PLAIN}x").expect("account");
    let before = mailbox.last_login().expect("read");
    let dict = LastLoginDict::new(mailboxes.clone());
    for value in [
        u64::MAX.to_string(),
        (u64::MAX / 2).to_string(),
        "99999999999999999999999".to_owned(),
        // Next year.
        (std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 366 * 86_400)
            .to_string(),
        "-1".to_owned(),
    ] {
        let result = dict
            .commit(set("shared/last-login/user@example.org", &value))
            .await;
        assert!(result.is_err(), "{value}");
    }
    assert_eq!(mailbox.last_login().expect("read"), before);
    // A time SystemTime cannot hold is an error, not a panic.
    assert!(mailbox.record_login(u64::MAX).is_err());
}
