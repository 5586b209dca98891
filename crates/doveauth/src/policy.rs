//! Whether a first login may create an account. Pure: the facts about the
//! machine are read elsewhere and passed in.

use std::fmt;

use chatmail_config::{AddressRefusal, Config, EnvelopeAddress, MailDomain, canonical_address};

/// The creation rules of one relay, from chatmail.ini.
#[derive(Debug, Clone)]
pub struct CreationRules {
    /// The relay's domain (`example.org`, or `1.2.3.4` for `[1.2.3.4]`).
    pub mail_domain: MailDomain,
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
            mail_domain: config.mail_domain.clone(),
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

impl Refusal {
    /// Every value of [`Refusal::rule`].
    pub const RULES: [&'static str; 9] = [
        "nocreate",
        "not_an_address",
        "foreign_domain",
        "local_part_length",
        "local_part_characters",
        "password_too_short",
        "overloaded",
        "low_memory",
        "low_disk_space",
    ];

    /// The rule's name, as a metric label.
    #[must_use]
    pub fn rule(&self) -> &'static str {
        match self {
            Self::NoCreateFile => "nocreate",
            Self::NotAnAddress => "not_an_address",
            Self::ForeignDomain => "foreign_domain",
            Self::LocalPartLength { .. } => "local_part_length",
            Self::LocalPartCharacters => "local_part_characters",
            Self::PasswordTooShort { .. } => "password_too_short",
            Self::Overloaded { .. } => "overloaded",
            Self::LowMemory { .. } => "low_memory",
            Self::LowDiskSpace { .. } => "low_disk_space",
        }
    }
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

impl From<AddressRefusal> for Refusal {
    fn from(refusal: AddressRefusal) -> Self {
        match refusal {
            AddressRefusal::BadLocalPart
            | AddressRefusal::PercentHack
            | AddressRefusal::BangPath
            | AddressRefusal::NotAnAccountName => Self::LocalPartCharacters,
            AddressRefusal::TrailingDot
            | AddressRefusal::BadDomain
            | AddressRefusal::BadAddressLiteral => Self::ForeignDomain,
            AddressRefusal::Empty
            | AddressRefusal::TooLong
            | AddressRefusal::NotPrintableAscii
            | AddressRefusal::NoDomain
            | AddressRefusal::EmptyLocalPart
            | AddressRefusal::SourceRoute
            | AddressRefusal::Quoted => Self::NotAnAddress,
        }
    }
}

impl CreationRules {
    /// Checks the address and password of a would-be account.
    pub fn check_credentials(&self, user: &str, password: &str) -> Result<(), Refusal> {
        // An account is created only under the canonical name that mail
        // for it is delivered to (the filters use the same function).
        let local = match canonical_address(user, &self.mail_domain) {
            Ok(EnvelopeAddress::Local(account)) if account == user => account
                .rsplit_once('@')
                .map_or("", |(local, _)| local)
                .to_owned(),
            Ok(EnvelopeAddress::Local(account)) => {
                let same_local = account.split_once('@').map(|(local, _)| local)
                    == user.split_once('@').map(|(local, _)| local);
                return Err(if same_local {
                    Refusal::ForeignDomain
                } else {
                    Refusal::LocalPartCharacters
                });
            }
            Ok(EnvelopeAddress::Remote(_)) => return Err(Refusal::ForeignDomain),
            Err(refusal) => return Err(Refusal::from(refusal)),
        };
        let length = local.chars().count();
        if !(self.username_min_length..=self.username_max_length).contains(&length) {
            return Err(Refusal::LocalPartLength {
                length,
                min: self.username_min_length,
                max: self.username_max_length,
            });
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
    use super::{Capacity, CreationRules, MailDomain, Refusal};

    fn rules() -> CreationRules {
        CreationRules {
            mail_domain: MailDomain::parse("example.org").expect("valid"),
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
        // Names the filters would refuse mail for are never created.
        for (user, refusal) in [
            ("ab..efgh1@example.org", Refusal::LocalPartCharacters),
            ("abcdefgh.@example.org", Refusal::LocalPartCharacters),
            ("abcdef%g1@example.org", Refusal::LocalPartCharacters),
            ("abcdef!g1@example.org", Refusal::LocalPartCharacters),
            ("abcdefgh1@example.org.", Refusal::ForeignDomain),
            ("\"abcdefg1\"@example.org", Refusal::NotAnAddress),
        ] {
            assert_eq!(
                rules.check_credentials(user, "123456789"),
                Err(refusal),
                "{user}"
            );
        }
    }

    #[test]
    fn ip_literal_domain() {
        let rules = CreationRules {
            mail_domain: MailDomain::parse("127.0.0.1").expect("valid"),
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
