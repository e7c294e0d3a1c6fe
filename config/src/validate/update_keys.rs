//! `dns.update_keys`: who may send RFC 2136 updates, with what secret, in
//! which zones. Reads each key's secret file (the `tsig` rules); must not
//! touch the other sections.

use std::num::NonZeroU32;

use indexmap::IndexMap;

use super::Checker;
use crate::{
    locate::join_key,
    model::{TsigAlgorithm, TsigSecret, UpdateKey, Zone},
    raw::RawUpdateKey,
    tsig::read_tsig_key_file,
    values::DomainName,
};

/// Names one key may hold when the config says nothing.
const DEFAULT_MAX_NAMES: u32 = 256;
/// The most names one key may be given.
pub(crate) const MAX_NAMES_CEILING: u32 = 4096;

pub(super) fn update_keys(
    c: &mut Checker<'_>,
    raw: IndexMap<String, RawUpdateKey>,
    zones: &[Zone],
) -> Vec<UpdateKey> {
    let mut keys: Vec<UpdateKey> = Vec::new();
    for (key_text, raw_key) in raw {
        let path = join_key("dns.update_keys", &key_text);
        let Some(name) = c.value(&path, &key_text, str::parse::<DomainName>) else {
            continue;
        };
        if keys.iter().any(|k| k.name == name) {
            c.problem(
                &path,
                format!("duplicate key {name} (names are case-insensitive)"),
            );
            continue;
        }
        let algorithm = c.value(
            &format!("{path}.algorithm"),
            &raw_key.algorithm,
            parse_algorithm,
        );
        let mut key_zones = Vec::new();
        for (i, text) in raw_key.zones.iter().enumerate() {
            let zpath = format!("{path}.zones[{i}]");
            let Some(zone) = c.value(&zpath, text, str::parse::<DomainName>) else {
                continue;
            };
            if !zones.iter().any(|z| z.name == zone) {
                let known: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
                c.problem(
                    &zpath,
                    format!(
                        "{zone} is not one of dns.zones ({}); PTR names follow the \
                         addresses by themselves",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                continue;
            }
            key_zones.push(zone);
        }
        if raw_key.zones.is_empty() {
            c.problem(
                &format!("{path}.zones"),
                "needs at least one zone, e.g. [sean]",
            );
        }
        let max_names = match raw_key.max_names.unwrap_or(DEFAULT_MAX_NAMES) {
            n @ 1..=MAX_NAMES_CEILING => NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN),
            _ => {
                c.problem(
                    &format!("{path}.max_names"),
                    format!("must be from 1 to {MAX_NAMES_CEILING}"),
                );
                NonZeroU32::MIN
            }
        };
        let secret_file = c.path(&raw_key.secret_file);
        let Some(algorithm) = algorithm else {
            continue;
        };
        let secret = match read_tsig_key_file(&secret_file, name.as_str(), algorithm) {
            Ok(secret) => secret,
            Err(why) => {
                c.problem(
                    &format!("{path}.secret_file"),
                    format!("{}: {why}", secret_file.display()),
                );
                continue;
            }
        };
        keys.push(UpdateKey {
            name,
            algorithm,
            secret: TsigSecret::new(secret),
            secret_file,
            zones: key_zones,
            max_names,
        });
    }
    keys
}

fn parse_algorithm(text: &str) -> Result<TsigAlgorithm, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        "hmac-md5" | "hmac-md5.sig-alg.reg.int" | "hmac-sha1" | "hmac-sha224" => {
            Err("too weak: use hmac-sha256, hmac-sha384 or hmac-sha512".into())
        }
        _ => Err("expected hmac-sha256, hmac-sha384 or hmac-sha512".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use crate::{load::parse, model::TsigAlgorithm};

    const SECRET: &str = "2bcS0V0oq3K2KqwqGWq9Vu0UhXkmiu8zQ1dVrKrVGzg=";

    fn config(key: &str) -> String {
        format!(
            "dns:\n  listen: [\"127.0.0.1:0\"]\n  zones:\n    sean:\n      records: {{ saxophone: 192.0.2.1 }}\n  update_keys:\n{key}"
        )
    }

    #[test]
    fn a_key_is_read_with_its_zones_and_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("vagrant.key");
        std::fs::write(&file, SECRET).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let text = config(
            "    vagrant:\n      algorithm: hmac-sha256\n      secret_file: vagrant.key\n      zones: [sean]\n",
        );
        let loaded = parse(&dir.path().join("g.yaml"), &text).expect("valid");
        let keys = &loaded.dns.expect("dns").update_keys;
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].name.as_str(), "vagrant");
        assert_eq!(keys[0].algorithm, TsigAlgorithm::HmacSha256);
        assert_eq!(keys[0].secret.bytes().len(), 32);
        assert_eq!(keys[0].max_names.get(), 256);
        assert_eq!(format!("{:?}", keys[0].secret), "TsigSecret(32 bytes)");
    }

    #[test]
    fn weak_algorithms_unknown_zones_and_readable_secrets_are_located() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("vagrant.key");
        std::fs::write(&file, SECRET).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let text = config(
            "    vagrant:\n      algorithm: hmac-md5\n      secret_file: vagrant.key\n      zones: [sean, other]\n      max_names: 0\n    ci:\n      algorithm: hmac-sha512\n      secret_file: vagrant.key\n      zones: [sean]\n",
        );
        let msg = parse(&dir.path().join("g.yaml"), &text)
            .expect_err("invalid")
            .to_string();
        for expected in [
            "g.yaml:8:18: dns.update_keys.vagrant.algorithm: \"hmac-md5\": too weak",
            "g.yaml:10:21: dns.update_keys.vagrant.zones[1]: other is not one of dns.zones (sean)",
            "dns.update_keys.vagrant.max_names: must be from 1 to 4096",
            "g.yaml:14:20: dns.update_keys.ci.secret_file:",
            "mode is 0644; it must be 0600 or 0400",
        ] {
            assert!(msg.contains(expected), "{expected:?} not in:\n{msg}");
        }
    }
}
