//! (patch 0007) A budget for the receive windows a server grants.
//!
//! Every byte of window granted to a client is a byte the server may have
//! to hold until the channel's reader takes it. Patch 0001 keeps each
//! channel within its window; this bounds the sum: per session, and across
//! sessions through shared [`WindowPool`]s (for example one per user and
//! one for the process).
//!
//! With a [`WindowBudget`] configured, a channel opens with **no** window
//! and is granted one only while its reader reads: a channel nobody reads
//! holds nothing but its requests. Each channel may hold a small `floor`
//! that no budget takes away, so a busy session or pool slows its other
//! channels down but never stops them; above the floor, a channel's share
//! is the session's budget divided among its open channels (never more than
//! the configured window), and every pool it draws from must have room.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::ChannelId;

/// Receive window shared by many sessions: they draw from it while their
/// channels hold data granted above the floor, and give it back as the
/// readers consume it, the channels close and the sessions end.
#[derive(Debug)]
pub struct WindowPool {
    limit: usize,
    used: AtomicUsize,
}

impl WindowPool {
    /// A pool of `limit` bytes.
    pub fn new(limit: usize) -> Arc<WindowPool> {
        Arc::new(WindowPool {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes drawn now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Take up to `want` bytes; returns what was taken.
    fn take_up_to(&self, want: usize) -> usize {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let took = want.min(self.limit.saturating_sub(used));
            if took == 0 {
                return 0;
            }
            match self.used.compare_exchange_weak(
                used,
                used + took,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return took,
                Err(now) => used = now,
            }
        }
    }

    fn give_back(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

/// How much receive window a session may grant (`Config::window_budget`).
#[derive(Debug, Clone)]
pub struct WindowBudget {
    /// The most one session's channels may hold above their floors.
    pub per_session: usize,
    /// What each channel may hold whatever the budget and pools say.
    pub floor: u32,
    /// Pools every session draws from (e.g. the whole process's).
    pub pools: Vec<Arc<WindowPool>>,
}

/// One session's window account: what each channel holds above its floor,
/// drawn from the session's own budget and from every pool.
#[derive(Debug)]
pub(crate) struct WindowAccount {
    budget: WindowBudget,
    used: usize,
    held: HashMap<ChannelId, usize>,
}

impl WindowAccount {
    pub(crate) fn new(budget: WindowBudget) -> WindowAccount {
        WindowAccount {
            budget,
            used: 0,
            held: HashMap::new(),
        }
    }

    /// Also draw from `pool`. Only before anything is held, so that what is
    /// given back always goes to the pools it was taken from.
    pub(crate) fn add_pool(&mut self, pool: Arc<WindowPool>) -> bool {
        if self.used > 0 {
            return false;
        }
        self.budget.pools.push(pool);
        true
    }

    /// The window a channel aims for when `open` channels share the
    /// session's budget: its floor at least, `target` at most.
    pub(crate) fn share(&self, open: usize, target: u32) -> u32 {
        let each = self.budget.per_session / open.max(1);
        let each = u32::try_from(each).unwrap_or(u32::MAX);
        each.max(self.budget.floor).min(target)
    }

    fn give_back(&mut self, n: usize) {
        self.used -= n;
        for pool in &self.budget.pools {
            pool.give_back(n);
        }
    }

    /// Take up to `want` from the session's budget and every pool.
    fn take_up_to(&mut self, want: usize) -> usize {
        let mut took = want.min(self.budget.per_session.saturating_sub(self.used));
        for (i, pool) in self.budget.pools.iter().enumerate() {
            if took == 0 {
                break;
            }
            let got = pool.take_up_to(took);
            if got < took {
                // The pools before this one gave more: their excess goes back.
                for earlier in &self.budget.pools[..i] {
                    earlier.give_back(took - got);
                }
                took = got;
            }
        }
        self.used += took;
        took
    }

    /// Channel `id` holds `outstanding` bytes (window left to the peer plus
    /// data unread) and asks for `want` more: how much may be granted. What
    /// the channel no longer holds above its floor goes back first.
    pub(crate) fn grant(&mut self, id: ChannelId, outstanding: usize, want: u32) -> u32 {
        let floor = usize::try_from(self.budget.floor).unwrap_or(usize::MAX);
        let above = outstanding.saturating_sub(floor);
        let held = self.held.get(&id).copied().unwrap_or(0);
        if held > above {
            self.give_back(held - above);
        }
        let held = held.min(above);
        let want = usize::try_from(want).unwrap_or(usize::MAX);
        // Up to the floor is free; beyond it every byte is drawn.
        let free = floor.saturating_sub(outstanding).min(want);
        let drawn = self.take_up_to(want - free);
        self.held.insert(id, held + drawn);
        u32::try_from(free + drawn).unwrap_or(u32::MAX)
    }

    /// Channel `id` is gone: what it held goes back.
    pub(crate) fn forget(&mut self, id: ChannelId) {
        if let Some(held) = self.held.remove(&id) {
            self.give_back(held);
        }
    }
}

impl Drop for WindowAccount {
    fn drop(&mut self) {
        let used = self.used;
        self.give_back(used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ChannelId {
        ChannelId(n)
    }

    fn budget(per_session: usize, pools: Vec<Arc<WindowPool>>) -> WindowBudget {
        WindowBudget {
            per_session,
            floor: 100,
            pools,
        }
    }

    #[test]
    fn the_floor_is_free_and_the_rest_is_drawn_from_the_session_and_its_pools() {
        let pool = WindowPool::new(10_000);
        let mut account = WindowAccount::new(budget(1_000, vec![Arc::clone(&pool)]));
        // 100 free, 1,000 drawn: the session's budget is then spent.
        assert_eq!(account.grant(id(1), 0, 5_000), 1_100);
        assert_eq!(pool.in_use(), 1_000);
        // Another channel gets its floor only.
        assert_eq!(account.grant(id(2), 0, 5_000), 100);
        // Channel 1's reader consumed 600 of its 1,100: 600 go back, and
        // 500 are granted again.
        assert_eq!(account.grant(id(1), 500, 500), 500);
        assert_eq!(pool.in_use(), 900);
        account.forget(id(1));
        assert_eq!(pool.in_use(), 0);
        drop(account);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn a_full_pool_limits_every_session_drawing_from_it() {
        let pool = WindowPool::new(1_000);
        let mut a = WindowAccount::new(budget(10_000, vec![Arc::clone(&pool)]));
        let mut b = WindowAccount::new(budget(10_000, vec![Arc::clone(&pool)]));
        assert_eq!(a.grant(id(1), 0, 800), 800);
        assert_eq!(b.grant(id(1), 0, 800), 100 + 300);
        assert_eq!(pool.in_use(), 1_000);
        drop(a);
        assert_eq!(pool.in_use(), 300);
        assert_eq!(b.grant(id(1), 400, 1_000), 700);
        assert_eq!(pool.in_use(), 1_000);
    }

    #[test]
    fn the_smallest_of_several_pools_wins_and_the_others_get_their_excess_back() {
        let big = WindowPool::new(10_000);
        let small = WindowPool::new(300);
        let mut a = WindowAccount::new(budget(
            10_000,
            vec![Arc::clone(&big), Arc::clone(&small)],
        ));
        assert_eq!(a.grant(id(1), 0, 5_000), 100 + 300);
        assert_eq!((big.in_use(), small.in_use()), (300, 300));
        drop(a);
        assert_eq!((big.in_use(), small.in_use()), (0, 0));
    }

    #[test]
    fn a_share_is_the_budget_divided_among_open_channels_within_floor_and_target() {
        let a = WindowAccount::new(budget(8_000, Vec::new()));
        assert_eq!(a.share(1, 2_000), 2_000);
        assert_eq!(a.share(8, 2_000), 1_000);
        assert_eq!(a.share(1_000, 2_000), 100);
        assert_eq!(a.share(0, 2_000), 2_000);
    }

    #[test]
    fn pools_are_added_only_before_anything_is_held() {
        let mut a = WindowAccount::new(budget(1_000, Vec::new()));
        assert!(a.add_pool(WindowPool::new(10)));
        assert_eq!(a.grant(id(1), 0, 1_000), 110);
        assert!(!a.add_pool(WindowPool::new(10)));
    }
}
