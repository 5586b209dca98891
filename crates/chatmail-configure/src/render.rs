//! The shipped templates (postfix/ and dovecot/ of the repository,
//! compiled in) and where each rendered file goes.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};

use crate::context::Context;
use crate::error::ConfigureError;
use crate::layout::Layout;

/// Template name and text. Names are the paths in the repository.
const TEMPLATES: &[(&str, &str)] = &[
    ("postfix/main.cf", include_str!("../../../postfix/main.cf")),
    (
        "postfix/main-chatmail.cf",
        include_str!("../../../postfix/main-chatmail.cf"),
    ),
    (
        "postfix/master.cf",
        include_str!("../../../postfix/master.cf"),
    ),
    (
        "postfix/master-chatmail.cf",
        include_str!("../../../postfix/master-chatmail.cf"),
    ),
    (
        "postfix/submission_header_cleanup",
        include_str!("../../../postfix/submission_header_cleanup"),
    ),
    (
        "postfix/sender_login_map",
        include_str!("../../../postfix/sender_login_map"),
    ),
    (
        "postfix/lmtp_header_cleanup",
        include_str!("../../../postfix/lmtp_header_cleanup"),
    ),
    (
        "postfix/vrfy_command_filter",
        include_str!("../../../postfix/vrfy_command_filter"),
    ),
    (
        "dovecot/dovecot.conf",
        include_str!("../../../dovecot/dovecot.conf"),
    ),
    (
        "dovecot/auth.conf",
        include_str!("../../../dovecot/auth.conf"),
    ),
    (
        "dovecot/auth-dict.conf.ext",
        include_str!("../../../dovecot/auth-dict.conf.ext"),
    ),
    (
        "dovecot/last-login.conf.ext",
        include_str!("../../../dovecot/last-login.conf.ext"),
    ),
    (
        "dovecot/metadata.conf.ext",
        include_str!("../../../dovecot/metadata.conf.ext"),
    ),
    (
        "dovecot/metrics.conf.ext",
        include_str!("../../../dovecot/metrics.conf.ext"),
    ),
    (
        "dovecot/mailstore.conf.ext",
        include_str!("../../../dovecot/mailstore.conf.ext"),
    ),
    (
        "dovecot/quota.conf.ext",
        include_str!("../../../dovecot/quota.conf.ext"),
    ),
    (
        "dovecot/push_notification.lua",
        include_str!("../../../dovecot/push_notification.lua"),
    ),
    (
        "nginx/chatmail-site.conf",
        include_str!("../../../nginx/chatmail-site.conf"),
    ),
    (
        "nginx/nginx.conf",
        include_str!("../../../nginx/nginx.conf"),
    ),
    (
        "nginx/iroh-relay-locations.conf",
        include_str!("../../../nginx/iroh-relay-locations.conf"),
    ),
    (
        "iroh-relay/iroh-relay.toml",
        include_str!("../../../iroh-relay/iroh-relay.toml"),
    ),
    ("www/layout.html", include_str!("../../../www/layout.html")),
    ("www/index.html", include_str!("../../../www/index.html")),
    ("www/info.html", include_str!("../../../www/info.html")),
    (
        "www/privacy.html",
        include_str!("../../../www/privacy.html"),
    ),
    (
        "www/autoconfig.xml",
        include_str!("../../../www/autoconfig.xml"),
    ),
    ("www/qr.js", include_str!("../../../www/qr.js")),
    ("www/dclogin.js", include_str!("../../../www/dclogin.js")),
    (
        "journald/chatmail.conf",
        include_str!("../../../journald/chatmail.conf"),
    ),
    ("www/mta-sts.txt", include_str!("../../../www/mta-sts.txt")),
    (
        "opendkim/opendkim.conf",
        include_str!("../../../opendkim/opendkim.conf"),
    ),
    (
        "opendkim/KeyTable",
        include_str!("../../../opendkim/KeyTable"),
    ),
    (
        "opendkim/SigningTable",
        include_str!("../../../opendkim/SigningTable"),
    ),
];

