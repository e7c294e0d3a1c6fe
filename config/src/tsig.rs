//! TSIG key files (`dns.update_keys.*.secret_file`): the base64 secret
//! alone, or the `key "NAME" { algorithm ...; secret "..."; };` clause that
//! BIND's `tsig-keygen` prints (and `nsupdate -k` reads).
//!
//! Owns the format and a minimum length (the owner-only file rule is
//! `secret`'s, shared with TOTP secrets);
//! must not log the secret or keep it anywhere but the returned value.

use std::path::Path;

use data_encoding::BASE64;

use crate::{
    file::Limit,
    model::TsigAlgorithm,
    secret::{Private, read_private_text},
};

/// The shortest secret taken: 128 bits (`tsig-keygen` makes one as long as
/// the hash: 256 bits for hmac-sha256).
pub const MIN_TSIG_SECRET_BYTES: usize = 16;

/// Why a TSIG key file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TsigFileError {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// Others may read it.
    #[error("mode is {0:04o}; it must be 0600 or 0400 (chmod 600 it)")]
    Mode(u32),
    /// Neither a base64 secret nor a key clause.
    #[error("expected a base64 secret, or the key clause `tsig-keygen NAME` prints: {0}")]
    Format(String),
    /// The clause names another key.
    #[error("the key clause is for key {found:?}, not {expected:?}")]
    OtherKey {
        /// The config's key name.
        expected: String,
        /// The clause's.
        found: String,
    },
    /// The clause names another algorithm.
    #[error("the key clause says algorithm {found}, the config {expected}")]
    OtherAlgorithm {
        /// The config's.
        expected: &'static str,
        /// The clause's.
        found: String,
    },
    /// Fewer than 128 bits.
    #[error(
        "the secret is {0} bytes; at least {MIN_TSIG_SECRET_BYTES} (use `tsig-keygen -a hmac-sha256 NAME`)"
    )]
    TooShort(usize),
}

/// Reads the secret of key `name` with `algorithm` from `path`: a regular
/// file, mode 0600 or 0400, at most [`Limit::TSIG_KEY_FILE`]. Blocking.
pub fn read_tsig_key_file(
    path: &Path,
    name: &str,
    algorithm: TsigAlgorithm,
) -> Result<Vec<u8>, TsigFileError> {
    let content = read_private_text(path, &Limit::TSIG_KEY_FILE).map_err(|e| match e {
        Private::Read(e) => TsigFileError::Read(e),
        Private::Mode(mode) => TsigFileError::Mode(mode),
    })?;
    parse_tsig_key(&content, name, algorithm)
}

/// The secret in `content` (see the module comment).
pub fn parse_tsig_key(
    content: &str,
    name: &str,
    algorithm: TsigAlgorithm,
) -> Result<Vec<u8>, TsigFileError> {
    let encoded = if content.contains('{') {
        clause_secret(content, name, algorithm)?
    } else {
        content.split_whitespace().collect::<String>()
    };
    let secret = BASE64
        .decode(encoded.as_bytes())
        .map_err(|e| TsigFileError::Format(format!("the secret is not base64 ({e})")))?;
    if secret.len() < MIN_TSIG_SECRET_BYTES {
        return Err(TsigFileError::TooShort(secret.len()));
    }
    Ok(secret)
}

/// The secret of the one `key` clause in `content`, after checking its
/// name and algorithm.
fn clause_secret(
    content: &str,
    name: &str,
    algorithm: TsigAlgorithm,
) -> Result<String, TsigFileError> {
    let bad = |why: &str| TsigFileError::Format(why.to_owned());
    let tokens = tokens(content).map_err(|why| bad(&why))?;
    let mut at = tokens.iter().map(String::as_str);
    if at.next() != Some("key") {
        return Err(bad("the file must start with `key`"));
    }
    let found = at.next().ok_or_else(|| bad("`key` has no name"))?;
    let found = found.trim_end_matches('.');
    if !found.eq_ignore_ascii_case(name.trim_end_matches('.')) {
        return Err(TsigFileError::OtherKey {
            expected: name.to_owned(),
            found: found.to_owned(),
        });
    }
    if at.next() != Some("{") {
        return Err(bad("expected `{` after the key's name"));
    }
    let mut secret = None;
    loop {
        match at.next() {
            Some("}") => break,
            Some("algorithm") => {
                let alg = at.next().ok_or_else(|| bad("`algorithm` has no value"))?;
                if !alg.eq_ignore_ascii_case(algorithm.as_str()) {
                    return Err(TsigFileError::OtherAlgorithm {
                        expected: algorithm.as_str(),
                        found: alg.to_owned(),
                    });
                }
            }
            Some("secret") => {
                if secret.is_some() {
                    return Err(bad("two `secret` statements"));
                }
                secret = Some(at.next().ok_or_else(|| bad("`secret` has no value"))?);
            }
            Some(other) => return Err(bad(&format!("unexpected `{other}` in the key clause"))),
            None => return Err(bad("the key clause has no closing `}`")),
        }
        if at.next() != Some(";") {
            return Err(bad("expected `;` after a statement"));
        }
    }
    match (at.next(), at.next()) {
        (Some(";"), None) | (None, None) => {}
        _ => return Err(bad("one key clause per file")),
    }
    secret
        .map(str::to_owned)
        .ok_or_else(|| bad("the key clause has no `secret`"))
}

