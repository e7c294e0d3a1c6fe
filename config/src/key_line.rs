//! One public key line, as in OpenSSH's `authorized_keys`: an optional
//! comma-separated list of options, the key type, the key, a comment.
//! Of the options gatehouse takes only the two that concern FIDO security
//! keys (`sk-` types), `no-touch-required` and `verify-required`
//! (sshd(8) AUTHORIZED_KEYS FILE FORMAT), and refuses every other one
//! rather than ignore it: a `from=` or `command=` ignored silently would
//! grant more than its author meant. Owns the parsing; must not judge a
//! signature (that is `gatehouse_jump::fido`).

use ssh_key::{Algorithm, HashAlg, PublicKey, public::KeyData};

/// What a key line's options ask of a security key's signature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyOptions {
    /// `no-touch-required`: accept a signature made without touching the
    /// key (it weakens the key: malware on the laptop can sign at will).
    pub no_touch_required: bool,
    /// `verify-required`: the key must have checked its PIN or a
    /// fingerprint. Such a signature is a whole login (two factors).
    pub verify_required: bool,
}

/// One of a user's keys with its line's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserKey {
    /// The public key.
    pub key: PublicKey,
    /// Its options (all off for keys other than `sk-` ones).
    pub options: KeyOptions,
}

impl UserKey {
    /// The key's data, as signatures are matched against it.
    pub fn key_data(&self) -> &KeyData {
        self.key.key_data()
    }

    /// `type SHA256:… comment`, as `ssh-keygen -l` names the key.
    pub fn describe(&self) -> String {
        let fp = self.key.fingerprint(HashAlg::Sha256);
        let comment = self.key.comment();
        let sep = if comment.is_empty() { "" } else { " " };
        format!("{} {fp}{sep}{comment}", self.key.algorithm().as_str())
    }

    /// For a security key: what its signature is worth under its line's
    /// options, in words (`gatehouse check`, `gatehouse ssh-config`).
    pub fn security_key_login(&self) -> Option<&'static str> {
        if !is_security_key(self.key.algorithm()) {
            return None;
        }
        Some(match (self.whole_login(), self.options.no_touch_required) {
            (true, false) => "a whole login (verify-required: touch + PIN or fingerprint, no code)",
            (true, true) => {
                "a whole login (verify-required, no-touch-required: PIN or fingerprint, no code)"
            }
            (false, false) => "touch, then the code",
            (false, true) => "no touch required (no-touch-required), then the code",
        })
    }

    /// Is a signature of this key, made as its line requires, a whole
    /// login? Only for a `verify-required` security key: the token and its
    /// PIN or fingerprint are two factors.
    pub fn whole_login(&self) -> bool {
        self.options.verify_required && is_security_key(self.key.algorithm())
    }
}

/// Is `algorithm` a FIDO security key's (`sk-ssh-ed25519@openssh.com`,
/// `sk-ecdsa-sha2-nistp256@openssh.com`)?
pub fn is_security_key(algorithm: Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::SkEd25519 | Algorithm::SkEcdsaSha2NistP256
    )
}

/// Parse `line` (already trimmed of comments and blank lines by the caller).
/// DSA is refused (removed from OpenSSH 9.8) and so is RSA under 2048 bits.
pub(crate) fn parse_user_key(line: &str) -> Result<UserKey, String> {
    let line = line.trim();
    let first = line.split_whitespace().next().unwrap_or_default();
    let (options, key) = if Algorithm::new(first).is_ok() {
        (KeyOptions::default(), parse_key(line)?)
    } else {
        // Options only if a key follows them; else the line is no key at all.
        let key = parse_key(&line[first.len()..]).or_else(|_| parse_key(line))?;
        (parse_options(first)?, key)
    };
    if options != KeyOptions::default() && !is_security_key(key.algorithm()) {
        return Err(format!(
            "`no-touch-required` and `verify-required` are for security keys \
             (sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com), not {}",
            key.algorithm().as_str()
        ));
    }
    Ok(UserKey { key, options })
}

