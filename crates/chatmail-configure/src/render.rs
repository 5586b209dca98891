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
    ("www/index.html", include_str!("../../../www/index.html")),
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
    "www/mta-sts.txt",
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

fn environment() -> Result<Environment<'static>, ConfigureError> {
    let mut env = Environment::new();
    // A misspelt name must fail the rendering, not become an empty
    // setting in a mail server's configuration.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    for (name, text) in TEMPLATES {
        env.add_template(name, text).map_err(template_error(name))?;
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
        ("nginx", "nginx.conf") => layout
            .private
            .as_ref()
            .map(|instance| instance.nginx_dir().join("nginx.conf")),
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
    let env = environment()?;
    INSTALLED
        .iter()
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

/// Removes the files of parts this relay no longer runs (the iroh relay's
/// configuration, when `iroh_relay` names another relay) and returns the
/// paths removed.
pub fn remove_unused(context: &Context, layout: &Layout) -> Result<Vec<PathBuf>, ConfigureError> {
    let mut removed = Vec::new();
    if context.iroh.is_none() {
        let path = &layout.iroh_relay_config;
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

fn write_file(path: &Path, text: &str) -> io::Result<()> {
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
        let https = site.find("listen 443 ssl").unwrap_or(site.len());
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
        // Postfix 5, Dovecot 9, the nginx site, the index page and the
        // MTA-STS policy, OpenDKIM's 3, the iroh relay's; a system nginx
        // has its own nginx.conf.
        assert_eq!(files.len(), 21);
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
}
