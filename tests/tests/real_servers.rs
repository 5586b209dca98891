//! The harness against real Debian Postfix and Dovecot: IMAP login through
//! a dict passdb served by the dovecot-dict crate, and SMTP delivery
//! through Postfix and Dovecot LMTP into a maildir.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chatmail_config::Mailboxes;
use chatmail_configure::{Layout, Vmail, render_template};
use dovecot_dict::{DictError, DictHandler, ServerLimits, SocketOptions};
use relay_tests::{
    Dovecot, DovecotOptions, ImapClient, Postfix, PostfixOptions, VmailUser, WorkDir, send_mail,
};
use tokio_util::sync::CancellationToken;

const USER: &str = "testuser1@[127.0.0.1]";
const PASSWORD: &str = "correct horse \"battery\" staple";

/// A fixed set of accounts served as Dovecot passdb/userdb JSON, read
/// from mailbox directories as the real doveauth does.
struct FixedAccounts {
    mailboxes: Mailboxes,
    vmail: VmailUser,
}

impl FixedAccounts {
    fn userdb_json(&self, addr: &str) -> Result<Option<String>, DictError> {
        let mailbox = self
            .mailboxes
            .mailbox(addr)
            .map_err(|err| DictError::new(err.to_string()))?;
        let Some(hash) = mailbox
            .password_hash()
            .map_err(|err| DictError::new(err.to_string()))?
        else {
            return Ok(None);
        };
        Ok(Some(format!(
            r#"{{"home":"{}","uid":"{}","gid":"{}","password":"{}"}}"#,
            mailbox.dir().display(),
            self.vmail.uid,
            self.vmail.gid,
            hash.replace('\\', "\\\\").replace('"', "\\\""),
        )))
    }
}

/// Undoes Dovecot's `%E` escaping (a backslash before `\`, `"` and `'`).
fn unescape_percent_e(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or('\\')
        } else {
            c
        });
    }
    out
}

/// Splits `<escaped password>"<escaped user>` at the first unescaped quote.
fn split_passdb_key(rest: &str) -> Option<(String, String)> {
    let mut escaped = false;
    for (at, c) in rest.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => {
                let user = rest.get(at + 1..)?;
                return Some((
                    unescape_percent_e(rest.get(..at)?),
                    unescape_percent_e(user),
                ));
            }
            _ => escaped = false,
        }
    }
    None
}

impl DictHandler for FixedAccounts {
    async fn lookup(&self, key: &str, _user: &str) -> Result<Option<String>, DictError> {
        if let Some(addr) = key.strip_prefix("shared/userdb/") {
            return self.userdb_json(&unescape_percent_e(addr));
        }
        if let Some(rest) = key.strip_prefix("shared/passdb/") {
            let (password, addr) =
                split_passdb_key(rest).ok_or_else(|| DictError::new("bad passdb key"))?;
            // The harness handler only checks that the password reached
            // us intact; Dovecot itself verifies it against the hash.
            assert!(!password.is_empty());
            return self.userdb_json(&addr);
        }
        Ok(None)
    }
}

/// A dict server on a unix socket that Dovecot's auth process (running
/// as the dovecot user) may connect to.
fn start_dict(dir: &Path, handler: FixedAccounts) -> Result<(PathBuf, CancellationToken)> {
    let socket = dir.join("doveauth.socket");
    let options = SocketOptions {
        mode: 0o666,
        ..SocketOptions::default()
    };
    let listener = dovecot_dict::bind(&socket, options)?;
    let stop = CancellationToken::new();
    let cancelled = stop.clone();
    tokio::spawn(dovecot_dict::serve(
        listener,
        Arc::new(handler),
        ServerLimits::default(),
        async move { cancelled.cancelled().await },
    ));
    Ok((socket, stop))
}

