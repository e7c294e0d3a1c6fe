//! `gatehouse ssh-config`: the `~/.ssh/config` block that sends a laptop's
//! ssh through the jump host for exactly the destinations granted.

use std::fmt::Write as _;

use gatehouse_config::{Grant, JumpConfig, PortSet, Target, User, UserKey};
use ipnet::IpNet;

/// The ssh `Host` pattern that matches exactly the addresses of `net`, if
/// one exists: ssh patterns only glob whole text, so an IPv4 prefix on an
/// octet boundary maps (`10.77.0.0/16` → `10.77.*`) and a single address is
/// itself; anything else would match too much or too little.
pub fn cidr_pattern(net: &IpNet) -> Result<String, String> {
    match net {
        IpNet::V4(v4) => {
            let octets = v4.network().octets();
            match v4.prefix_len() {
                0 => Err("0.0.0.0/0 would send every host, the jump host included, through the jump host".into()),
                32 => Ok(v4.network().to_string()),
                len if len % 8 == 0 => {
                    let kept = usize::from(len / 8);
                    let head: Vec<String> = octets[..kept].iter().map(u8::to_string).collect();
                    Ok(format!("{}.*", head.join(".")))
                }
                len => Err(format!("/{len} is not on an octet boundary: no exact ssh pattern")),
            }
        }
        IpNet::V6(v6) if v6.prefix_len() == 128 => Ok(v6.network().to_string()),
        IpNet::V6(_) => {
            Err("IPv6 networks have no exact ssh pattern (addresses have many spellings)".into())
        }
    }
}

fn ports(set: &PortSet) -> String {
    match set {
        PortSet::Any => "any port".to_owned(),
        PortSet::Ranges(ranges) => {
            let parts: Vec<String> = ranges
                .iter()
                .map(|r| {
                    if r.start() == r.end() {
                        r.start().to_string()
                    } else {
                        format!("{}-{}", r.start(), r.end())
                    }
                })
                .collect();
            format!("port {}", parts.join(","))
        }
    }
}

fn grant_pattern(grant: &Grant) -> Result<String, String> {
    match &grant.target {
        Target::Name(_) => {
            let text = grant.to_string();
            Ok(text
                .rsplit_once(':')
                .map_or(text.clone(), |(host, _)| host.to_owned()))
        }
        Target::Net(net) => cidr_pattern(net),
    }
}

/// The `@cert-authority` known_hosts line that trusts host certificates
/// for `host:port` signed by the CA whose public key is `ca` (one OpenSSH
/// public key line).
pub fn known_hosts_line(host: &str, port: u16, ca: &str) -> Result<String, String> {
    let key = russh::keys::PublicKey::from_openssh(ca)
        .map_err(|e| format!("not an OpenSSH public key: {e}"))?;
    let key = key.to_openssh().map_err(|e| e.to_string())?;
    let pattern = if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    };
    Ok(format!("@cert-authority {pattern} {key}"))
}

/// How to make and use a FIDO security key (OpenSSH 8.2+ drives them with
/// no other software), as comments; for one user, their security keys and
/// what each is worth, and what to do with only security keys.
fn security_keys(out: &mut String, user: Option<&User>) {
    let sk: Vec<&UserKey> = user.map_or(Vec::new(), |u| {
        u.keys
            .iter()
            .filter(|k| k.security_key_login().is_some())
            .collect()
    });
    let _ = writeln!(
        out,
        "  # A security key (FIDO2: YubiKey, SoloKey, Titan) with OpenSSH 8.2+:\n  \
         #   ssh-keygen -t ed25519-sk -O verify-required [-O resident] -f ~/.ssh/id_ed25519_sk\n  \
         # then send ~/.ssh/id_ed25519_sk.pub to your admin; ssh uses that file by itself.\n  \
         # -O verify-required (touch + PIN): a whole login, no code; without: touch, then the code.\n  \
         # -O resident keeps the key on the token: on a new laptop `ssh-keygen -K` writes it\n  \
         # out as id_ed25519_sk_rk*; name it ~/.ssh/id_ed25519_sk (or add an IdentityFile)."
    );
    if sk.is_empty() {
        return;
    }
    let _ = writeln!(out, "  # Your security keys:");
    for key in &sk {
        let login = key.security_key_login().unwrap_or_default();
        let _ = writeln!(out, "  #   {}: {login}", key.describe());
    }
    let ordinary = user.is_some_and(|u| u.keys.len() > sk.len());
    if !ordinary && !sk.iter().any(|k| k.whole_login()) {
        let _ = writeln!(
            out,
            "  # Only touch keys: the first login asks for no code and shows the TOTP \
             enrollment\n  # (ssh -t gatehouse-jump); every login after asks for the code."
        );
    }
}