/// Words, quoted strings (quotes removed) and the punctuation `{ } ;`, with
/// `#`, `//` comments dropped, as named.conf writes them.
fn tokens(content: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for line in content.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let line = line.split("//").next().unwrap_or_default();
        let mut rest = line;
        while let Some(c) = rest.chars().next() {
            if c.is_whitespace() {
                rest = &rest[c.len_utf8()..];
            } else if matches!(c, '{' | '}' | ';') {
                out.push(c.to_string());
                rest = &rest[1..];
            } else if c == '"' {
                let end = rest[1..]
                    .find('"')
                    .ok_or_else(|| "a quoted string is not closed".to_owned())?;
                out.push(rest[1..=end].to_owned());
                rest = &rest[end + 2..];
            } else {
                let end = rest
                    .find(|c: char| c.is_whitespace() || matches!(c, '{' | '}' | ';' | '"'))
                    .unwrap_or(rest.len());
                out.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const SECRET: &str = "2bcS0V0oq3K2KqwqGWq9Vu0UhXkmiu8zQ1dVrKrVGzg=";

    #[test]
    fn a_bare_secret_or_tsig_keygen_output() {
        let bare = parse_tsig_key(&format!("{SECRET}\n"), "vagrant", TsigAlgorithm::HmacSha256)
            .expect("bare");
        assert_eq!(bare.len(), 32);
        // What `tsig-keygen -a hmac-sha256 vagrant` prints.
        let clause =
            format!("key \"vagrant\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET}\";\n}};\n");
        let from_clause =
            parse_tsig_key(&clause, "vagrant", TsigAlgorithm::HmacSha256).expect("clause");
        assert_eq!(from_clause, bare);
        let commented = format!("# made by hand\nkey vagrant. {{ secret \"{SECRET}\"; }}");
        assert_eq!(
            parse_tsig_key(&commented, "vagrant", TsigAlgorithm::HmacSha256).expect("commented"),
            bare
        );
    }

    #[test]
    fn a_clause_for_another_key_or_algorithm_or_a_short_secret_is_refused() {
        let clause = format!("key \"other\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; }};");
        assert!(matches!(
            parse_tsig_key(&clause, "vagrant", TsigAlgorithm::HmacSha256),
            Err(TsigFileError::OtherKey { .. })
        ));
        let clause = format!("key \"vagrant\" {{ algorithm hmac-md5; secret \"{SECRET}\"; }};");
        assert!(matches!(
            parse_tsig_key(&clause, "vagrant", TsigAlgorithm::HmacSha256),
            Err(TsigFileError::OtherAlgorithm { .. })
        ));
        assert!(matches!(
            parse_tsig_key("c2hvcnQ=", "vagrant", TsigAlgorithm::HmacSha256),
            Err(TsigFileError::TooShort(5))
        ));
        for garbled in [
            "not base64!",
            "key \"vagrant\" { secret \"x\" }",
            "key \"vagrant\" { secret ",
            "key \"vagrant\" { secret \"unclosed; };",
            "",
        ] {
            assert!(
                parse_tsig_key(garbled, "vagrant", TsigAlgorithm::HmacSha256).is_err(),
                "{garbled:?}"
            );
        }
    }

    #[test]
    fn only_owner_readable_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vagrant.key");
        std::fs::write(&path, SECRET).expect("write");
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o644, false)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let read = read_tsig_key_file(&path, "vagrant", TsigAlgorithm::HmacSha256);
            assert_eq!(read.is_ok(), ok, "mode {mode:o}");
        }
    }
}
