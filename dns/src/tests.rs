//! Socket tests: the real server on loopback, driven with hickory-proto messages.

use std::{
    collections::BTreeSet, net::SocketAddr, path::Path, str::FromStr, sync::Arc, time::Duration,
};

use gatehouse_config::Config;
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType, rdata::A},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::watch,
    task::JoinHandle,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

use crate::{
    DnsError, DnsListeners, serve,
    server::{SHUTDOWN_GRACE, serve_within},
};

const WAIT: Duration = Duration::from_secs(10);

fn config(yaml: &str) -> Arc<Config> {
    Arc::new(
        gatehouse_config::parse(Path::new("test.yaml"), yaml)
            .unwrap_or_else(|e| panic!("test config does not parse: {e}")),
    )
}

fn zone_yaml(saxophone: &str, upstream: Option<SocketAddr>) -> String {
    let mut yaml = format!(
        "dns:\n  listen: [\"127.0.0.1:0\"]\n  zones:\n    sean:\n      records:\n        saxophone: {saxophone}\n"
    );
    // These tests are about the server's loops, not its limits: the
    // bursts below send hundreds of queries from loopback at once.
    yaml.push_str("  rate_limit: { trusted: [\"127.0.0.0/8\"] }\n");
    if let Some(upstream) = upstream {
        yaml.push_str(&format!("  upstream: [\"{upstream}\"]\n"));
    }
    yaml
}

struct Running {
    addr: SocketAddr,
    config: watch::Sender<Arc<Config>>,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), DnsError>>,
}

fn start(yaml: &str) -> Running {
    start_within(yaml, SHUTDOWN_GRACE)
}

/// A server whose in-flight work gets `grace` at shutdown.
fn start_within(yaml: &str, grace: Duration) -> Running {
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    let listeners = DnsListeners::bind(&[localhost]).unwrap_or_else(|e| panic!("{e}"));
    let [addr] = listeners.local_addrs()[..] else {
        panic!("one address expected");
    };
    let (config_tx, config_rx) = watch::channel(config(yaml));
    let shutdown = CancellationToken::new();
    let server = if grace == SHUTDOWN_GRACE {
        tokio::spawn(serve(listeners, config_rx, shutdown.clone()))
    } else {
        tokio::spawn(serve_within(listeners, config_rx, shutdown.clone(), grace))
    };
    Running {
        addr,
        config: config_tx,
        shutdown,
        server,
    }
}

fn query(id: u16, qname: &str, qtype: RecordType) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    let name = Name::from_str(qname).unwrap_or_else(|e| panic!("{e}"));
    message.add_query(Query::query(name, qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    message.edns = Some(edns);
    message.to_vec().unwrap_or_else(|e| panic!("{e}"))
}

async fn ask_udp(server: SocketAddr, request: &[u8]) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    socket
        .send_to(request, server)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buffer = vec![0; 4096];
    let (len, from) = timeout(WAIT, socket.recv_from(&mut buffer))
        .await
        .unwrap_or_else(|_| panic!("no UDP answer"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(from, server);
    Message::from_vec(&buffer[..len]).unwrap_or_else(|e| panic!("{e}"))
}

async fn ask_tcp(server: SocketAddr, requests: &[Vec<u8>]) -> Vec<Message> {
    let mut stream = TcpStream::connect(server)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut answers = Vec::new();
    for request in requests {
        let len = u16::try_from(request.len()).unwrap_or_else(|e| panic!("{e}"));
        stream
            .write_all(&len.to_be_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .write_all(request)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let reply_len = timeout(WAIT, stream.read_u16())
            .await
            .unwrap_or_else(|_| panic!("no TCP answer"))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut reply = vec![0; usize::from(reply_len)];
        stream
            .read_exact(&mut reply)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        answers.push(Message::from_vec(&reply).unwrap_or_else(|e| panic!("{e}")));
    }
    answers
}

fn first_a(message: &Message) -> Option<String> {
    message.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0.to_string()),
        _ => None,
    })
}

