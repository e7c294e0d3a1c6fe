//! The replay memory: the MAC of every signed update taken within the time
//! window, so the same signed message sent again (by anyone who saw it on
//! the wire) is refused. A MAC is forgotten once its signing time is out of
//! the window, since the time check refuses it from then on.
//!
//! Bounded: at most [`MAX_REMEMBERED`] MACs; when full of MACs still in
//! their window, new updates are refused rather than old MACs forgotten
//! (forgetting would reopen the replay). Only updates whose MAC verified
//! get here, so only key holders can fill it. No I/O; `now` is passed in.

use std::collections::HashMap;

use super::tsig::FUDGE;

/// MACs remembered at most: a sustained 6 updates a second for the whole
/// window (2 × 300 s) from every key together.
pub const MAX_REMEMBERED: usize = 4096;

/// Why a signed update was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// This MAC was taken before.
    Seen,
    /// The memory is full of MACs still in their window.
    Full,
}

/// MACs taken, with when each may be forgotten (Unix seconds).
#[derive(Debug, Default)]
pub struct ReplayMemory {
    seen: HashMap<Vec<u8>, u64>,
}

impl ReplayMemory {
    /// Takes the update signed at `signed` with `mac`, at `now`, unless it
    /// was taken before or the memory is full.
    pub fn take(&mut self, mac: &[u8], signed: u64, now: u64) -> Result<(), Replay> {
        if self.seen.contains_key(mac) {
            return Err(Replay::Seen);
        }
        if self.seen.len() >= MAX_REMEMBERED {
            self.seen.retain(|_, forget| *forget > now);
        }
        if self.seen.len() >= MAX_REMEMBERED {
            return Err(Replay::Full);
        }
        let forget = signed.saturating_add(u64::from(FUDGE)).saturating_add(1);
        self.seen.insert(mac.to_vec(), forget);
        Ok(())
    }

    /// How many MACs are remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_is_taken_once_and_forgotten_after_its_window() {
        let mut memory = ReplayMemory::default();
        let now = 1_765_000_000;
        assert_eq!(memory.take(b"mac-1", now, now), Ok(()));
        assert_eq!(memory.take(b"mac-1", now, now + 299), Err(Replay::Seen));
        // Full of other MACs long after: the old one is purged to make room,
        // and by then the time check refuses it anyway.
        for i in 0..MAX_REMEMBERED - 1 {
            assert_eq!(memory.take(format!("m{i}").as_bytes(), now, now), Ok(()));
        }
        assert_eq!(memory.len(), MAX_REMEMBERED);
        assert_eq!(memory.take(b"one more", now, now + 10), Err(Replay::Full));
        assert_eq!(
            memory.len(),
            MAX_REMEMBERED,
            "full means refused, not forgotten"
        );
        assert_eq!(memory.take(b"one more", now + 400, now + 400), Ok(()));
        assert_eq!(memory.len(), 1, "every expired MAC was purged");
    }
}
