use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{dump_log, free_port, wait_for_port};
use crate::tls::SelfSignedCert;
use crate::workdir::WorkDir;

/// How a private Postfix instance is set up. The defaults make an IP-only
/// relay for `[127.0.0.1]` that delivers local mail over LMTP and refuses
/// to send anything elsewhere.
#[derive(Debug, Clone)]
pub struct PostfixOptions {
    /// `mydestination`: the domains delivered locally (comma-separated;
    /// the first is also `myorigin`).
    pub mydestination: String,
    /// Where local mail goes, relative paths being inside the queue
    /// directory (`lmtp:unix:private/dovecot-lmtp`).
    pub local_transport: String,
    /// Extra `main.cf` lines, appended last so they override.
    pub main_cf: String,
    /// Extra `master.cf` lines (filters, reinjection services).
    pub master_cf: String,
    /// Adds a submission service with implicit TLS (as on port 465) that
    /// authenticates through Dovecot SASL at `private/auth`.
    pub sasl_submission: bool,
}

impl Default for PostfixOptions {
    fn default() -> Self {
        Self {
            mydestination: "[127.0.0.1]".into(),
            local_transport: "lmtp:unix:private/dovecot-lmtp".into(),
            main_cf: String::new(),
            master_cf: String::new(),
            sasl_submission: false,
        }
    }
}

/// The services Postfix needs to queue and deliver, none chrooted: a
/// private queue directory has no chroot skeleton.
const MASTER_CF_SERVICES: &str = "\
pickup     unix  n - n 60   1 pickup
cleanup    unix  n - n -    0 cleanup
qmgr       unix  n - n 300  1 qmgr
rewrite    unix  - - n -    - trivial-rewrite
bounce     unix  - - n -    0 bounce
defer      unix  - - n -    0 bounce
trace      unix  - - n -    0 bounce
verify     unix  - - n -    1 verify
flush      unix  n - n 1000? 0 flush
tlsmgr     unix  - - n 1000? 1 tlsmgr
proxymap   unix  - - n -    - proxymap
proxywrite unix  - - n -    1 proxymap
smtp       unix  - - n -    - smtp
relay      unix  - - n -    - smtp
showq      unix  n - n -    - showq
error      unix  - - n -    - error
retry      unix  - - n -    - error
discard    unix  - - n -    - discard
lmtp       unix  - - n -    - lmtp
anvil      unix  - - n -    1 anvil
scache     unix  - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
";

/// The name of the setting a main.cf line starts, if it starts one
/// (continuation lines begin with whitespace, comments with `#`).
fn setting_name(line: &str) -> Option<&str> {
    if line.starts_with(char::is_whitespace) || line.starts_with('#') {
        return None;
    }
    let (name, _) = line.split_once('=')?;
    Some(name.trim())
}

/// `base` with the settings of `extra` appended, each setting defined
/// once: a later definition replaces an earlier one. Postfix warns about
/// each duplicate in every process it starts, and those warnings, sent to
/// postlogd all at once, can fill its socket until postlogd itself blocks
/// on logging its own copy: the whole instance then hangs.
fn merge_main_cf(base: &str, extra: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for line in base.lines().chain(extra.lines()) {
        if let Some(name) = setting_name(line) {
            // Drop the earlier definition with its continuation lines.
            if let Some(start) = lines
                .iter()
                .position(|earlier| setting_name(earlier) == Some(name))
            {
                let end = lines
                    .iter()
                    .skip(start + 1)
                    .position(|next| {
                        !next.starts_with(char::is_whitespace) || next.trim().is_empty()
                    })
                    .map_or(lines.len(), |offset| start + 1 + offset);
                lines.drain(start..end);
            }
        }
        lines.push(line);
    }
    let mut merged = lines.join("\n");
    merged.push('\n');
    merged
}

/// A running private Postfix; stopped on drop.
pub struct Postfix {
    work: WorkDir,
    config_dir: PathBuf,
    smtp_port: u16,
    submission_port: Option<u16>,
    cert: SelfSignedCert,
}