/// Sends the message of every event of this crate to a channel: the
/// server's own word that it saw a reload (on the thread that sets it as
/// its default).
struct Said(tokio::sync::mpsc::UnboundedSender<String>);

impl tracing::Subscriber for Said {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target().starts_with("gatehouse_dns")
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        // The test may have stopped listening; nothing to report then.
        let _ = self.0.send(message.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Waits for the server to log `wanted` (a hang guard, not a timing bound).
async fn heard(said: &mut tokio::sync::mpsc::UnboundedReceiver<String>, wanted: &str) {
    let waited = timeout(WAIT, async {
        while let Some(message) = said.recv().await {
            if message == wanted {
                return;
            }
        }
        panic!("the log channel closed before {wanted:?}");
    })
    .await;
    assert!(waited.is_ok(), "the server never logged {wanted:?}");
}

async fn stop(running: Running) {
    running.shutdown.cancel();
    let ended = timeout(WAIT, running.server)
        .await
        .unwrap_or_else(|_| panic!("serve did not return after shutdown"));
    assert!(matches!(ended, Ok(Ok(()))), "serve ended with {ended:?}");
}

#[tokio::test]
async fn answers_over_udp_and_tcp_follow_reloads_and_stop_on_shutdown() {
    let running = start(&zone_yaml("192.168.222.16", None));

    let udp = ask_udp(
        running.addr,
        &query(1, "Admin.Saxophone.sean.", RecordType::A),
    )
    .await;
    assert_eq!(udp.metadata.id, 1);
    assert!(udp.metadata.authoritative);
    assert_eq!(first_a(&udp).as_deref(), Some("192.168.222.16"));
    assert!(
        udp.answers[0]
            .name
            .eq_case(&Name::from_str("Admin.Saxophone.sean.").unwrap_or_else(|e| panic!("{e}")))
    );
    assert_eq!(udp.edns.as_ref().map(Edns::max_payload), Some(1232));

    // Two queries on one TCP connection.
    let tcp = ask_tcp(
        running.addr,
        &[
            query(2, "saxophone.sean.", RecordType::A),
            query(3, "nothing.sean.", RecordType::A),
        ],
    )
    .await;
    assert_eq!(first_a(&tcp[0]).as_deref(), Some("192.168.222.16"));
    assert_eq!(tcp[1].metadata.id, 3);
    assert_eq!(tcp[1].metadata.response_code, ResponseCode::NXDomain);

    let outside = ask_udp(running.addr, &query(4, "example.com.", RecordType::A)).await;
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);

    // The server task runs on this thread (a current-thread runtime): what
    // it logs from here on reaches `said`.
    let (sender, mut said) = tokio::sync::mpsc::unbounded_channel();
    let _logged = tracing::subscriber::set_default(Said(sender));

    // A new config changes the answer.
    running
        .config
        .send_replace(config(&zone_yaml("10.9.8.7", None)));
    heard(&mut said, "dns zones reloaded").await;
    let reply = ask_udp(running.addr, &query(5, "saxophone.sean.", RecordType::A)).await;
    assert_eq!(first_a(&reply).as_deref(), Some("10.9.8.7"));
    let tcp = ask_tcp(running.addr, &[query(6, "saxophone.sean.", RecordType::A)]).await;
    assert_eq!(first_a(&tcp[0]).as_deref(), Some("10.9.8.7"));

    // A config without `dns` keeps the zones in force.
    let no_dns = "jump:\n  listen: [\"127.0.0.1:0\"]\n  users: {}\n  groups: {}\n";
    let jump_only = gatehouse_config::parse(Path::new("test.yaml"), no_dns)
        .unwrap_or_else(|e| panic!("the jump-only config must parse: {e:?}"));
    running.config.send_replace(Arc::new(jump_only));
    heard(
        &mut said,
        "reloaded config has no `dns` section; keeping the current zones",
    )
    .await;
    let reply = ask_udp(running.addr, &query(7, "saxophone.sean.", RecordType::A)).await;
    assert_eq!(first_a(&reply).as_deref(), Some("10.9.8.7"));

    let addr = running.addr;
    stop(running).await;
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_closes_idle_tcp_connections() {
    let running = start(&zone_yaml("192.168.222.16", None));
    let mut idle = TcpStream::connect(running.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Make sure the connection has been accepted before shutting down.
    let _ = ask_tcp(running.addr, &[query(1, "saxophone.sean.", RecordType::A)]).await;
    stop(running).await;
    let mut byte = [0_u8; 1];
    let read = timeout(WAIT, idle.read(&mut byte))
        .await
        .unwrap_or_else(|_| panic!("idle connection left open"));
    assert!(matches!(read, Ok(0) | Err(_)));
}

/// A fake upstream: answers every UDP query with the TC bit set and no
/// records, and every TCP query in full with 192.0.2.1.
async fn fake_upstream() -> SocketAddr {
    let (udp, tcp) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = udp.local_addr().unwrap_or_else(|e| panic!("{e}"));
        if let Ok(tcp) = TcpListener::bind(addr).await {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr().unwrap_or_else(|e| panic!("{e}"));
    fn reply(request: &[u8], truncated: bool) -> Vec<u8> {
        let request = Message::from_vec(request).unwrap_or_else(|e| panic!("{e}"));
        let mut reply = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
        reply.metadata.recursion_available = true;
        reply.metadata.truncation = truncated;
        reply.add_queries(request.queries.clone());
        if !truncated {
            let name = request.queries[0].name().clone();
            reply.add_answer(hickory_proto::rr::Record::from_rdata(
                name,
                300,
                RData::A(A::new(192, 0, 2, 1)),
            ));
        }
        reply.to_vec().unwrap_or_else(|e| panic!("{e}"))
    }
    tokio::spawn(async move {
        let mut buffer = vec![0; 4096];
        while let Ok((len, from)) = udp.recv_from(&mut buffer).await {
            let _ = udp.send_to(&reply(&buffer[..len], true), from).await;
        }
    });
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let Ok(len) = stream.read_u16().await else {
                continue;
            };
            let mut request = vec![0; usize::from(len)];
            if stream.read_exact(&mut request).await.is_err() {
                continue;
            }
            let reply = reply(&request, false);
            let len = u16::try_from(reply.len()).unwrap_or_else(|e| panic!("{e}"));
            let _ = stream.write_all(&len.to_be_bytes()).await;
            let _ = stream.write_all(&reply).await;
        }
    });
    addr
}

#[tokio::test]
async fn outside_names_are_forwarded_when_upstream_is_set() {
    let upstream = fake_upstream().await;
    let running = start(&zone_yaml("192.168.222.16", Some(upstream)));

    // Over UDP the client gets the truncated upstream reply, with its own ID.
    let udp = ask_udp(running.addr, &query(0x1111, "Example.COM.", RecordType::A)).await;
    assert_eq!(udp.metadata.id, 0x1111);
    assert!(udp.metadata.truncation);
    assert!(udp.metadata.recursion_available);

    // Over TCP the forwarder retries the upstream over TCP and gets it all.
    let tcp = ask_tcp(
        running.addr,
        &[query(0x2222, "example.com.", RecordType::A)],
    )
    .await;
    assert_eq!(tcp[0].metadata.id, 0x2222);
    assert!(!tcp[0].metadata.truncation);
    assert_eq!(first_a(&tcp[0]).as_deref(), Some("192.0.2.1"));

    // Names in the zone are still answered locally.
    let local = ask_udp(running.addr, &query(3, "saxophone.sean.", RecordType::A)).await;
    assert!(local.metadata.authoritative);
    assert_eq!(first_a(&local).as_deref(), Some("192.168.222.16"));
    stop(running).await;
}

#[tokio::test]
async fn a_dead_upstream_gives_servfail() {
    // A port with nothing behind it: the forwarder's connected socket sees
    // the ICMP error at once.
    let dead = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        socket.local_addr().unwrap_or_else(|e| panic!("{e}"))
    };
    let running = start(&zone_yaml("192.168.222.16", Some(dead)));
    let reply = ask_udp(running.addr, &query(9, "example.com.", RecordType::A)).await;
    assert_eq!(reply.metadata.id, 9);
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    stop(running).await;
}

