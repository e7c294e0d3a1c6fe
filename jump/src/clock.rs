//! Wall-clock seconds, the one place they are read from: activity stamps,
//! TOTP windows, ban expiry and enrollment dates all agree on "now".
//! Monotonic deadlines use `tokio::time::Instant` instead.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds of `t` (0 before 1970).
pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    unix(SystemTime::now())
}