/// The config block for `user` (all users' grants if `None`), with the jump
/// host reachable as `host:port`.
pub fn ssh_config(
    jump: &JumpConfig,
    host: &str,
    port: u16,
    user: Option<&str>,
) -> Result<String, String> {
    let users: Vec<_> = match user {
        Some(name) => {
            let found = jump.users.get_key_value(name);
            vec![found.ok_or_else(|| format!("no user {name:?} in jump.users"))?]
        }
        None => jump.users.iter().collect(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by `gatehouse ssh-config`; paste into ~/.ssh/config."
    );
    let _ = writeln!(out, "Host gatehouse-jump");
    let _ = writeln!(out, "  HostName {host}");
    let _ = writeln!(out, "  Port {port}");
    if let Some(name) = user {
        let _ = writeln!(out, "  User {name}");
    }
    // One TOTP prompt serves every hop for hours.
    let _ = writeln!(out, "  ControlMaster auto");
    let _ = writeln!(out, "  ControlPath ~/.ssh/cm-%r@%h:%p");
    let _ = writeln!(out, "  ControlPersist 4h");
    let _ = writeln!(out, "  ForwardAgent no");
    // A wrong answer (an askpass helper, a script) is sent once, not three
    // times: three wrong codes lock the user for 30 s and count toward a ban.
    let _ = writeln!(out, "  NumberOfPasswordPrompts 1");
    security_keys(&mut out, user.and_then(|name| jump.user(name)));
    let mut seen: Vec<String> = Vec::new();
    for (_, account) in users {
        for group in &account.groups {
            let Some(grants) = jump.groups.get(group) else {
                continue;
            };
            for grant in &grants.allow {
                match grant_pattern(grant) {
                    Ok(pattern) if seen.contains(&pattern) => {}
                    Ok(pattern) => {
                        let _ =
                            writeln!(out, "\n# {grant} (group {group}: {})", ports(&grant.ports));
                        let _ = writeln!(out, "Host {pattern}");
                        let _ = writeln!(out, "  ProxyJump gatehouse-jump");
                        seen.push(pattern);
                    }
                    Err(why) => {
                        let _ = writeln!(out, "\n# left out: {grant} (group {group}): {why}");
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn security_keys_are_explained_and_listed_per_user() {
        const SK: &str = "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIFvdtQeUWx266KKZfz1vZ6dje6krwWKqC2hegLlhodr1AAAABHNzaDo= sean@yubikey";
        let yaml = format!(
            "jump:\n  listen: [\"127.0.0.1:0\"]\n  users:\n    sean: {{ keys: [\"verify-required {SK}\"] }}\n    kim: {{ keys: [\"{SK}\"] }}\n"
        );
        let config =
            gatehouse_config::parse(std::path::Path::new("/etc/g.yaml"), &yaml).expect("config");
        let jump = config.jump.as_ref().expect("jump");
        let sean = ssh_config(jump, "jump.example.com", 22, Some("sean")).expect("sean");
        assert!(
            sean.contains("  #   ssh-keygen -t ed25519-sk -O verify-required [-O resident] -f ~/.ssh/id_ed25519_sk\n"),
            "{sean}"
        );
        assert!(
            sean.contains(&format!(
                "  #   {}: a whole login (verify-required: touch + PIN or fingerprint, no code)\n",
                jump.users["sean"].keys[0].describe()
            )),
            "{sean}"
        );
        assert!(!sean.contains("Only touch keys"), "{sean}");
        let kim = ssh_config(jump, "jump.example.com", 22, Some("kim")).expect("kim");
        assert!(kim.contains(": touch, then the code\n"), "{kim}");
        assert!(kim.contains("# Only touch keys: the first login"), "{kim}");
        let all = ssh_config(jump, "jump.example.com", 22, None).expect("all");
        assert!(all.contains("ssh-keygen -t ed25519-sk") && !all.contains("Your security keys"));
        // Comments only: nothing else changes for ssh.
        let directives = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            directives(&sean).len(),
            directives(&all).len() + 1,
            "User sean"
        );
    }

    #[test]
    fn exact_patterns_only() {
        assert_eq!(cidr_pattern(&net("10.0.0.0/8")).as_deref(), Ok("10.*"));
        assert_eq!(cidr_pattern(&net("10.77.0.0/16")).as_deref(), Ok("10.77.*"));
        assert_eq!(
            cidr_pattern(&net("10.77.3.0/24")).as_deref(),
            Ok("10.77.3.*")
        );
        assert_eq!(
            cidr_pattern(&net("10.77.3.4/32")).as_deref(),
            Ok("10.77.3.4")
        );
        assert!(cidr_pattern(&net("172.16.0.0/12")).is_err());
        assert!(cidr_pattern(&net("0.0.0.0/0")).is_err());
        assert!(cidr_pattern(&net("fd00::/8")).is_err());
        assert_eq!(cidr_pattern(&net("fd00::1/128")).as_deref(), Ok("fd00::1"));
    }
}
