use std::path::{Path, PathBuf};

use chatmail_config::{Config, ConfigError, MailDomain};

fn parse(body: &str) -> Result<Config, ConfigError> {
    Config::from_ini_str(&format!("[params]\n{body}"), Path::new("/etc/chatmail.ini"))
}

fn parse_ok(body: &str) -> Config {
    parse(body).expect("config should parse")
}

/// Asserts that `body` fails on `key`, and that the message names key,
/// value and file.
fn assert_bad_value(body: &str, key: &str, value: &str) {
    let err = parse(body).expect_err("config should be refused");
    match &err {
        ConfigError::BadValue {
            key: got_key,
            value: got_value,
            path,
            ..
        } => {
            assert_eq!(got_key, key);
            assert_eq!(got_value.trim(), value);
            assert_eq!(path, Path::new("/etc/chatmail.ini"));
        }
        other => panic!("expected a bad value for {key}, got {other:?}"),
    }
    let message = err.to_string();
    for part in [key, value, "/etc/chatmail.ini"] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

#[test]
fn every_default() {
    let config = parse_ok("mail_domain = chat.example.org\n");
    assert_eq!(
        config.mail_domain,
        MailDomain::Name("chat.example.org".into())
    );
    assert_eq!(config.max_user_send_per_minute, 60);
    assert_eq!(config.max_user_send_burst_size, 10);
    assert_eq!(config.max_mailbox_size, 500 * 1024 * 1024);
    assert_eq!(config.max_message_size, 31_457_280);
    assert_eq!(config.delete_mails_after, 20);
    assert_eq!(config.delete_large_after, 7);
    assert_eq!(config.delete_inactive_users_after, 90);
    assert_eq!(config.username_min_length, 9);
    assert_eq!(config.username_max_length, 9);
    assert_eq!(config.password_min_length, 9);
    assert_eq!(config.filtermail_smtp_port, 10080);
    assert_eq!(config.filtermail_smtp_port_incoming, 10081);
    assert_eq!(config.filtermail_http_port_incoming, 10082);
    assert_eq!(config.filtermail_lmtp_port_transport, 10083);
    assert_eq!(config.postfix_reinject_port, 10025);
    assert_eq!(config.postfix_reinject_port_incoming, 10026);
    assert_eq!(config.filtermail_host, "127.0.0.1");
    assert_eq!(config.postfix_host, "127.0.0.1");
    assert_eq!(
        config.mailboxes_dir,
        PathBuf::from("/home/vmail/mail/chat.example.org")
    );
    assert_eq!(
        config.passdb_path,
        PathBuf::from("/home/vmail/passdb.sqlite")
    );
    assert_eq!(
        config.turn_socket_path,
        PathBuf::from("/run/chatmail-turn/turn.socket")
    );
    assert_eq!(config.iroh_relay, "https://chat.example.org");
    assert!((config.max_load_1m - 5.0).abs() < f64::EPSILON);
    assert_eq!(config.min_available_memory, 200 * 1024 * 1024);
    assert_eq!(config.min_free_disk_space, 1024 * 1024 * 1024);
    assert_eq!(config.max_imap_connections, 10_000);
    assert_eq!(config.max_smtp_connections, 1_000);
    assert!(!config.disable_ipv6);
    assert!(!config.imap_rawlog);
    assert!(!config.imap_compress);
    assert_eq!(
        config.nocreate_file,
        PathBuf::from("/etc/chatmail-nocreate")
    );
    assert!(!config.tls_self_signed);
    assert_eq!(config.dns_resolver, None);
    assert!(config.dns_dnssec_validation);
    assert_eq!(config.dns_trust_anchor, None);
    assert_eq!(config.filtermail_refused_mail_dir, None);
    assert!(config.unknown_keys.is_empty());
    assert_eq!(config.mailboxes().root(), config.mailboxes_dir);
}

#[test]
fn every_key_can_be_set() {
    let config = parse_ok(
        "mail_domain = example.org
max_user_send_per_minute = 120
max_user_send_burst_size = 20
max_mailbox_size = 1G
max_message_size = 10M
delete_mails_after = 40
delete_large_after = 3
delete_inactive_users_after = 365
username_min_length = 6
username_max_length = 20
password_min_length = 12
filtermail_smtp_port = 20080
filtermail_smtp_port_incoming = 20081
filtermail_http_port_incoming = 20082
filtermail_lmtp_port_transport = 20083
postfix_reinject_port = 20025
postfix_reinject_port_incoming = 20026
filtermail_host = ::1
postfix_host = localhost
mailboxes_dir = /srv/mail
passdb_path = /srv/passdb.sqlite
turn_socket_path = /run/turn.sock
iroh_relay = https://iroh.example.org
max_load_1m = 2.5
min_available_memory = 1G
min_free_disk_space = 500MB
max_imap_connections = 50000
max_smtp_connections = 3000
disable_ipv6 = True
imap_rawlog = YES
imap_compress = off
nocreate_file = /srv/nocreate
tls_self_signed = yes
dns_resolver = 127.0.0.53
dns_dnssec_validation = no
filtermail_refused_mail_dir = /var/lib/refused
",
    );
    assert_eq!(config.max_user_send_per_minute, 120);
    assert_eq!(config.max_user_send_burst_size, 20);
    assert_eq!(config.max_mailbox_size, 1 << 30);
    assert_eq!(config.max_message_size, 10 << 20);
    assert_eq!(config.delete_mails_after, 40);
    assert_eq!(config.delete_large_after, 3);
    assert_eq!(config.delete_inactive_users_after, 365);
    assert_eq!(config.username_min_length, 6);
    assert_eq!(config.username_max_length, 20);
    assert_eq!(config.password_min_length, 12);
    assert_eq!(config.filtermail_smtp_port, 20080);
    assert_eq!(config.filtermail_smtp_port_incoming, 20081);
    assert_eq!(config.filtermail_http_port_incoming, 20082);
    assert_eq!(config.filtermail_lmtp_port_transport, 20083);
    assert_eq!(config.postfix_reinject_port, 20025);
    assert_eq!(config.postfix_reinject_port_incoming, 20026);
    assert_eq!(config.filtermail_host, "::1");
    assert_eq!(config.postfix_host, "localhost");
    assert_eq!(config.mailboxes_dir, PathBuf::from("/srv/mail"));
    assert_eq!(config.passdb_path, PathBuf::from("/srv/passdb.sqlite"));
    assert_eq!(config.turn_socket_path, PathBuf::from("/run/turn.sock"));
    assert_eq!(config.iroh_relay, "https://iroh.example.org");
    assert!((config.max_load_1m - 2.5).abs() < f64::EPSILON);
    assert_eq!(config.min_available_memory, 1 << 30);
    assert_eq!(config.min_free_disk_space, 500 << 20);
    assert_eq!(config.max_imap_connections, 50_000);
    assert_eq!(config.max_smtp_connections, 3_000);
    assert!(config.disable_ipv6);
    assert!(config.imap_rawlog);
    assert!(!config.imap_compress);
    assert_eq!(config.nocreate_file, PathBuf::from("/srv/nocreate"));
    assert!(config.tls_self_signed);
    assert_eq!(config.dns_resolver, Some("127.0.0.53:53".parse().unwrap()));
    assert!(!config.dns_dnssec_validation);
    assert_eq!(
        config.filtermail_refused_mail_dir,
        Some(PathBuf::from("/var/lib/refused"))
    );
}

#[test]
fn dns_resolver_forms() {
    let cases = [
        ("::1", "[::1]:53"),
        ("127.0.0.1:5353", "127.0.0.1:5353"),
        ("[::1]:5353", "[::1]:5353"),
    ];
    for (value, expected) in cases {
        let config = parse_ok(&format!(
            "mail_domain = example.org\ndns_resolver = {value}\n"
        ));
        assert_eq!(
            config.dns_resolver,
            Some(expected.parse().unwrap()),
            "{value}"
        );
    }
    // Empty means the system's resolvers, as if the key were absent.
    let config = parse_ok("mail_domain = example.org\ndns_resolver =\n");
    assert_eq!(config.dns_resolver, None);
}

#[test]
fn ipv4_domain_makes_an_ip_only_relay() {
    let config = parse_ok("mail_domain = 127.0.0.1\n");
    assert_eq!(config.mail_domain.address_domain(), "[127.0.0.1]");
    assert_eq!(config.mail_domain.hostname(), "1.0.0.127.in-addr.arpa");
    assert_eq!(
        config.mailboxes_dir,
        PathBuf::from("/home/vmail/mail/127.0.0.1")
    );
    // Clients trust only the web PKI: a self-signed relay's iroh relay
    // is reached over plain HTTP.
    assert_eq!(config.iroh_relay, "http://127.0.0.1");
    assert!(config.runs_iroh_relay());
    assert!(config.tls_self_signed);
}

#[test]
fn comments_case_and_whitespace() {
    let config = parse_ok(
        "# a comment line\n; another\n  MAIL_DOMAIN   =   Example.ORG  \n\nMax_Message_Size=1000\n",
    );
    assert_eq!(config.mail_domain.address_domain(), "example.org");
    assert_eq!(config.max_message_size, 1000);
}

#[test]
fn deployment_keys_are_accepted_silently() {
    let config = parse_ok(
        "mail_domain = example.org
privacy_mail = privacy@example.org
privacy_postal = Street 1
privacy_supervisor = someone
privacy_pdo = someone
www_folder = /var/www
acme_email = admin@example.org
mtail_address = 127.0.0.1
tls_external_cert_and_key = /a.pem /b.pem
",
    );
    assert!(config.unknown_keys.is_empty(), "{:?}", config.unknown_keys);
    assert_eq!(config.privacy_mail.as_deref(), Some("privacy@example.org"));
}

#[test]
fn privacy_mail_must_be_one_address() {
    assert_eq!(parse_ok("mail_domain = example.org\n").privacy_mail, None);
    assert_eq!(
        parse_ok("mail_domain = example.org\nprivacy_mail =\n").privacy_mail,
        None
    );
    assert_bad_value(
        "mail_domain = example.org\nprivacy_mail = nobody\n",
        "privacy_mail",
        "nobody",
    );
    assert_bad_value(
        "mail_domain = example.org\nprivacy_mail = a@b.org } ssl = no\n",
        "privacy_mail",
        "a@b.org } ssl = no",
    );
}

#[test]
fn dkim_selector_is_one_dns_label() {
    assert_eq!(
        parse_ok("mail_domain = example.org\n").dkim_selector,
        "opendkim"
    );
    assert_eq!(
        parse_ok("mail_domain = example.org\ndkim_selector = dkim-2026\n").dkim_selector,
        "dkim-2026"
    );
    for bad in ["a.b", "-a", "a b", "x/../y"] {
        assert_bad_value(
            &format!("mail_domain = example.org\ndkim_selector = {bad}\n"),
            "dkim_selector",
            bad,
        );
    }
}

#[test]
fn unknown_keys_are_listed_not_refused() {
    let config = parse_ok("mail_domain = example.org\nzeta = 1\nalpha = 2\n");
    assert_eq!(config.unknown_keys, ["alpha", "zeta"]);
}

#[test]
fn other_sections_are_ignored() {
    let config = parse_ok("mail_domain = example.org\n[other]\nfoo = bar\n");
    assert!(config.unknown_keys.is_empty());
}

#[test]
fn missing_mail_domain() {
    let err = parse("max_message_size = 10\n").expect_err("must fail");
    assert!(matches!(
        err,
        ConfigError::MissingKey {
            key: "mail_domain",
            ..
        }
    ));
    assert!(err.to_string().contains("mail_domain"));
}

#[test]
fn missing_params_section() {
    let err = Config::from_ini_str("[other]\nmail_domain = x.org\n", Path::new("/x.ini"))
        .expect_err("must fail");
    assert!(matches!(err, ConfigError::MissingSection { .. }));
    assert!(err.to_string().contains("/x.ini"));
}

#[test]
fn missing_file_names_the_file() {
    let err = Config::load("/nonexistent/chatmail.ini").expect_err("must fail");
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/chatmail.ini"));
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chatmail.ini");
    std::fs::write(&path, "[params]\nmail_domain = example.org\nbogus = 1\n").expect("write");
    let config = Config::load(&path).expect("loads");
    assert_eq!(config.path, path);
    assert_eq!(config.unknown_keys, ["bogus"]);
}

#[test]
fn duplicate_key_is_an_error() {
    assert_bad_value(
        "mail_domain = example.org\nmax_message_size = 1\nmax_message_size = 2\n",
        "max_message_size",
        "2",
    );
}

#[test]
fn bad_values_name_key_value_and_file() {
    let cases = [
        ("mail_domain", "not a domain"),
        ("mail_domain", "[example.org]"),
        ("max_user_send_per_minute", "-1"),
        ("max_user_send_per_minute", "99999999999"),
        ("max_user_send_burst_size", "ten"),
        ("max_mailbox_size", "500X"),
        ("max_message_size", "big"),
        ("delete_mails_after", "2.5"),
        ("delete_large_after", ""),
        ("delete_inactive_users_after", "x"),
        ("username_min_length", "a"),
        ("username_max_length", "-9"),
        ("password_min_length", "nine"),
        ("filtermail_smtp_port", "0"),
        ("filtermail_smtp_port_incoming", "65536"),
        ("filtermail_http_port_incoming", "http"),
        ("filtermail_lmtp_port_transport", "-1"),
        ("postfix_reinject_port", "1.5"),
        ("postfix_reinject_port_incoming", ""),
        ("filtermail_host", "bad host!"),
        ("postfix_host", ""),
        ("mailboxes_dir", ""),
        ("passdb_path", ""),
        ("turn_socket_path", ""),
        ("max_load_1m", "high"),
        ("max_load_1m", "-1"),
        ("min_available_memory", "lots"),
        ("min_free_disk_space", "1Q"),
        ("max_imap_connections", "many"),
        ("dns_resolver", "dns.example.org"),
        ("dns_resolver", "127.0.0.1:99999"),
        ("dns_dnssec_validation", "maybe"),
        ("max_smtp_connections", "-5"),
        ("disable_ipv6", "maybe"),
        ("imap_rawlog", "2"),
        ("imap_compress", "y e s"),
        ("nocreate_file", ""),
        ("tls_self_signed", "sometimes"),
    ];
    for (key, value) in cases {
        let body = if key == "mail_domain" {
            format!("mail_domain = {value}\n")
        } else {
            format!("mail_domain = example.org\n{key} = {value}\n")
        };
        assert_bad_value(&body, key, value);
    }
}

#[test]
fn username_lengths_must_be_ordered() {
    assert_bad_value(
        "mail_domain = example.org\nusername_min_length = 10\nusername_max_length = 5\n",
        "username_min_length",
        "10",
    );
}

#[test]
fn message_memory_holds_at_least_one_largest_message() {
    let default = parse_ok("mail_domain = example.org\n");
    assert_eq!(default.filtermail_message_memory, 128 << 20);
    let big = parse_ok("mail_domain = example.org\nmax_message_size = 100M\n");
    assert_eq!(
        big.filtermail_message_memory,
        400 << 20,
        "four of the largest"
    );
    let set = parse_ok("mail_domain = example.org\nfiltermail_message_memory = 64M\n");
    assert_eq!(set.filtermail_message_memory, 64 << 20);
    assert_bad_value(
        "mail_domain = example.org\nfiltermail_message_memory = 10M\n",
        "filtermail_message_memory",
        "10485760",
    );
}

#[test]
fn a_client_share_is_a_percentage_of_at_least_one_message() {
    let default = parse_ok("mail_domain = example.org\n");
    assert_eq!(default.filtermail_client_share, 25);
    assert_eq!(
        default.client_share_bytes(),
        32 << 20,
        "a quarter of 128 MiB"
    );
    let half = parse_ok("mail_domain = example.org\nfiltermail_client_share = 50\n");
    assert_eq!(half.client_share_bytes(), 64 << 20);
    // Never less than one message of the largest size (30 MiB by default).
    let tiny = parse_ok("mail_domain = example.org\nfiltermail_client_share = 1\n");
    assert_eq!(tiny.client_share_bytes(), 30 * 1024 * 1024);
    for value in ["0", "101", "quarter", "-5"] {
        assert_bad_value(
            &format!("mail_domain = example.org\nfiltermail_client_share = {value}\n"),
            "filtermail_client_share",
            value,
        );
    }
}

#[test]
fn notification_retries_must_be_sensible() {
    for (key, value) in [
        ("notification_retry_base", "0"),
        ("notification_retry_base", "0s"),
        ("notification_retry_base", "2h"),
        ("notification_retry_deadline", "0"),
        ("notification_retry_deadline", "3years"),
    ] {
        assert_bad_value(
            &format!("mail_domain = example.org\n{key} = {value}\n"),
            key,
            value,
        );
    }
    let config = parse_ok(
        "mail_domain = example.org\nnotification_retry_base = 500ms\nnotification_retry_deadline = 2d\n",
    );
    assert_eq!(config.notification_retry_base.as_millis(), 500);
}

#[test]
fn bare_numbers_mean_mib_where_the_relay_we_replace_reads_them_so() {
    let config = parse_ok(
        "mail_domain = example.org\nmax_mailbox_size = 500\nmin_available_memory = 200\n\
         min_free_disk_space = 1024\nmax_message_size = 31457280\n",
    );
    assert_eq!(config.max_mailbox_size, 500 << 20);
    assert_eq!(config.min_available_memory, 200 << 20);
    assert_eq!(config.min_free_disk_space, 1 << 30);
    assert_eq!(config.max_message_size, 31_457_280, "bytes, as there");
    let bytes = parse_ok("mail_domain = example.org\nmax_mailbox_size = 500B\n");
    assert_eq!(bytes.max_mailbox_size, 500, "an explicit B means bytes");
}

#[test]
fn metrics_addresses_default_to_loopback_and_empty_turns_them_off() {
    use chatmail_config::MetricsDaemon;
    let defaults = parse_ok("mail_domain = example.org\n");
    let ports: Vec<String> = MetricsDaemon::ALL
        .iter()
        .map(|daemon| format!("{daemon:?} {:?}", defaults.metrics_listen(*daemon)))
        .collect();
    assert_eq!(
        ports,
        [
            "Doveauth Some(127.0.0.1:9151)",
            "ChatmailMetadata Some(127.0.0.1:9152)",
            "FiltermailOutgoing Some(127.0.0.1:9153)",
            "FiltermailIncoming Some(127.0.0.1:9154)",
            "FiltermailTransport Some(127.0.0.1:9155)",
            "Dovecot Some(127.0.0.1:9156)",
            "IrohRelay Some(127.0.0.1:9157)",
            "ChatmailTurn Some(127.0.0.1:9158)",
        ]
    );
    let set = parse_ok(
        "mail_domain = example.org\n\
         metrics_listen_doveauth =\n\
         metrics_listen_chatmail_metadata = 127.0.0.2\n\
         metrics_listen_filtermail_outgoing = [::1]:9000\n\
         metrics_listen_filtermail_incoming = 127.0.0.1:9001\n\
         metrics_listen_filtermail_transport = 0.0.0.0:9002\n",
    );
    assert!(set.unknown_keys.is_empty(), "{:?}", set.unknown_keys);
    assert_eq!(set.metrics_listen(MetricsDaemon::Doveauth), None);
    let addr = |daemon| set.metrics_listen(daemon).map(|addr| addr.to_string());
    assert_eq!(
        addr(MetricsDaemon::ChatmailMetadata).as_deref(),
        Some("127.0.0.2:9152")
    );
    assert_eq!(
        addr(MetricsDaemon::FiltermailOutgoing).as_deref(),
        Some("[::1]:9000")
    );
    assert_eq!(
        addr(MetricsDaemon::FiltermailIncoming).as_deref(),
        Some("127.0.0.1:9001")
    );
    assert_eq!(
        addr(MetricsDaemon::FiltermailTransport).as_deref(),
        Some("0.0.0.0:9002")
    );
    assert_bad_value(
        "mail_domain = example.org\nmetrics_listen_doveauth = localhost:9151\n",
        "metrics_listen_doveauth",
        "localhost:9151",
    );
}

#[test]
fn the_relay_runs_its_own_iroh_relay_only_when_iroh_relay_names_it() {
    let runs = |url: &str| {
        parse_ok(&format!(
            "mail_domain = chat.example.org\niroh_relay = {url}\n"
        ))
        .runs_iroh_relay()
    };
    assert!(parse_ok("mail_domain = chat.example.org\n").runs_iroh_relay());
    assert!(runs("https://chat.example.org"));
    assert!(runs("https://Chat.Example.org:443/"));
    assert!(runs("http://chat.example.org:8080"));
    assert!(!runs("https://iroh.example.org"));
    assert!(!runs("https://chat.example.org.evil.test"));
    assert!(!runs("ftp://chat.example.org"));
    assert!(!runs(""));
    let ip = parse_ok("mail_domain = 127.0.0.1\niroh_relay = http://127.0.0.1:20080\n");
    assert!(ip.runs_iroh_relay());
    // A local domain relay, reached by its address.
    let local = parse_ok(
        "mail_domain = alpha.test\niroh_relay = http://127.0.0.3:30080\n\
         iroh_relay_listen = 127.0.0.3:33340\n",
    );
    assert!(local.runs_iroh_relay());
    assert!(!runs("http://127.0.0.3:30080"));
    let listen = parse_ok("mail_domain = chat.example.org\niroh_relay_listen = 127.0.0.2\n");
    assert_eq!(listen.iroh_relay_listen.to_string(), "127.0.0.2:3340");
}

#[test]
fn turn_settings() {
    let defaults = parse_ok("mail_domain = chat.example.org\n").turn;
    assert!(defaults.listen.is_empty(), "every address but loopback");
    assert_eq!(defaults.port, 3478);
    assert!(!defaults.allow_private);
    assert_eq!(defaults.max_allocations_per_user, 10);
    let set = parse_ok(
        "mail_domain = chat.example.org\nturn_listen = 127.0.0.1, ::1\nturn_port = 23478\n\
         turn_allow_private = true\nturn_max_bandwidth = 2M\n",
    )
    .turn;
    assert_eq!(set.listen.len(), 2);
    assert_eq!(set.port, 23478);
    assert!(set.allow_private);
    assert_eq!(set.max_bandwidth, 2 << 20);
    assert_bad_value(
        "mail_domain = chat.example.org\nturn_listen = 127.0.0.1, nowhere\n",
        "turn_listen",
        "127.0.0.1, nowhere",
    );
}

#[test]
fn page_and_log_settings() {
    let config = parse_ok("mail_domain = example.org\n");
    assert_eq!(config.logs.storage, chatmail_config::LogStorage::Volatile);
    assert_eq!(
        config.logs.max_age,
        std::time::Duration::from_secs(3 * 86_400)
    );
    assert_eq!(config.site.www_folder, None);
    assert_eq!(config.site.privacy_postal, None);
    let config = parse_ok(
        "mail_domain = example.org\nlog_storage = persistent\nlog_max_age = 30d\n\
         www_folder = /etc/chatmail/www\nprivacy_postal = Relay e.V., Street 1\n\
         privacy_supervisor = The Commissioner\nprivacy_pdo = Jane Doe\n",
    );
    assert_eq!(config.logs.storage, chatmail_config::LogStorage::Persistent);
    assert_eq!(
        config.logs.max_age,
        std::time::Duration::from_secs(30 * 86_400)
    );
    assert_eq!(
        config.site.www_folder.as_deref(),
        Some(std::path::Path::new("/etc/chatmail/www"))
    );
    assert_eq!(
        config.site.privacy_postal.as_deref(),
        Some("Relay e.V., Street 1")
    );
    assert_eq!(
        config.site.privacy_supervisor.as_deref(),
        Some("The Commissioner")
    );
    assert_eq!(config.site.privacy_pdo.as_deref(), Some("Jane Doe"));
    assert!(config.unknown_keys.is_empty(), "{:?}", config.unknown_keys);
    assert_bad_value(
        "mail_domain = x.org\nlog_storage = disk\n",
        "log_storage",
        "disk",
    );
    assert_bad_value(
        "mail_domain = x.org\nlog_max_age = soon\n",
        "log_max_age",
        "soon",
    );
}
