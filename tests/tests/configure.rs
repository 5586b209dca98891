//! chatmail-configure renders complete Postfix and Dovecot configurations
//! that the real tools accept: for a domain relay and an IP-only relay,
//! with the limits of chatmail.ini in them.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result};
use relay_tests::{SelfSignedCert, daemon_binary};

fn configure(ini: &str, dir: &Path) -> Result<Output> {
    configure_with(ini, dir, &[])
}

fn configure_with(ini: &str, dir: &Path, extra: &[&str]) -> Result<Output> {
    let cert = SelfSignedCert::generate(dir)?;
    let ini_path = dir.join("chatmail.ini");
    fs::write(&ini_path, ini)?;
    Command::new(daemon_binary("chatmail-configure")?)
        .arg(&ini_path)
        .arg("--output")
        .arg(dir.join("etc"))
        .arg("--tls-cert")
        .arg(&cert.cert_path)
        .arg("--tls-key")
        .arg(&cert.key_path)
        .args(extra)
        .output()
        .context("running chatmail-configure")
}

fn postconf(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("postconf")
        .arg("-c")
        .arg(dir.join("etc/postfix"))
        .args(args)
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn doveconf(dir: &Path) -> Result<String> {
    let output = Command::new("doveconf")
        .arg("-c")
        .arg(dir.join("etc/dovecot/dovecot.conf"))
        .arg("-n")
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_domain_relay_renders_and_validates() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let output = configure(
        "[params]\nmail_domain = chat.example.org\nmax_smtp_connections = 777\n\
         max_imap_connections = 4321\nmax_mailbox_size = 1G\nmax_message_size = 1000000\n",
        dir.path(),
    )?;
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("postconf, doveconf and nginx accept"),
        "{stdout}"
    );

    // Its own iroh relay (iroh_relay defaults to https://chat.example.org),
    // behind the nginx site that nginx -t accepted.
    let iroh = fs::read_to_string(dir.path().join("etc/iroh-relay.toml"))?;
    assert!(
        iroh.contains("http_bind_addr = \"127.0.0.1:3340\""),
        "{iroh}"
    );
    let site = fs::read_to_string(dir.path().join("etc/nginx/chatmail-site.conf"))?;
    assert!(site.contains("location = /relay"), "{site}");
    // chatmail-turn's secret, made when the relay is configured.
    let secret_path = dir.path().join("etc/chatmail-turn/secret");
    let secret = fs::read_to_string(&secret_path)?;
    assert_eq!(secret.trim().len(), 64, "{secret}");
    assert_eq!(
        fs::metadata(&secret_path)?.permissions().mode() & 0o777,
        0o600
    );
    assert!(stdout.contains("created the TURN secret"), "{stdout}");

    let main = postconf(dir.path(), &["-n"])?;
    for expected in [
        "mydestination = chat.example.org",
        "myhostname = chat.example.org",
        "message_size_limit = 1000000",
        "default_transport = lmtp-filtermail:inet:[127.0.0.1]:10083",
        "lmtp-filtermail_destination_concurrency_limit = 1000",
        "smtpd_forbid_bare_newline = reject",
        "inet_interfaces = all",
    ] {
        assert!(main.contains(expected), "{expected} missing in\n{main}");
    }
    let master = postconf(dir.path(), &["-M"])?;
    for expected in [
        "submission inet n - n - 777 smtpd",
        "smtps      inet n - n - 777 smtpd",
        "smtpd_proxy_filter=127.0.0.1:10080",
        "smtpd_proxy_filter=127.0.0.1:10081",
        "127.0.0.1:10025 inet n - n - 100 smtpd",
        "127.0.0.1:10026 inet n - n - 100 smtpd",
        "lmtp-filtermail unix - - n - 1000 lmtp",
        "cleanup_service_name=authclean",
    ] {
        let squeezed = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            squeezed(&master).contains(&squeezed(expected)),
            "{expected} missing in\n{master}"
        );
    }
    let dovecot = doveconf(dir.path())?;
    for expected in [
        "process_limit = 4321",
        "client_limit = 4321",
        "quota_rule = *:storage=1024M",
        "quota_warning = storage=75%% quota-warning 716",
        "last_login_dict = proxy:/run/chatmail-lastlogin/lastlogin.socket:lastlogin",
        "mail_attribute_dict = proxy:/run/chatmail-metadata/metadata.socket:metadata",
        "executable = script /usr/bin/chatmail-quota-expire",
        "imap_capability = +XDELTAPUSH XCHATMAIL",
    ] {
        assert!(
            dovecot.contains(expected),
            "{expected} missing in\n{dovecot}"
        );
    }
    let auth = fs::read_to_string(dir.path().join("etc/dovecot/auth.conf"))?;
    assert!(
        auth.contains("uri = proxy:/run/doveauth/doveauth.socket:auth"),
        "{auth}"
    );
    Ok(())
}