impl Postfix {
    pub fn start(options: &PostfixOptions) -> Result<Self> {
        let work = WorkDir::new()?;
        let config_dir = work.subdir("etc", 0o755)?;
        let queue_dir = work.subdir("queue", 0o755)?;
        let data_dir = work.subdir("data", 0o700)?;
        let postfix_user = nix::unistd::User::from_name("postfix")?
            .context("user postfix does not exist; is the postfix package installed?")?;
        nix::unistd::chown(&data_dir, Some(postfix_user.uid), None)?;
        let smtp_port = free_port()?;
        let log = work.path().join("postfix.log");
        let cert = SelfSignedCert::generate(work.path())?;

        let mut main_cf = String::new();
        writeln!(main_cf, "compatibility_level = 3.6")?;
        writeln!(main_cf, "queue_directory = {}", queue_dir.display())?;
        writeln!(main_cf, "data_directory = {}", data_dir.display())?;
        writeln!(main_cf, "maillog_file = {}", log.display())?;
        writeln!(main_cf, "maillog_file_prefixes = {}", work.path().display())?;
        writeln!(main_cf, "myhostname = localhost")?;
        writeln!(main_cf, "mydomain = localdomain")?;
        // myorigin takes one domain; mydestination may list several.
        let origin = options
            .mydestination
            .split([',', ' '])
            .next()
            .unwrap_or_default();
        writeln!(main_cf, "myorigin = {origin}")?;
        writeln!(main_cf, "mydestination = {}", options.mydestination)?;
        writeln!(main_cf, "local_transport = {}", options.local_transport)?;
        writeln!(
            main_cf,
            "smtpd_tls_cert_file = {}",
            cert.cert_path.display()
        )?;
        writeln!(main_cf, "smtpd_tls_key_file = {}", cert.key_path.display())?;
        main_cf.push_str(
            "inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
default_transport = error:remote delivery is disabled in tests
smtp_dns_support_level = disabled
biff = no
append_dot_mydomain = no
",
        );
        let main_cf = merge_main_cf(&main_cf, &options.main_cf);
        fs::write(config_dir.join("main.cf"), main_cf)?;

        let mut master_cf = format!("127.0.0.1:{smtp_port} inet n - n - - smtpd\n");
        let submission_port = if options.sasl_submission {
            let port = free_port()?;
            write!(
                master_cf,
                "127.0.0.1:{port} inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_cert_file={cert}
  -o smtpd_tls_key_file={key}
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=private/auth
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
",
                cert = cert.cert_path.display(),
                key = cert.key_path.display(),
            )?;
            Some(port)
        } else {
            None
        };
        master_cf.push_str(MASTER_CF_SERVICES);
        master_cf.push_str(&options.master_cf);
        fs::write(config_dir.join("master.cf"), master_cf)?;

        let postfix = Self {
            work,
            config_dir,
            smtp_port,
            submission_port,
            cert,
        };
        // Postfix says why it did not start in its log, not on stderr.
        postfix.command("start").map_err(|err| {
            let log = fs::read_to_string(postfix.log_path()).unwrap_or_default();
            err.context(format!("postfix log:\n{log}"))
        })?;
        for port in std::iter::once(smtp_port).chain(submission_port) {
            wait_for_port(port, Duration::from_secs(15))?;
        }
        Ok(postfix)
    }

    fn command(&self, action: &str) -> Result<()> {
        let output = Command::new("postfix")
            .arg("-c")
            .arg(&self.config_dir)
            .arg(action)
            .output()
            .context("running postfix; is the postfix package installed?")?;
        if !output.status.success() {
            bail!(
                "postfix {action} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// The port of the smtpd that accepts mail for the test.
    #[must_use]
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port
    }

    /// The implicit-TLS submission port, with `sasl_submission`.
    #[must_use]
    pub fn submission_port(&self) -> Option<u16> {
        self.submission_port
    }

    /// The certificate Postfix presents on TLS ports.
    #[must_use]
    pub fn cert(&self) -> &SelfSignedCert {
        &self.cert
    }

    /// `<queue>/private`, where Postfix expects its unix-socket peers.
    #[must_use]
    pub fn private_dir(&self) -> PathBuf {
        self.work.path().join("queue/private")
    }

    /// Changes main.cf settings (`name = value`) and reloads Postfix.
    pub fn reconfigure(&self, settings: &[&str]) -> Result<()> {
        let output = Command::new("postconf")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("-e")
            .args(settings)
            .output()
            .context("running postconf")?;
        if !output.status.success() {
            bail!(
                "postconf failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        self.command("reload")
    }

    /// Asks Postfix to attempt delivery of everything queued now.
    pub fn flush(&self) -> Result<()> {
        let status = Command::new("postqueue")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("-f")
            .status()
            .context("running postqueue")?;
        if !status.success() {
            bail!("postqueue -f failed: {status}");
        }
        Ok(())
    }

    /// The number of messages in the queue (`postqueue -j`).
    pub fn queued(&self) -> Result<usize> {
        let output = Command::new("postqueue")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("-j")
            .output()
            .context("running postqueue")?;
        Ok(output
            .stdout
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .count())
    }

    #[must_use]
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    #[must_use]
    pub fn log_path(&self) -> PathBuf {
        self.work.path().join("postfix.log")
    }

    /// The counters smtpd logs when a client session with a transaction
    /// ends (`... mail=2 rcpt=2 bdat=1 data=1 ...`), from the first such
    /// session; waits up to 10 s for it.
    pub async fn first_session_counters(&self) -> Result<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = fs::read_to_string(self.log_path()).unwrap_or_default();
            let ended = log
                .lines()
                .find(|line| line.contains("disconnect from") && line.contains(" mail="));
            if let Some(line) = ended {
                return Ok(line.to_owned());
            }
            if std::time::Instant::now() > deadline {
                bail!("no session with a transaction ended:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_log("postfix", &self.log_path());
        }
        if let Err(err) = self.command("stop") {
            eprintln!("stopping postfix: {err:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::merge_main_cf;

    #[test]
    fn later_settings_replace_earlier_ones() {
        let base = "a = 1\nb = 2\n  continued\nc = 3\n";
        let extra = "# comment\nb = 4\nd = 5\n";
        assert_eq!(
            merge_main_cf(base, extra),
            "a = 1\nc = 3\n# comment\nb = 4\nd = 5\n"
        );
    }
}