/// The templates that become files of an installation (the others are
/// included by these).
const INSTALLED: &[&str] = &[
    "postfix/main.cf",
    "postfix/master.cf",
    "postfix/submission_header_cleanup",
    "postfix/sender_login_map",
    "postfix/lmtp_header_cleanup",
    "postfix/vrfy_command_filter",
    "dovecot/dovecot.conf",
    "dovecot/auth.conf",
    "dovecot/auth-dict.conf.ext",
    "dovecot/last-login.conf.ext",
    "dovecot/metadata.conf.ext",
    "dovecot/metrics.conf.ext",
    "dovecot/mailstore.conf.ext",
    "dovecot/quota.conf.ext",
    "dovecot/push_notification.lua",
    "nginx/chatmail-site.conf",
    "nginx/nginx.conf",
    "www/index.html",
    "www/info.html",
    "www/privacy.html",
    "www/autoconfig.xml",
    "www/qr.js",
    "www/dclogin.js",
    "www/mta-sts.txt",
    "journald/chatmail.conf",
    "opendkim/opendkim.conf",
    "opendkim/KeyTable",
    "opendkim/SigningTable",
    "iroh-relay/iroh-relay.toml",
];

/// One rendered configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: PathBuf,
    pub text: String,
}

fn template_error(name: &str) -> impl FnOnce(minijinja::Error) -> ConfigureError + '_ {
    move |source| ConfigureError::Template {
        name: name.to_owned(),
        source,
    }
}

/// The operator's own pages (`www_folder`): `*.html` files are templates
/// that replace the shipped page of their name or add a page; the others
/// are copied as they are.
#[derive(Debug, Default)]
struct OperatorPages {
    templates: Vec<(String, String)>,
    files: Vec<PathBuf>,
}

impl OperatorPages {
    fn read(folder: Option<&Path>) -> Result<Self, ConfigureError> {
        let mut pages = Self::default();
        let Some(folder) = folder else {
            return Ok(pages);
        };
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| ConfigureError::Io {
                action: "reading",
                path,
                source,
            }
        };
        let entries = fs::read_dir(folder).map_err(io_error(folder))?;
        for entry in entries {
            let path = entry.map_err(io_error(folder))?.path();
            if !path.is_file() {
                continue;
            }
            let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
                continue;
            };
            if name.ends_with(".html") {
                let text = fs::read_to_string(&path).map_err(io_error(&path))?;
                pages.templates.push((format!("www/{name}"), text));
            } else {
                pages.files.push(path.clone());
            }
        }
        pages.templates.sort();
        pages.files.sort();
        Ok(pages)
    }
}

fn environment() -> Result<Environment<'static>, ConfigureError> {
    environment_with(&OperatorPages::default())
}

fn environment_with(pages: &OperatorPages) -> Result<Environment<'static>, ConfigureError> {
    let mut env = Environment::new();
    // A misspelt name must fail the rendering, not become an empty
    // setting in a mail server's configuration.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    for (name, text) in TEMPLATES {
        env.add_template(name, text).map_err(template_error(name))?;
    }
    for (name, text) in &pages.templates {
        env.add_template_owned(name.clone(), text.clone())
            .map_err(template_error(name))?;
    }
    Ok(env)
}

/// Renders one template (a name from the repository, such as
/// `dovecot/last-login.conf.ext`).
pub fn render_template(name: &str, context: &Context) -> Result<String, ConfigureError> {
    render_with(&environment()?, name, context)
}

fn render_with(
    env: &Environment<'_>,
    name: &str,
    context: &Context,
) -> Result<String, ConfigureError> {
    let template = env.get_template(name).map_err(template_error(name))?;
    template.render(context).map_err(template_error(name))
}

