//! The legacy ProxyCommand: `ssh -p PORT user@jump nc -w1 %h %p` runs
//! `nc HOST PORT` on the jump host. We never run a program; we recognise
//! that command line and open the same tunnel a `direct-tcpip` channel would.

use std::time::Duration;

/// A recognised `nc` command: where to connect and an optional connect timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NcCommand {
    /// Destination host as written.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// `-w N`. A real `nc -w1` also cuts the tunnel after 1 s of idle, which
    /// kills idle ssh sessions through the classic recipe; we take it as the
    /// connect timeout only.
    pub connect_timeout: Option<Duration>,
}

/// Parse `nc [-w N] [-q N] HOST PORT` (options in any order, `-wN` glued or
/// not). Anything else is not something a jump host runs.
pub fn parse_nc(command: &[u8]) -> Result<NcCommand, String> {
    let text = std::str::from_utf8(command).map_err(|_| "command is not UTF-8".to_string())?;
    let mut words = text.split_whitespace();
    match words.next() {
        Some("nc" | "netcat" | "ncat") => {}
        _ => return Err("only `nc HOST PORT` can be run here".into()),
    }
    let mut connect_timeout = None;
    let mut rest = Vec::new();
    while let Some(word) = words.next() {
        // Split after the flag's first character, not its first byte: `-é`
        // would put a byte index inside a character, and `str::split_at`
        // panics there (found by fuzz/'s nc_command target).
        let flag_end = |f: &str| f.chars().next().map_or(0, char::len_utf8);
        let (flag, glued) = match word.strip_prefix('-') {
            Some(f) if !f.is_empty() => f.split_at(flag_end(f)),
            _ => {
                rest.push(word);
                continue;
            }
        };
        let value = if glued.is_empty() {
            words
                .next()
                .ok_or_else(|| format!("-{flag} needs a value"))?
        } else {
            glued
        };
        let secs: u64 = value
            .parse()
            .map_err(|_| format!("-{flag} {value}: not a number of seconds"))?;
        match flag {
            "w" => connect_timeout = Some(Duration::from_secs(secs.clamp(1, 60))),
            // -q N: quit N seconds after EOF on stdin; our half-close handling covers it.
            "q" => {}
            other => return Err(format!("nc option -{other} is not supported")),
        }
    }
    let [host, port] = rest[..] else {
        return Err("expected `nc [-w N] HOST PORT`".into());
    };
    let port = match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("`{port}` is not a port")),
        Ok(p) => p,
    };
    Ok(NcCommand {
        host: host.to_owned(),
        port,
        connect_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_forms() {
        let nc = |s: &str| parse_nc(s.as_bytes());
        assert_eq!(
            nc("nc -w1 app01.internal 22"),
            Ok(NcCommand {
                host: "app01.internal".into(),
                port: 22,
                connect_timeout: Some(Duration::from_secs(1))
            })
        );
        assert_eq!(nc("nc -w 5 10.0.0.1 2222").map(|c| c.port), Ok(2222));
        assert_eq!(
            nc("nc -q 0 -w 3 h 22").map(|c| c.connect_timeout),
            Ok(Some(Duration::from_secs(3)))
        );
        assert_eq!(nc("nc h 22").map(|c| c.connect_timeout), Ok(None));
    }

    #[test]
    fn everything_else_is_refused() {
        for bad in [
            "bash",
            "nc",
            "nc h",
            "nc h 0",
            "nc h 70000",
            "nc -e /bin/sh h 22",
            "nc -l 22",
            "nc h 22 extra",
            "nc -w",
            "ls; nc h 22",
            "",
        ] {
            assert!(parse_nc(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(parse_nc(&[0xff, 0xfe]).is_err());
    }

    /// A flag whose first character takes more than one byte is refused, not
    /// a panic (fuzz/corpus/nc_command/regress-multibyte-flag is the input
    /// the fuzzer found).
    #[test]
    fn multibyte_flags_are_refused() {
        for (bad, why) in [
            (
                "nc -w0 \0\u{e}nc -\u{23e}al 22",
                "-\u{23e} al: not a number of seconds",
            ),
            ("nc -€5 h 22", "nc option -€ is not supported"),
            ("nc -w5 -ü 3 h 22", "nc option -ü is not supported"),
            ("nc -wé h 22", "-w é: not a number of seconds"),
        ] {
            assert_eq!(parse_nc(bad.as_bytes()), Err(why.to_owned()), "{bad}");
        }
    }
}
