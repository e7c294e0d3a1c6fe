//! Authenticating what a fleet's Redis holds (issue 24): every value
//! gatehouse reads back carries an HMAC-SHA256 tag under a key derived from
//! the seal key (HKDF-SHA256, a label of its own: the sealing key itself is
//! never used twice), bound to the key prefix, the kind of value, its user
//! or source, the field and a generation. So a value moved to another user
//! (`SUNIONSTORE` of two users' recovery codes), another kind, or written
//! by someone without the seal key does not check; an older value put back
//! over a newer one is caught by its generation.
//!
//! Owns the key derivation and the tag format; must not decide what a
//! refused value means (the callers do) nor log the key.

use std::fmt;

use hmac::{KeyInit, Mac};
use sha2::Sha256;

type Hmac = hmac::Hmac<Sha256>;

/// HKDF's `info`: what the derived key is for. A new format gets a new
/// label.
const LABEL: &[u8] = b"gatehouse fleet value MAC v1";

/// Where a value sits and which version of it this is: all of it goes into
/// the tag.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Binding<'a> {
    /// `enrollment`, `recovery`, `totp-step`, `reset`, `ban`, `ban-lift`,
    /// `sk-counter`.
    pub kind: &'a str,
    /// The user, or the source (`ADDR/BITS`).
    pub subject: &'a str,
    /// The field within the value.
    pub field: &'a str,
    /// Its generation (an enrollment's, a step, a time of issue).
    pub generation: u64,
}

/// One seal key's MAC key.
pub(crate) struct MacKey([u8; 32]);

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<mac key>")
    }
}

impl MacKey {
    /// The MAC key of seal key `seal`.
    pub(crate) fn derive(seal: &[u8; 32]) -> MacKey {
        let mut key = [0_u8; 32];
        // 32 bytes is far below HKDF-SHA256's 255 × 32 limit: cannot fail.
        let _ = hkdf::Hkdf::<Sha256>::new(None, seal).expand(LABEL, &mut key);
        MacKey(key)
    }

    fn mac(&self, prefix: &str, b: &Binding<'_>, value: &[u8]) -> Hmac {
        // Each part length-prefixed: no two bindings encode alike.
        let mut mac = <Hmac as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        for part in [prefix, b.kind, b.subject, b.field] {
            mac.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.update(&b.generation.to_be_bytes());
        mac.update(&u64::try_from(value.len()).unwrap_or(u64::MAX).to_be_bytes());
        mac.update(value);
        mac
    }
}

/// The fleet's MAC keys: the current seal key's first (it writes), then
/// the previous ones' (they still check, while a key is rolled).
#[derive(Debug)]
pub(crate) struct Macs {
    pub(crate) prefix: String,
    pub(crate) keys: Vec<MacKey>,
}

impl Macs {
    /// The tag of `value` at `b`, as 64 hex digits.
    pub(crate) fn tag(&self, b: &Binding<'_>, value: &[u8]) -> String {
        let Some(current) = self.keys.first() else {
            return String::new();
        };
        let bytes = current.mac(&self.prefix, b, value).finalize().into_bytes();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Does `tag` authenticate `value` at `b` (under any of the keys)?
    /// Compared in constant time.
    pub(crate) fn check(&self, b: &Binding<'_>, value: &[u8], tag: &str) -> bool {
        self.which(b, value, tag).is_some()
    }

    /// Which key `tag` authenticates `value` at `b` under: `Some(true)` the
    /// current one, `Some(false)` a previous one (sign it again), `None`
    /// none.
    pub(crate) fn which(&self, b: &Binding<'_>, value: &[u8], tag: &str) -> Option<bool> {
        let tag = unhex(tag)?;
        self.keys
            .iter()
            .position(|key| key.mac(&self.prefix, b, value).verify_slice(&tag).is_ok())
            .map(|i| i == 0)
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn macs(seal: u8) -> Macs {
        Macs {
            prefix: "gatehouse:".into(),
            keys: vec![MacKey::derive(&[seal; 32])],
        }
    }

    const BOB: Binding<'static> = Binding {
        kind: "recovery",
        subject: "bob",
        field: "code",
        generation: 1,
    };

    #[test]
    fn a_tag_checks_only_where_it_was_made() {
        let m = macs(7);
        let tag = m.tag(&BOB, b"$argon2id$hash");
        assert_eq!(tag.len(), 64);
        assert!(m.check(&BOB, b"$argon2id$hash", &tag));
        for other in [
            Binding {
                subject: "alice",
                ..BOB
            },
            Binding {
                kind: "enrollment",
                ..BOB
            },
            Binding {
                field: "sealed",
                ..BOB
            },
            Binding {
                generation: 2,
                ..BOB
            },
        ] {
            assert!(!m.check(&other, b"$argon2id$hash", &tag), "{other:?}");
        }
        assert!(!m.check(&BOB, b"$argon2id$hasH", &tag), "another value");
        let elsewhere = Macs {
            prefix: "other:".into(),
            ..macs(7)
        };
        assert!(!elsewhere.check(&BOB, b"$argon2id$hash", &tag), "prefix");
        assert!(!macs(8).check(&BOB, b"$argon2id$hash", &tag), "seal key");
        assert!(!m.check(&BOB, b"$argon2id$hash", "00"), "short tag");
        assert!(!m.check(&BOB, b"$argon2id$hash", ""), "no tag");
    }

    #[test]
    fn parts_cannot_slide_into_each_other() {
        let m = macs(7);
        let a = Binding {
            kind: "ban",
            subject: "1.2.3.4/32",
            field: "record",
            generation: 0,
        };
        let b = Binding {
            kind: "ban1",
            subject: ".2.3.4/32",
            ..a
        };
        assert_ne!(m.tag(&a, b""), m.tag(&b, b""));
    }

    #[test]
    fn previous_keys_still_check_and_the_current_one_writes() {
        let rolled = Macs {
            prefix: "gatehouse:".into(),
            keys: vec![MacKey::derive(&[9; 32]), MacKey::derive(&[7; 32])],
        };
        let old = macs(7).tag(&BOB, b"v");
        assert_eq!(rolled.which(&BOB, b"v", &old), Some(false));
        assert_eq!(
            rolled.which(&BOB, b"v", &rolled.tag(&BOB, b"v")),
            Some(true)
        );
        assert_eq!(rolled.tag(&BOB, b"v"), macs(9).tag(&BOB, b"v"));
        // The MAC key is not the seal key.
        assert_ne!(MacKey::derive(&[7; 32]).0, [7; 32]);
    }
}