#[test]
fn an_ip_only_relay_renders_and_validates() -> Result<()> {
    let dir = tempfile::tempdir()?;
    assert_success(&configure(
        "[params]\nmail_domain = 192.0.2.7\ndisable_ipv6 = true\n\
         imap_compress = true\nimap_rawlog = true\n",
        dir.path(),
    )?);
    let main = postconf(dir.path(), &["-n"])?;
    for expected in [
        "mydestination = [192.0.2.7]",
        "myorigin = [192.0.2.7]",
        "myhostname = 7.2.0.192.in-addr.arpa",
        "inet_protocols = ipv4",
    ] {
        assert!(main.contains(expected), "{expected} missing in\n{main}");
    }
    let dovecot = doveconf(dir.path())?;
    assert!(dovecot.contains("auth_username_chars = "), "{dovecot}");
    assert!(
        dovecot.contains("@[]"),
        "brackets must be allowed in logins"
    );
    Ok(())
}

#[test]
fn submitted_mail_loses_headers_that_reveal_the_sender() -> Result<()> {
    let dir = tempfile::tempdir()?;
    assert_success(&configure(
        "[params]\nmail_domain = example.org\n",
        dir.path(),
    )?);
    let map = dir.path().join("etc/postfix/submission_header_cleanup");
    for (header, expected) in [
        ("Received: from phone (1.2.3.4)", "IGNORE"),
        ("X-Originating-IP: 1.2.3.4", "IGNORE"),
        ("User-Agent: Delta Chat", "IGNORE"),
        ("Subject: our secret plans", "REPLACE Subject: [...]"),
        ("Chat-Version: 1.0", ""),
    ] {
        let output = Command::new("postmap")
            .arg("-q")
            .arg(header)
            .arg(format!("regexp:{}", map.display()))
            .output()?;
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            expected,
            "{header}"
        );
    }
    Ok(())
}

