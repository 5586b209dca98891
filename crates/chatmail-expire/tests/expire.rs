//! The expiry rules at their boundaries, over synthetic mailboxes with
//! controlled names, sizes and mtimes, through the library and through
//! the three commands.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use chatmail_config::Config;
use chatmail_expire::{
    Counters, DAY, Plan, Policy, Problems, Removal, apply, plan, plan_quota, reference_time,
    scan_mailbox,
};
use filetime::FileTime;

const ADDR: &str = "user@example.org";

struct Relay {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ini: PathBuf,
    now: i64,
}

impl Relay {
    fn new(extra_ini: &str) -> Self {
        let dir = tempfile::tempdir().expect("test fixture");
        let root = dir.path().join("mail");
        fs::create_dir(&root).expect("test fixture");
        let ini = dir.path().join("chatmail.ini");
        fs::write(
            &ini,
            format!(
                "[params]\nmail_domain = example.org\nmailboxes_dir = {}\n{extra_ini}",
                root.display()
            ),
        )
        .expect("test fixture");
        Self {
            _dir: dir,
            root,
            ini,
            now: reference_time(0),
        }
    }

    fn config(&self) -> Config {
        Config::load(&self.ini).expect("test fixture")
    }

    /// A mailbox whose last login was `days_ago` days ago.
    fn mailbox(&self, addr: &str, days_ago: i64) -> PathBuf {
        let dir = self.root.join(addr);
        for part in ["cur", "new", "tmp"] {
            fs::create_dir_all(dir.join(part)).expect("test fixture");
        }
        let password = dir.join("password");
        fs::write(&password, "{SHA512-CRYPT}$6$x").expect("test fixture");
        self.set_age(&password, days_ago * DAY);
        dir
    }

    /// A message file with a Dovecot name carrying `size`, `age` seconds old.
    fn message(&self, dir: &Path, part: &str, name: &str, size: u64, age: i64) -> PathBuf {
        let path = dir.join(part).join(format!("{name},S={size},W={size}:2,S"));
        fs::create_dir_all(path.parent().expect("test fixture")).expect("test fixture");
        fs::write(&path, b"x").expect("test fixture");
        self.set_age(&path, age);
        path
    }

    fn set_age(&self, path: &Path, age: i64) {
        let time = FileTime::from_unix_time(self.now - age, 0);
        filetime::set_symlink_file_times(path, time, time).expect("test fixture");
    }

    fn policy(&self) -> Policy {
        Policy::from_config(&self.config(), self.now)
    }

    /// Plans and applies one mailbox; returns the plan.
    fn expire(&self, dir: &Path, dry_run: bool) -> Plan {
        let problems = Problems::default();
        let mailbox = scan_mailbox(dir, &problems).expect("test fixture");
        let plan = plan(&mailbox, &self.policy());
        let removal = Removal {
            dry_run,
            verbose: false,
        };
        apply(&mailbox, &plan, removal, &Counters::default(), &problems);
        assert_eq!(problems.errors(), 0);
        plan
    }

    fn run(&self, command: &str, args: &[&str]) -> String {
        let output = Command::new(command)
            .arg(&self.ini)
            .args(args)
            .output()
            .expect("test fixture");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).expect("test fixture")
    }
}

