//! doveauth's dict handler over a real unix socket, with mailbox
//! directories in a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chatmail_config::Config;
use doveauth::{AuthDict, AuthMetrics};
use dovecot_dict::{ServerLimits, SocketOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

const USER: &str = "abcdefgh1@example.org";
const PASSWORD: &str = "s3cret pass\"word'\\";

struct Relay {
    dir: tempfile::TempDir,
    socket: PathBuf,
    stop: CancellationToken,
    metrics: AuthMetrics,
}

impl Relay {
    fn mail(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    fn nocreate(&self) -> PathBuf {
        self.dir.path().join("nocreate")
    }

    async fn client(&self) -> BufReader<UnixStream> {
        let stream = UnixStream::connect(&self.socket).await.expect("connect");
        let mut client = BufReader::new(stream);
        client
            .get_mut()
            .write_all(b"H3\t2\t0\t\tauth\n")
            .await
            .expect("hello");
        client
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(extra: &str) -> Relay {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ini = format!(
        "[params]\nmail_domain = example.org\nmailboxes_dir = {mail}\n\
         nocreate_file = {nocreate}\nmax_load_1m = 1000\n{extra}",
        mail = dir.path().join("mail").display(),
        nocreate = dir.path().join("nocreate").display(),
    );
    // Generous resource limits unless the test sets its own.
    for default in ["min_free_disk_space = 1M\n", "min_available_memory = 1M\n"] {
        let key = default.split(' ').next().unwrap_or_default();
        if !extra.contains(key) {
            ini.push_str(default);
        }
    }
    let config = Config::from_ini_str(&ini, Path::new("test.ini")).expect("config");
    let socket = dir.path().join("doveauth.socket");
    let listener = dovecot_dict::bind(&socket, SocketOptions::default()).expect("bind");
    let stop = CancellationToken::new();
    let cancelled = stop.clone();
    let metrics = AuthMetrics::new();
    tokio::spawn(dovecot_dict::serve(
        listener,
        Arc::new(AuthDict::new(&config, metrics.clone())),
        ServerLimits::default(),
        async move { cancelled.cancelled().await },
    ));
    Relay {
        dir,
        socket,
        stop,
        metrics,
    }
}

/// Dovecot's `%E`: backslash before `\`, `"` and `'`.
fn percent_e(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\'', "\\'")
}

fn passdb_line(user: &str, password: &str) -> String {
    let key = format!("shared/passdb/{}\"{}", percent_e(password), percent_e(user));
    format!("L{}\t\n", dovecot_dict::escape::escape(&key))
}

async fn ask(client: &mut BufReader<UnixStream>, line: &str) -> String {
    client
        .get_mut()
        .write_all(line.as_bytes())
        .await
        .expect("write");
    let mut reply = String::new();
    client.read_line(&mut reply).await.expect("read");
    reply
}

fn json(reply: &str) -> serde_json::Value {
    let body = reply
        .strip_prefix('O')
        .unwrap_or_else(|| panic!("expected a value, got {reply:?}"));
    serde_json::from_str(body.trim_end()).expect("json")
}

#[tokio::test]
async fn first_login_creates_the_account() {
    let relay = start("").await;
    let mut client = relay.client().await;
    assert_eq!(
        ask(&mut client, &format!("Lshared/userdb/{USER}\t\n")).await,
        "N\n"
    );

    let reply = json(&ask(&mut client, &passdb_line(USER, PASSWORD)).await);
    let home = relay.mail().join(USER);
    assert_eq!(reply["home"], home.display().to_string());
    assert_eq!(reply["uid"], "vmail");
    assert_eq!(reply["gid"], "vmail");
    assert_eq!(reply["addr"], USER);
    let hash = reply["password"].as_str().expect("password");
    assert!(hash.starts_with("{SHA512-CRYPT}$6$"), "{hash}");
    assert!(!hash.contains(PASSWORD));
    assert_eq!(
        std::fs::read_to_string(home.join("password")).expect("file"),
        hash
    );
    assert!(home.join("enforceE2EEincoming").is_file());

    // Now the userdb knows it, and a second login is served the same hash.
    let userdb = json(&ask(&mut client, &format!("Lshared/userdb/{USER}\t\n")).await);
    assert_eq!(userdb["password"], hash);
    let again = json(&ask(&mut client, &passdb_line(USER, "other password")).await);
    assert_eq!(again["password"], hash);
}

#[tokio::test]
async fn existing_password_files_are_served_as_they_are() {
    let relay = start("").await;
    let home = relay.mail().join(USER);
    std::fs::create_dir_all(&home).expect("mkdir");
    std::fs::write(home.join("password"), "{PLAIN}legacy").expect("write");
    let mut client = relay.client().await;
    let reply = json(&ask(&mut client, &passdb_line(USER, "whatever123")).await);
    assert_eq!(reply["password"], "{PLAIN}legacy");
    assert!(
        !home.join("enforceE2EEincoming").exists(),
        "old accounts keep their flags"
    );
}

#[tokio::test]
async fn refusal_rules_create_nothing() {
    let relay = start("").await;
    let mut client = relay.client().await;
    let cases = [
        (USER, "short"),
        ("abcdefgh@example.org", PASSWORD),
        ("abcdefgh12@example.org", PASSWORD),
        ("Abcdefgh1@example.org", PASSWORD),
        ("abc+efgh1@example.org", PASSWORD),
        ("abcdefgh1@other.org", PASSWORD),
        ("abcdefgh1", PASSWORD),
        ("../../etc/x@example.org", PASSWORD),
        ("../abcdefg@example.org", PASSWORD),
        ("abcdefgh1@example.org/..", PASSWORD),
        ("", PASSWORD),
    ];
    for (user, password) in cases {
        assert_eq!(
            ask(&mut client, &passdb_line(user, password)).await,
            "N\n",
            "{user}"
        );
    }
    std::fs::write(relay.nocreate(), "").expect("nocreate");
    assert_eq!(ask(&mut client, &passdb_line(USER, PASSWORD)).await, "N\n");
    assert!(!relay.mail().exists(), "nothing may be created");
    std::fs::remove_file(relay.nocreate()).expect("rm");
    assert!(
        ask(&mut client, &passdb_line(USER, PASSWORD))
            .await
            .starts_with('O')
    );
    // Each refusal is counted under its rule; the one creation too.
    let metrics = &relay.metrics;
    assert_eq!(metrics.refused_by("password_too_short"), 1);
    assert_eq!(metrics.refused_by("nocreate"), 1);
    assert_eq!(metrics.refused_by("local_part_length"), 2);
    assert_eq!(metrics.refused_by("foreign_domain"), 1);
    assert_eq!(metrics.accounts_created.get(), 1);
    assert_eq!(metrics.internal_errors.get(), 0);
    assert_eq!(metrics.lookups_of("passdb"), cases.len() as u64 + 2);
}

#[tokio::test]
async fn low_resources_refuse_creation() {
    for extra in [
        "min_available_memory = 1000T\n",
        "min_free_disk_space = 1000T\n",
    ] {
        let relay = start(extra).await;
        let mut client = relay.client().await;
        assert_eq!(
            ask(&mut client, &passdb_line(USER, PASSWORD)).await,
            "N\n",
            "{extra}"
        );
        assert!(!relay.mail().join(USER).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_logins_create_one_account() {
    let relay = Arc::new(start("").await);
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let relay = Arc::clone(&relay);
        logins.spawn(async move {
            let mut client = relay.client().await;
            let reply = ask(&mut client, &passdb_line(USER, PASSWORD)).await;
            json(&reply)["password"]
                .as_str()
                .expect("password")
                .to_owned()
        });
    }
    let hashes: std::collections::HashSet<String> = logins.join_all().await.into_iter().collect();
    assert_eq!(hashes.len(), 1, "every login sees the one stored hash");
    let on_disk = std::fs::read_to_string(relay.mail().join(USER).join("password")).expect("read");
    assert!(hashes.contains(&on_disk));
    let entries = std::fs::read_dir(relay.mail().join(USER))
        .expect("ls")
        .count();
    assert_eq!(entries, 2, "password and enforceE2EEincoming only");
}

#[tokio::test]
async fn iterate_lists_every_account() {
    let relay = start("").await;
    let mut client = relay.client().await;
    for user in ["abcdefgh1@example.org", "abcdefgh2@example.org"] {
        assert!(
            ask(&mut client, &passdb_line(user, PASSWORD))
                .await
                .starts_with('O')
        );
    }
    std::fs::create_dir_all(relay.mail().join("pending_notifications")).expect("mkdir");
    client
        .get_mut()
        .write_all(b"I0\t0\tshared/userdb/\t\n")
        .await
        .expect("write");
    let mut rows = Vec::new();
    loop {
        let mut line = String::new();
        client.read_line(&mut line).await.expect("read");
        if line == "\n" {
            break;
        }
        rows.push(line);
    }
    rows.sort();
    assert_eq!(
        rows,
        [
            "Oshared/userdb/abcdefgh1@example.org\t\n",
            "Oshared/userdb/abcdefgh2@example.org\t\n"
        ]
    );
}

#[tokio::test]
async fn bad_input_gets_n_or_f_and_the_daemon_keeps_serving() {
    let relay = start("").await;
    let mut client = relay.client().await;
    let cases = [
        "Lshared/userdb/../../etc/passwd\t\n".to_owned(),
        "Lshared/userdb/no-at-sign\t\n".to_owned(),
        "Lshared/passdb/no-quote-at-all\t\n".to_owned(),
        "Lshared/unknown/key\t\n".to_owned(),
        "Lshared/userdb/a/b@example.org\t\n".to_owned(),
    ];
    for line in &cases {
        assert_eq!(ask(&mut client, line).await, "N\n", "{line:?}");
    }
    assert!(ask(&mut client, "Lbroken\u{1}\n").await.starts_with('F'));
    assert!(ask(&mut client, "L\u{ff}\n").await.starts_with('N'));

    // Binary garbage and a huge line end those connections only.
    let mut binary = relay.client().await;
    binary
        .get_mut()
        .write_all(b"\x00\xff\xfe\x01\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    binary.read_to_end(&mut rest).await.expect("closed");
    let mut huge = relay.client().await;
    let mut line = b"Lshared/userdb/".to_vec();
    line.extend(std::iter::repeat_n(b'a', 100_000));
    line.push(b'\n');
    huge.get_mut().write_all(&line).await.expect("write");
    let mut rest = Vec::new();
    let _ = huge.read_to_end(&mut rest).await;
    assert!(rest.is_empty());

    assert!(!relay.dir.path().join("etc").exists());
    let mut fresh = relay.client().await;
    assert!(
        ask(&mut fresh, &passdb_line(USER, PASSWORD))
            .await
            .starts_with('O')
    );
}

#[tokio::test]
async fn io_failure_answers_f_not_n() {
    let relay = start("").await;
    // A mailbox whose password "file" is a directory cannot be read.
    std::fs::create_dir_all(relay.mail().join(USER).join("password")).expect("mkdir");
    let mut client = relay.client().await;
    assert!(
        ask(&mut client, &format!("Lshared/userdb/{USER}\t\n"))
            .await
            .starts_with('F')
    );
    assert!(
        ask(&mut client, &passdb_line(USER, PASSWORD))
            .await
            .starts_with('F')
    );
    assert_eq!(relay.metrics.internal_errors.get(), 2);
    assert_eq!(relay.metrics.accounts_created.get(), 0);
}
