//! The PROXY header wait, as decisions: which peer is a balancer (its
//! address canonical, so an IPv4 balancer reaching a dual-stack `[::]`
//! listener as `::ffff:a.b.c.d` still matches `jump.proxy_protocol.from`),
//! and which pending header gives way when too many wait at once: the
//! oldest, so idle sockets from a balancer's address cannot keep the
//! balancer's real connections out (issue 24).
//!
//! Must not touch a socket, read a header (`proxy_header`) or admit anyone
//! (`gate`): `server::accept` does the I/O around these.

use std::{
    collections::VecDeque,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

/// `peer` as the rest of the server sees it: an IPv4-mapped IPv6 address
/// (what a dual-stack listener reports for an IPv4 client) as the IPv4
/// address it is.
pub(crate) fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// Is `peer` one of the balancers in `proxy_from`, so that its connections
/// must start with a PROXY header?
pub(crate) fn from_balancer(proxy_from: &[IpNet], peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    proxy_from.iter().any(|net| net.contains(&peer))
}

/// The connections waiting for their PROXY header, oldest first.
#[derive(Debug)]
pub(crate) struct HeaderWait {
    max: usize,
    next: u64,
    pending: VecDeque<Pending>,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    evict: CancellationToken,
}

/// A place in the wait, as [`HeaderWait::admit`] gives it.
#[derive(Debug)]
pub(crate) struct Place {
    /// To give the place back ([`HeaderWait::done`]).
    pub(crate) id: u64,
    /// Cancelled when a newer connection takes the place.
    pub(crate) evict: CancellationToken,
    /// The connection evicted to make room, if any (its token cancelled).
    pub(crate) evicted: Option<u64>,
}

impl HeaderWait {
    /// At most `max` (at least one) connections wait at once.
    pub(crate) fn new(max: usize) -> HeaderWait {
        HeaderWait {
            max: max.max(1),
            next: 0,
            pending: VecDeque::new(),
        }
    }

    /// A place for a new connection. Never refused: with `max` waiting,
    /// the oldest is evicted. A balancer sends its header as soon as it has
    /// connected, so its connections wait for microseconds; a socket still
    /// waiting when `max` newer ones have come is the one not worth keeping.
    pub(crate) fn admit(&mut self) -> Place {
        let mut evicted = None;
        while self.pending.len() >= self.max {
            let Some(oldest) = self.pending.pop_front() else {
                break;
            };
            oldest.evict.cancel();
            evicted = Some(oldest.id);
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        let evict = CancellationToken::new();
        self.pending.push_back(Pending {
            id,
            evict: evict.clone(),
        });
        Place { id, evict, evicted }
    }

    /// Connection `id` has its header, or is gone (evicted ones included).
    pub(crate) fn done(&mut self, id: u64) {
        self.pending.retain(|p| p.id != id);
    }

    /// How many wait.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.len()
    }
}

/// A connection's place in a shared [`HeaderWait`], given back when it is
/// dropped however the wait ended.
pub(crate) struct Waiting {
    wait: Arc<Mutex<HeaderWait>>,
    id: u64,
}

impl Waiting {
    /// Take a place in `wait`: the place's eviction token and the evicted
    /// connection, if one was.
    pub(crate) fn take(wait: &Arc<Mutex<HeaderWait>>) -> (Waiting, CancellationToken, Option<u64>) {
        // No await under the lock; a poisoned one still holds valid data.
        let place = wait.lock().unwrap_or_else(|p| p.into_inner()).admit();
        let waiting = Waiting {
            wait: Arc::clone(wait),
            id: place.id,
        };
        (waiting, place.evict, place.evicted)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let id = self.id;
        self.wait.lock().unwrap_or_else(|p| p.into_inner()).done(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|n| n.parse().unwrap_or_else(|e| panic!("{n}: {e}")))
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn an_ipv4_balancer_on_a_dual_stack_listener_is_still_the_balancer() {
        let from = nets(&["127.0.0.0/8", "10.0.0.0/24"]);
        assert!(from_balancer(&from, ip("127.0.0.9")));
        assert!(from_balancer(&from, ip("::ffff:127.0.0.9")));
        assert!(from_balancer(&from, ip("::ffff:10.0.0.200")));
        assert!(!from_balancer(&from, ip("::ffff:10.0.1.1")));
        assert!(!from_balancer(&from, ip("10.0.1.1")));
        // Not mapped: IPv4-compatible (deprecated) and NAT64 addresses are
        // other hosts, never the IPv4 balancer.
        assert!(!from_balancer(&from, ip("::127.0.0.9")));
        assert!(!from_balancer(&from, ip("64:ff9b::7f00:9")));
        // An IPv6 balancer is matched as itself.
        let v6 = nets(&["2001:db8::/64"]);
        assert!(from_balancer(&v6, ip("2001:db8::5")));
        assert!(!from_balancer(&v6, ip("2001:db8:0:1::5")));
        assert!(!from_balancer(&[], ip("::ffff:127.0.0.9")));
    }

    #[test]
    fn the_canonical_peer_keeps_its_port() {
        let mapped: SocketAddr = "[::ffff:127.0.0.9]:40000"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(canonical(mapped).to_string(), "127.0.0.9:40000");
        let v6: SocketAddr = "[2001:db8::5]:22".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn a_newcomer_evicts_the_oldest_pending_header_never_is_refused() {
        let mut wait = HeaderWait::new(3);
        let first: Vec<Place> = (0..3).map(|_| wait.admit()).collect();
        assert!(first.iter().all(|p| p.evicted.is_none()));
        assert_eq!(wait.len(), 3);

        let fourth = wait.admit();
        assert_eq!(fourth.evicted, Some(first[0].id));
        assert!(first[0].evict.is_cancelled());
        assert!(!first[1].evict.is_cancelled() && !first[2].evict.is_cancelled());
        assert_eq!(wait.len(), 3, "bounded");

        // One done (its header read): room without evicting anyone.
        wait.done(first[2].id);
        let fifth = wait.admit();
        assert_eq!(fifth.evicted, None);
        // Then the oldest still waiting goes, not the newer ones.
        let sixth = wait.admit();
        assert_eq!(sixth.evicted, Some(first[1].id));
        let seventh = wait.admit();
        assert_eq!(seventh.evicted, Some(fourth.id));
        assert!(!fifth.evict.is_cancelled() && !sixth.evict.is_cancelled());
        // An evicted connection giving its place back is harmless.
        wait.done(first[0].id);
        assert_eq!(wait.len(), 3);
    }

    #[test]
    fn a_flood_of_idle_sockets_cannot_keep_a_real_header_out() {
        let mut wait = HeaderWait::new(256);
        let idle: Vec<Place> = (0..1000).map(|_| wait.admit()).collect();
        assert_eq!(wait.len(), 256);
        // 744 evicted, oldest first; the newest 256 wait.
        assert_eq!(idle.iter().filter(|p| p.evict.is_cancelled()).count(), 744);
        assert!(idle[..744].iter().all(|p| p.evict.is_cancelled()));
        // The balancer's real connection gets a place and, sending its
        // header at once, keeps it until it is done.
        let real = wait.admit();
        assert!(!real.evict.is_cancelled());
        wait.done(real.id);
        assert_eq!(wait.len(), 255);
    }

    #[test]
    fn a_place_is_given_back_when_dropped() {
        let wait = Arc::new(Mutex::new(HeaderWait::new(2)));
        let (a, a_evict, _) = Waiting::take(&wait);
        let (b, _, _) = Waiting::take(&wait);
        let (c, _, evicted) = Waiting::take(&wait);
        assert_eq!(evicted, Some(a.id));
        assert!(a_evict.is_cancelled());
        drop(a);
        let len = |w: &Arc<Mutex<HeaderWait>>| w.lock().map(|w| w.len()).unwrap_or(usize::MAX);
        assert_eq!(len(&wait), 2);
        drop((b, c));
        assert_eq!(len(&wait), 0);
    }
}