/// Every setting the relay we replace has in its Postfix and Dovecot
/// configuration, as the servers themselves read it back, so none can
/// silently go missing from the templates.
#[test]
fn the_settings_of_the_relay_we_replace_are_rendered() -> Result<()> {
    let dir = tempfile::tempdir()?;
    assert_success(&configure_with(
        "[params]\nmail_domain = chat.example.org\nmax_smtp_connections = 600\n\
         max_message_size = 2000000\nprivacy_mail = privacy@chat.example.org\n",
        dir.path(),
        &["--dkim-milter", "inet:127.0.0.1:8891"],
    )?);
    let main = postconf(dir.path(), &["-n"])?;
    for expected in [
        "maximal_queue_lifetime = 2d",
        "smtpd_peername_lookup = no",
        "non_smtpd_milters = inet:127.0.0.1:8891",
        "disable_vrfy_command = no",
    ] {
        assert!(
            main.lines().any(|line| line == expected),
            "{expected} missing in\n{main}"
        );
    }
    let lmtp_checks = main
        .lines()
        .find_map(|line| line.strip_prefix("lmtp_header_checks = regexp:"))
        .context("lmtp_header_checks")?;
    for (header, expected) in [
        ("DKIM-Signature: v=1; d=chat.example.org", "IGNORE"),
        (
            "Authentication-Results: chat.example.org; dkim=pass",
            "IGNORE",
        ),
        ("Received: from a by b", "IGNORE"),
        ("Autocrypt: addr=a@chat.example.org", ""),
    ] {
        let output = Command::new("postmap")
            .args(["-q", header])
            .arg(format!("regexp:{lmtp_checks}"))
            .output()?;
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            expected,
            "{header}"
        );
    }

    let overrides = postconf(dir.path(), &["-P"])?;
    for service in ["submission/inet", "smtps/inet"] {
        for setting in [
            "smtpd_tls_security_level = encrypt",
            "smtpd_tls_protocols = >=TLSv1.3",
            "smtpd_tls_mandatory_protocols = >=TLSv1.3",
            "smtpd_client_connection_count_limit = 120",
            "smtpd_sender_restrictions = reject_non_fqdn_sender,reject_sender_login_mismatch",
        ] {
            let expected = format!("{service}/{setting}");
            assert!(
                overrides.lines().any(|line| line == expected),
                "{expected} missing in\n{overrides}"
            );
        }
    }
    for expected in [
        "smtp/inet/smtpd_tls_security_level = encrypt",
        "127.0.0.1:10025/inet/milter_macro_daemon_name = ORIGINATING",
        "127.0.0.1:10025/inet/smtpd_milters = inet:127.0.0.1:8891",
        // Trace headers stay on mail to other relays.
        "lmtp-filtermail/unix/lmtp_header_checks = ",
    ] {
        assert!(
            overrides
                .lines()
                .any(|line| line.trim_end() == expected.trim_end()),
            "{expected} missing in\n{overrides}"
        );
    }
    // TLS 1.2 stays possible on port 25 (main.cf's protocols).
    assert!(
        main.contains("smtpd_tls_mandatory_protocols = >=TLSv1.2"),
        "{main}"
    );

    let dovecot = doveconf(dir.path())?;
    for expected in [
        "mail_plugins = \" zlib quota\"",
        "zlib_save = gz",
        "imap_hibernate_timeout = 30 secs",
        "service imap-hibernate {",
        "process_min_avail = 4",
        "vsz_limit = 1 G",
        "quota_grace = 0%%",
        "quota_max_mail_size = 2000000",
        "lmtp_add_received_header = no",
        "mail_fsync = never",
        "unix_listener anvil-auth-penalty {\n    mode = 00\n",
        "ssl_min_protocol = TLSv1.3",
        "special_use = \\Drafts",
        "special_use = \\Junk",
        "special_use = \\Trash",
        "special_use = \\Sent",
        "mail_server_admin = mailto:privacy@chat.example.org",
    ] {
        assert!(
            dovecot.contains(expected),
            "{expected} missing in\n{dovecot}"
        );
    }

    // The web front door: nginx -t accepted it (chatmail-configure checks),
    // and it routes what the relay we replace routes.
    // Port 443 takes mail clients too, by ALPN, and passes the rest to
    // the site.
    let nginx = fs::read_to_string(dir.path().join("etc/nginx/nginx.conf"))?;
    for expected in [
        "listen 443;",
        "listen [::]:443;",
        "ssl_preread on;",
        "~\\bimap\\b 127.0.0.1:8993;",
        "~\\bsmtp\\b 127.0.0.1:8465;",
        "default 127.0.0.1:8443;",
    ] {
        assert!(nginx.contains(expected), "{expected} missing in\n{nginx}");
    }
    let site = fs::read_to_string(dir.path().join("etc/nginx/chatmail-site.conf"))?;
    for expected in [
        "listen 127.0.0.1:8443 ssl http2 proxy_protocol;",
        "server_name chat.example.org mta-sts.chat.example.org autoconfig.chat.example.org;",
        "location = /mxdeliv {",
        "server 127.0.0.1:10082;",
        "proxy_pass http://chatmail_mxdeliv;",
        "client_max_body_size 3048576;",
        "location ~ ^/(new|cgi-bin/newemail\\.py)$ {",
        "return 302 dcaccount:https://chat.example.org/new;",
        "limit_req zone=chatmail_new",
        "fastcgi_param SCRIPT_FILENAME /usr/bin/chatmail-newemail;",
        "return 301 https://chat.example.org$request_uri;",
    ] {
        assert!(site.contains(expected), "{expected} missing in\n{site}");
    }
    let ini = dir.path().join("chatmail.ini");
    assert!(
        site.contains(&format!("fastcgi_param CHATMAIL_INI {};", ini.display())),
        "{site}"
    );
    let index = fs::read_to_string(dir.path().join("etc/www/index.html"))?;
    assert!(
        index.contains("DCACCOUNT:https://chat.example.org/new"),
        "{index}"
    );
    let privacy = fs::read_to_string(dir.path().join("etc/www/privacy.html"))?;
    assert!(privacy.contains("privacy@chat.example.org"), "{privacy}");

    // COMPRESS=DEFLATE sessions cannot hibernate.
    let compressed = tempfile::tempdir()?;
    assert_success(&configure(
        "[params]\nmail_domain = chat.example.org\nimap_compress = true\n",
        compressed.path(),
    )?);
    let dovecot = doveconf(compressed.path())?;
    assert!(!dovecot.contains("imap_hibernate_timeout"), "{dovecot}");
    assert!(!dovecot.contains("mail_server_admin"), "{dovecot}");
    Ok(())
}

