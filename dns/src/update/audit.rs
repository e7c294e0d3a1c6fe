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
