//! The one back-off both servers' accept loops take after an accept error
//! that is not about one connection (EMFILE, ENFILE, ENOBUFS): pause instead
//! of spinning on a listener that keeps failing, and log it once per pause.

use std::time::Duration;

/// How long an accept loop pauses after such an error: long enough that a
/// full fd table costs no CPU, short enough that service resumes at once
/// when descriptors free up.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Sleep [`ACCEPT_ERROR_PAUSE`].
pub async fn accept_backoff() {
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}
