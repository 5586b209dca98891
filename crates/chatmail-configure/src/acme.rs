//! The relay's certificate from an ACME CA (Let's Encrypt by default)
//! through Debian's certbot: HTTP-01 answered by the relay's own nginx
//! site from its web root, renewed by certbot's timer, which reloads the
//! servers that use the certificate.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::check::run;
use crate::error::ConfigureError;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Where certbot keeps its account, certificates and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeLayout {
    pub config_dir: PathBuf,
    pub work_dir: PathBuf,
    pub logs_dir: PathBuf,
}

impl AcmeLayout {
    /// certbot's own defaults, which its renewal timer reads.
    #[must_use]
    pub fn system() -> Self {
        Self {
            config_dir: "/etc/letsencrypt".into(),
            work_dir: "/var/lib/letsencrypt".into(),
            logs_dir: "/var/log/letsencrypt".into(),
        }
    }

    /// All under `dir`.
    #[must_use]
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            config_dir: dir.join("config"),
            work_dir: dir.join("work"),
            logs_dir: dir.join("logs"),
        }
    }

    /// The certificate chain and key of `domain`, once obtained.
    #[must_use]
    pub fn certificate(&self, domain: &str) -> Option<(PathBuf, PathBuf)> {
        let live = self.config_dir.join("live").join(domain);
        let (chain, key) = (live.join("fullchain.pem"), live.join("privkey.pem"));
        (chain.exists() && key.exists()).then_some((chain, key))
    }
}

/// What to ask the CA for.
pub struct AcmeRequest<'a> {
    /// The relay's domain; the certificate also names `mta-sts.<domain>`
    /// and `autoconfig.<domain>`.
    pub domain: &'a str,
    pub email: Option<&'a str>,
    /// The CA's ACME directory URL.
    pub server: &'a str,
    /// The web root nginx serves `/.well-known/acme-challenge/` from.
    pub webroot: &'a Path,
    /// Run by certbot after each renewal (reloading the servers).
    pub deploy_hook: &'a str,
    /// CAs certbot trusts for the ACME server besides the system's (a
    /// private CA's, a test CA's).
    pub ca_bundle: Option<&'a Path>,
}

/// Obtains the certificate (or renews it when due; certbot keeps one
/// that is still fresh) and returns its chain and key.
pub fn obtain(
    layout: &AcmeLayout,
    request: &AcmeRequest<'_>,
) -> Result<(PathBuf, PathBuf), ConfigureError> {
    let mut certbot = Command::new("certbot");
    certbot
        .args(["certonly", "--non-interactive", "--agree-tos", "--webroot"])
        .arg("--webroot-path")
        .arg(request.webroot)
        .args(["--cert-name", request.domain, "--domains"])
        .arg(format!("{0},mta-sts.{0},autoconfig.{0}", request.domain))
        .args([
            "--server",
            request.server,
            "--deploy-hook",
            request.deploy_hook,
        ])
        .arg("--config-dir")
        .arg(&layout.config_dir)
        .arg("--work-dir")
        .arg(&layout.work_dir)
        .arg("--logs-dir")
        .arg(&layout.logs_dir);
    if let Some(bundle) = request.ca_bundle {
        certbot.env("REQUESTS_CA_BUNDLE", bundle);
    }
    match request.email {
        Some(email) => certbot.args(["--email", email]),
        None => certbot.arg("--register-unsafely-without-email"),
    };
    run(&mut certbot, "certbot")?;
    layout
        .certificate(request.domain)
        .ok_or_else(|| ConfigureError::ToolGaveNothing {
            tool: "certbot",
            missing: format!(
                "certificate for {} under {}",
                request.domain,
                layout.config_dir.display()
            ),
        })
}
