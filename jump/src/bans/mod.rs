//! Bans: failures from one source within `ban.within` reach `ban.after` and
//! the source is banned for `ban.for`, doubling on each repeat up to
//! `ban.max` (like OpenSSH's PerSourcePenalties and fail2ban's increasing
//! bantime).
//!
//! - `list`: [`BanList`], the bookkeeping (no I/O, `now` passed in);
//! - `file`: [`BanFile`], `state_dir/bans.json` (blocking I/O);
//! - `keeper`: the running server's owner of both — counts failures,
//!   persists the list from one writer task on a blocking thread, notices
//!   `gatehouse bans lift` and purges.

mod file;
mod keeper;
mod list;

pub use file::BanFile;
pub(crate) use keeper::BanKeeper;
pub(crate) use list::covering;
pub use list::{Ban, BanList, source_key};
