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
        let config = Config::from_ini_str(
            "[params]\nmail_domain = example.org\n",
            Path::new("chatmail.ini"),
        )
        .expect("valid test ini");
        let mut layout = Layout::system(Vmail {
            uid: 5000,
            gid: 5000,
        });
        layout.postfix_dir = dir.join("postfix");
        layout.dovecot_dir = dir.join("dovecot");
        layout.web = WebLayout::in_dir(dir, "/run/fcgiwrap.socket".into());
        layout.opendkim = Some(OpenDkimLayout::in_dir(&dir.join("opendkim")));
        render_all(&Context::new(&config, &layout), &layout).expect("templates render")
    }

    #[test]
    fn every_file_lands_in_its_servers_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = rendered(dir.path());
        // Postfix 5, Dovecot 9, the nginx site, the index page and the
        // MTA-STS policy, OpenDKIM's 3; a system nginx has its own
        // nginx.conf.
        assert_eq!(files.len(), 20);
        for file in &files {
            assert!(
                ["postfix", "dovecot", "nginx", "www", "opendkim"]
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
