//! Whether a first login may create an account. Pure: the facts about the
//! machine are read elsewhere and passed in.

use std::fmt;

use chatmail_config::Config;

/// The creation rules of one relay, from chatmail.ini.
#[derive(Debug, Clone)]
pub struct CreationRules {
    /// The domain part of our addresses (`example.org`, `[1.2.3.4]`).
    pub domain: String,
    pub username_min_length: usize,
    pub username_max_length: usize,
    pub password_min_length: usize,
    pub max_load_1m: f64,
    pub min_available_memory: u64,
    pub min_free_disk_space: u64,
}

impl From<&Config> for CreationRules {
    fn from(config: &Config) -> Self {
        Self {
            domain: config.mail_domain.address_domain(),
            username_min_length: config.username_min_length,
            username_max_length: config.username_max_length,
            password_min_length: config.password_min_length,
            max_load_1m: config.max_load_1m,
            min_available_memory: config.min_available_memory,
            min_free_disk_space: config.min_free_disk_space,
        }
    }
}

/// What the machine has to spare right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub load_1m: f64,
    pub available_memory: u64,
    pub free_disk_space: u64,
}

/// Why an account was not created. The text names the rule and never the
/// password.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    NoCreateFile,
    NotAnAddress,
    ForeignDomain,
    LocalPartLength {
        length: usize,
        min: usize,
        max: usize,
    },
    LocalPartCharacters,
    PasswordTooShort {
        min: usize,
    },
    Overloaded {
        load_1m: f64,
        max: f64,
    },
    LowMemory {
        available: u64,
        min: u64,
    },
    LowDiskSpace {
        free: u64,
        min: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCreateFile => write!(f, "account creation is switched off (nocreate file)"),
            Self::NotAnAddress => write!(f, "user is not an address of the form local@domain"),
            Self::ForeignDomain => write!(f, "domain is not this relay's"),
            Self::LocalPartLength { length, min, max } => {
                write!(f, "local part has {length} characters, not {min} to {max}")
            }
            Self::LocalPartCharacters => {
                write!(f, "local part has characters outside [a-z0-9._-]")
            }
            Self::PasswordTooShort { min } => {
                write!(f, "password is shorter than {min} characters")
            }
            Self::Overloaded { load_1m, max } => {
                write!(f, "1-minute load {load_1m:.2} is above {max}")
            }
            Self::LowMemory { available, min } => {
                write!(f, "available memory {available} bytes is below {min}")
            }
            Self::LowDiskSpace { free, min } => {
                write!(f, "free disk space {free} bytes is below {min}")
            }
        }
    }
}