#[test]
fn a_bad_setting_is_named_and_nothing_is_written() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let output = configure(
        "[params]\nmail_domain = example.org\nmax_imap_connections = many\n",
        dir.path(),
    )?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_imap_connections"), "{stderr}");
    assert!(!dir.path().join("etc").exists());
    Ok(())
}

#[test]
fn rendering_again_changes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ini = "[params]\nmail_domain = example.org\n";
    assert_success(&configure(ini, dir.path())?);
    let main_cf = dir.path().join("etc/postfix/main.cf");
    let before = fs::metadata(&main_cf)?.modified()?;
    let secret = fs::read_to_string(dir.path().join("etc/chatmail-turn/secret"))?;
    // The certificate is made anew, with the same paths.
    let output = configure(ini, dir.path())?;
    assert_success(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("configuration unchanged"));
    assert_eq!(fs::metadata(&main_cf)?.modified()?, before);
    // The TURN secret is never replaced: credentials handed out stay valid.
    assert_eq!(
        fs::read_to_string(dir.path().join("etc/chatmail-turn/secret"))?,
        secret
    );
    Ok(())
}

#[test]
fn outgoing_mail_of_a_domain_relay_is_signed_by_opendkim_or_the_named_milter() -> Result<()> {
    let ini = "[params]\nmail_domain = chat.example.org\ndkim_selector = dkim1\n";
    // By default chatmail-configure sets up OpenDKIM (and checks it with
    // `opendkim -n`): a key made once, the tables, the milter in Postfix.
    let own = tempfile::tempdir()?;
    let output = configure(ini, own.path())?;
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("created the DKIM key"), "{stdout}");
    let opendkim = own.path().join("etc/opendkim");
    let key = opendkim.join("keys/dkim1.private");
    let mode = fs::metadata(&key)?.permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let key_text = fs::read(&key)?;
    assert_eq!(
        fs::read_to_string(opendkim.join("SigningTable"))?,
        "*@chat.example.org dkim1._domainkey.chat.example.org\n"
    );
    assert!(
        fs::read_to_string(opendkim.join("KeyTable"))?
            .starts_with("dkim1._domainkey.chat.example.org chat.example.org:dkim1:")
    );
    let socket = opendkim.join("opendkim.sock");
    let milter = format!("smtpd_milters=unix:{}", socket.display());
    assert!(postconf(own.path(), &["-M"])?.contains(&milter));
    let main_cf = postconf(own.path(), &["-n"])?;
    assert!(main_cf.contains(&format!("non_smtpd_milters = unix:{}", socket.display())));
    // Postfix hands its bounces to the milter only when told to.
    assert!(main_cf.contains("internal_mail_filter_classes = bounce"));
    // Again: the key stays (its public half is in DNS).
    let output = configure(ini, own.path())?;
    assert_success(&output);
    assert!(!String::from_utf8_lossy(&output.stdout).contains("created the DKIM key"));
    assert_eq!(fs::read(&key)?, key_text);

    let signed = tempfile::tempdir()?;
    let output = configure_with(
        ini,
        signed.path(),
        &["--dkim-milter", "inet:127.0.0.1:8891"],
    )?;
    assert_success(&output);
    assert!(!signed.path().join("etc/opendkim").exists());
    let master = postconf(signed.path(), &["-M"])?;
    let reinject = master
        .lines()
        .find(|line| line.starts_with("127.0.0.1:10025"))
        .context("reinjection service")?;
    assert!(
        reinject.contains("smtpd_milters=inet:127.0.0.1:8891"),
        "{reinject}"
    );
    assert!(
        reinject.contains("milter_default_action=tempfail"),
        "{reinject}"
    );
    Ok(())
}