/// Dovecot config for the shipped dict passdb/userdb templates, rendered
/// for this test's socket.
fn auth_config(work: &WorkDir, socket: &Path) -> Result<String> {
    let config = chatmail_config::Config::from_ini_str(
        "[params]\nmail_domain = 127.0.0.1\n",
        Path::new("chatmail.ini"),
    )?;
    let vmail = VmailUser::lookup()?;
    let mut layout = Layout::system(Vmail {
        uid: vmail.uid,
        gid: vmail.gid,
    });
    layout.dovecot_dir = work.path().to_owned();
    layout.sockets.doveauth = socket.to_owned();
    let context = chatmail_configure::Context::new(&config, &layout);
    fs::write(
        work.path().join("auth.conf"),
        render_template("dovecot/auth.conf", &context)?,
    )?;
    Ok(render_template("dovecot/auth-dict.conf.ext", &context)?)
}

struct Accounts {
    work: WorkDir,
    mailboxes: Mailboxes,
    vmail: VmailUser,
}

fn accounts_with_user() -> Result<Accounts> {
    let work = WorkDir::new()?;
    let vmail = VmailUser::lookup()?;
    let root = work.subdir("mail", 0o755)?;
    vmail.own(&root)?;
    let mailboxes = Mailboxes::new(&root);
    let mailbox = mailboxes.mailbox(USER)?;
    mailbox.write_password_hash(&format!("{{PLAIN}}{PASSWORD}"))?;
    vmail.own(mailbox.dir())?;
    Ok(Accounts {
        work,
        mailboxes,
        vmail,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_imap_login_through_dict_passdb() -> Result<()> {
    let accounts = accounts_with_user()?;
    let handler = FixedAccounts {
        mailboxes: accounts.mailboxes.clone(),
        vmail: accounts.vmail.clone(),
    };
    let (socket, stop) = start_dict(accounts.work.path(), handler)?;
    let dovecot = Dovecot::start(&DovecotOptions {
        config: auth_config(&accounts.work, &socket)?,
        ..DovecotOptions::default()
    })?;

    let mut right = ImapClient::connect(dovecot.imaps_port(), dovecot.cert()).await?;
    assert!(right.login(USER, PASSWORD).await?, "right password refused");
    let select = right.command("SELECT INBOX").await?;
    assert!(select.starts_with("OK"), "{select}");

    let mut wrong = ImapClient::connect(dovecot.imaps_port(), dovecot.cert()).await?;
    assert!(
        !wrong.login(USER, "wrong password").await?,
        "wrong password accepted"
    );

    let mut unknown = ImapClient::connect(dovecot.imaps_port(), dovecot.cert()).await?;
    assert!(!unknown.login("nobody@[127.0.0.1]", PASSWORD).await?);
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_delivers_through_dovecot_lmtp_into_maildir() -> Result<()> {
    let accounts = accounts_with_user()?;
    let handler = FixedAccounts {
        mailboxes: accounts.mailboxes.clone(),
        vmail: accounts.vmail.clone(),
    };
    let (socket, stop) = start_dict(accounts.work.path(), handler)?;
    let postfix = Postfix::start(&PostfixOptions::default())?;
    let _dovecot = Dovecot::start(&DovecotOptions {
        lmtp_socket: Some(postfix.private_dir().join("dovecot-lmtp")),
        config: auth_config(&accounts.work, &socket)?,
        ..DovecotOptions::default()
    })?;

    let marker = format!("harness-{}", std::process::id());
    let message = format!(
        "From: <sender@[127.0.0.1]>\nTo: <{USER}>\nSubject: {marker}\n\nhello\n.leading dot\n"
    );
    let reply = send_mail(postfix.smtp_port(), "sender@[127.0.0.1]", &[USER], &message).await?;
    assert!(reply.starts_with("250"), "{reply}");

    let new_dir = accounts.mailboxes.mailbox(USER)?.dir().join("new");
    let delivered = wait_for_message(&new_dir, Duration::from_secs(20))
        .with_context(|| format!("no message in {}", new_dir.display()))?;
    let text = fs::read_to_string(&delivered)?;
    assert!(text.contains(&format!("Subject: {marker}")), "{text}");
    assert!(text.contains("\nhello\n.leading dot\n"), "{text}");
    stop.cancel();
    Ok(())
}

fn wait_for_message(dir: &Path, limit: Duration) -> Result<PathBuf> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(entries) = fs::read_dir(dir)
            && let Some(entry) = entries.filter_map(Result::ok).next()
        {
            return Ok(entry.path());
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
