//! The jump host's own addresses: what a broad grant must not reach (a
//! tunnel to the jump host itself, to docker0, to a management NIC). Every
//! interface address, whatever the listen addresses, refreshed every
//! [`REFRESH`] so an interface that comes up later is covered.
//!
//! Owns the list and its refresh; the rule that uses it is `policy`'s.
//! Must not block a runtime thread: reading the interfaces (getifaddrs) is
//! done on a blocking thread.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

/// How often the interface addresses are read again.
pub(super) const REFRESH: Duration = Duration::from_secs(60);

/// The current list, swapped whole on refresh.
pub(super) struct OwnAddresses {
    listen: Vec<SocketAddr>,
    current: Mutex<Arc<Vec<IpAddr>>>,
}

impl OwnAddresses {
    /// Read the list for a server listening on `listen` (blocking thread).
    pub(super) async fn new(listen: Vec<SocketAddr>) -> OwnAddresses {
        let first = read(listen.clone()).await;
        OwnAddresses {
            listen,
            current: Mutex::new(Arc::new(first)),
        }
    }

    /// The addresses as last read.
    pub(super) fn get(&self) -> Arc<Vec<IpAddr>> {
        Arc::clone(&self.current.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Read the interfaces again.
    pub(super) async fn refresh(&self) {
        let fresh = Arc::new(read(self.listen.clone()).await);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
    }
}

async fn read(listen: Vec<SocketAddr>) -> Vec<IpAddr> {
    let interfaces = tokio::task::spawn_blocking(interface_addresses)
        .await
        .unwrap_or_default();
    own_addresses(&listen, interfaces)
}

/// Every address of every interface (blocking: getifaddrs); none if they
/// cannot be read.
fn interface_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        tracing::warn!("cannot read the interface addresses; only the listen addresses are own");
        return Vec::new();
    };
    interfaces
        .filter_map(|i| i.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}

/// The addresses this host answers on, loopback aside (it has its own
/// rule): the listen addresses and every interface address.
fn own_addresses(listen: &[SocketAddr], interfaces: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut own: Vec<IpAddr> = listen
        .iter()
        .map(SocketAddr::ip)
        .filter(|ip| !ip.is_unspecified())
        .chain(interfaces)
        .collect();
    own.retain(|ip| !ip.is_loopback());
    own.sort();
    own.dedup();
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interface_counts_whatever_the_listen_address() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let listen = [SocketAddr::from(([127, 0, 0, 1], 2222))];
        let own = own_addresses(
            &listen,
            vec![
                ip("127.0.0.1"),
                ip("172.17.0.1"),
                ip("10.9.0.5"),
                ip("::1"),
                ip("10.9.0.5"),
            ],
        );
        assert_eq!(own, [ip("10.9.0.5"), ip("172.17.0.1")]);
        let listen = [SocketAddr::from(([192, 0, 2, 7], 2222))];
        assert_eq!(own_addresses(&listen, Vec::new()), [ip("192.0.2.7")]);
    }

    #[tokio::test]
    async fn this_hosts_interfaces_are_read_on_a_specific_listen_address_too() {
        let listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
        let own = OwnAddresses::new(listen).await;
        let mut expected: Vec<IpAddr> = interface_addresses()
            .into_iter()
            .filter(|ip| !ip.is_loopback())
            .collect();
        expected.sort();
        expected.dedup();
        assert_eq!(*own.get(), expected);
        own.refresh().await;
        assert_eq!(*own.get(), expected);
    }
}
