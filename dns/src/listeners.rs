//! Binding the listen sockets: UDP and TCP on the same port of each address.
//!
//! Binding happens before the server runs (and before privileges could be
//! dropped), so [`DnsListeners::bind`] is synchronous and keeps plain std
//! sockets; [`crate::serve`] hands them to the runtime.

use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    num::NonZeroUsize,
    thread,
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{DnsError, Transport};

/// At most this many UDP sockets (and worker loops) per address.
const MAX_UDP_WORKERS: usize = 4;

/// How many fresh ports to try when port 0 was asked for.
const PORT_ATTEMPTS: u32 = 16;

/// Pending TCP connections the kernel may queue.
const TCP_BACKLOG: i32 = 1024;

/// Sockets bound for every listen address: UDP and TCP on the same port.
#[derive(Debug)]
pub struct DnsListeners {
    pub(crate) addresses: Vec<BoundAddress>,
}

/// One listen address: its UDP sockets (one per worker) and its TCP listener.
#[derive(Debug)]
pub(crate) struct BoundAddress {
    pub(crate) local: SocketAddr,
    pub(crate) udp: Vec<UdpSocket>,
    pub(crate) tcp: TcpListener,
}

impl DnsListeners {
    /// Bind UDP and TCP on each address. Port 0: UDP picks the port first
    /// (a plain probe socket bound to port 0), then the UDP sockets and the
    /// TCP listener bind that port; if any finds it taken, a fresh port is
    /// tried (up to 16 times).
    ///
    /// UDP: several sockets per address with `SO_REUSEPORT` (one per worker,
    /// workers = available parallelism capped at 4), so the kernel spreads
    /// datagrams across them.
    pub fn bind(addrs: &[SocketAddr]) -> Result<DnsListeners, DnsError> {
        if addrs.is_empty() {
            return Err(DnsError::NoListenAddresses);
        }
        let workers = udp_workers();
        let addresses = addrs
            .iter()
            .map(|&addr| bind_address(addr, workers))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DnsListeners { addresses })
    }

    /// The actual bound addresses (one per configured address; same port for
    /// UDP and TCP).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addresses.iter().map(|a| a.local).collect()
    }
}

fn udp_workers() -> usize {
    if cfg!(unix) {
        thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .min(MAX_UDP_WORKERS)
    } else {
        // Without SO_REUSEPORT, one socket per address.
        1
    }
}

fn bind_address(addr: SocketAddr, workers: usize) -> Result<BoundAddress, DnsError> {
    if addr.port() != 0 {
        return bind_port(addr, workers);
    }
    for _ in 0..PORT_ATTEMPTS {
        let port = free_udp_port(addr)?;
        match bind_port(SocketAddr::new(addr.ip(), port), workers) {
            Ok(bound) => return Ok(bound),
            // Someone took the port between the probe and now, or it is in
            // use for TCP: try another.
            Err(error) if error.is_addr_in_use() => {}
            Err(error) => return Err(error),
        }
    }
    Err(DnsError::NoFreePort {
        addr,
        attempts: PORT_ATTEMPTS,
    })
}

/// Asks the kernel for a UDP port on `addr`'s IP that nothing uses.
///
/// The probe socket deliberately lacks `SO_REUSEPORT`: Linux will hand a
/// port-0 bind *with* it a port that another same-user `SO_REUSEPORT`
/// socket already holds, and the two would then share each other's traffic.
fn free_udp_port(addr: SocketAddr) -> Result<u16, DnsError> {
    let bind_error = |source| DnsError::Bind {
        addr,
        transport: Transport::Udp,
        source,
    };
    let probe = UdpSocket::bind(addr).map_err(bind_error)?;
    let port = probe.local_addr().map_err(bind_error)?.port();
    Ok(port)
}

/// Binds `workers` UDP sockets and one TCP listener on `addr` (a real port).
fn bind_port(addr: SocketAddr, workers: usize) -> Result<BoundAddress, DnsError> {
    let udp = (0..workers)
        .map(|_| udp_socket(addr))
        .collect::<Result<Vec<_>, _>>()?;
    // TCP after UDP: TCP sockets never share a port here, so a second
    // gatehouse on the same address fails on TCP even where UDP's
    // SO_REUSEPORT let it in.
    let tcp = tcp_listener(addr)?;
    Ok(BoundAddress {
        local: addr,
        udp,
        tcp,
    })
}

fn udp_socket(addr: SocketAddr) -> Result<UdpSocket, DnsError> {
    let bind_error = |source| DnsError::Bind {
        addr,
        transport: Transport::Udp,
        source,
    };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(bind_error)?;
    if addr.is_ipv6() {
        // `[::]:53` means IPv6 only; IPv4 is listed separately if wanted.
        socket.set_only_v6(true).map_err(bind_error)?;
    }
    #[cfg(unix)]
    socket.set_reuse_port(true).map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(bind_error)?;
    socket.bind(&addr.into()).map_err(bind_error)?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> Result<TcpListener, DnsError> {
    let bind_error = |source| DnsError::Bind {
        addr,
        transport: Transport::Tcp,
        source,
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(bind_error)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(bind_error)?;
    }
    // Lets a restart bind while old connections sit in TIME_WAIT; it does
    // not let two live listeners share the port.
    #[cfg(unix)]
    socket.set_reuse_address(true).map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(bind_error)?;
    socket.bind(&addr.into()).map_err(bind_error)?;
    socket.listen(TCP_BACKLOG).map_err(bind_error)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gets_one_port_for_udp_and_tcp() {
        let listeners =
            DnsListeners::bind(&["127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))])
                .unwrap_or_else(|e| panic!("{e}"));
        let [local] = listeners.local_addrs()[..] else {
            panic!("one address expected");
        };
        assert_ne!(local.port(), 0);
        let bound = &listeners.addresses[0];
        assert!(!bound.udp.is_empty() && bound.udp.len() <= MAX_UDP_WORKERS);
        for udp in &bound.udp {
            assert_eq!(udp.local_addr().ok(), Some(local));
        }
        assert_eq!(bound.tcp.local_addr().ok(), Some(local));
    }

    #[test]
    fn a_taken_tcp_port_is_an_error_naming_address_and_transport() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = taken.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let error = DnsListeners::bind(&[addr]).err();
        match error {
            Some(DnsError::Bind {
                addr: failed,
                transport: Transport::Tcp,
                ..
            }) => assert_eq!(failed, addr),
            other => panic!("expected a TCP bind error, got {other:?}"),
        }
    }

    #[test]
    fn no_addresses_is_an_error() {
        assert!(matches!(
            DnsListeners::bind(&[]),
            Err(DnsError::NoListenAddresses)
        ));
    }
}
