//! `gatehouse resolver`: how a laptop sends just the dev TLDs to gatehouse,
//! per operating system. Pure text; nothing is run.

use std::{fmt::Write as _, net::IpAddr};

use gatehouse_config::DomainName;

/// The laptop's operating system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Os {
    /// `/etc/resolver/TLD` files (resolver(5)).
    Macos,
    /// systemd-resolved: a drop-in with routing-only domains.
    Linux,
    /// Name Resolution Policy Table rules.
    Windows,
}

/// The setup for `zones` answered by `nameserver:port`.
pub fn resolver_setup(zones: &[DomainName], nameserver: IpAddr, port: u16, os: Os) -> String {
    let mut out = String::new();
    let server = match nameserver {
        IpAddr::V6(v6) if port != 53 => format!("[{v6}]:{port}"),
        ip if port != 53 => format!("{ip}:{port}"),
        ip => ip.to_string(),
    };
    match os {
        Os::Macos => {
            let _ = writeln!(
                out,
                "# macOS: one file per zone in /etc/resolver (see `man 5 resolver`)."
            );
            let _ = writeln!(out, "sudo mkdir -p /etc/resolver");
            for zone in zones {
                let mut body = format!("nameserver {nameserver}\\n");
                if port != 53 {
                    body += &format!("port {port}\\n");
                }
                let _ = writeln!(
                    out,
                    "printf '{body}' | sudo tee /etc/resolver/{zone} >/dev/null"
                );
            }
            let _ = writeln!(out, "sudo killall -HUP mDNSResponder");
            for zone in zones {
                let _ = writeln!(
                    out,
                    "\n# /etc/resolver/{zone} then reads:\nnameserver {nameserver}"
                );
                if port != 53 {
                    let _ = writeln!(out, "port {port}");
                }
            }
        }
        Os::Linux => {
            let domains: Vec<String> = zones.iter().map(|z| format!("~{z}")).collect();
            // Quoted on the command line: a shell expands `~sean` to sean's home.
            let quoted: Vec<String> = domains.iter().map(|d| format!("'{d}'")).collect();
            let _ = writeln!(
                out,
                "# Linux with systemd-resolved: a drop-in (persistent) ..."
            );
            let _ = writeln!(out, "sudo mkdir -p /etc/systemd/resolved.conf.d");
            let _ = writeln!(
                out,
                "printf '[Resolve]\\nDNS={server}\\nDomains={}\\n' | sudo tee /etc/systemd/resolved.conf.d/gatehouse.conf >/dev/null",
                domains.join(" ")
            );
            let _ = writeln!(out, "sudo systemctl restart systemd-resolved");
            let _ = writeln!(
                out,
                "\n# ... or one-off, for the link that reaches gatehouse (e.g. vboxnet0):"
            );
            let _ = writeln!(out, "sudo resolvectl dns LINK {server}");
            let _ = writeln!(out, "sudo resolvectl domain LINK {}", quoted.join(" "));
        }
        Os::Windows => {
            let _ = writeln!(out, "# Windows (PowerShell as Administrator): NRPT rules.");
            if port != 53 {
                let _ = writeln!(
                    out,
                    "# NOTE: NRPT rules cannot name a port: they only work with gatehouse on port 53 (you asked for {port})."
                );
            }
            for zone in zones {
                let _ = writeln!(
                    out,
                    "Add-DnsClientNrptRule -Namespace \".{zone}\" -NameServers \"{nameserver}\""
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones() -> Vec<DomainName> {
        vec!["sean".parse().expect("zone"), "test".parse().expect("zone")]
    }

    #[test]
    fn macos_files_named_after_each_zone() {
        let ip: IpAddr = "192.168.222.2".parse().expect("ip");
        let text = resolver_setup(&zones(), ip, 53, Os::Macos);
        assert!(
            text.contains(
                "printf 'nameserver 192.168.222.2\\n' | sudo tee /etc/resolver/sean >/dev/null"
            ),
            "{text}"
        );
        assert!(text.contains("/etc/resolver/test"));
        assert!(text.contains("sudo killall -HUP mDNSResponder"));
        assert!(!text.contains("port "), "no port line for 53");
        let dev = resolver_setup(&zones(), "127.0.0.1".parse().expect("ip"), 10053, Os::Macos);
        assert!(
            dev.contains("nameserver 127.0.0.1\\nport 10053\\n"),
            "{dev}"
        );
    }

    #[test]
    fn linux_routing_domains() {
        let text = resolver_setup(
            &zones(),
            "192.168.222.2".parse().expect("ip"),
            53,
            Os::Linux,
        );
        assert!(
            text.contains("DNS=192.168.222.2\\nDomains=~sean ~test\\n"),
            "{text}"
        );
        assert!(
            text.contains("sudo resolvectl domain LINK '~sean' '~test'"),
            "{text}"
        );
        let dev = resolver_setup(&zones(), "127.0.0.1".parse().expect("ip"), 10053, Os::Linux);
        assert!(dev.contains("resolvectl dns LINK 127.0.0.1:10053"), "{dev}");
    }

    #[test]
    fn windows_nrpt_and_the_port_caveat() {
        let ip: IpAddr = "192.168.222.2".parse().expect("ip");
        let text = resolver_setup(&zones(), ip, 53, Os::Windows);
        assert!(
            text.contains(
                "Add-DnsClientNrptRule -Namespace \".sean\" -NameServers \"192.168.222.2\""
            )
        );
        assert!(!text.contains("NOTE"));
        assert!(
            resolver_setup(&zones(), ip, 10053, Os::Windows)
                .contains("only work with gatehouse on port 53")
        );
    }
}
