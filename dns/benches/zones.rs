//! Zone lookups, answers and whole request-to-response handling with 10 to
//! 100,000 records. A lookup walks the query's suffixes in one hash map, so
//! the time per query should stay flat as records grow: a regression shows
//! as a slope across the sizes.
//!
//! `cargo bench -p gatehouse-dns --bench zones` (add `-- --quick` for a fast
//! pass); `benches/run micro` runs it with `--quick` and tabulates it.

use std::{
    fmt::Write as _,
    hint::black_box,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    str::FromStr,
    time::Duration,
};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gatehouse_dns::{
    Handled, Lookup, Outcome, Transport, ZoneTable, answer,
    proto::rr::{DNSClass, Name, RecordType},
    respond,
};

/// Record counts. `cargo bench` passes `--bench`; `cargo test --all-targets`
/// runs each benchmark once in a debug build, where parsing the
/// 100,000-record YAML alone takes a minute: the tests skip that size.
fn sizes() -> &'static [usize] {
    if std::env::args().any(|arg| arg == "--bench") {
        &[10, 1_000, 100_000]
    } else {
        &[10, 1_000]
    }
}

/// A table for zone `bench` with `records` records `rN: 10.x.y.z`, built
/// from YAML through the real parser and validation.
fn table(records: usize) -> ZoneTable {
    let mut yaml =
        String::from("dns:\n  listen: [\"127.0.0.1:0\"]\n  zones:\n    bench:\n      records:\n");
    for i in 0..records {
        let [_, a, b, c] = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
        let _ = writeln!(yaml, "        r{i}: {}", Ipv4Addr::new(10, a, b, c));
    }
    let config = gatehouse_config::parse(Path::new("bench.yaml"), &yaml)
        .unwrap_or_else(|e| panic!("bench config does not parse: {e}"));
    let dns = config.dns.unwrap_or_else(|| panic!("no dns section"));
    ZoneTable::with_serial(&dns, 1)
}

fn name(text: &str) -> Name {
    Name::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A query as dnsperf sends it: one question, RD set, no EDNS.
fn query_bytes(qname: &str, qtype: RecordType) -> Vec<u8> {
    let mut wire = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in qname.trim_end_matches('.').split('.') {
        wire.push(u8::try_from(label.len()).unwrap_or(63));
        wire.extend_from_slice(label.as_bytes());
    }
    wire.push(0);
    wire.extend_from_slice(&u16::from(qtype).to_be_bytes());
    wire.extend_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
    wire
}

fn zones(c: &mut Criterion) {
    let client = SocketAddr::from(([127, 0, 0, 1], 5300));
    let mut lookup = c.benchmark_group("lookup");
    let tables: Vec<(usize, ZoneTable)> = sizes().iter().map(|&n| (n, table(n))).collect();
    for (n, table) in &tables {
        let cases = [
            ("record", name(&format!("r{}.bench.", n / 2))),
            ("below_record", name(&format!("www.r{}.bench.", n / 2))),
            ("no_such_name", name("nothing.here.bench.")),
            ("outside", name("www.example.com.")),
        ];
        for (case, qname) in &cases {
            lookup.bench_with_input(BenchmarkId::new(*case, n), qname, |b, q| {
                b.iter(|| matches!(black_box(table).lookup(black_box(q)), Lookup::Outside))
            });
        }
    }
    lookup.finish();

    let mut answers = c.benchmark_group("answer");
    for (n, table) in &tables {
        let below = name(&format!("www.r{}.bench.", n / 2));
        for (case, qtype) in [("A", RecordType::A), ("AAAA_nodata", RecordType::AAAA)] {
            answers.bench_with_input(BenchmarkId::new(case, n), &below, |b, q| {
                b.iter(|| {
                    let outcome = answer(black_box(table), black_box(q), qtype, DNSClass::IN);
                    matches!(outcome, Outcome::Reply(_))
                })
            });
        }
    }
    answers.finish();

    // The whole path a UDP datagram takes, minus the socket: parse, decide,
    // encode (what dnsperf measures, without the kernel).
    let mut whole = c.benchmark_group("respond_udp");
    for (n, table) in &tables {
        let cases = [
            (
                "A",
                query_bytes(&format!("www.r{}.bench", n / 2), RecordType::A),
            ),
            (
                "AAAA_nodata",
                query_bytes(&format!("www.r{}.bench", n / 2), RecordType::AAAA),
            ),
            ("refused", query_bytes("www.example.com", RecordType::A)),
        ];
        for (case, request) in &cases {
            let mut out = Vec::with_capacity(1232);
            whole.bench_with_input(BenchmarkId::new(*case, n), request, |b, req| {
                b.iter(|| {
                    let handled = respond(
                        black_box(table),
                        black_box(req),
                        Transport::Udp,
                        client,
                        &mut out,
                    );
                    assert_eq!(handled, Handled::Reply);
                    out.len()
                })
            });
        }
    }
    whole.finish();
}

fn quick() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = quick();
    targets = zones
}
criterion_main!(benches);
