//! doveauth and lastlogin behind real Dovecot (IMAP logins, last_login
//! plugin) and real Postfix (SMTP AUTH through Dovecot SASL).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use relay_tests::{
    Daemon, Dovecot, DovecotOptions, ImapClient, Postfix, PostfixOptions, SmtpClient, VmailUser,
    WorkDir, repo_root,
};

const DOMAIN: &str = "[127.0.0.1]";
const PASSWORD: &str = "right-password-1";

struct Relay {
    // Dropped in this order: servers first, then daemons, then files.
    dovecot: Dovecot,
    postfix: Postfix,
    _doveauth: Daemon,
    _lastlogin: Daemon,
    work: WorkDir,
}

impl Relay {
    fn mail(&self) -> PathBuf {
        self.work.path().join("mail")
    }

    fn nocreate(&self) -> PathBuf {
        self.work.path().join("nocreate")
    }

    async fn login(&self, user: &str, password: &str) -> Result<bool> {
        let mut imap = ImapClient::connect(self.dovecot.imaps_port(), self.dovecot.cert()).await?;
        imap.login(user, password).await
    }
}

fn shipped(name: &str) -> Result<String> {
    Ok(fs::read_to_string(repo_root().join("dovecot").join(name))?)
}

fn start() -> Result<Relay> {
    let work = WorkDir::new()?;
    let vmail = VmailUser::lookup()?;
    let mail = work.subdir("mail", 0o755)?;
    vmail.own(&mail)?;
    let run = work.subdir("run", 0o755)?;
    vmail.own(&run)?;
    let ini = work.path().join("chatmail.ini");
    fs::write(
        &ini,
        format!(
            "[params]\nmail_domain = 127.0.0.1\nmailboxes_dir = {}\nnocreate_file = {}\n\
             max_load_1m = 1000\nmin_free_disk_space = 1M\nmin_available_memory = 1M\n",
            mail.display(),
            work.path().join("nocreate").display()
        ),
    )?;

    let auth_socket = run.join("doveauth.socket");
    let lastlogin_socket = run.join("lastlogin.socket");
    let dict_args = |socket: &Path| -> Vec<std::ffi::OsString> {
        vec![
            socket.as_os_str().to_owned(),
            ini.as_os_str().to_owned(),
            "--socket-mode".into(),
            "666".into(),
        ]
    };
    let args = dict_args(&auth_socket);
    let refs: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
    let doveauth = Daemon::start("doveauth", &refs, &auth_socket, work.path())?;
    let args = dict_args(&lastlogin_socket);
    let refs: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
    let lastlogin = Daemon::start("lastlogin", &refs, &lastlogin_socket, work.path())?;

    let dict_settings = work.path().join("auth.conf");
    fs::write(
        &dict_settings,
        shipped("auth.conf")?.replace(
            "/run/doveauth/doveauth.socket",
            &auth_socket.display().to_string(),
        ),
    )?;
    let mut config = shipped("auth-dict.conf.ext")?.replace(
        "/etc/dovecot/auth.conf",
        &dict_settings.display().to_string(),
    );
    config.push_str(&shipped("last-login.conf.ext")?.replace(
        "/run/chatmail-lastlogin/lastlogin.socket",
        &lastlogin_socket.display().to_string(),
    ));
    // Failed logins are part of these tests: no delay after each, and no
    // growing per-IP penalty.
    config.push_str(
        "auth_failure_delay = 0\n\
         service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n",
    );

    let postfix = Postfix::start(&PostfixOptions {
        sasl_submission: true,
        ..PostfixOptions::default()
    })?;
    let dovecot = Dovecot::start(&DovecotOptions {
        lmtp_socket: Some(postfix.private_dir().join("dovecot-lmtp")),
        auth_socket: Some(postfix.private_dir().join("auth")),
        config,
    })?;
    Ok(Relay {
        dovecot,
        postfix,
        _doveauth: doveauth,
        _lastlogin: lastlogin,
        work,
    })
}

