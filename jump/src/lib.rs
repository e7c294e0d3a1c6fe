//! gatehouse's SSH jump host.
//!
//! Public key *and* a TOTP code (keyboard-interactive, `Verification code:`),
//! no shell, no passwords; once in, a user may open tunnels (`direct-tcpip`
//! for `ssh -J`/`-W`, or `exec nc HOST PORT` for the legacy ProxyCommand)
//! only to destinations their groups were granted. Everything else is
//! refused and audited.
//!
//! Layout — decisions (no I/O, `now` passed in where time matters):
//! - `auth`: the order of methods and what each result allows;
//! - `policy`: grant matching, the loopback/link-local rule;
//! - `gate`: per-source rate and pre-auth slots, from the peer address
//!   before any SSH byte;
//! - `header_wait`: who must send a PROXY header (canonical addresses), and
//!   which waiting header gives way to a newcomer;
//! - `bans` (`list`): failures into bans that double;
//! - `limits`: the per-user wrong-code limit;
//! - `exec` ([`parse_nc`]): recognising the `nc` ProxyCommand;
//! - `totp` (`check_code`), `recovery`: codes and one-time recovery codes;
//! - `certs`, `krl`: what a user certificate allows; revocation lists;
//! - `fido`: what a security key's (`sk-`) flags and counter allow;
//! - `enroll` (`SelfEnrollment`): the enrollment screen's text and editor.
//!
//! State, written atomically, read and written off the connection threads:
//! - `store`, `hostkey`: the state directory and the host key;
//! - `totp` (`TotpStore`): enrollments and replay state;
//! - `fido_counters`: the highest security-key counter seen per key;
//! - `fleet`: a fleet's Redis, sharing used steps and wrong codes;
//! - `bans` (`file`, `keeper`): the ban file and its single writer.
//!
//! I/O and glue:
//! - `server`: listeners, accept and admission, one connection and its
//!   watchdog, the russh handler, login, channels, tunnels, russh settings;
//! - `sessions`: live sessions, for offboarding on reload;
//! - `proxy`: resolve once, dial, pump with half-close;
//! - `proxy_header`: the PROXY protocol header a balancer sends first;
//! - `enroll` (`screen`): the enrollment screen on an ssh channel;
//! - `quickack`: immediate TCP ACKs during the login (Nagle on the client);
//! - `workers`: one single-threaded runtime per core (`gatehouse-runtime`
//!   threads); a connection stays on one;
//! - `audit`: [`AuditEvent`], the schema of every audit line, and its emission;
//! - `metrics`: Prometheus counters, fed by the audit events;
//! - `clock`: wall-clock seconds;
//! - `laptop`: the `~/.ssh/config` block for a user's grants (text only).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod audit;
mod auth;
mod bans;
mod certs;
mod clock;
mod enroll;
mod error;
mod exec;
mod fido;
mod fido_counters;
mod fleet;
mod gate;
mod header_wait;
mod hostkey;
mod krl;
mod laptop;
mod limits;
mod metrics;
mod policy;
mod proxy;
mod proxy_header;
mod quickack;
mod recovery;
mod server;
mod sessions;
mod store;
mod totp;
mod workers;

pub use audit::{
    AuditEvent, AuthResult, Method, REFUSALS_LOGGED, Request, SecurityKeyVerdict, TotpAction, Via,
};
pub use bans::{Ban, BanFile, BanList};
pub use enroll::{NewEnrollment, enroll};
pub use error::{JumpError, Untrusted};
/// The `exec nc HOST PORT` parser, public for the fuzz target (`fuzz/`):
/// an authenticated user's command line is hostile input too.
pub use exec::{NcCommand, parse_nc};
/// A security key's signature blob, decoded and judged: public for the
/// fuzz target (`fuzz/`), the client chooses these bytes.
pub use fido::judge_signature_blob;
pub use fleet::lift_fleet_ban;
pub use laptop::{known_hosts_line, ssh_config};
pub use metrics::{register_metrics, state_store_health};
pub use policy::{Allowed, Refusal, decide};
pub use server::{
    CHANNEL_FLOOR, CHANNEL_WINDOW, CLIENT_REKEYS, CONNECTION_WINDOWS, JumpListeners,
    PROCESS_WINDOWS, SHUTDOWN_GRACE, USER_WINDOWS, serve,
};
pub use store::check_state_dir;

/// Check the state folder ([`check_state_dir`]) and generate the host key
/// if there is none yet, before anything says ready. Blocking.
pub fn prepare_state(state_dir: &std::path::Path) -> Result<(), JumpError> {
    check_state_dir(state_dir)?;
    hostkey::load_or_generate(state_dir).map(drop)
}
pub use totp::{Grace, Status, TotpStore};
