//! The loopback dev setup that `gatehouse run` (and `gatehouse totp`) use
//! when no config file exists: something that works on a laptop straight
//! from a fresh clone.

use std::path::{Path, PathBuf};

use anyhow::Context;
use gatehouse_config::Config;

/// DNS port of the dev setup. Not 5353: that is mDNS, held by mDNSResponder
/// on every Mac and by avahi on many Linux laptops.
pub const DNS_ADDR: &str = "127.0.0.1:10053";
/// SSH port of the dev setup. Not 2222: Vagrant forwards its VMs' ssh there.
pub const JUMP_ADDR: &str = "127.0.0.1:11122";

/// Where a dev setup keeps its state: `$XDG_STATE_HOME/gatehouse`, else
/// `~/.local/state/gatehouse`.
fn state_dir() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("gatehouse"),
        _ => home().join(".local/state/gatehouse"),
    }
}

fn home() -> PathBuf {
    std::env::home_dir().unwrap_or_else(|| PathBuf::from("."))
}

/// `$USER`, or where it is unset (containers, cron, systemd units) the
/// account name of the uid we run as.
fn login_name() -> String {
    match std::env::var("USER") {
        Ok(user) if !user.is_empty() => user,
        _ => nix::unistd::User::from_uid(nix::unistd::Uid::current())
            .ok()
            .flatten()
            .map(|account| account.name)
            .unwrap_or_default(),
    }
}

/// The public keys in `~/.ssh/*.pub` (not certificates), one line each.
fn laptop_keys() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(home().join(".ssh")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".pub") && !name.ends_with("-cert.pub")
        })
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| {
            gatehouse_config::read_bounded_text(p, &gatehouse_config::Limit::PUBLIC_KEY).ok()
        })
        .filter_map(|text| text.lines().next().map(|l| l.trim().to_owned()))
        .filter(|line| {
            line.starts_with("ssh-") || line.starts_with("ecdsa-") || line.starts_with("sk-")
        })
        .collect()
}

/// What the dev setup is made of, for the config and the banner.
pub struct DevSetup {
    pub config: Config,
    /// The jump user and their number of keys, when the jump host runs.
    pub jump_user: Option<(String, usize)>,
    /// Why the jump host does not run, when it does not.
    pub jump_skipped: Option<String>,
}

pub fn setup() -> anyhow::Result<DevSetup> {
    let user = login_name();
    let keys = laptop_keys();
    let (jump_yaml, jump_user, jump_skipped) = if user
        .parse::<gatehouse_config::UserName>()
        .is_err()
    {
        (
            String::new(),
            None,
            Some(format!("$USER {user:?} is not a valid login name")),
        )
    } else if keys.is_empty() {
        (
            String::new(),
            None,
            Some("no public keys in ~/.ssh/*.pub".to_owned()),
        )
    } else {
        let key_list: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        (
            format!(
                "jump:\n  listen: [\"{JUMP_ADDR}\"]\n  mfa: required\n  users:\n    {user}:\n      keys: [{}]\n      groups: [dev]\n  groups:\n    dev:\n      allow: [\"127.0.0.0/8:*\"]\n",
                key_list.join(", ")
            ),
            Some((user.clone(), keys.len())),
            None,
        )
    };
    // `test` is reserved for testing (RFC 2606 §2), so it never shadows a real TLD.
    let text = format!(
        "state_dir: {state:?}\n\
         log: {{ format: pretty, level: info }}\n\
         dns:\n  listen: [\"{DNS_ADDR}\"]\n  zones:\n    test:\n      records:\n        gateway: 127.0.0.1\n\
         {jump_yaml}",
        state = state_dir().display().to_string(),
    );
    let config = gatehouse_config::parse(Path::new("(dev setup)"), &text)
        .context("building the dev setup")?;
    Ok(DevSetup {
        config,
        jump_user,
        jump_skipped,
    })
}

impl DevSetup {
    pub fn banner(&self, missing: &Path) -> String {
        let mut out = format!(
            "gatehouse: no config file at {}: starting a loopback dev setup\n  \
             dns     {DNS_ADDR} (UDP+TCP)  zone `test`: gateway.test and every name below it -> 127.0.0.1\n  \
             try     dig @127.0.0.1 -p 10053 admin.gateway.test\n",
            missing.display()
        );
        match (&self.jump_user, &self.jump_skipped) {
            (Some((user, keys)), _) => {
                out += &format!(
                    "  jump    {JUMP_ADDR}  user `{user}` ({keys} keys from ~/.ssh/*.pub) may reach 127.0.0.0/8, any port\n  \
                     enroll  gatehouse totp enroll {user}    (scan the QR code with an authenticator app)\n  \
                     try     ssh -J {user}@{JUMP_ADDR} {user}@127.0.0.1    (through the jump host to your own sshd)\n  \
                     state   {}\n",
                    self.config.state_dir.display()
                );
            }
            (None, Some(why)) => out += &format!("  jump    not started: {why}\n"),
            (None, None) => {}
        }
        out += "  real    write a config (see README) and run `gatehouse run --config PATH`\n";
        out
    }
}