#[tokio::test]
async fn bursts_are_answered_query_by_query() {
    const CLIENTS: u16 = 6;
    let upstream = fake_upstream().await;
    let running = start(&zone_yaml("192.168.222.16", Some(upstream)));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let socket = UdpSocket::bind("127.0.0.1:0").await;
        clients.push(socket.unwrap_or_else(|e| panic!("{e}")));
    }
    // Each round is sent before reading anything, so the server finds many
    // queued: local names, a NODATA, forwarded names, an oversize datagram
    // and garbage in between, from more clients than the server has sockets
    // (an answer sent to the wrong one would show). A round stays well
    // inside the kernel's default receive buffer (~200 KiB; an oversize
    // datagram takes ~8 KiB of it, a query ~1 KiB), which would otherwise
    // drop the excess before the server sees it, even on a loaded machine.
    let mut buffer = vec![0; 4096];
    for round in 0..6_u16 {
        let ids = round * 50..(round + 1) * 50;
        for id in ids.clone() {
            let request = match id % 5 {
                0 | 1 => query(id, &format!("h{id}.saxophone.sean."), RecordType::A),
                2 => query(id, "saxophone.sean.", RecordType::AAAA),
                3 => query(id, &format!("n{id}.example.com."), RecordType::A),
                _ if id % 10 == 4 => vec![0xff; 5000],
                _ => vec![0x00, 0x01, 0x02],
            };
            clients[usize::from(id % CLIENTS)]
                .send_to(&request, running.addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        for (which, client) in (0_u16..).zip(&clients) {
            let mut missing: BTreeSet<u16> = ids
                .clone()
                .filter(|id| id % 5 != 4 && id % CLIENTS == which)
                .collect();
            while !missing.is_empty() {
                let (len, _) = timeout(WAIT, client.recv_from(&mut buffer))
                    .await
                    .unwrap_or_else(|_| panic!("no answers to {missing:?}"))
                    .unwrap_or_else(|e| panic!("{e}"));
                let reply = Message::from_vec(&buffer[..len]).unwrap_or_else(|e| panic!("{e}"));
                check_burst_reply(&reply, &mut missing);
            }
        }
    }
    stop(running).await;
}

fn check_burst_reply(reply: &Message, missing: &mut BTreeSet<u16>) {
    let id = reply.metadata.id;
    assert!(missing.remove(&id), "unexpected or second answer for {id}");
    match id % 5 {
        0 | 1 => {
            let name = reply.queries[0].name().to_ascii();
            assert_eq!(name, format!("h{id}.saxophone.sean."));
            assert_eq!(first_a(reply).as_deref(), Some("192.168.222.16"));
        }
        2 => {
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
            assert!(
                reply.answers.is_empty(),
                "AAAA of an IPv4-only name is NODATA"
            );
        }
        _ => assert!(reply.metadata.truncation, "forwarded: the upstream's reply"),
    }
}

#[tokio::test]
async fn a_forwarded_query_in_flight_is_answered_after_shutdown_starts() {
    // An upstream that takes its time: the reply comes after shutdown has
    // been asked for, within the grace period.
    let upstream = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let upstream_addr = upstream.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (asked_tx, asked_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut buffer = vec![0; 4096];
        let Ok((len, from)) = upstream.recv_from(&mut buffer).await else {
            return;
        };
        let _ = asked_tx.send(());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let request = Message::from_vec(&buffer[..len]).unwrap_or_else(|e| panic!("{e}"));
        let mut reply = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
        reply.add_queries(request.queries.clone());
        let name = request.queries[0].name().clone();
        let answer = RData::A(A::new(192, 0, 2, 9));
        reply.add_answer(hickory_proto::rr::Record::from_rdata(name, 60, answer));
        let bytes = reply.to_vec().unwrap_or_else(|e| panic!("{e}"));
        let _ = upstream.send_to(&bytes, from).await;
    });
    let running = start(&zone_yaml("192.168.222.16", Some(upstream_addr)));
    let client = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let request = query(77, "slow.example.com.", RecordType::A);
    client
        .send_to(&request, running.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    timeout(WAIT, asked_rx)
        .await
        .unwrap_or_else(|_| panic!("the query never reached the upstream"))
        .unwrap_or_else(|e| panic!("{e}"));

    running.shutdown.cancel();
    let mut buffer = vec![0; 4096];
    let (len, _) = timeout(WAIT, client.recv_from(&mut buffer))
        .await
        .unwrap_or_else(|_| panic!("the forwarded answer was lost in the shutdown"))
        .unwrap_or_else(|e| panic!("{e}"));
    let reply = Message::from_vec(&buffer[..len]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.metadata.id, 77);
    assert_eq!(first_a(&reply).as_deref(), Some("192.0.2.9"));
    let ended = timeout(WAIT, running.server)
        .await
        .unwrap_or_else(|_| panic!("serve did not return after shutdown"));
    assert!(matches!(ended, Ok(Ok(()))), "serve ended with {ended:?}");

    // The listening sockets are gone with their threads.
    client
        .send_to(&request, running.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let late = timeout(Duration::from_millis(300), client.recv_from(&mut buffer)).await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "answered after shutdown: {late:?}"
    );
}

#[tokio::test]
async fn serve_returns_within_its_grace_while_a_forward_is_stuck() {
    // Short enough that the forward's own upstream timeout (2 s) cannot be
    // what ends it; the margin is the second the aborted work and the UDP
    // threads get to stop (server::STOP_GRACE).
    const GRACE: Duration = Duration::from_millis(300);
    const MARGIN: Duration = Duration::from_secs(1);
    // An upstream that reads every query and never answers.
    let upstream = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let upstream_addr = upstream.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (asked_tx, asked_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut asked = Some(asked_tx);
        let mut buffer = vec![0; 4096];
        while upstream.recv_from(&mut buffer).await.is_ok() {
            if let Some(asked) = asked.take() {
                let _ = asked.send(());
            }
        }
    });
    let running = start_within(&zone_yaml("192.168.222.16", Some(upstream_addr)), GRACE);
    let client = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .send_to(
            &query(78, "stuck.example.com.", RecordType::A),
            running.addr,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    timeout(WAIT, asked_rx)
        .await
        .unwrap_or_else(|_| panic!("the query never reached the upstream"))
        .unwrap_or_else(|e| panic!("{e}"));

    // The forward is stuck upstream. From here on this runtime's clock, the
    // one serve's grace and deadlines run on, moves only when all it has left
    // is to wait for one: the bound below is serve's own, whatever the
    // machine's speed. (The UDP threads run on real time; waited for on this
    // clock, they may be counted late: that is not judged here.)
    let (sender, mut said) = tokio::sync::mpsc::unbounded_channel();
    let _logged = tracing::subscriber::set_default(Said(sender));
    tokio::time::pause();
    let asked_to_stop = tokio::time::Instant::now();
    running.shutdown.cancel();
    let ended = timeout(WAIT, running.server)
        .await
        .unwrap_or_else(|_| panic!("serve did not return after shutdown"));
    let took = asked_to_stop.elapsed();
    assert!(matches!(ended, Ok(Ok(()))), "serve ended with {ended:?}");
    heard(
        &mut said,
        "dns shutdown grace ran out; dropping queries still in flight",
    )
    .await;
    assert!(took >= GRACE, "the query in flight got no grace: {took:?}");
    // Tokio's timer wheel rounds each deadline up to its next millisecond
    // tick: a millisecond for each of serve's three.
    let ticks = Duration::from_millis(3);
    assert!(
        took <= GRACE + MARGIN + ticks,
        "serve took {took:?} to return"
    );
    tokio::time::resume();

    // The stuck query was dropped, not answered.
    let mut buffer = vec![0; 4096];
    let late = timeout(Duration::from_millis(300), client.recv_from(&mut buffer)).await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "answered after shutdown: {late:?}"
    );
}
