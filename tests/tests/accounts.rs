//! doveauth and lastlogin behind real Dovecot (IMAP logins, last_login
//! plugin) and real Postfix (SMTP AUTH through Dovecot SASL).

use std::fs;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use chatmail_config::MetricsDaemon;
use relay_tests::{Relay, RelayOptions, SmtpClient};

const DOMAIN: &str = "[127.0.0.1]";
const PASSWORD: &str = "right-password-1";

fn start() -> Result<Relay> {
    Relay::start(&RelayOptions::default())
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
    // Each refusal by a rule is one line existing dashboards (mtail)
    // count, with the rule and without the address: the short password,
    // both lengths, the other domain and the nocreate file. (A login with
    // `+` or without a domain is no account name and never reaches them.)
    let log = relay.doveauth_log();
    let rejected: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("registration rejected: "))
        .collect();
    assert_eq!(rejected.len(), 5, "{log}");
    assert!(
        rejected.iter().all(|line| !line.contains("abc")),
        "{rejected:?}"
    );
    assert!(
        rejected.iter().any(|line| line.contains("nocreate file")),
        "{rejected:?}"
    );
    // The same refusals, scraped, each under its rule; and the one
    // account, and the failed logins as Dovecot counts them.
    let auth = relay.scrape(MetricsDaemon::Doveauth).await?;
    let refused = |rule: &str| {
        auth.value(&format!(
            r#"doveauth_registrations_refused_total{{rule="{rule}"}}"#
        ))
    };
    assert_eq!(refused("password_too_short")?, 1.0);
    assert_eq!(refused("local_part_length")?, 2.0);
    assert_eq!(refused("foreign_domain")?, 1.0);
    assert_eq!(refused("nocreate")?, 1.0);
    assert_eq!(auth.sum("doveauth_registrations_refused_total"), 5.0);
    assert_eq!(auth.value("doveauth_accounts_created_total")?, 1.0);
    assert_eq!(auth.value("doveauth_internal_errors_total")?, 0.0);
    assert!(auth.value(r#"doveauth_lookups_total{kind="passdb"}"#)? >= 10.0);
    let dovecot = relay.scrape(MetricsDaemon::Dovecot).await?;
    // The wrong password, the six refused and the nocreate login.
    assert_eq!(dovecot.value("dovecot_auth_failures_total")?, 8.0);
    assert_eq!(dovecot.value("dovecot_imap_logins_total")?, 4.0);
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
    let port = relay.submission_port;

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
