"""gatehouse side by side with OpenSSH sshd (as a jump host) and dnsmasq.

How to read this package
------------------------
Run it through `benches/run` (which installs the tools, builds
target/release/gatehouse, then runs `python3 -m bench` with benches/ on
the import path). Every part starts its own servers on loopback,
on ports picked at random, in a fresh /tmp/gatehouse-bench.* folder that is
deleted at the end; both servers of a comparison run at the same time and
are measured with the same client command line, after a warm-up, alternating
which goes first (tunnel, nc: per run; logins, kex, fleet: two rounds of half
the logins each; dns: rotating over the runs; flood: gatehouse, sshd, sshd,
gatehouse; memory runs one server at a time, which order cannot favour). Everything is bounded: each client has a timeout and is killed after
it. Before each part the harness waits (up to 2 min) for other programs to
use less than 15% of the CPUs, and the report says how busy they were.

The two jump hosts:
  gatehouse  `gatehouse run --config FILE`: user `bench`, key only
             (`mfa: optional`, no enrollment), group granted `127.0.0.0/8:*`,
             `limits.trusted: ["127.0.0.0/8"]` (the defaults, 20
             connections/min per source and 64 unauthenticated, would refuse
             a benchmark; the flood part keeps them, see there; the memory
             part raises `max_connections_per_user` to 1000, see there);
  sshd       `/usr/sbin/sshd -D -e -f CONFIG`: its own ed25519 host key and
             port, the current user with the same key in an authorized_keys
             file, publickey only, `AllowTcpForwarding yes`, no PAM,
             `MaxStartups 1000`/`MaxSessions 1000` (the flood part keeps the
             default MaxStartups 10:30:100).
The client is the same `ssh` for both (see lab.SSH_OPTS): a fresh connection
each time (ControlMaster=no), and `KexAlgorithms=curve25519-sha256` +
`HostKeyAlgorithms=ssh-ed25519` so both servers do the same key exchange
(without it, sshd would pick sntrup761x25519, which russh lacks).

Parts and figures:
  tunnel  (a) 1 GiB through `ssh -W 127.0.0.1:PORT`: up = stdin from
          `head -c` to a sink that reads exactly that many bytes; down = a
          source that sends them, read from ssh's stdout. MiB/s are timed at
          the receiving end from first to last byte (logins excluded);
          median of the runs per cipher and direction; ratio =
          gatehouse/sshd. "CPU s/GiB" is the server's CPU time (all its
          threads and processes, live, exited or reaped: procs.tree_cpu,
          read after procs.settle has seen sshd's per-connection processes
          reaped, never after a fixed sleep) per GiB moved.
  nc      (b) the same through the legacy exec form `ssh HOST nc 127.0.0.1
          PORT`: gatehouse recognises the command and tunnels itself; sshd
          runs the real netcat-openbsd under the user's shell.
  logins  (c) full logins: ssh connect + key + `-W` to a server that sends
          one byte and closes; a login counts when ssh exits 0 having printed
          that byte. Sequential and 8 in parallel; logins/s = logins / wall
          time; p50/p99 of each ssh's wall time; server CPU ms per login =
          the server's CPU delta / logins.
  memory  (d) idle authenticated connections held by `ssh -N -f` (opened 8
          at a time): RSS and PSS of the server (for sshd summed over all its
          processes) with 0, 50 and 500 connections, counted on the server's
          side (ESTABLISHED sockets on its port, /proc/net/tcp; the part
          fails when it holds fewer than asked); gatehouse with
          `max_connections_per_user: 1000` (all are the one user `bench`;
          the default 16 would refuse the rest); growth per connection =
          (at 500 - at 50) / 450. PSS is the fair figure for sshd: its
          per-connection processes share their libraries.
  dns     (e) dnsperf (UDP, no EDNS), 3 runs of 10 s per server and query
          set (medians), against zone `bench` with 10 and 10,000 records
          `rN: 10.x.y.z` (dnsmasq: `address=/.rN.bench/10.x.y.z`). Query sets: A for record names and names below them;
          AAAA for the same (IPv4-only) names; A for names outside the zone.
          "max" = dnsperf's QPS with each of DNSPERF_SHAPES' flags (dnsperf shares the 2
          cores with the server); latency = a second run at a fixed
          10,000 QPS, p50/p99 from dnsperf -v per-query latencies. Response
          codes are shown: the servers answer differently on purpose; where
          the most common code differs (AAAA of an IPv4-only name: dnsmasq
          REFUSED, the others NODATA) the ratio cell says "different
          answers" and the targets leave that row out. A 1 s warm-up run
          per server first.
  flood   (f) a login flood from 127.0.0.1 (or 64 addresses, see below): ~200 new connections/s, each
          sending an SSH identification, KEXINIT and a random curve25519
          key right away (what a credential stuffer's client does first:
          it makes the server compute the shared secret and sign with its
          host key), then staying 1 s after the server's reply (3 s
          timeout for it) as a client in its first auth round would.
          Meanwhile 127.0.0.2 (`ssh -b 127.0.0.2`) logs in sequentially as
          in (c); a failed login counts as infinitely slow in its p99. Figures: that user's p50/p99 and failures
          idle versus flooded, and what happened to the flood connections.
          Four servers (flood.FLOOD_SERVERS), two pairs. As shipped:
          gatehouse with its default limits (20/min per source, 64
          unauthenticated) trusting 127.0.0.2/32 (the user's office), sshd
          with its default MaxStartups 10:30:100. The same cap, nothing
          exempt: gatehouse with `trusted: []`, `per_ip_connections:
          10000/s` and `ban: { after: 1000000 }`, sshd with `MaxStartups
          64` (OpenSSH 9.2 has no PerSourceMaxStartups/PerSourcePenalties,
          9.8+), both flooded from 64 addresses (127.0.1.1 and up) so that
          gatehouse's per-source share of its cap singles no one out.
  micro   criterion benches (dns/benches, jump/benches) with --quick.
  soak    (only when named: `benches/run soak`, --soak-minutes N, default
          20, --quick 2) one gatehouse (jump + dns + admin, default limits,
          `trusted: []`, `per_ip_connections: 600/min`) under everything at
          once: key + TOTP logins from 127.0.0.1 (`ssh -W`, the `nc` exec
          form, a ControlMaster with mux tunnels; each echoes bytes and
          checks them), dnsperf at a fixed rate plus TCP queries, and
          attacks from other 127.K.0.0/16s (pre-auth slot holders, garbage
          after the id string, truncated packets, 100 kB user names and
          wrong keys through asyncssh, DNS garbage). Readings every 10 s of
          gatehouse's RSS, fds, threads, CPU and /metrics. Figures: RSS at
          warm-up vs max vs end, fds, every legit attempt and failure,
          DNS answers, how each attack ended, bans; no target, no timing
          judged (see soak.py).

Targets (from the issue, for reference; never tuned for): tunnel >= 1.0x
sshd each cipher/direction; logins/s >= 3x and CPU/login <= 1/3; RSS growth
<= 180 KiB per idle connection; DNS QPS >= 1.25x dnsmasq; flood p99 <= 1.5x
idle.

Layout
------
  __main__.py  the command line: parts, --quick, --keep, --list; runs them
  settings.py  paths, sizes and timings (Settings: --quick, --keep)
  util.py      log, median, pct, ratio, fmt, table
  procs.py     /proc: a process tree's CPU and memory; wait_quiet
  lab.py       Lab (temporary folder, gatehouse/sshd/dnsmasq, cleanup),
               SSH_OPTS, DataServer (loopback sink/source/one byte)
  tunnel.py    (a) tunnel and (b) nc
  logins.py    (c) logins, key only and key + TOTP
  memory.py    (d) memory
  dns.py       (e) dns
  flood.py     (f) flood, and the flooder it runs in its own process
  micro.py     micro (criterion)
  soak.py      soak, and the attackers it runs in their own process
  report.py    machine info, targets, RESULTS.md between its markers and
               target/bench/results.md
This file holds no code: importing the package starts nothing.
"""
