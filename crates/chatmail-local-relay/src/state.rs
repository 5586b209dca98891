//! The relay's state directory: mailboxes, sockets, logs, the queue, a
//! self-signed certificate and the chatmail.ini the daemons read.

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use chatmail_config::MetricsDaemon;
use chatmail_configure::Vmail;
use nix::unistd::{Gid, Uid, chown};

use crate::ports::Ports;
use crate::processes::run;

pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    pub fn mail(&self) -> PathBuf {
        self.root.join("mail")
    }
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("log")
    }
    pub fn ini(&self) -> PathBuf {
        self.root.join("chatmail.ini")
    }
    pub fn cert(&self) -> PathBuf {
        self.root.join("tls/cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.root.join("tls/key.pem")
    }

    /// Creates the directories with the owners the servers need.
    pub fn prepare(&self, vmail: Vmail) -> Result<()> {
        let vmail_owned = |path: &Path| -> Result<()> {
            fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
            chown(
                path,
                Some(Uid::from_raw(vmail.uid)),
                Some(Gid::from_raw(vmail.gid)),
            )?;
            Ok(())
        };
        make_dir(&self.root, 0o755)?;
        vmail_owned(&self.mail())?;
        vmail_owned(&self.run())?;
        // chatmail-turn's secret, made at its first start and kept.
        vmail_owned(&self.root.join("turn"))?;
        // Sockets left by a relay that was killed would look ready.
        for entry in fs::read_dir(self.run())? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "socket") {
                fs::remove_file(&path)?;
            }
        }
        make_dir(&self.log(), 0o755)?;
        make_dir(&self.root.join("tls"), 0o755)?;
        make_dir(&self.root.join("postfix-queue"), 0o755)?;
        let data = self.root.join("postfix-data");
        make_dir(&data, 0o700)?;
        let postfix = nix::unistd::User::from_name("postfix")?
            .context("user postfix does not exist; is the postfix package installed?")?;
        chown(&data, Some(postfix.uid), Some(postfix.gid))?;
        Ok(())
    }

    /// A self-signed certificate for the relay's IP address (as subject
    /// alternative name, which clients check), made once and kept.
    pub fn ensure_certificate(&self, address: Ipv4Addr) -> Result<()> {
        if self.cert().is_file() && self.key().is_file() {
            return Ok(());
        }
        run(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .arg("ec_paramgen_curve:P-256")
                .args(["-nodes", "-days", "3650", "-subj"])
                .arg(format!("/CN={address}"))
                .arg("-addext")
                .arg(format!("subjectAltName=IP:{address}"))
                .arg("-keyout")
                .arg(self.key())
                .arg("-out")
                .arg(self.cert()),
            "openssl req",
        )?;
        fs::set_permissions(self.cert(), fs::Permissions::from_mode(0o644))?;
        Ok(())
    }

    /// Copies `names` from `from` into `<state>/bin` (readable and
    /// executable by all) and returns that directory. Unchanged copies
    /// are kept; changed ones are replaced atomically.
    pub fn install_daemons(&self, from: &Path, names: &[&str]) -> Result<PathBuf> {
        let bin = self.root.join("bin");
        make_dir(&bin, 0o755)?;
        for name in names {
            let source = from.join(name);
            let target = bin.join(name);
            let original = fs::metadata(&source)
                .with_context(|| format!("{} (build the daemons first)", source.display()))?;
            let fresh = fs::metadata(&target).is_ok_and(|copy| {
                copy.len() == original.len() && copy.modified().ok() >= original.modified().ok()
            });
            if fresh {
                continue;
            }
            let temp = bin.join(format!(".{name}.new"));
            fs::copy(&source, &temp).with_context(|| format!("copying {}", source.display()))?;
            fs::set_permissions(&temp, fs::Permissions::from_mode(0o755))?;
            fs::rename(&temp, &target)?;
        }
        Ok(bin)
    }

    /// Writes chatmail.ini for an IP-only relay on `address`, then
    /// `overrides` (`key=value`) in order.
    pub fn write_ini(
        &self,
        address: Ipv4Addr,
        ports: &Ports,
        peer_ports: &Ports,
        overrides: &[(String, String)],
    ) -> Result<()> {
        // Shipped with the package in /usr/share; here a copy in the state
        // directory, which vmail can read wherever the checkout is.
        let appversions = self.root.join("appversions.json");
        fs::write(
            &appversions,
            include_str!("../../chatmail-metadata/appversions.json"),
        )?;
        fs::set_permissions(&appversions, fs::Permissions::from_mode(0o644))?;
        let mut settings: Vec<(String, String)> = [
            ("mail_domain", address.to_string()),
            ("mailboxes_dir", self.mail().display().to_string()),
            (
                "nocreate_file",
                self.root.join("nocreate").display().to_string(),
            ),
            ("filtermail_host", address.to_string()),
            ("postfix_host", address.to_string()),
            ("filtermail_smtp_port", ports.filter_outgoing.to_string()),
            (
                "filtermail_smtp_port_incoming",
                ports.filter_incoming.to_string(),
            ),
            (
                "filtermail_http_port_incoming",
                ports.filter_incoming_http.to_string(),
            ),
            (
                "filtermail_lmtp_port_transport",
                ports.transport_lmtp.to_string(),
            ),
            ("postfix_reinject_port", ports.reinject.to_string()),
            (
                "postfix_reinject_port_incoming",
                ports.reinject_incoming.to_string(),
            ),
            (
                "filtermail_transport_smtp_port",
                peer_ports.public.smtp.to_string(),
            ),
            (
                "filtermail_transport_https_port",
                peer_ports.public.https.to_string(),
            ),
            ("appversions_file", appversions.display().to_string()),
            // Delta Chat trusts only the web PKI for an iroh relay: it is
            // reached over nginx's plain HTTP port, by address.
            (
                "iroh_relay",
                format!("http://{address}:{}", ports.public.http),
            ),
            (
                "iroh_relay_listen",
                format!("{address}:{}", ports.iroh_relay),
            ),
            // Calls between accounts of local relays relay to loopback
            // peers, which a relay on the internet never allows.
            ("turn_listen", address.to_string()),
            ("turn_port", ports.turn.to_string()),
            ("turn_allow_private", "true".to_owned()),
            (
                "turn_secret_path",
                self.root.join("turn").join("secret").display().to_string(),
            ),
            (
                "turn_socket_path",
                self.run().join("turn.socket").display().to_string(),
            ),
            // A laptop is busier than a relay: never refuse new accounts
            // for load or memory.
            ("max_load_1m", "1000".to_owned()),
            ("min_available_memory", "1M".to_owned()),
            ("min_free_disk_space", "1M".to_owned()),
            // The other local relays live on loopback addresses, which
            // a relay on the internet never delivers to.
            ("filtermail_transport_allow_private", "true".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .chain(
            MetricsDaemon::ALL
                .iter()
                .zip(ports.metrics)
                .map(|(daemon, port)| {
                    (daemon.config_key().to_owned(), format!("{address}:{port}"))
                }),
        )
        .collect();
        for (key, value) in overrides {
            settings.retain(|(existing, _)| existing != key);
            settings.push((key.clone(), value.clone()));
        }
        let mut text =
            String::from("# Written by chatmail-local-relay at every start.\n[params]\n");
        for (key, value) in &settings {
            writeln!(text, "{key} = {value}")?;
        }
        fs::write(self.ini(), text)?;
        fs::set_permissions(self.ini(), fs::Permissions::from_mode(0o644))?;
        Ok(())
    }
}

fn make_dir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}