fn addr(local: &str) -> String {
    format!("{local}@{DOMAIN}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_login_creates_the_account_and_refusals_create_nothing() -> Result<()> {
    let relay = start()?;
    let user = addr("abcdefgh1");
    assert!(
        relay.login(&user, PASSWORD).await?,
        "first login must succeed"
    );
    let home = relay.mail().join(&user);
    let hash = fs::read_to_string(home.join("password"))?;
    assert!(hash.starts_with("{SHA512-CRYPT}$6$"), "{hash}");
    assert!(home.join("enforceE2EEincoming").is_file());

    assert!(relay.login(&user, PASSWORD).await?, "second login");
    assert!(
        relay.login(&user.to_uppercase(), PASSWORD).await?,
        "logins are case-insensitive"
    );
    assert!(
        !relay.login(&user, "wrong-password-1").await?,
        "wrong password"
    );
    assert_eq!(
        fs::read_to_string(home.join("password"))?,
        hash,
        "hash unchanged"
    );

    let refused = [
        (addr("abcdefgh2"), "short"),
        (addr("abc+efgh3"), PASSWORD),
        (addr("abcdefg"), PASSWORD),
        (addr("abcdefghij"), PASSWORD),
        ("abcdefgh4@example.org".to_owned(), PASSWORD),
        ("abcdefgh5".to_owned(), PASSWORD),
    ];
    for (user, password) in &refused {
        assert!(
            !relay.login(user, password).await?,
            "{user} must be refused"
        );
    }
    fs::write(relay.nocreate(), "")?;
    assert!(
        !relay.login(&addr("abcdefgh6"), PASSWORD).await?,
        "nocreate"
    );
    let created: Vec<_> = fs::read_dir(relay.mail())?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .collect();
    assert_eq!(
        created,
        [std::ffi::OsString::from(&user)],
        "only the first account"
    );
    // Existing accounts still log in while creation is off.
    assert!(relay.login(&user, PASSWORD).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_login_plugin_records_the_utc_day() -> Result<()> {
    let relay = start()?;
    let user = addr("lastlog12");
    assert!(relay.login(&user, PASSWORD).await?);
    let password = relay.mail().join(&user).join("password");
    let long_ago = UNIX_EPOCH + Duration::from_secs(1_577_836_800); // 2020-01-01
    fs::File::options()
        .write(true)
        .open(&password)?
        .set_modified(long_ago)?;

    assert!(relay.login(&user, PASSWORD).await?);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let today = UNIX_EPOCH + Duration::from_secs(now - now % 86_400);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mtime = fs::metadata(&password)?.modified()?;
        if mtime == today {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "mtime stayed {mtime:?}, want {today:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_auth_through_dovecot_sasl() -> Result<()> {
    let relay = start()?;
    let user = addr("smtpauth1");
    assert!(relay.login(&user, PASSWORD).await?);
    let port = relay.postfix.submission_port().expect("submission enabled");

    let mut right = SmtpClient::connect_tls(port, relay.postfix.cert()).await?;
    right.ehlo().await?;
    let reply = right.auth_plain(&user, PASSWORD).await?;
    assert_eq!(reply.code, 235, "{reply:?}");
    right.quit().await;

    let mut wrong = SmtpClient::connect_tls(port, relay.postfix.cert()).await?;
    wrong.ehlo().await?;
    let reply = wrong.auth_plain(&user, "wrong-password-1").await?;
    assert_eq!(reply.code, 535, "{reply:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_first_logins_make_one_account() -> Result<()> {
    let relay = std::sync::Arc::new(start()?);
    let user = addr("parallel1");
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let relay = std::sync::Arc::clone(&relay);
        let user = user.clone();
        logins.spawn(async move { relay.login(&user, PASSWORD).await });
    }
    for login in logins.join_all().await {
        assert!(login?, "every parallel first login succeeds");
    }
    let entries: Vec<_> = fs::read_dir(relay.mail())?.collect();
    assert_eq!(entries.len(), 1);
    assert!(relay.mail().join(&user).join("password").is_file());
    Ok(())
}
