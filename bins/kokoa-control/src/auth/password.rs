//! Password hashing: Argon2id with the parameters OWASP recommends (19 MiB, 2 passes), in
//! PHC string form so the parameters travel with each hash and can be raised later.

use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng},
};

/// Shortest password accepted.
pub const MIN_LENGTH: usize = 12;
/// Longest password accepted (hashing is the costly part, not the length, but an unbounded
/// input is no use to anyone).
pub const MAX_LENGTH: usize = 1024;

/// A hash of a password nobody has, verified against when the e-mail address is unknown so
/// that a wrong address and a wrong password take the same time.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$a29rb2EtZGVjb3ktc2FsdA$\
                     3Vx5L8MYcG2gPGl2cIV2YfVQ2bS6SEgG1I8hXG8KQzA";

/// Why a new password is refused; the message never repeats it.
pub fn check_new(password: &str) -> Result<(), String> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        Err(format!(
            "the password has {length} characters; use at least {MIN_LENGTH}"
        ))
    } else if password.len() > MAX_LENGTH {
        Err(format!("the password is longer than {MAX_LENGTH} bytes"))
    } else {
        Ok(())
    }
}

/// The Argon2id hash of `password` with a fresh random salt, in PHC string form.
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        // Only an output length or salt outside Argon2's bounds fails; both are fixed here.
        .expect("Argon2id hashes with its default parameters")
        .to_string()
}

/// Whether `password` matches `hash`. `None` (an account without a password, or an unknown
/// account) costs the same time as a wrong password and is always false.
pub fn verify(password: &str, hash: Option<&str>) -> bool {
    let argon2 = Argon2::default();
    match hash.and_then(|h| PasswordHash::new(h).ok()) {
        Some(parsed) => argon2.verify_password(password.as_bytes(), &parsed).is_ok(),
        None => {
            if let Ok(decoy) = PasswordHash::new(DECOY) {
                let _ = argon2.verify_password(password.as_bytes(), &decoy);
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password_and_hide_it() {
        let h = hash("correct horse battery");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(!h.contains("correct"));
        assert!(verify("correct horse battery", Some(&h)));
        assert!(!verify("correct horse batterx", Some(&h)));
        assert!(!verify("correct horse battery", None));
        assert!(!verify("x", Some("not a PHC string")));
        assert_ne!(hash("same password"), hash("same password"), "fresh salts");
        assert!(PasswordHash::new(DECOY).is_ok());
    }

    #[test]
    fn short_passwords_are_refused_without_echo() {
        let err = check_new("hunter2").unwrap_err();
        assert!(
            err.contains("7 characters") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(check_new("a long enough passphrase").is_ok());
        assert!(check_new(&"x".repeat(MAX_LENGTH + 1)).is_err());
    }
}