/// Where the rendered `name` goes in `layout`: Postfix's and Dovecot's
/// directories, the nginx site and the web root, OpenDKIM's files when
/// chatmail-configure sets it up; an instance of its own gets a whole
/// nginx.conf too.
fn destination(name: &str, layout: &Layout, context: &Context) -> Option<PathBuf> {
    match name.split_once('/')? {
        ("opendkim", file) => {
            context.dkim.as_ref()?;
            let opendkim = layout.opendkim.as_ref()?;
            Some(match file {
                "opendkim.conf" => opendkim.conf.clone(),
                _ => opendkim.tables_dir.join(file),
            })
        }
        ("postfix", file) => Some(layout.postfix_dir.join(file)),
        ("dovecot", file) => Some(layout.dovecot_dir.join(file)),
        ("nginx", "chatmail-site.conf") => Some(layout.web.site.clone()),
        ("nginx", "nginx.conf") => Some(match &layout.private {
            Some(instance) => instance.nginx_dir().join("nginx.conf"),
            None => layout.web.nginx_conf.clone(),
        }),
        // The script the login-link page needs, on IP-only relays only.
        ("www", file @ ("qr.js" | "dclogin.js")) => {
            if context.web.account.link.is_some() {
                return None;
            }
            Some(layout.web.www_dir.join(file))
        }
        ("journald", _) => {
            if context.logs.is_default() {
                return None;
            }
            layout.journald_override.clone()
        }
        ("www", "mta-sts.txt") => {
            context.web.mta_sts_policy.as_ref()?;
            Some(layout.web.www_dir.join("mta-sts.txt"))
        }
        ("www", file) => Some(layout.web.www_dir.join(file)),
        ("iroh-relay", _) => {
            context.iroh.as_ref()?;
            Some(layout.iroh_relay_config.clone())
        }
        _ => None,
    }
}

/// Every file of a relay's Postfix, Dovecot and nginx configuration, at
/// the paths `layout` gives.
pub fn render_all(context: &Context, layout: &Layout) -> Result<Vec<RenderedFile>, ConfigureError> {
    // The templates are parsed once for all files.
    let pages = OperatorPages::read(context.www_folder.as_deref())?;
    let env = environment_with(&pages)?;
    let added = pages
        .templates
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| !INSTALLED.contains(name));
    INSTALLED
        .iter()
        .copied()
        .chain(added)
        .filter_map(|name| destination(name, layout, context).map(|path| (name, path)))
        .map(|(name, path)| {
            Ok(RenderedFile {
                path,
                text: render_with(&env, name, context)?,
            })
        })
        .collect()
}

/// Writes each file whose content changed (atomically, mode 0644) and
/// returns the paths written; unchanged files keep their timestamps.
pub fn write_files(files: &[RenderedFile]) -> Result<Vec<PathBuf>, ConfigureError> {
    let mut written = Vec::new();
    for file in files {
        match fs::read_to_string(&file.path) {
            Ok(current) if current == file.text => continue,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ConfigureError::Io {
                    action: "reading",
                    path: file.path.clone(),
                    source,
                });
            }
        }
        write_file(&file.path, &file.text).map_err(|source| ConfigureError::Io {
            action: "writing",
            path: file.path.clone(),
            source,
        })?;
        written.push(file.path.clone());
    }
    Ok(written)
}

/// Copies the files of the operator's `www_folder` that are not pages
/// into the web root (images, style sheets); returns those that changed.
pub fn copy_www_files(context: &Context, layout: &Layout) -> Result<Vec<PathBuf>, ConfigureError> {
    let pages = OperatorPages::read(context.www_folder.as_deref())?;
    let mut copied = Vec::new();
    for source in &pages.files {
        let Some(name) = source.file_name() else {
            continue;
        };
        let target = layout.web.www_dir.join(name);
        let bytes = fs::read(source).map_err(|err| ConfigureError::Io {
            action: "reading",
            path: source.clone(),
            source: err,
        })?;
        if fs::read(&target).is_ok_and(|current| current == bytes) {
            continue;
        }
        write_file(&target, &bytes).map_err(|err| ConfigureError::Io {
            action: "writing",
            path: target.clone(),
            source: err,
        })?;
        copied.push(target);
    }
    Ok(copied)
}

