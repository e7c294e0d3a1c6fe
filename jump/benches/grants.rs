//! Grant decisions (`gatehouse_jump::decide`) against a realistic config: ten
//! groups of mixed name patterns, CIDRs and port sets, a user in three of
//! them. Decisions run on every tunnel open; the refused cases scan every
//! grant of the user's groups, the worst case.
//!
//! `cargo bench -p gatehouse-jump --bench grants` (add `-- --quick` for a
//! fast pass); `benches/run micro` runs it with `--quick` and tabulates it.

use std::{fmt::Write as _, hint::black_box, net::IpAddr, path::Path, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_config::JumpConfig;
use gatehouse_jump::decide;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK1dTTVTtn4JwyiQdj4r0dSAaAiTbAKgVWl7VZBO6m2j sean@laptop";

/// Ten groups of six grants each; `sean` is in `dev`, `web` and `db`, the
/// last three groups in file order.
fn jump_config() -> JumpConfig {
    let mut yaml = format!(
        "jump:\n  listen: [\"127.0.0.1:0\"]\n  users:\n    sean:\n      keys: [\"{KEY}\"]\n      groups: [dev, web, db]\n  groups:\n"
    );
    let names = [
        "ops", "ci", "qa", "data", "ml", "sec", "infra", "dev", "web", "db",
    ];
    for (g, group) in names.iter().enumerate() {
        let _ = write!(
            yaml,
            "    {group}:\n      allow:\n        - \"*.{group}.internal.example.net:22\"\n        - \"{group}-bastion.example.net:22,2222\"\n        - \"10.{g}.0.0/16:22\"\n        - \"10.{g}.128.0/24:80,443,8000-8100\"\n        - \"[fd00:{g}::]/32:22\"\n        - \"172.16.{g}.0/24:*\"\n"
        );
    }
    let config = gatehouse_config::parse(Path::new("bench.yaml"), &yaml)
        .unwrap_or_else(|e| panic!("bench config does not parse: {e}"));
    config.jump.unwrap_or_else(|| panic!("no jump section"))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn grants(c: &mut Criterion) {
    let jump = jump_config();
    let (_, user) = jump
        .users
        .iter()
        .find(|(name, _)| name.to_string() == "sean")
        .unwrap_or_else(|| panic!("no user sean"));
    // (case, host as asked, port, what it resolved to, granted?)
    let cases: [(&str, &str, u16, Vec<IpAddr>, bool); 6] = [
        (
            "first_group_cidr",
            "10.7.3.4",
            22,
            vec![ip("10.7.3.4")],
            true,
        ),
        (
            "last_group_range",
            "10.9.128.9",
            8080,
            vec![ip("10.9.128.9")],
            true,
        ),
        (
            "name_pattern",
            "app01.web.internal.example.net",
            22,
            vec![ip("192.0.2.10")],
            true,
        ),
        (
            "refused_cidr",
            "10.200.0.1",
            22,
            vec![ip("10.200.0.1")],
            false,
        ),
        (
            "refused_name_4_addrs",
            "app01.ops.internal.example.net",
            22,
            vec![
                ip("192.0.2.1"),
                ip("192.0.2.2"),
                ip("2001:db8::1"),
                ip("2001:db8::2"),
            ],
            false,
        ),
        (
            "refused_loopback",
            "localhost",
            22,
            vec![ip("127.0.0.1")],
            false,
        ),
    ];
    let mut group = c.benchmark_group("decide");
    for (case, host, port, addrs, granted) in &cases {
        assert_eq!(
            decide(&jump, user, host, *port, addrs).is_ok(),
            *granted,
            "{case}"
        );
        group.bench_function(*case, |b| {
            b.iter(|| {
                decide(
                    black_box(&jump),
                    black_box(user),
                    black_box(host),
                    black_box(*port),
                    black_box(addrs),
                )
                .is_ok()
            })
        });
    }
    group.finish();
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
    targets = grants
}
criterion_main!(benches);
