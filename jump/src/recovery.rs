//! One-time recovery codes: shown once at enrollment, stored only as salted
//! Argon2id hashes, each accepted once at the `Verification code:` prompt in
//! place of a TOTP code.
//!
//! A code is `xxxxx-xxxxx` over a-z0-9: 36^10 ≈ 2^51.7 possibilities. With
//! the memory-hard hash below an attacker who steals `state_dir` still
//! cannot test them quickly offline.

use std::fmt::Write as _;

use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngExt;

/// How many codes an enrollment gets.
pub const CODES: usize = 8;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Argon2id with 8 MiB and 2 passes: a few milliseconds per check here,
/// and memory-hard against GPU guessing (OWASP's minimum is 19 MiB with 2
/// passes or 7 MiB with 5; codes carry far more entropy than passwords).
fn hasher() -> Result<Argon2<'static>, String> {
    let params = Params::new(8 * 1024, 2, 1, Some(32)).map_err(|e| e.to_string())?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Fresh codes in the form `xxxxx-xxxxx`.
pub fn generate() -> Vec<String> {
    let mut rng = rand::rng();
    (0..CODES)
        .map(|_| {
            let mut code = String::with_capacity(11);
            for i in 0..10 {
                if i == 5 {
                    code.push('-');
                }
                let pick = rng.random_range(0..ALPHABET.len());
                code.push(char::from(ALPHABET[pick]));
            }
            code
        })
        .collect()
}

/// The canonical form of what a user typed, if it can be a recovery code:
/// case and the dash are forgiven, nothing else.
pub fn normalize(input: &str) -> Option<String> {
    let chars: Vec<char> = input
        .trim()
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if chars.len() != 10
        || !chars
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return None;
    }
    let mut code: String = chars[..5].iter().collect();
    code.push('-');
    code.extend(&chars[5..]);
    Some(code)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// `argon2id$SALT$HASH` (hex) of a canonical code.
pub fn hash(code: &str) -> Result<String, String> {
    let salt: [u8; 16] = rand::random();
    let mut out = [0_u8; 32];
    hasher()?
        .hash_password_into(code.as_bytes(), &salt, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(format!("argon2id${}${}", hex(&salt), hex(&out)))
}

/// Does `code` (canonical) match the stored `hashed` form?
pub fn matches(hashed: &str, code: &str) -> bool {
    let mut parts = hashed.split('$');
    let (Some("argon2id"), Some(salt), Some(want), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Some(salt), Some(want)) = (unhex(salt), unhex(want)) else {
        return false;
    };
    let mut got = [0_u8; 32];
    let Ok(h) = hasher() else { return false };
    if h.hash_password_into(code.as_bytes(), &salt, &mut got)
        .is_err()
        || want.len() != got.len()
    {
        return false;
    }
    // Constant time: no early exit on the first differing byte.
    got.iter()
        .zip(&want)
        .fold(0_u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_documented_form() {
        let codes = generate();
        assert_eq!(codes.len(), CODES);
        for code in &codes {
            assert_eq!(code.len(), 11);
            assert_eq!(code.as_bytes()[5], b'-');
            assert_eq!(normalize(code).as_deref(), Some(code.as_str()));
        }
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), CODES);
    }

    #[test]
    fn typing_is_forgiven_but_not_guessing() {
        assert_eq!(normalize(" AB3DE-FGH1J ").as_deref(), Some("ab3de-fgh1j"));
        assert_eq!(normalize("ab3defgh1j").as_deref(), Some("ab3de-fgh1j"));
        assert_eq!(
            normalize("123456"),
            None,
            "a TOTP code is not a recovery code"
        );
        assert_eq!(normalize("ab3de-fgh1"), None);
        assert_eq!(normalize("ab3de_fgh1j"), None);
    }

    #[test]
    fn hashes_are_salted_and_verify() {
        let code = "ab3de-fgh1j";
        let a = hash(code).expect("hash");
        let b = hash(code).expect("hash");
        assert_ne!(a, b, "salted");
        assert!(!a.contains(code));
        assert!(matches(&a, code));
        assert!(matches(&b, code));
        assert!(!matches(&a, "ab3de-fgh1k"));
        assert!(!matches("argon2id$zz$00", code));
        assert!(!matches("plain", code));
    }
}