/// Every path under `root` with its mtime, sorted.
fn snapshot(root: &Path) -> Vec<(PathBuf, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("test fixture") {
            let entry = entry.expect("test fixture");
            let meta = fs::symlink_metadata(entry.path()).expect("test fixture");
            out.push((
                entry.path(),
                FileTime::from_last_modification_time(&meta).unix_seconds(),
            ));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn inactive_mailboxes_go_at_exactly_the_configured_age() {
    let relay = Relay::new("delete_inactive_users_after = 90\n");
    let at_limit = relay.mailbox("atlimit@example.org", 90);
    let over = relay.mailbox("over@example.org", 90);
    relay.set_age(&over.join("password"), 90 * DAY + 1);
    assert_eq!(relay.expire(&at_limit, false), Plan::default());
    assert_eq!(relay.expire(&over, false).remove_mailbox, Some("inactive"));
    assert!(at_limit.exists());
    assert!(!over.exists());
}

#[test]
fn old_messages_go_at_exactly_the_configured_age() {
    let relay = Relay::new("delete_mails_after = 20\n");
    let dir = relay.mailbox(ADDR, 0);
    let kept = relay.message(&dir, "new", "1.M1", 100, 20 * DAY);
    let gone = relay.message(&dir, "cur", "2.M2", 100, 20 * DAY + 1);
    let in_folder = relay.message(&dir, ".Sent/cur", "3.M3", 100, 21 * DAY);
    fs::write(dir.join("maildirsize"), "1000S\n").unwrap();
    relay.expire(&dir, false);
    assert!(kept.exists());
    assert!(!gone.exists());
    assert!(!in_folder.exists(), "IMAP subfolders are expired too");
    assert!(!dir.join("maildirsize").exists());
}

#[test]
fn large_seen_messages_go_after_delete_large_after() {
    let relay = Relay::new("delete_large_after = 7\n");
    let dir = relay.mailbox(ADDR, 0);
    let age = 7 * DAY + 1;
    let exactly_limit = relay.message(&dir, "cur", "1.M1", 200_000, age);
    let large_seen = relay.message(&dir, "cur", "2.M2", 200_001, age);
    let large_unseen = relay.message(&dir, "new", "3.M3", 200_001, age);
    let large_recent = relay.message(&dir, "cur", "4.M4", 200_001, 7 * DAY);
    relay.expire(&dir, false);
    assert!(exactly_limit.exists());
    assert!(!large_seen.exists());
    assert!(
        large_unseen.exists(),
        "unseen messages wait for delete_mails_after"
    );
    assert!(large_recent.exists());
}

#[test]
fn mailboxes_are_trimmed_to_70_percent_oldest_first_sparing_the_last_day() {
    // 1 MiB quota: the target is 734,003 bytes (70%, rounded down per 100).
    let relay = Relay::new("max_mailbox_size = 1M\n");
    let target = relay.policy().quota_target;
    assert_eq!(target, 1_048_576 / 100 * 70);
    let dir = relay.mailbox(ADDR, 0);
    let oldest = relay.message(&dir, "cur", "1.M1", 300_000, 5 * DAY);
    let older = relay.message(&dir, "cur", "2.M2", 300_000, 4 * DAY);
    let old = relay.message(&dir, "cur", "3.M3", 100_000, 3 * DAY);
    let recent = relay.message(&dir, "new", "4.M4", target - 100_000, DAY);
    fs::write(dir.join("maildirsize"), "1000S\n").unwrap();
    relay.expire(&dir, false);
    // Total 1,434,003 > target: the two oldest go, leaving exactly target.
    assert!(!oldest.exists());
    assert!(!older.exists());
    assert!(old.exists());
    assert!(recent.exists());
    assert!(!dir.join("maildirsize").exists());

    // Only messages of the last 24 hours: nothing can go.
    let dir = relay.mailbox("fresh@example.org", 0);
    let fresh = relay.message(&dir, "new", "5.M5", 2_000_000, DAY - 60);
    fs::write(dir.join("maildirsize"), "1000S\n").unwrap();
    assert_eq!(relay.expire(&dir, false), Plan::default());
    assert!(fresh.exists());
    assert!(
        dir.join("maildirsize").exists(),
        "unchanged mailbox keeps maildirsize"
    );
}

#[test]
fn directories_without_password_or_messages_go_after_a_day() {
    let relay = Relay::new("");
    let orphan = relay.root.join("orphan@example.org");
    fs::create_dir(&orphan).unwrap();
    fs::write(orphan.join("dovecot.index.log"), "x").unwrap();
    relay.set_age(&orphan, DAY + 1);
    let young = relay.root.join("young@example.org");
    fs::create_dir(&young).unwrap();
    let with_mail = relay.root.join("mail@example.org");
    relay.message(&with_mail, "new", "1.M1", 10, 2 * DAY);
    relay.set_age(&with_mail, 2 * DAY);
    relay.expire(&orphan, false);
    relay.expire(&young, false);
    relay.expire(&with_mail, false);
    assert!(!orphan.exists());
    assert!(young.exists(), "may be an account being created right now");
    assert!(with_mail.exists());
}

#[test]
fn symbolic_links_are_never_followed() {
    let relay = Relay::new("delete_mails_after = 1\ndelete_inactive_users_after = 1\n");
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    fs::write(&secret, "keep me").unwrap();
    relay.set_age(&secret, 100 * DAY);
    fs::create_dir(outside.path().join("cur")).unwrap();
    let outside_message = relay.message(outside.path(), "cur", "9.M9", 10, 100 * DAY);

    // A link to a file posing as an old message, a linked cur/ of a
    // subfolder, and a mailbox that is a link to another directory.
    let dir = relay.mailbox(ADDR, 0);
    std::os::unix::fs::symlink(&secret, dir.join("cur/1.M1,S=10:2,S")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("cur"), dir.join(".Evil")).unwrap();
    fs::create_dir(dir.join(".Folder")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("cur"), dir.join(".Folder/cur")).unwrap();
    std::os::unix::fs::symlink(outside.path(), relay.root.join("link@example.org")).unwrap();
    let out = relay.run(env!("CARGO_BIN_EXE_chatmail-expire"), &["--remove"]);
    assert!(
        out.starts_with("Removed 0 out of 1 mailboxes and 0 out of 0 files"),
        "{out}"
    );

    // Now the account itself expires: the links go, their targets stay.
    relay.set_age(&dir.join("password"), 30 * DAY);
    let out = relay.run(env!("CARGO_BIN_EXE_chatmail-expire"), &["--remove"]);
    assert!(out.starts_with("Removed 1 out of 1 mailboxes"), "{out}");
    assert!(!dir.exists());
    assert_eq!(fs::read_to_string(&secret).unwrap(), "keep me");
    assert!(outside_message.exists());
    assert!(relay.root.join("link@example.org").exists());
}

#[test]
fn files_vanishing_during_the_pass_are_counted_not_fatal() {
    let relay = Relay::new("delete_mails_after = 1\n");
    let dir = relay.mailbox(ADDR, 0);
    let first = relay.message(&dir, "cur", "1.M1", 10, 5 * DAY);
    relay.message(&dir, "cur", "2.M2", 10, 5 * DAY);
    let problems = Problems::default();
    let mailbox = scan_mailbox(&dir, &problems).unwrap();
    // The client fetched and deleted one between scan and removal.
    fs::remove_file(&first).unwrap();
    let counters = Counters::default();
    let removal = Removal {
        dry_run: false,
        verbose: false,
    };
    apply(
        &mailbox,
        &plan(&mailbox, &relay.policy()),
        removal,
        &counters,
        &problems,
    );
    assert_eq!(problems.vanished(), 1);
    assert_eq!(problems.errors(), 0);
    assert_eq!(Counters::get(&counters.files_removed), 1);
    // A whole mailbox vanishing before its scan is not an error either.
    assert!(scan_mailbox(&relay.root.join("gone@example.org"), &problems).is_none());
    assert_eq!(problems.errors(), 0);
}

#[test]
fn a_dry_run_changes_nothing_at_all() {
    let relay = Relay::new("max_mailbox_size = 1M\ndelete_mails_after = 10\n");
    let inactive = relay.mailbox("inactive@example.org", 200);
    relay.message(&inactive, "cur", "1.M1", 10, 300 * DAY);
    let over_quota = relay.mailbox("full@example.org", 0);
    for n in 0..5 {
        relay.message(
            &over_quota,
            "cur",
            &format!("{n}.M"),
            400_000,
            (n + 2) * DAY,
        );
    }
    relay.message(&over_quota, "new", "old.M", 10, 30 * DAY);
    fs::write(over_quota.join("maildirsize"), "1\n").unwrap();
    let orphan = relay.root.join("orphan@example.org");
    fs::create_dir(&orphan).unwrap();
    relay.set_age(&orphan, 3 * DAY);

    let before = snapshot(&relay.root);
    let out = relay.run(env!("CARGO_BIN_EXE_chatmail-expire"), &["-v"]);
    assert_eq!(snapshot(&relay.root), before);
    assert!(
        out.starts_with("Would remove 2 out of 3 mailboxes"),
        "{out}"
    );
    assert!(out.contains("nothing was removed"), "{out}");

    let out = relay.run(env!("CARGO_BIN_EXE_chatmail-expire"), &["--remove"]);
    assert!(
        out.starts_with("Removed 2 out of 3 mailboxes and 6 out of 7 files"),
        "{out}"
    );
    assert!(!inactive.exists());
    assert!(!orphan.exists());
    // The 30-day-old message goes, then the oldest 4 of the 5 large ones
    // until 400,000 bytes are left of the 734,000 allowed; the inactive
    // mailbox's message makes the sixth file.
    let left: Vec<_> = fs::read_dir(over_quota.join("cur")).unwrap().collect();
    assert_eq!(left.len(), 1);
    assert!(
        left[0]
            .as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("0.M")
    );
}

#[test]
fn quota_expire_trims_one_mailbox_to_the_target() {
    let relay = Relay::new("");
    let dir = relay.mailbox(ADDR, 0);
    for n in 0..4 {
        relay.message(&dir, "cur", &format!("{n}.M"), 1024 * 1024, (n + 2) * DAY);
    }
    relay.message(&dir, "new", "fresh.M", 1024 * 1024, 60);
    fs::write(dir.join("maildirsize"), "1\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_chatmail-quota-expire"))
        .args(["2"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let problems = Problems::default();
    let mailbox = scan_mailbox(&dir, &problems).unwrap();
    assert_eq!(mailbox.message_bytes(), 2 * 1024 * 1024);
    assert!(
        mailbox
            .messages
            .iter()
            .any(|m| m.path.ends_with("fresh.M,S=1048576,W=1048576:2,S"))
    );
    assert!(!dir.join("maildirsize").exists());
    // The same choice as the library makes.
    assert!(plan_quota(&mailbox, &[], 2 * 1024 * 1024, relay.now).is_empty());
}

#[test]
fn fsreport_writes_both_metrics_files_atomically_and_readable() {
    use std::os::unix::fs::PermissionsExt as _;
    let relay = Relay::new("");
    let dir = relay.mailbox("alice@example.org", 5);
    relay.message(&dir, "cur", "1.M1", 600 * 1024, 3 * DAY);
    relay.message(&dir, "new", "2.M2", 1000, DAY);
    relay.mailbox("ci-test@example.org", 0);
    let metrics_dir = tempfile::tempdir().unwrap();
    let legacy = metrics_dir.path().join("metrics");
    let textfile = metrics_dir.path().to_str().unwrap().to_owned();
    let legacy_arg = legacy.to_str().unwrap().to_owned();
    relay.run(
        env!("CARGO_BIN_EXE_chatmail-fsreport"),
        &["--textfile", &textfile, "--legacy-metrics", &legacy_arg],
    );
    let prom = fs::read_to_string(metrics_dir.path().join("fsreport.prom")).unwrap();
    assert!(
        prom.contains("chatmail_accounts{kind=\"all\"} 2\n"),
        "{prom}"
    );
    assert!(
        prom.contains("chatmail_accounts{kind=\"ci\"} 1\n"),
        "{prom}"
    );
    assert!(
        prom.contains("chatmail_accounts_active{days=\"10\"} 1\n"),
        "{prom}"
    );
    assert!(
        prom.contains("chatmail_accounts_active{days=\"1\"} 0\n"),
        "{prom}"
    );
    assert!(
        prom.contains("chatmail_messages_count{min_size=\"524288\"} 1\n"),
        "{prom}"
    );
    assert!(
        prom.contains("chatmail_messages_bytes{min_size=\"0\"} 615400\n"),
        "{prom}"
    );
    let legacy_text = fs::read_to_string(&legacy).unwrap();
    assert!(legacy_text.contains("\naccounts 2\n") && legacy_text.contains("nonci_accounts 1\n"));
    for path in [metrics_dir.path().join("fsreport.prom"), legacy] {
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{}", path.display());
    }
    // No temp files left behind.
    assert_eq!(fs::read_dir(metrics_dir.path()).unwrap().count(), 2);

    let summary = relay.run(env!("CARGO_BIN_EXE_chatmail-fsreport"), &["--mdir", "cur"]);
    assert!(summary.contains("[cur] larger than"), "{summary}");
    assert!(summary.contains("non-ci:  1"), "{summary}");
}

#[test]
fn unreadable_directories_are_counted_not_fatal() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    // The pass runs as vmail (as systemd runs it); a directory it cannot
    // read, left by someone else, must not stop it.
    let vmail = nix::unistd::User::from_name("vmail")
        .unwrap()
        .expect("the vmail user (tests/run creates it)");
    let relay = Relay::new("delete_mails_after = 1\n");
    let top = relay.root.parent().unwrap();
    fs::set_permissions(top, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&relay.ini, fs::Permissions::from_mode(0o644)).unwrap();
    let locked = relay.mailbox("locked@example.org", 0);
    relay.message(&locked, "cur", "1.M1", 10, 5 * DAY);
    fs::set_permissions(locked.join("cur"), fs::Permissions::from_mode(0o700)).unwrap();
    let open = relay.mailbox("open@example.org", 0);
    let old = relay.message(&open, "new", "2.M2", 10, 5 * DAY);
    for path in [
        &relay.root,
        &open,
        &open.join("new"),
        &open.join("cur"),
        &open.join("tmp"),
    ] {
        nix::unistd::chown(path.as_path(), Some(vmail.uid), Some(vmail.gid)).unwrap();
    }
    nix::unistd::chown(old.as_path(), Some(vmail.uid), Some(vmail.gid)).unwrap();
    // vmail may not reach the build directory (a checkout under /root):
    // it runs a copy from the test's own directory.
    let binary = top.join("chatmail-expire");
    fs::copy(env!("CARGO_BIN_EXE_chatmail-expire"), &binary).unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
    // Another test thread may fork while the copy is still open for
    // writing; its child holds the file until it execs ("text file busy").
    let mut attempts = 0;
    let output = loop {
        let run = Command::new(&binary)
            .arg(&relay.ini)
            .arg("--remove")
            .uid(vmail.uid.as_raw())
            .gid(vmail.gid.as_raw())
            .output();
        match run {
            Err(error)
                if error.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 50 =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other.unwrap(),
        }
    };
    assert!(output.status.success(), "{output:?}");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains("1 errors"), "{out}");
    assert!(!old.exists(), "the readable mailbox was still expired");
    assert!(String::from_utf8_lossy(&output.stderr).contains("Permission denied"));
}
