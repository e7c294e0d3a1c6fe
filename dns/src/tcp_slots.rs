//! Who may hold a DNS-over-TCP connection: [`TCP_SLOTS`] at once over all
//! addresses, [`PER_PREFIX`] per client network ([`Prefix`]), and at the
//! global cap a connection is closed to make room (RFC 7766 §6.2.2): the
//! one idle the longest among the networks that hold the most, so
//! connections that send a byte and hold, even from many networks, cannot
//! keep a bystander's `dig +tcp` out: its network holds one.
//!
//! "Idle" is time since the connection's last complete message (or since it
//! was accepted). This file decides and keeps the table; it does no I/O and
//! reads no clock (`now` comes in), so it is tested without sockets.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use tokio_util::sync::CancellationToken;

use crate::prefix::Prefix;

/// Open TCP connections at once, all addresses together.
pub(crate) const TCP_SLOTS: usize = 256;

/// Open TCP connections from one client network. A resolver or a laptop
/// needs a handful; the cap keeps one network from taking the table.
pub(crate) const PER_PREFIX: usize = 16;

/// Why a new connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its network already holds [`PER_PREFIX`] connections.
    PrefixFull,
}

struct Slot {
    id: u64,
    prefix: Prefix,
    active: Instant,
    close: CancellationToken,
}

/// The table; [`Slots`] wraps it in a lock.
struct Table {
    slots: Vec<Option<Slot>>,
    /// Connections per network; an entry exists only while it is non-zero,
    /// so this holds at most [`TCP_SLOTS`] entries.
    per_prefix: HashMap<Prefix, usize>,
    next_id: u64,
}

/// What [`Table::admit`] did: the slot taken, and the connection told to
/// close to make room, if one was.
struct Admitted {
    index: usize,
    id: u64,
    close: CancellationToken,
    evicted: Option<CancellationToken>,
}

impl Table {
    fn new(capacity: usize) -> Table {
        Table {
            slots: (0..capacity).map(|_| None).collect(),
            per_prefix: HashMap::with_capacity(capacity),
            next_id: 0,
        }
    }

    fn admit(
        &mut self,
        prefix: Prefix,
        per_prefix: usize,
        now: Instant,
    ) -> Result<Admitted, Refused> {
        if self.per_prefix.get(&prefix).copied().unwrap_or(0) >= per_prefix {
            return Err(Refused::PrefixFull);
        }
        let mut evicted = None;
        let index = match self.slots.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                // Full: of the networks holding the most, the longest idle
                // connection goes. The table is full, so there is one.
                let most = self.per_prefix.values().copied().max().unwrap_or(0);
                let (oldest, _) = self
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
                    .filter(|(_, s)| self.per_prefix.get(&s.prefix) == Some(&most))
                    .map(|(i, s)| (i, s.active))
                    .min_by_key(|&(_, active)| active)
                    .ok_or(Refused::PrefixFull)?;
                if let Some(victim) = self.release(oldest) {
                    evicted = Some(victim);
                }
                oldest
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let close = CancellationToken::new();
        let slot = Slot {
            id,
            prefix,
            active: now,
            close: close.clone(),
        };
        if let Some(entry) = self.slots.get_mut(index) {
            *entry = Some(slot);
        }
        *self.per_prefix.entry(prefix).or_insert(0) += 1;
        Ok(Admitted {
            index,
            id,
            close,
            evicted,
        })
    }

    /// Frees slot `index`; returns its close token.
    fn release(&mut self, index: usize) -> Option<CancellationToken> {
        let slot = self.slots.get_mut(index)?.take()?;
        if let Some(count) = self.per_prefix.get_mut(&slot.prefix) {
            *count -= 1;
            if *count == 0 {
                self.per_prefix.remove(&slot.prefix);
            }
        }
        Some(slot.close)
    }

