//! Reading a config file: YAML syntax and types first (serde_yaml), then
//! meaning (validation), with every error located in the file.

use std::path::Path;

use crate::{
    error::{ConfigError, Problem},
    file::{Limit, read_bounded_text},
    locate::{Location, Locator},
    model::Config,
    raw::RawConfig,
    validate,
};

/// Read, parse and validate the file at `path` (a regular file of at most
/// [`Limit::CONFIG`]). Blocking: a server reloads on a blocking thread.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_bounded_text(path, &Limit::CONFIG).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parse and validate `text` as if read from `path`. Relative paths inside the
/// config (`state_dir`, `keys_file`, ...) are taken relative to `path`'s folder.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let invalid = |location, message: String| ConfigError::Invalid {
        file: path.to_owned(),
        problems: vec![Problem::new(location, &message)],
    };
    let locator = Locator::index(text).map_err(|e| invalid(e.location, e.message))?;
    let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| {
        let location = e
            .location()
            .map(|l| Location {
                line: l.line(),
                column: l.column(),
            })
            .unwrap_or(Location { line: 1, column: 1 });
        invalid(location, strip_location(&e.to_string()))
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    validate::config(raw, path, base, &locator).map_err(|mut problems| {
        problems.sort_by_key(|p| (p.location.line, p.location.column));
        ConfigError::Invalid {
            file: path.to_owned(),
            problems,
        }
    })
}

