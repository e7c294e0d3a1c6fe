//! Logging per `log.format` and `log.level`: with `json`, one JSON object
//! per line on stdout, which journald and log shippers take as is.
//!
//! `log.level` is gatehouse's own (its crates and the `audit` target);
//! dependencies (russh, hickory, notify, mio, ...) stay at `warn`, so
//! `level: trace` cannot turn on every library's per-packet or per-event
//! output (notify's own trace of each file event once fed a log written
//! beside the config: hundreds of MB in seconds). `RUST_LOG` (or
//! `GATEHOUSE_LOG`) replaces the whole filter, for a look inside a
//! dependency.

use std::io::IsTerminal;

use gatehouse_config::{LogConfig, LogFormat, LogLevel};
use tracing_subscriber::EnvFilter;

/// gatehouse's own targets: its crates and the audit trail.
const OWN_TARGETS: &[&str] = &[
    "gatehouse",
    "gatehouse_config",
    "gatehouse_dns",
    "gatehouse_jump",
    "gatehouse_runtime",
    "audit",
];

/// The filter for `level` when no environment variable overrides it.
fn default_filter(level: LogLevel) -> String {
    let deps = match level {
        LogLevel::Error => "error",
        _ => "warn",
    };
    let level = level.as_str();
    let mut filter = String::from(deps);
    for target in OWN_TARGETS {
        filter += &format!(",{target}={level}");
    }
    filter
}

pub fn init(log: LogConfig) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_from_env("GATEHOUSE_LOG"))
        .unwrap_or_else(|_| EnvFilter::new(default_filter(log.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Pretty => builder.with_ansi(std::io::stdout().is_terminal()).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_is_gatehouses_and_dependencies_stay_at_warn() {
        let filter = default_filter(LogLevel::Trace);
        assert!(filter.starts_with("warn,"), "{filter}");
        for target in OWN_TARGETS {
            assert!(filter.contains(&format!(",{target}=trace")), "{filter}");
        }
        assert!(
            !filter.contains("russh") && !filter.contains("notify"),
            "{filter}"
        );
        // What EnvFilter accepts.
        assert!(EnvFilter::try_new(&filter).is_ok());
        assert!(default_filter(LogLevel::Error).starts_with("error,"));
    }
}
