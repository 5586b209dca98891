//! New-account credentials for Delta Chat's instant onboarding: a random
//! address and password that doveauth will accept on first login.

use chatmail_config::{Config, MailDomain};
use rand::Rng;
use rand::seq::IndexedRandom;
use serde::Serialize;

const USERNAME_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Letters, digits and the punctuation a URL carries as it is (RFC 3986
/// unreserved): the password goes into a `dclogin:` URL, and Delta Chat
/// and Dovecot (through doveauth's escaping) take it whole.
const PASSWORD_ALPHABET: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NewAccount {
    pub email: String,
    pub password: String,
    /// Set when clients must be told to accept a self-signed certificate
    /// (the key name of the relay we replace).
    #[serde(rename = "dclogin_url", skip_serializing_if = "Option::is_none")]
    pub dclogin: Option<String>,
}

fn random_text(rng: &mut impl Rng, alphabet: &[u8], length: usize) -> String {
    (0..length)
        .filter_map(|_| alphabet.choose(rng).map(|&b| char::from(b)))
        .collect()
}

impl NewAccount {
    #[must_use]
    pub fn generate(config: &Config, rng: &mut impl Rng) -> Self {
        let local = random_text(rng, USERNAME_ALPHABET, config.username_max_length);
        let password = random_text(rng, PASSWORD_ALPHABET, config.new_account_password_length());
        let email = format!("{local}@{}", config.mail_domain.address_domain());
        let dclogin = config
            .tls_self_signed
            .then(|| dclogin_url(&email, &password, &config.mail_domain));
        Self {
            email,
            password,
            dclogin,
        }
    }

    /// The CGI response: headers, a blank line and the JSON body.
    #[must_use]
    pub fn cgi_response(&self) -> String {
        let body = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        format!("Content-Type: application/json\r\n\r\n{body}\n")
    }
}

/// A `dclogin:` URL that makes Delta Chat accept the relay's self-signed
/// certificate (`ic=3`); IP-only relays also name the IMAP and SMTP host.
fn dclogin_url(email: &str, password: &str, domain: &MailDomain) -> String {
    let mut url = format!("dclogin:{email}?p={password}&v=1");
    if let MailDomain::Ipv4(ip) = domain {
        url.push_str(&format!("&ih={ip}&sh={ip}"));
    }
    url.push_str("&ic=3");
    url
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chatmail_config::Config;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::NewAccount;

    fn config(body: &str) -> Config {
        Config::from_ini_str(&format!("[params]\n{body}"), Path::new("t.ini")).expect("config")
    }

    #[test]
    fn credentials_follow_the_creation_rules() {
        let config = config("mail_domain = example.org\nusername_max_length = 12\n");
        let mut rng = StdRng::seed_from_u64(7);
        let account = NewAccount::generate(&config, &mut rng);
        let (local, domain) = account.email.split_once('@').expect("address");
        assert_eq!(domain, "example.org");
        assert_eq!(local.len(), 12);
        assert!(
            local
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_eq!(account.password.len(), 12);
        assert!(
            account
                .password
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        );
        assert_eq!(account.dclogin, None);
        let other = NewAccount::generate(&config, &mut rng);
        assert_ne!(account.email, other.email);
        assert_ne!(account.password, other.password);
    }

    #[test]
    fn ip_relays_get_a_dclogin_url() {
        let config = config("mail_domain = 127.0.0.1\n");
        let account = NewAccount::generate(&config, &mut StdRng::seed_from_u64(1));
        assert!(account.email.ends_with("@[127.0.0.1]"));
        let url = account.dclogin.clone().expect("self-signed relay");
        assert_eq!(
            url,
            format!(
                "dclogin:{}?p={}&v=1&ih=127.0.0.1&sh=127.0.0.1&ic=3",
                account.email, account.password
            )
        );
        let response = account.cgi_response();
        let (headers, body) = response.split_once("\r\n\r\n").expect("cgi");
        assert_eq!(headers, "Content-Type: application/json");
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(json["email"], account.email);
        assert_eq!(json["password"], account.password);
        assert_eq!(json["dclogin_url"], url);
    }

    #[test]
    fn test_relays_with_underscore_domains_count_as_self_signed() {
        let config = config("mail_domain = _lab.example\n");
        let account = NewAccount::generate(&config, &mut StdRng::seed_from_u64(3));
        assert!(account.dclogin.is_some());
    }

    #[test]
    fn self_signed_domain_relay() {
        let config = config("mail_domain = example.org\ntls_self_signed = true\n");
        let account = NewAccount::generate(&config, &mut StdRng::seed_from_u64(1));
        let url = account.dclogin.expect("url");
        assert!(url.ends_with("&v=1&ic=3"), "{url}");
        assert!(!url.contains("ih="));
    }
}
