//! The loopback dev setup `gatehouse run` starts when no config file exists:
//! something that works on a laptop straight from a fresh clone.

use std::path::{Path, PathBuf};

use anyhow::Context;
use gatehouse_config::Config;

/// DNS port of the dev setup. Not 5353: that is mDNS, held by mDNSResponder
/// on every Mac and by avahi on many Linux laptops.
pub const DNS_ADDR: &str = "127.0.0.1:10053";

/// Where a dev setup keeps its state: `$XDG_STATE_HOME/gatehouse`, else
/// `~/.local/state/gatehouse`.
fn state_dir() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("gatehouse"),
        _ => std::env::home_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".local/state/gatehouse"),
    }
}

pub fn config() -> anyhow::Result<Config> {
    // `test` is reserved for testing (RFC 2606 §2), so it never shadows a real TLD.
    let text = format!(
        "state_dir: {state:?}\n\
         log: {{ format: pretty, level: info }}\n\
         dns:\n  listen: [\"{DNS_ADDR}\"]\n  zones:\n    test:\n      records:\n        gateway: 127.0.0.1\n",
        state = state_dir().display().to_string(),
    );
    gatehouse_config::parse(Path::new("(dev setup)"), &text).context("building the dev setup")
}

pub fn banner(missing: &Path) -> String {
    format!(
        "gatehouse: no config file at {}: starting a loopback dev setup\n  \
         dns   {DNS_ADDR} (UDP+TCP)  zone `test`: gateway.test and every name below it -> 127.0.0.1\n  \
         try   dig @127.0.0.1 -p 10053 admin.gateway.test\n  \
         real  write a config (see README) and run `gatehouse run --config PATH`\n",
        missing.display()
    )
}
