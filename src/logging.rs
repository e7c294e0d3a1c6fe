//! Logging per `log.format` and `log.level`: with `json`, one JSON object
//! per line on stdout, which journald and log shippers take as is.

use std::io::IsTerminal;

use gatehouse_config::{LogConfig, LogFormat, LogLevel};
use tracing_subscriber::EnvFilter;

pub fn init(log: LogConfig) {
    // hickory logs every TCP response at info; per-query logs belong at debug.
    let quiet = match log.level {
        LogLevel::Debug | LogLevel::Trace => "",
        _ => ",hickory_server=warn,hickory_proto=warn,hickory_net=warn",
    };
    let filter = EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{}{quiet}", log.level.as_str())));
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