/// A key with no options (a CA's).
pub(crate) fn parse_key(line: &str) -> Result<PublicKey, String> {
    let key = PublicKey::from_openssh(line.trim()).map_err(|e| {
        format!("not an OpenSSH public key ({e}); expected e.g. \"ssh-ed25519 AAAA... you@laptop\"")
    })?;
    match key.algorithm() {
        Algorithm::Dsa => Err("DSA keys are not accepted; use ed25519".into()),
        Algorithm::Rsa { .. } => match key.key_data().rsa() {
            Some(rsa) if rsa.key_size() >= 2048 => Ok(key),
            _ => Err("RSA keys must have at least 2048 bits".into()),
        },
        _ => Ok(key),
    }
}

fn parse_options(text: &str) -> Result<KeyOptions, String> {
    let mut options = KeyOptions::default();
    for option in text.split(',') {
        match option {
            "no-touch-required" => options.no_touch_required = true,
            "verify-required" => options.verify_required = true,
            other => {
                let shown: String = other.chars().take(40).collect();
                return Err(format!(
                    "unsupported option {shown:?}: gatehouse takes only \
                     `no-touch-required` and `verify-required` before a key (as in authorized_keys)"
                ));
            }
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SK: &str = "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIFvdtQeUWx266KKZfz1vZ6dje6krwWKqC2hegLlhodr1AAAABHNzaDo= sean@yubikey";
    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK1dTTVTtn4JwyiQdj4r0dSAaAiTbAKgVWl7VZBO6m2j sean@laptop";

    #[test]
    fn options_before_a_security_key() {
        let plain = parse_user_key(SK).expect("plain");
        assert_eq!(plain.options, KeyOptions::default());
        assert!(!plain.whole_login(), "touch only: the code is still asked");

        let verified = parse_user_key(&format!("verify-required {SK}")).expect("verify");
        assert!(verified.options.verify_required && !verified.options.no_touch_required);
        assert!(verified.whole_login());
        assert_eq!(verified.key, plain.key);

        let both =
            parse_user_key(&format!("no-touch-required,verify-required  {SK}")).expect("both");
        assert_eq!(
            both.options,
            KeyOptions {
                no_touch_required: true,
                verify_required: true
            }
        );
    }

    #[test]
    fn other_options_and_options_on_other_keys_are_refused() {
        let err = parse_user_key(&format!("from=\"10.0.0.0/8\" {SK}")).expect_err("from=");
        assert!(err.contains("unsupported option \"from="), "{err}");
        let err = parse_user_key(&format!("verify-required,restrict {SK}")).expect_err("restrict");
        assert!(err.contains("\"restrict\""), "{err}");
        let err = parse_user_key(&format!("verify-required {ED}")).expect_err("not sk");
        assert!(
            err.contains("are for security keys") && err.contains("ssh-ed25519"),
            "{err}"
        );
        let err = parse_user_key("verify-required").expect_err("no key");
        assert!(err.contains("not an OpenSSH public key"), "{err}");
        assert_eq!(
            parse_user_key(ED).expect("ed").options,
            KeyOptions::default()
        );
    }

    #[test]
    fn a_bad_option_is_located_in_the_config() {
        let text = format!(
            "jump:\n  listen: [\"127.0.0.1:0\"]\n  users:\n    sean:\n      keys:\n        - \"verify-required {ED}\"\n        - \"verify-required {SK}\"\n"
        );
        let err = crate::parse(std::path::Path::new("/etc/gatehouse/g.yaml"), &text)
            .expect_err("options on ed25519");
        let msg = err.to_string();
        assert!(
            msg.contains("g.yaml:6:11: jump.users.sean.keys[0]:")
                && msg.contains("are for security keys"),
            "{msg}"
        );
        let text = text.replace(&format!("verify-required {ED}"), ED);
        let config =
            crate::parse(std::path::Path::new("/etc/gatehouse/g.yaml"), &text).expect("ok");
        let keys = &config.jump.expect("jump").users["sean"].keys;
        assert!(!keys[0].whole_login() && keys[1].whole_login());
        // A CA key takes none.
        let ca = format!(
            "jump:\n  listen: [\"127.0.0.1:0\"]\n  user_ca:\n    keys: [\"verify-required {SK}\"]\n"
        );
        let err = crate::parse(std::path::Path::new("/etc/gatehouse/g.yaml"), &ca).expect_err("ca");
        assert!(
            err.to_string().contains("a CA key takes no options"),
            "{err}"
        );
    }
}