    /// The slot `index` if it still belongs to connection `id`.
    fn slot(&mut self, index: usize, id: u64) -> Option<&mut Slot> {
        self.slots
            .get_mut(index)?
            .as_mut()
            .filter(|slot| slot.id == id)
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

/// The shared table of TCP connections.
pub(crate) struct Slots {
    table: Mutex<Table>,
    per_prefix: usize,
}

impl Slots {
    pub(crate) fn new() -> Arc<Slots> {
        Slots::with_limits(TCP_SLOTS, PER_PREFIX)
    }

    fn with_limits(total: usize, per_prefix: usize) -> Arc<Slots> {
        Arc::new(Slots {
            table: Mutex::new(Table::new(total.max(1))),
            per_prefix,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table stays consistent across a panic (each change is one
        // step), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection from `ip`, evicting the longest idle one
    /// when all are taken; the slot is freed when the guard drops.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<SlotGuard, Refused> {
        let admitted = self.lock().admit(Prefix::of(ip), self.per_prefix, now)?;
        if let Some(victim) = admitted.evicted {
            victim.cancel();
        }
        Ok(SlotGuard {
            slots: Arc::clone(self),
            index: admitted.index,
            id: admitted.id,
            close: admitted.close,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.lock().open()
    }
}

/// One connection's slot.
pub(crate) struct SlotGuard {
    slots: Arc<Slots>,
    index: usize,
    id: u64,
    close: CancellationToken,
}

impl SlotGuard {
    /// Cancelled when this connection was evicted to make room.
    pub(crate) fn evicted(&self) -> &CancellationToken {
        &self.close
    }

    /// A complete message arrived: no longer idle.
    pub(crate) fn active(&self, now: Instant) {
        if let Some(slot) = self.slots.lock().slot(self.index, self.id) {
            slot.active = now;
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut table = self.slots.lock();
        if table.slot(self.index, self.id).is_some() {
            table.release(self.index);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn one_network_gets_its_share_and_no_more() {
        let slots = Slots::with_limits(8, 2);
        let now = Instant::now();
        let a = slots.admit(ip("192.0.2.1"), now).expect("first");
        let _b = slots.admit(ip("192.0.2.200"), now).expect("second");
        assert_eq!(
            slots.admit(ip("192.0.2.3"), now).err(),
            Some(Refused::PrefixFull)
        );
        let _c = slots
            .admit(ip("198.51.100.1"), now)
            .expect("another network");
        drop(a);
        let _d = slots.admit(ip("192.0.2.3"), now).expect("a share freed");
        assert_eq!(slots.open(), 3);
    }

    #[test]
    fn when_full_the_longest_idle_connection_is_closed_for_the_newcomer() {
        let slots = Slots::with_limits(3, 3);
        let t0 = Instant::now();
        let old = slots.admit(ip("192.0.2.1"), t0).expect("old");
        let busy = slots
            .admit(ip("192.0.2.2"), t0 + Duration::from_secs(1))
            .expect("busy");
        let newer = slots
            .admit(ip("192.0.2.3"), t0 + Duration::from_secs(2))
            .expect("newer");
        // `old` just sent a message: now `busy` has been idle longest.
        old.active(t0 + Duration::from_secs(3));
        let bystander = slots
            .admit(ip("198.51.100.7"), t0 + Duration::from_secs(4))
            .expect("a slot is made");
        assert!(busy.evicted().is_cancelled());
        assert!(!old.evicted().is_cancelled() && !newer.evicted().is_cancelled());
        assert!(!bystander.evicted().is_cancelled());
        assert_eq!(slots.open(), 3);
        // The evicted guard dropping later does not free the newcomer's slot.
        drop(busy);
        assert_eq!(slots.open(), 3);
        drop(bystander);
        assert_eq!(slots.open(), 2);
    }

    #[test]
    fn when_full_the_network_holding_the_most_gives_up_a_connection() {
        let slots = Slots::with_limits(3, 3);
        let t0 = Instant::now();
        // The bystander came first and has been idle longest; the other
        // network holds two.
        let bystander = slots.admit(ip("198.51.100.7"), t0).expect("bystander");
        let first = slots
            .admit(ip("192.0.2.1"), t0 + Duration::from_secs(1))
            .expect("1");
        let _second = slots
            .admit(ip("192.0.2.2"), t0 + Duration::from_secs(2))
            .expect("2");
        let _third = slots
            .admit(ip("203.0.113.1"), t0 + Duration::from_secs(3))
            .expect("3");
        assert!(first.evicted().is_cancelled());
        assert!(!bystander.evicted().is_cancelled());
    }
}
