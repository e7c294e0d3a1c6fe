//! The wall clock as DNS counts it: seconds since the epoch wrapped into
//! 32 bits, compared by serial arithmetic (RFC 1982), so the wrap in 2106
//! is harmless. SOA serials and cookie timestamps read it here; the
//! decisions take the value as an argument.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in DNS's 32-bit seconds.
pub(crate) fn unix_seconds() -> u32 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    u32::try_from(seconds & u64::from(u32::MAX)).unwrap_or(0)
}
