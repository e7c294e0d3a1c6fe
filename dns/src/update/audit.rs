//! The DNS side's audit line: one `dns_update` event per update taken
//! (applied, unchanged or refused), with `target: "audit"` like the jump
//! host's events. [`DnsAudit`] is the schema (serde), [`emit`] the only
//! writer; the tests read lines back as the same type. Must not decide
//! anything: it records what `service` decided.
//!
//! Bounded: every field is either ours or comes from a message of at most
//! `MAX_UPDATE_LEN` octets, and each change list is cut at
//! [`MAX_LOGGED_CHANGES`] entries.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tracing::info;

/// Changes named in one audit line; the rest are counted.
pub const MAX_LOGGED_CHANGES: usize = 32;

/// What an update came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateResult {
    /// Names changed, written to `state_dir`, and answered.
    Applied,
    /// Authenticated and every prerequisite held; nothing to change.
    Unchanged,
    /// Refused; nothing changed.
    Refused,
}

impl UpdateResult {
    /// As in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateResult::Applied => "applied",
            UpdateResult::Unchanged => "unchanged",
            UpdateResult::Refused => "refused",
        }
    }
}

/// One DNS audit line. The JSON object has `"target": "audit"`, `"event"`
/// and the variant's fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DnsAudit {
    /// An RFC 2136 UPDATE.
    DnsUpdate {
        /// Who sent it.
        client: SocketAddr,
        /// `udp` or `tcp`.
        transport: String,
        /// The TSIG key that signed it, if one verified.
        #[serde(default)]
        key: Option<String>,
        /// What it came to.
        result: UpdateResult,
        /// The response code sent (`NOERROR`, `REFUSED`, `NOTAUTH`...).
        rcode: String,
        /// The TSIG error sent (`BADSIG`, `BADKEY`, `BADTIME`), if any.
        #[serde(default)]
        tsig_error: Option<String>,
        /// Why, for people.
        reason: String,
        /// What changed, one entry each (`+A trumpet.sean 10.0.0.5`).
        #[serde(default)]
        changes: String,
    },
}

/// Writes `event` as one audit line.
pub fn emit(event: &DnsAudit) {
    match event {
        DnsAudit::DnsUpdate {
            client,
            transport,
            key,
            result,
            rcode,
            tsig_error,
            reason,
            changes,
        } => {
            let result = result.as_str();
            info!(
                target: "audit",
                event = "dns_update",
                %client,
                transport,
                key,
                result,
                rcode,
                tsig_error,
                reason,
                changes,
                "dns update from {client}: {result} ({rcode}): {reason}"
            );
        }
    }
}

/// The changes for an audit line: at most [`MAX_LOGGED_CHANGES`], then how
/// many more.
pub fn changes_line(changes: &[String]) -> String {
    let mut line = changes
        .iter()
        .take(MAX_LOGGED_CHANGES)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("; ");
    if changes.len() > MAX_LOGGED_CHANGES {
        line.push_str(&format!(
            "; …and {} more",
            changes.len() - MAX_LOGGED_CHANGES
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
    };

    use super::*;

    /// Collects what the JSON formatter writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn every_event() -> Vec<DnsAudit> {
        let client = "192.0.2.9:5353".parse().expect("addr");
        vec![
            DnsAudit::DnsUpdate {
                client,
                transport: "udp".into(),
                key: Some("vagrant".into()),
                result: UpdateResult::Applied,
                rcode: "NOERROR".into(),
                tsig_error: None,
                reason: "serial 7".into(),
                changes: "+A trumpet.sean 10.0.0.5".into(),
            },
            DnsAudit::DnsUpdate {
                client,
                transport: "tcp".into(),
                key: None,
                result: UpdateResult::Refused,
                rcode: "NOTAUTH".into(),
                tsig_error: Some("BADSIG".into()),
                reason: "the MAC does not verify".into(),
                changes: String::new(),
            },
            DnsAudit::DnsUpdate {
                client,
                transport: "udp".into(),
                key: Some("vagrant".into()),
                result: UpdateResult::Unchanged,
                rcode: "NOERROR".into(),
                tsig_error: None,
                reason: "nothing to change".into(),
                changes: String::new(),
            },
        ]
    }

    #[test]
    fn every_event_round_trips_through_the_json_log() {
        let events = every_event();
        let mut parsed: Vec<DnsAudit> = Vec::new();
        // tracing's interest cache is global: another test thread may have
        // cached "never" for the callsite; the round again is the fix.
        for _ in 0..5 {
            let lines = Lines::default();
            let writer = lines.clone();
            let subscriber = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::callsite::rebuild_interest_cache();
                events.iter().for_each(emit);
            });
            let text = String::from_utf8(lines.0.lock().expect("lock").clone()).expect("utf-8");
            parsed = text
                .lines()
                .map(|line| {
                    let value: serde_json::Value = serde_json::from_str(line).expect("JSON");
                    assert_eq!(value["target"], "audit", "{line}");
                    serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}: {line}"))
                })
                .collect();
            if parsed.len() == events.len() {
                break;
            }
        }
        assert_eq!(parsed, events);
    }

    #[test]
    fn a_long_change_list_is_cut_with_a_count() {
        let changes: Vec<String> = (0..40).map(|i| format!("+A n{i}.sean 10.0.0.1")).collect();
        let line = changes_line(&changes);
        assert_eq!(line.matches("+A").count(), MAX_LOGGED_CHANGES);
        assert!(line.ends_with("…and 8 more"), "{line}");
    }
}