impl CreationRules {
    /// Checks the address and password of a would-be account.
    pub fn check_credentials(&self, user: &str, password: &str) -> Result<(), Refusal> {
        let mut parts = user.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Refusal::NotAnAddress);
        };
        if domain != self.domain {
            return Err(Refusal::ForeignDomain);
        }
        let length = local.chars().count();
        if !(self.username_min_length..=self.username_max_length).contains(&length) {
            return Err(Refusal::LocalPartLength {
                length,
                min: self.username_min_length,
                max: self.username_max_length,
            });
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c);
        if !local.chars().all(allowed) || local.starts_with('.') || local.contains("..") {
            return Err(Refusal::LocalPartCharacters);
        }
        if password.chars().count() < self.password_min_length {
            return Err(Refusal::PasswordTooShort {
                min: self.password_min_length,
            });
        }
        Ok(())
    }

    /// Checks that the machine can take another account.
    pub fn check_capacity(&self, capacity: &Capacity) -> Result<(), Refusal> {
        if capacity.load_1m > self.max_load_1m {
            return Err(Refusal::Overloaded {
                load_1m: capacity.load_1m,
                max: self.max_load_1m,
            });
        }
        if capacity.available_memory < self.min_available_memory {
            return Err(Refusal::LowMemory {
                available: capacity.available_memory,
                min: self.min_available_memory,
            });
        }
        if capacity.free_disk_space < self.min_free_disk_space {
            return Err(Refusal::LowDiskSpace {
                free: capacity.free_disk_space,
                min: self.min_free_disk_space,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Capacity, CreationRules, Refusal};

    fn rules() -> CreationRules {
        CreationRules {
            domain: "example.org".into(),
            username_min_length: 9,
            username_max_length: 9,
            password_min_length: 9,
            max_load_1m: 5.0,
            min_available_memory: 200 << 20,
            min_free_disk_space: 1 << 30,
        }
    }

    #[test]
    fn credentials() {
        let rules = rules();
        let ok = "abcdefgh1@example.org";
        let cases: [(&str, &str, Result<(), Refusal>); 13] = [
            (ok, "123456789", Ok(())),
            ("a.b-c_d12@example.org", "123456789", Ok(())),
            (ok, "12345678", Err(Refusal::PasswordTooShort { min: 9 })),
            ("abcdefgh1", "123456789", Err(Refusal::NotAnAddress)),
            ("a@b@example.org", "123456789", Err(Refusal::NotAnAddress)),
            (
                "abcdefgh1@other.org",
                "123456789",
                Err(Refusal::ForeignDomain),
            ),
            (
                "abcdefgh1@EXAMPLE.org",
                "123456789",
                Err(Refusal::ForeignDomain),
            ),
            (
                "abcdefgh@example.org",
                "123456789",
                Err(Refusal::LocalPartLength {
                    length: 8,
                    min: 9,
                    max: 9,
                }),
            ),
            (
                "abcdefgh12@example.org",
                "123456789",
                Err(Refusal::LocalPartLength {
                    length: 10,
                    min: 9,
                    max: 9,
                }),
            ),
            (
                "Abcdefgh1@example.org",
                "123456789",
                Err(Refusal::LocalPartCharacters),
            ),
            (
                "abcd+efg1@example.org",
                "123456789",
                Err(Refusal::LocalPartCharacters),
            ),
            (
                "abcd/efg1@example.org",
                "123456789",
                Err(Refusal::LocalPartCharacters),
            ),
            (
                ".bcdefgh1@example.org",
                "123456789",
                Err(Refusal::LocalPartCharacters),
            ),
        ];
        for (user, password, expected) in cases {
            assert_eq!(rules.check_credentials(user, password), expected, "{user}");
        }
        assert_eq!(
            rules.check_credentials("ab..efgh1@example.org", "123456789"),
            Err(Refusal::LocalPartCharacters)
        );
    }

    #[test]
    fn ip_literal_domain() {
        let rules = CreationRules {
            domain: "[127.0.0.1]".into(),
            ..rules()
        };
        assert_eq!(
            rules.check_credentials("abcdefgh1@[127.0.0.1]", "123456789"),
            Ok(())
        );
        assert_eq!(
            rules.check_credentials("abcdefgh1@127.0.0.1", "123456789"),
            Err(Refusal::ForeignDomain)
        );
    }

    #[test]
    fn capacity_boundaries() {
        let rules = rules();
        let fine = Capacity {
            load_1m: 5.0,
            available_memory: 200 << 20,
            free_disk_space: 1 << 30,
        };
        assert_eq!(rules.check_capacity(&fine), Ok(()));
        assert!(matches!(
            rules.check_capacity(&Capacity {
                load_1m: 5.01,
                ..fine
            }),
            Err(Refusal::Overloaded { .. })
        ));
        assert!(matches!(
            rules.check_capacity(&Capacity {
                available_memory: (200 << 20) - 1,
                ..fine
            }),
            Err(Refusal::LowMemory { .. })
        ));
        assert!(matches!(
            rules.check_capacity(&Capacity {
                free_disk_space: (1 << 30) - 1,
                ..fine
            }),
            Err(Refusal::LowDiskSpace { .. })
        ));
    }

    #[test]
    fn refusals_never_mention_the_password() {
        let refusal = rules()
            .check_credentials("abcdefgh1@example.org", "secret")
            .expect_err("too short");
        assert!(!refusal.to_string().contains("secret"));
    }
}
