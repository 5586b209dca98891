//! Password hashes Dovecot verifies: `{SHA512-CRYPT}` with a crypt(3)
//! `$6$` string and a random salt.

use sha_crypt::{PasswordHasher, ShaCrypt};

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// crypt(3) reads at most 16 salt characters, which 12 random bytes
/// fill exactly; a longer salt would be truncated by glibc when Dovecot
/// verifies, and the hash would never match.
const SALT_BYTES: usize = 12;

/// Hashes `password` for the `password` file. Costs a few milliseconds of
/// CPU: call it off the async workers.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; SALT_BYTES];
    getrandom::fill(&mut salt).map_err(|err| HashError(err.to_string()))?;
    let hash = ShaCrypt::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|err| HashError(err.to_string()))?;
    Ok(format!("{{SHA512-CRYPT}}{}", hash.as_str()))
}

#[cfg(test)]
mod tests {
    use super::hash_password;
    use sha_crypt::{PasswordVerifier, ShaCrypt};

    #[test]
    fn hashes_are_salted_sha512_crypt() {
        let first = hash_password("correct horse").expect("hash");
        let second = hash_password("correct horse").expect("hash");
        assert!(first.starts_with("{SHA512-CRYPT}$6$"), "{first}");
        assert_ne!(first, second, "salt must be random");
        let salt = first.rsplit('$').nth(1).expect("salt field");
        assert_eq!(salt.len(), 16, "crypt(3) salts have at most 16 characters");
        let crypt = first.trim_start_matches("{SHA512-CRYPT}");
        let parsed = sha_crypt::PasswordHashRef::new(crypt).expect("valid MCF");
        assert!(
            ShaCrypt::default()
                .verify_password(b"correct horse", parsed)
                .is_ok()
        );
        assert!(
            ShaCrypt::default()
                .verify_password(b"wrong", parsed)
                .is_err()
        );
    }
}