/// serde_yaml appends " at line L column C"; we put the location in front instead.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => message[..i].to_owned(),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mfa, Target};

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK1dTTVTtn4JwyiQdj4r0dSAaAiTbAKgVWl7VZBO6m2j sean@laptop";

    /// The example from DESIGN.md, with a real key.
    fn example() -> String {
        format!(
            r#"state_dir: /var/lib/gatehouse
log:
  format: json
  level: info
jump:
  listen: ["0.0.0.0:11122"]
  banner: "Authorized use only."
  mfa: required
  totp: {{ issuer: "Example Jump", digits: 6, period: 30s, skew: 1 }}
  connect_timeout: 5s
  limits:
    login_grace: 30s
    max_auth_attempts: 6
    max_unauthenticated: 64
    per_ip_connections: 20/min
    ban: {{ after: 5, within: 10m, for: 15m, max: 24h }}
    trusted: ["10.0.0.0/8"]
    idle_timeout: 1h
    max_channels: 32
  users:
    sean:
      keys: ["{KEY}"]
      groups: [dev]
  groups:
    dev:
      allow: ["*.internal.example.net:22", "10.77.0.0/16:22"]
    ops:
      allow: ["10.0.0.0/8:*", "[fd00::]/8:22-2222"]
dns:
  listen: ["192.168.222.2:53", "127.0.0.1:53"]
  ttl: 60s
  zones:
    sean:
      records:
        saxophone: 192.168.222.16
        trombone: 192.168.222.17
        gateway: [192.168.222.2, "fd00::2"]
        cdn.saxophone: 192.168.222.30
  upstream: []
admin:
  listen: 127.0.0.1:9100
"#
        )
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("gatehouse.yaml"), text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(ConfigError::Invalid { problems, .. }) => problems
                .iter()
                .map(|p| format!("{}:{}: {}", p.location.line, p.location.column, p.message))
                .collect(),
            Err(other) => panic!("unexpected error kind: {other}"),
        }
    }

    /// Replace the first occurrence of `from` in the example with `to`.
    fn example_with(from: &str, to: &str) -> String {
        let text = example();
        assert!(text.contains(from), "example lacks {from:?}");
        text.replacen(from, to, 1)
    }

    #[test]
    fn the_design_example_is_valid() {
        let config = parse(Path::new("/etc/gatehouse/gatehouse.yaml"), &example()).expect("valid");
        let jump = config.jump.expect("jump");
        assert_eq!(jump.mfa, Mfa::Required);
        assert_eq!(jump.limits.per_ip_connections.count.get(), 20);
        assert_eq!(jump.users.len(), 1);
        let dev = &jump.groups["dev"];
        assert!(matches!(dev.allow[0].target, Target::Name(_)));
        let dns = config.dns.expect("dns");
        assert_eq!(dns.ttl, 60);
        let sean = &dns.zones[0];
        assert_eq!(sean.records.len(), 4);
        let cdn = sean
            .records
            .iter()
            .find(|r| r.name.as_str() == "cdn.saxophone")
            .expect("cdn");
        assert_eq!(cdn.fqdn.as_str(), "cdn.saxophone.sean");
        assert_eq!(config.admin.map(|a| a.listen.port()), Some(9100));
    }

    #[test]
    fn bad_cidr_in_a_grant_names_line_column_and_path() {
        let text = example_with("10.77.0.0/16:22", "10.77.0.0/33:22");
        assert_eq!(
            errors(&text),
            [
                r#"26:44: jump.groups.dev.allow[1]: "10.77.0.0/33:22": prefix length must be at most 32"#
            ]
        );
    }

    #[test]
    fn fleet_settings_are_checked_where_they_are_written() {
        let text = format!(
            "{}state:\n  redis:\n    url: \"http://x\"\n    on_outage: maybe\n",
            example()
        );
        let errs = errors(&text);
        assert!(
            errs.iter()
                .any(|e| e.contains("state.redis.url: \"http://x\": expected redis://")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("state.redis.on_outage: \"maybe\": expected closed or local")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("state.redis.seal_key_file: is required")),
            "{errs:?}"
        );
        let with_password = format!(
            "{}state:\n  redis:\n    url: \"redis://:pw@h:6379\"\n    seal_key_file: k\n",
            example()
        );
        assert!(
            errors(&with_password)[0]
                .contains("holds credentials: put the password in password_file"),
            "{:?}",
            errors(&with_password)
        );
        let good = format!(
            "{}state:\n  redis:\n    url: \"redis://10.0.0.5:6379/0\"\n    seal_key_file: seal.key\n",
            example()
        );
        let config = parse(Path::new("/etc/gatehouse/gatehouse.yaml"), &good).expect("valid");
        let crate::StateConfig::Redis(redis) = config.state else {
            panic!("not redis: {:?}", config.state);
        };
        assert_eq!(redis.key_prefix, "gatehouse:");
        assert_eq!(redis.on_outage, crate::OnOutage::Closed);
        assert_eq!(
            redis.seal_key_file.as_deref(),
            Some(Path::new("/etc/gatehouse/seal.key"))
        );
    }

    #[test]
    fn sentinel_is_the_other_way_to_find_redis() {
        let base = example().lines().count();
        let good = format!(
            "{}state:\n  redis:\n    sentinel: {{ master: gatehouse, addresses: [\"10.0.0.5:26379\", \"[fd00::7]:26379\"] }}\n    seal_key_file: seal.key\n",
            example()
        );
        let config = parse(Path::new("/etc/gatehouse/gatehouse.yaml"), &good).expect("valid");
        let crate::StateConfig::Redis(redis) = config.state else {
            panic!("not redis: {:?}", config.state);
        };
        assert_eq!(
            redis.target,
            crate::RedisTarget::Sentinel {
                master: "gatehouse".into(),
                addresses: vec![("10.0.0.5".into(), 26379), ("fd00::7".into(), 26379)],
                tls: false,
            }
        );
        let tls = format!(
            "{}state:\n  redis:\n    sentinel: {{ master: gatehouse, addresses: [\"10.0.0.5:26379\"], tls: true }}\n    ca_file: ca.pem\n    seal_key_file: seal.key\n",
            example()
        );
        let config = parse(Path::new("/etc/gatehouse/gatehouse.yaml"), &tls).expect("valid");
        let crate::StateConfig::Redis(redis) = config.state else {
            panic!("not redis: {:?}", config.state);
        };
        assert!(matches!(
            redis.target,
            crate::RedisTarget::Sentinel { tls: true, .. }
        ));
        assert_eq!(redis.ca_file, Some("/etc/gatehouse/ca.pem".into()));
        // TLS without a ca_file: the system's roots, as with rediss://.
        let roots = tls.replace("    ca_file: ca.pem\n", "");
        assert!(parse(Path::new("/etc/gatehouse/gatehouse.yaml"), &roots).is_ok());
        let off = tls.replace("tls: true", "tls: false");
        assert_eq!(
            errors(&off),
            [format!(
                "{}:14: state.redis.ca_file: is for TLS: set sentinel.tls: true with it",
                base + 4
            )]
        );
        let plain = "    url: \"redis://h:6379/0\"\n    ca_file: ca.pem\n    seal_key_file: k\n";
        assert_eq!(
            errors(&format!("{}state:\n  redis:\n{plain}", example())),
            [format!(
                "{}:14: state.redis.ca_file: is for TLS: use a rediss:// url with it",
                base + 4
            )]
        );
        let both = format!(
            "{}state:\n  redis:\n    url: \"redis://h:6379/0\"\n    sentinel:\n      master: gatehouse\n      addresses: [\"h:26379\"]\n    seal_key_file: k\n",
            example()
        );
        assert_eq!(
            errors(&both),
            [format!(
                "{}:10: state.redis.url: url and sentinel exclude each other: keep one",
                base + 3
            )]
        );
        let neither = format!("{}state:\n  redis:\n    seal_key_file: k\n", example());
        assert_eq!(
            errors(&neither),
            [format!(
                "{}:18: state.redis: expected url (one Redis) or sentinel (Redis Sentinel: master, addresses)",
                base + 3
            )]
        );
        let bad = format!(
            "{}state:\n  redis:\n    sentinel:\n      master: \"two words\"\n      addresses:\n        - \"h:26379\"\n        - \"h:0\"\n        - \"nohost\"\n    ca_file: ca.pem\n    seal_key_file: k\n",
            example()
        );
        assert_eq!(
            errors(&bad),
            [
                format!(
                    "{}:15: state.redis.sentinel.master: \"two words\": expected 1 to 64 characters, no spaces",
                    base + 4
                ),
                format!(
                    "{}:11: state.redis.sentinel.addresses[1]: \"h:0\": expected HOST:PORT, e.g. \"10.0.0.5:26379\"",
                    base + 7
                ),
                format!(
                    "{}:11: state.redis.sentinel.addresses[2]: \"nohost\": expected HOST:PORT, e.g. \"10.0.0.5:26379\"",
                    base + 8
                ),
                format!(
                    "{}:14: state.redis.ca_file: is for TLS: set sentinel.tls: true with it",
                    base + 9
                ),
            ]
        );
    }

    #[test]
    fn proxy_protocol_needs_the_balancers_addresses() {
        let empty = example_with("  users:\n", "  proxy_protocol: { from: [] }\n  users:\n");
        assert!(
            errors(&empty)[0].contains("jump.proxy_protocol.from: is empty"),
            "{:?}",
            errors(&empty)
        );
        let bad = example_with(
            "  users:\n",
            "  proxy_protocol: { from: [\"10.0.0.0/33\"] }\n  users:\n",
        );
        assert!(
            errors(&bad)[0].contains("jump.proxy_protocol.from[0]"),
            "{:?}",
            errors(&bad)
        );
    }

    #[test]
    fn unknown_group_points_at_the_reference() {
        let text = example_with("groups: [dev]", "groups: [dev, qa]");
        assert_eq!(
            errors(&text),
            [r#"23:21: jump.users.sean.groups[1]: unknown group "qa" (defined: dev, ops)"#]
        );
    }

    #[test]
    fn duplicate_records_are_refused_case_insensitively() {
        let text = example_with("trombone:", "SAXOPHONE:");
        assert_eq!(
            errors(&text),
            [
                "36:20: dns.zones.sean.records.SAXOPHONE: duplicate record saxophone (names are case-insensitive)"
            ]
        );
        let exact = example_with("trombone:", "saxophone:");
        assert_eq!(
            errors(&exact),
            ["36:9: dns.zones.sean.records: duplicate key `saxophone`"]
        );
    }

    #[test]
    fn bad_key_points_at_the_key() {
        let text = example_with(KEY, "ssh-ed25519 AAAAnotbase64 sean@laptop");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("22:14: jump.users.sean.keys[0]: \"ssh-ed25519 AAAAnotbase64 sean@laptop\": not an OpenSSH public key"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn unknown_fields_and_type_errors_come_from_serde_with_location() {
        let text = example_with("  ttl: 60s", "  tll: 60s");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("31:3: dns: unknown field `tll`, expected one of"),
            "{}",
            errs[0]
        );

        let text = example_with("max_channels: 32", "max_channels: lots");
        let errs = errors(&text);
        assert!(
            errs[0].starts_with("19:19: jump.limits.max_channels: invalid type: string \"lots\""),
            "{}",
            errs[0]
        );
    }

    /// fuzz/corpus/config_load/regress-key-with-line-break, the input the
    /// fuzzer found: a plain key spanning lines with an empty one between
    /// keeps a line break, and serde quotes an unknown field raw.
    #[test]
    fn a_key_with_a_line_break_is_one_line_of_error() {
        let text = "{-------------IIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIII\n  lnstlevel\n\n  lnstlevel\n }\n\n";
        let err = parse(Path::new("g.yaml"), text).expect_err("unknown field");
        let shown = err.to_string();
        assert_eq!(shown.lines().count(), 1, "{shown}");
        assert!(
            shown.starts_with("g.yaml:1:2: unknown field `-------------III"),
            "{shown}"
        );
        assert!(shown.contains("lnstlevel\\nlnstlevel`"), "{shown}");
    }

    /// A long value is quoted by its start and end only: it can be long
    /// because a missing quote made it swallow the lines after it.
    #[test]
    fn a_long_value_is_quoted_cut_short() {
        let secret = "GN6KDGQAMQZVJENZOOUIXNZ55EG43CPL";
        let pad = "x".repeat(600);
        let text = format!("jump:\n  listen: [\"127.0.0.1:0 {pad} {secret} {pad}\"]\n");
        let errs = errors(&text);
        assert!(
            errs[0].starts_with("2:12: jump.listen[0]: \"127.0.0.1:0 xxx"),
            "{errs:?}"
        );
        assert!(
            errs[0].ends_with("xxx\": expected IP:PORT, e.g. \"0.0.0.0:11122\" or \"[::]:11122\"")
        );
        assert!(errs[0].len() < 530, "{}", errs[0].len());
        assert!(!errs[0].contains(secret), "{}", errs[0]);
    }

    #[test]
    fn every_value_error_is_reported_at_once() {
        let text = example()
            .replacen("login_grace: 30s", "login_grace: 30", 1)
            .replacen(
                "per_ip_connections: 20/min",
                "per_ip_connections: 20/fortnight",
                1,
            )
            .replacen("192.168.222.17", "192.168.222.300", 1)
            .replacen("listen: 127.0.0.1:9100", "listen: localhost:9100", 1);
        assert_eq!(
            errors(&text),
            [
                r#"12:18: jump.limits.login_grace: "30": missing unit: write e.g. `30s` (ms, s, m, h, d)"#,
                r#"15:25: jump.limits.per_ip_connections: "20/fortnight": unknown period `fortnight` (use s, min or hour)"#,
                r#"36:19: dns.zones.sean.records.trombone: "192.168.222.300": expected an IPv4 or IPv6 address"#,
                r#"41:11: admin.listen: "localhost:9100": expected IP:PORT, e.g. "127.0.0.1:9100""#,
            ]
        );
    }

    #[test]
    fn more_semantic_errors() {
        for (from, to, want) in [
            (
                "digits: 6",
                "digits: 9",
                "jump.totp.digits: must be 6, 7 or 8",
            ),
            (
                "max: 24h",
                "max: 1m",
                "jump.limits.ban.max: must be at least `for`",
            ),
            (
                "mfa: required",
                "mfa: sometimes",
                "jump.mfa: \"sometimes\": expected required or optional",
            ),
            (
                "    sean:\n      records",
                "    se an:\n      records",
                "dns.zones.se an: \"se an\"",
            ),
            (
                "format: json",
                "format: xml",
                "log.format: \"xml\": expected json or pretty",
            ),
            ("ttl: 60s", "ttl: 1500ms", "dns.ttl: must be whole seconds"),
        ] {
            let errs = errors(&example_with(from, to));
            assert!(errs.iter().any(|e| e.contains(want)), "{to}: {errs:?}");
        }
    }

    #[test]
    fn overlapping_zones_are_refused() {
        let text = "dns:\n  listen: [\"127.0.0.1:53\"]\n  zones:\n    sean: {}\n    dev.sean: {}\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("overlaps zone"), "{errs:?}");
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let errs = errors("dns:\n  listen: [\"127.0.0.1:53\"\n  zones: {}\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("3:"), "{errs:?}");
    }

    #[test]
    fn nothing_configured_is_an_error() {
        assert_eq!(
            errors("log: { level: info }\n"),
            ["1:1: nothing to run: add a `jump` or a `dns` section (or both)"]
        );
    }

    #[test]
    fn totp_secret_files_must_be_private_base32() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("sean.totp");
        std::fs::write(&secret, "GN6KDGQAMQZVJENZOOUIXNZ55EG43CPL\n").expect("write");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let text = format!(
            "jump:\n  listen: [\"127.0.0.1:0\"]\n  users:\n    sean:\n      keys: [\"{KEY}\"]\n      totp_secret_file: sean.totp\n"
        );
        let path = dir.path().join("g.yaml");
        let msg = parse(&path, &text).expect_err("0644").to_string();
        assert!(
            msg.contains("g.yaml:6:25: jump.users.sean.totp_secret_file:"),
            "{msg}"
        );
        assert!(
            msg.contains("mode is 0644; it must be 0600 or 0400"),
            "{msg}"
        );
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(parse(&path, &text).is_ok());
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&secret, "not base32!\n").expect("write");
        let msg = parse(&path, &text).expect_err("garbage").to_string();
        assert!(msg.contains("expected a base32 TOTP secret"), "{msg}");
    }

    #[test]
    fn keys_file_is_read_relative_to_the_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("sean.pub"),
            format!("# laptop\n{KEY}\n\nnot a key\n"),
        )
        .expect("write");
        let text =
            "jump:\n  listen: [\"127.0.0.1:0\"]\n  users:\n    sean:\n      keys_file: sean.pub\n";
        let err = parse(&dir.path().join("g.yaml"), text).expect_err("bad line 4");
        let msg = err.to_string();
        assert!(
            msg.contains("g.yaml:5:18: jump.users.sean.keys_file:"),
            "{msg}"
        );
        assert!(
            msg.contains("sean.pub:4: not an OpenSSH public key"),
            "{msg}"
        );
        std::fs::write(dir.path().join("sean.pub"), format!("{KEY}\n")).expect("write");
        let config = parse(&dir.path().join("g.yaml"), text).expect("valid");
        let jump = config.jump.expect("jump");
        assert_eq!(jump.users.values().next().map(|u| u.keys.len()), Some(1));
    }

    /// Issue 23 item 6: `keys_file: /dev/zero` read until memory ran out.
    #[test]
    fn unbounded_files_are_located_problems_not_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo.pub");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let big = dir.path().join("big.pub");
        std::fs::write(&big, vec![b'#'; 1024 * 1024 + 1]).expect("write");
        for (file, why) in [
            (
                "/dev/zero",
                "/dev/zero: cannot read: not a regular file (a character device)",
            ),
            (
                "fifo.pub",
                "fifo.pub: cannot read: not a regular file (a FIFO)",
            ),
            (
                "big.pub",
                "big.pub: cannot read: larger than 1 MiB, the limit for a keys_file",
            ),
        ] {
            let text = format!(
                "jump:\n  listen: [\"127.0.0.1:0\"]\n  users:\n    sean:\n      keys_file: {file}\n"
            );
            let msg = parse(&dir.path().join("g.yaml"), &text)
                .expect_err(file)
                .to_string();
            assert!(
                msg.contains("g.yaml:5:18: jump.users.sean.keys_file: "),
                "{msg}"
            );
            assert!(msg.ends_with(why), "{msg}");
        }
        // The config itself.
        let err = load(Path::new("/dev/zero")).expect_err("a device");
        assert_eq!(
            err.to_string(),
            "/dev/zero: cannot read: not a regular file (a character device)"
        );
    }
}