/// Removes the files of parts this relay no longer runs (the iroh relay's
/// configuration, when `iroh_relay` names another relay) and returns the
/// paths removed.
pub fn remove_unused(context: &Context, layout: &Layout) -> Result<Vec<PathBuf>, ConfigureError> {
    let mut unused = Vec::new();
    if context.iroh.is_none() {
        unused.push(&layout.iroh_relay_config);
    }
    if context.logs.is_default() {
        unused.extend(layout.journald_override.as_ref());
    }
    let mut removed = Vec::new();
    for path in unused {
        match fs::remove_file(path) {
            Ok(()) => removed.push(path.clone()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ConfigureError::Io {
                    action: "removing",
                    path: path.clone(),
                    source,
                });
            }
        }
    }
    Ok(removed)
}

fn write_file(path: &Path, text: impl AsRef<[u8]>) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.chatmail-configure"));
    fs::write(&temp, text)?;
    fs::set_permissions(&temp, fs::Permissions::from_mode(0o644))?;
    fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chatmail_config::Config;

    use super::{render_all, write_files};
    use crate::context::Context;
    use crate::layout::{Layout, OpenDkimLayout, Vmail, WebLayout};

    fn rendered(dir: &Path) -> Vec<super::RenderedFile> {
        rendered_with(dir, "mail_domain = example.org\n").1
    }

    fn rendered_with(dir: &Path, ini: &str) -> (Context, Vec<super::RenderedFile>, Layout) {
        let config = Config::from_ini_str(&format!("[params]\n{ini}"), Path::new("chatmail.ini"))
            .expect("valid test ini");
        let mut layout = Layout::system(Vmail {
            uid: 5000,
            gid: 5000,
        });
        layout.postfix_dir = dir.join("postfix");
        layout.dovecot_dir = dir.join("dovecot");
        layout.web = WebLayout::in_dir(dir, "/run/fcgiwrap.socket".into());
        layout.opendkim = Some(OpenDkimLayout::in_dir(&dir.join("opendkim")));
        layout.iroh_relay_config = dir.join("iroh-relay").join("iroh-relay.toml");
        layout.journald_override = Some(dir.join("journald").join("chatmail.conf"));
        let context = Context::new(&config, &layout);
        let files = render_all(&context, &layout).expect("templates render");
        (context, files, layout)
    }

    fn text_of<'f>(files: &'f [super::RenderedFile], name: &str) -> Option<&'f str> {
        files
            .iter()
            .find(|file| file.path.ends_with(name))
            .map(|file| file.text.as_str())
    }

    /// The nginx site's two server blocks: plain HTTP, then HTTPS.
    fn server_blocks(site: &str) -> (&str, &str) {
        let https = site.find("ssl http2 proxy_protocol").unwrap_or(site.len());
        site.split_at(https)
    }

    #[test]
    fn a_domain_relay_runs_its_iroh_relay_behind_nginx_over_https() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_, files, _) = rendered_with(dir.path(), "mail_domain = example.org\n");
        let toml = text_of(&files, "iroh-relay.toml").expect("iroh-relay.toml");
        for line in [
            "http_bind_addr = \"127.0.0.1:3340\"",
            "enable_stun = false",
            "enable_quic_addr_discovery = false",
            "enable_metrics = true",
            "metrics_bind_addr = \"127.0.0.1:9157\"",
        ] {
            assert!(toml.lines().any(|each| each == line), "{line} in\n{toml}");
        }
        let site = text_of(&files, "chatmail-site.conf").expect("site");
        let (http, https) = server_blocks(site);
        for location in [
            "location = /relay",
            "location = /ping",
            "location = /generate_204",
        ] {
            assert!(https.contains(location), "{location} in\n{https}");
            assert!(!http.contains(location), "not over plain HTTP:\n{http}");
        }
        assert!(https.contains("proxy_set_header Upgrade $http_upgrade;"));
        assert!(https.contains("proxy_pass http://127.0.0.1:3340;"));
    }

    #[test]
    fn an_ip_only_relay_serves_its_iroh_relay_over_http_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_, files, _) = rendered_with(
            dir.path(),
            "mail_domain = 192.0.2.1\nmetrics_listen_iroh_relay =\n",
        );
        let toml = text_of(&files, "iroh-relay.toml").expect("iroh-relay.toml");
        assert!(toml.contains("enable_metrics = false"), "{toml}");
        let site = text_of(&files, "chatmail-site.conf").expect("site");
        let (http, https) = server_blocks(site);
        assert!(http.contains("location = /relay"), "{http}");
        assert!(https.contains("location = /relay"), "{https}");
    }

    #[test]
    fn another_iroh_relay_means_none_here_and_its_file_goes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_, files, layout) = rendered_with(dir.path(), "mail_domain = example.org\n");
        write_files(&files).expect("written");
        assert!(layout.iroh_relay_config.exists());
        let (context, files, layout) = rendered_with(
            dir.path(),
            "mail_domain = example.org\niroh_relay = https://iroh.example.net\n",
        );
        assert!(text_of(&files, "iroh-relay.toml").is_none());
        let site = text_of(&files, "chatmail-site.conf").expect("site");
        assert!(!site.contains("location = /relay"), "{site}");
        let removed = super::remove_unused(&context, &layout).expect("removed");
        assert_eq!(removed, std::slice::from_ref(&layout.iroh_relay_config));
        assert!(!layout.iroh_relay_config.exists());
        assert!(
            super::remove_unused(&context, &layout)
                .expect("nothing")
                .is_empty()
        );
    }

    #[test]
    fn every_file_lands_in_its_servers_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = rendered(dir.path());
        // Postfix 6, Dovecot 9, nginx's main configuration and site, the
        // index, info and privacy pages, autoconfig and the MTA-STS
        // policy, OpenDKIM's 3, the iroh relay's.
        assert_eq!(files.len(), 26);
        for file in &files {
            assert!(
                [
                    "postfix",
                    "dovecot",
                    "nginx",
                    "www",
                    "opendkim",
                    "iroh-relay"
                ]
                .iter()
                .any(|dir_name| file.path.starts_with(dir.path().join(dir_name))),
                "{}",
                file.path.display()
            );
            // Nothing of the template language is left over.
            assert!(!file.text.contains("{{"), "{}", file.path.display());
            assert!(!file.text.contains("{%"), "{}", file.path.display());
        }
    }

    #[test]
    fn unchanged_files_are_not_written_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = rendered(dir.path());
        assert_eq!(write_files(&files).expect("written").len(), files.len());
        assert!(write_files(&files).expect("written").is_empty());
    }

    #[test]
    fn port_443_is_routed_by_alpn_to_dovecot_postfix_and_the_site() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_, files, _) = rendered_with(dir.path(), "mail_domain = example.org\n");
        let nginx = text_of(&files, "nginx/nginx.conf").expect("nginx.conf");
        for line in [
            "listen 443;",
            "listen [::]:443;",
            r"~\bimap\b 127.0.0.1:8993;",
            r"~\bsmtp\b 127.0.0.1:8465;",
            "default 127.0.0.1:8443;",
            "ssl_preread on;",
            "proxy_protocol on;",
            "include /etc/nginx/modules-enabled/*.conf;",
        ] {
            assert!(
                nginx.lines().any(|l| l.trim() == line),
                "{line} in\n{nginx}"
            );
        }
        let site = text_of(&files, "chatmail-site.conf").expect("site");
        assert!(site.contains("listen 127.0.0.1:8443 ssl http2 proxy_protocol;"));
        assert!(site.contains("real_ip_header proxy_protocol;"));
        let dovecot = text_of(&files, "dovecot.conf").expect("dovecot.conf");
        let listener = dovecot
            .split("inet_listener imaps_behind_https {")
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .expect("listener");
        for setting in [
            "address = 127.0.0.1",
            "port = 8993",
            "ssl = yes",
            "haproxy = yes",
        ] {
            assert!(listener.contains(setting), "{setting} in {listener}");
        }
        let master = text_of(&files, "master.cf").expect("master.cf");
        let service = master
            .split("127.0.0.1:8465 inet")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("service behind 443");
        for option in [
            "smtpd_upstream_proxy_protocol=haproxy",
            "smtpd_tls_wrappermode=yes",
            "smtpd_sasl_auth_enable=yes",
            "reject_sender_login_mismatch",
            "smtpd_proxy_filter=127.0.0.1:10080",
        ] {
            assert!(service.contains(option), "{option} in {service}");
        }
        // The ordinary implicit-TLS service takes no PROXY header.
        let smtps = master
            .split("\nsmtps inet")
            .nth(1)
            .and_then(|rest| rest.split("127.0.0.1:8465").next())
            .expect("smtps");
        assert!(!smtps.contains("proxy_protocol"), "{smtps}");

        let (_, files, _) = rendered_with(
            dir.path(),
            "mail_domain = example.org\ndisable_ipv6 = true\n",
        );
        let nginx = text_of(&files, "nginx/nginx.conf").expect("nginx.conf");
        assert!(!nginx.contains("[::]:443"), "{nginx}");
    }

    #[test]
    fn browsers_opening_new_are_sent_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_, files, _) = rendered_with(dir.path(), "mail_domain = example.org\n");
        let site = text_of(&files, "chatmail-site.conf").expect("site");
        assert!(site.contains(r"location ~ ^/(new|cgi-bin/newemail\.py)$"));
        assert!(site.contains("return 302 dcaccount:https://example.org/new;"));
        let index = text_of(&files, "www/index.html").expect("index");
        assert!(index.contains("<svg class=\"qr\""), "{index}");
        assert!(index.contains("href=\"DCACCOUNT:https://example.org/new\""));
        assert!(!index.contains("<script"), "{index}");
        assert!(text_of(&files, "www/dclogin.js").is_none());

        let (_, files, _) = rendered_with(dir.path(), "mail_domain = 192.0.2.1\n");
        let site = text_of(&files, "chatmail-site.conf").expect("site");
        assert!(site.contains("return 302 https://192.0.2.1/;"), "{site}");
        let index = text_of(&files, "www/index.html").expect("index");
        assert!(!index.contains("DCACCOUNT"), "{index}");
        for attribute in [
            "data-domain=\"[192.0.2.1]\"",
            "data-host=\"192.0.2.1\"",
            "data-imap-port=\"993\"",
            "data-smtp-port=\"465\"",
            "data-name-length=\"9\"",
            "data-password-length=\"12\"",
        ] {
            assert!(index.contains(attribute), "{attribute} in {index}");
        }
        assert!(text_of(&files, "www/dclogin.js").is_some());
        assert!(text_of(&files, "www/qr.js").is_some());
    }

    #[test]
    fn the_privacy_policy_names_the_operator_escaped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_, files, _) = rendered_with(
            dir.path(),
            "mail_domain = example.org\nprivacy_mail = privacy@example.org\n\
             privacy_postal = Relay <GmbH>, Street 1, Town\n\
             privacy_supervisor = The Commissioner\nprivacy_pdo = Jane Doe\n\
             delete_mails_after = 14\ndelete_inactive_users_after = 60\n",
        );
        let privacy = text_of(&files, "www/privacy.html").expect("privacy");
        for text in [
            "Relay &lt;GmbH&gt;, Street 1, Town",
            "mailto:privacy@example.org",
            "The Commissioner",
            "Jane Doe",
            "at most\n14 days",
            "for 60 days",
            "for at most\n3 days",
        ] {
            assert!(privacy.contains(text), "{text} in {privacy}");
        }
        assert!(!privacy.contains("<GmbH>"));
        let info = text_of(&files, "www/info.html").expect("info");
        assert!(info.contains("14 days"), "{info}");
    }

    #[test]
    fn autoconfig_names_every_door_with_its_security() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_, files, _) = rendered_with(dir.path(), "mail_domain = example.org\n");
        let xml = text_of(&files, "www/autoconfig.xml").expect("autoconfig");
        let servers: Vec<(String, String, String)> = xml
            .split("Server type=\"")
            .skip(1)
            .map(|server| {
                let field = |name: &str| {
                    server
                        .split(&format!("<{name}>"))
                        .nth(1)
                        .and_then(|rest| rest.split('<').next())
                        .unwrap_or_default()
                        .to_owned()
                };
                let protocol = server.split('"').next().unwrap_or_default().to_owned();
                assert_eq!(field("hostname"), "example.org");
                (protocol, field("port"), field("socketType"))
            })
            .collect();
        let expected = [
            ("imap", "993", "SSL"),
            ("imap", "143", "STARTTLS"),
            ("imap", "443", "SSL"),
            ("smtp", "465", "SSL"),
            ("smtp", "587", "STARTTLS"),
            ("smtp", "443", "SSL"),
        ];
        assert_eq!(servers.len(), expected.len(), "{xml}");
        for ((protocol, port, socket), want) in servers.iter().zip(expected) {
            assert_eq!((protocol.as_str(), port.as_str(), socket.as_str()), want);
        }
        let site = text_of(&files, "chatmail-site.conf").expect("site");
        assert!(site.contains("autoconfig.example.org"), "{site}");
    }

    #[test]
    fn operators_pages_replace_and_add_to_the_shipped_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pages = dir.path().join("pages");
        std::fs::create_dir_all(&pages).expect("dir");
        std::fs::write(
            pages.join("index.html"),
            "{% extends \"www/layout.html\" %}{% block content %}Ours: {{ mail_domain }}{% endblock %}",
        )
        .expect("index");
        std::fs::write(pages.join("rules.html"), "Rules of {{ mail_domain }}").expect("page");
        std::fs::write(pages.join("logo.png"), [0x89, b'P', b'N', b'G', 0, 0xff]).expect("png");
        let ini = format!(
            "mail_domain = example.org\nwww_folder = {}\n",
            pages.display()
        );
        let (context, files, layout) = rendered_with(dir.path(), &ini);
        let index = text_of(&files, "www/index.html").expect("index");
        assert!(index.contains("Ours: example.org"), "{index}");
        assert!(index.contains("<nav>"), "the shipped layout: {index}");
        assert_eq!(
            text_of(&files, "www/rules.html"),
            Some("Rules of example.org")
        );
        assert!(text_of(&files, "www/privacy.html").is_some());
        let copied = super::copy_www_files(&context, &layout).expect("copied");
        assert_eq!(copied, vec![layout.web.www_dir.join("logo.png")]);
        assert_eq!(
            std::fs::read(layout.web.www_dir.join("logo.png")).expect("copy"),
            [0x89, b'P', b'N', b'G', 0, 0xff]
        );
        assert!(
            super::copy_www_files(&context, &layout)
                .expect("unchanged")
                .is_empty()
        );
    }

    #[test]
    fn logs_stay_in_memory_for_three_days_unless_chatmail_ini_says_otherwise() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (context, files, mut layout) = rendered_with(dir.path(), "mail_domain = example.org\n");
        assert!(context.logs.is_default());
        assert!(text_of(&files, "chatmail.conf").is_none());
        // The package's drop-in says what the defaults render to.
        let shipped = include_str!("../../../journald/default.conf");
        let settings = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|line| !line.starts_with('#') && !line.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let defaults = super::render_template("journald/chatmail.conf", &context).expect("renders");
        assert_eq!(settings(shipped), settings(&defaults));

        let override_path = dir.path().join("journald").join("chatmail.conf");
        layout.journald_override = Some(override_path.clone());
        let (context, files, _) = rendered_with(
            dir.path(),
            "mail_domain = example.org\nlog_storage = persistent\nlog_max_age = 30d\n",
        );
        let kept = text_of(&files, "journald/chatmail.conf").expect("override");
        assert!(kept.contains("Storage=persistent\n"), "{kept}");
        assert!(kept.contains("MaxRetentionSec=2592000s\n"), "{kept}");
        write_files(&files).expect("written");
        assert!(override_path.exists());
        assert!(!context.logs.is_default());
        let (context, _, layout) = rendered_with(dir.path(), "mail_domain = example.org\n");
        let removed = super::remove_unused(&context, &layout).expect("removed");
        assert!(removed.contains(&override_path), "{removed:?}");
        assert!(!override_path.exists());
    }
}