/// `chatmail-configure dns` prints every record a domain relay needs;
/// `dns --check` finds them all once DNS serves exactly that, names what
/// is missing otherwise (exit status 1), and says when it cannot ask
/// (exit status 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_records_are_printed_and_checked() -> Result<()> {
    use relay_tests::{DnsMode, DnsServer};
    let complete = DnsServer::start("127.0.0.1".parse()?).await?;
    let partial = DnsServer::start("127.0.0.1".parse()?).await?;
    let dir = tempfile::tempdir()?;
    let ini = |dns: &DnsServer| {
        format!(
            "[params]\nmail_domain = alpha.test\ndns_resolver = {}\ndns_dnssec_validation = no\n",
            dns.addr()
        )
    };
    assert_success(&configure(&ini(&complete), dir.path())?);
    // The MTA-STS policy the records point to is on the web front door.
    let policy = fs::read_to_string(dir.path().join("etc/www/mta-sts.txt"))?;
    assert!(
        policy.contains("mode: enforce\nmx: alpha.test\n"),
        "{policy}"
    );
    let site = fs::read_to_string(dir.path().join("etc/nginx/chatmail-site.conf"))?;
    assert!(
        site.contains("server_name alpha.test mta-sts.alpha.test autoconfig.alpha.test;"),
        "{site}"
    );
    assert!(
        site.contains("location = /.well-known/mta-sts.txt"),
        "{site}"
    );
    let key = dir.path().join("etc/opendkim/keys/opendkim.private");
    let dns = |ini_text: &str, extra: &[&str]| -> Result<Output> {
        let ini_path = dir.path().join("dns.ini");
        fs::write(&ini_path, ini_text)?;
        Ok(Command::new(daemon_binary("chatmail-configure")?)
            .arg("dns")
            .arg(&ini_path)
            .args(["--ipv4", "127.0.0.1", "--ipv6", "::1", "--dkim-key"])
            .arg(&key)
            .args(extra)
            .output()?)
    };
    let printed = dns(&ini(&complete), &[])?;
    assert_success(&printed);
    let zone = String::from_utf8(printed.stdout)?;
    let dkim = chatmail_configure::dkim_dns_record(&key)?;
    let key_part = dkim.split("p=").nth(1).context("p= in the record")?;
    assert!(zone.contains(&key_part[..100]), "{zone}");
    let records =
        chatmail_configure::dns::parse_zone(&zone, "alpha.test").map_err(anyhow::Error::msg)?;
    assert!(records.len() >= 14, "{zone}");
    complete.add_zone(&records);
    // The same zone without the DKIM key.
    let without_dkim: std::collections::BTreeMap<_, _> = records
        .iter()
        .filter(|(key, _)| !key.name.to_string().starts_with("opendkim._domainkey"))
        .map(|(key, set)| (key.clone(), set.clone()))
        .collect();
    partial.add_zone(&without_dkim);

    let checked = dns(&ini(&complete), &["--check"])?;
    assert_success(&checked);
    assert!(String::from_utf8_lossy(&checked.stdout).contains("are in DNS"));

    let checked = dns(&ini(&partial), &["--check"])?;
    assert_eq!(checked.status.code(), Some(1), "{checked:?}");
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(
        stdout.contains("missing: opendkim._domainkey.alpha.test. TXT v=DKIM1; k=rsa; p="),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    partial.set_mode(DnsMode::ServFail);
    let checked = dns(&ini(&partial), &["--check"])?;
    assert_eq!(checked.status.code(), Some(2), "{checked:?}");
    assert!(String::from_utf8_lossy(&checked.stderr).contains("cannot check DNS"));
    Ok(())
}

#[test]
fn acme_is_for_domain_relays_and_excludes_a_certificate_of_ones_own() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let output = configure_with("[params]\nmail_domain = 127.0.0.1\n", dir.path(), &[])?;
    assert_success(&output);
    let ini = dir.path().join("chatmail.ini");
    let acme = |extra: &[&str]| -> Result<Output> {
        Ok(Command::new(daemon_binary("chatmail-configure")?)
            .arg(&ini)
            .arg("--output")
            .arg(dir.path().join("etc"))
            .arg("--acme")
            .args(extra)
            .output()?)
    };
    let output = acme(&[])?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("IP-only relay gets no certificate"),
        "{stderr}"
    );
    let output = acme(&["--tls-cert", "/etc/hostname"])?;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be used with"));
    Ok(())
}
