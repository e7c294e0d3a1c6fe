//! gatehouse's SSH jump host.
//!
//! Public key *and* a TOTP code (keyboard-interactive, `Verification code:`),
//! no shell, no passwords; once in, a user may open tunnels (`direct-tcpip`
//! for `ssh -J`/`-W`, or `exec nc HOST PORT` for the legacy ProxyCommand)
//! only to destinations their groups were granted. Everything else is
//! refused and audited.
//!
//! Layout:
//! - `auth`: the order of methods and what each result allows (no I/O);
//! - `totp`: codes, replay protection, enrollments on disk;
//! - `recovery`: one-time recovery codes, stored as salted Argon2id hashes;
//! - `limits`: per-user wrong-code limit (no I/O, `now` passed in);
//! - `gate`, `bans`: per-source rate, pre-auth slots and bans, decided
//!   from the peer address before any SSH byte (no I/O);
//! - `policy`: grant matching, the loopback/link-local rule (no I/O);
//! - `exec`: recognising the `nc` ProxyCommand (no I/O);
//! - `proxy`: resolve once, dial, pump with half-close;
//! - `quickack`: immediate TCP ACKs during the login (Nagle on the client);
//! - `audit`: one structured event per connection, attempt and tunnel;
//! - `metrics`: Prometheus counters, fed by the audit events;
//! - `hostkey`, `store`: the state directory, written atomically;
//! - `enroll`: enrollment screens and operator enrollment with a QR code;
//! - `laptop`: the `~/.ssh/config` block for a user's grants (text only);
//! - `workers`: one single-threaded runtime per core (`gatehouse-runtime`
//!   threads); a connection stays on one;
//! - `server`: the accept loop and the thin russh glue.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod audit;
mod auth;
mod bans;
mod enroll;
mod error;
mod exec;
mod gate;
mod hostkey;
mod laptop;
mod limits;
mod metrics;
mod policy;
mod proxy;
mod quickack;
mod recovery;
mod server;
mod store;
mod totp;
mod workers;

pub use auth::{Access, AfterKey, after_key};
pub use bans::{Ban, BanFile, BanList, ban_length, source_key};
pub use enroll::{
    CONFIRM_PROMPT, Confirmation, NewEnrollment, SelfEnrollment, Typed, enroll, recovery_screen,
    render_qr,
};
pub use error::JumpError;
pub use exec::{NcCommand, parse_nc};
pub use gate::{Gate, PreauthSlot, Turned};
pub use laptop::{cidr_pattern, ssh_config};
pub use metrics::register_metrics;
pub use policy::{Allowed, Refusal, decide};
pub use server::{JumpListeners, serve};
pub use totp::{CodeRefusal, Secret, Status, TotpStore, Verdict, check_code};
