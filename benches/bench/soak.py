"""Part soak: one gatehouse (jump + dns + admin) for --soak-minutes under
mixed legitimate load and attacks at once; is it still the same process at
the end (RSS, fds, threads) and was every legitimate login served?

Owns: Users (the TOTP users handed out so replay protection never refuses
one), Legit (the logins: `ssh -W`, the `nc` exec form and a ControlMaster
with tunnels, each echoing bytes it checks), the DNS stream (dnsperf at a
fixed rate plus a TCP query loop), the sampler (/proc and /metrics every
SOAK_SAMPLE_SECONDS), the attacker process (run_attacks, started as
`python3 -m bench _soak_attacks CONFIG`) and part_soak with its text.
Legitimate traffic comes from 127.0.0.1; each attack kind from its own
127.K.0.0/16 (SOURCE_NETS), rotating addresses as a botnet would, so bans
hit attackers only and keep hitting new ones all run long.
Must not: assert or judge timings (figures for the note only; the verdict
line states growth and failures, nothing passes or fails here), start
servers other than through Lab and DataServer, write the report, leave a
process or folder behind (everything is started through the Lab, which
stops and deletes it), or send anything outside 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import importlib.util
import json
import os
import random
import re
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.request

from .flood import PACKAGE_PARENT, _flood_hello
from .lab import DataServer, Lab
from .logins import TOTP_USERS
from .procs import tree_cpu
from .settings import (
    SOAK_ATTACKS, SOAK_CM_PARALLEL, SOAK_CM_SECONDS, SOAK_CM_TUNNEL_BYTES, SOAK_DNS_QPS,
    SOAK_LOGIN_EVERY, SOAK_SAMPLE_SECONDS, SOAK_TUNNEL_BYTES, Settings,
)  # fmt: skip
from .util import fmt, log, table

# Attack kind -> the /16 its sources come from (127.K.0.0/16).
SOURCE_NETS = {"hold": 10, "garbage": 11, "truncated": 12, "long user": 13, "wrong key": 14, "dns garbage": 15}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
LEGIT_TIMEOUT = 60
# What every tunnel echoes (a prefix of it): random, so a mix-up shows.
PAYLOAD = os.urandom(max(SOAK_TUNNEL_BYTES, SOAK_CM_TUNNEL_BYTES))
MIB = 1 << 20
# The wrong keys and 100 kB user names speak SSH through asyncssh (benches/run installs it).
HAVE_ASYNCSSH = importlib.util.find_spec("asyncssh") is not None


def totp_step() -> int:
    return int(time.time()) // 30


class Users:
    """The provisioned TOTP users, least recently used first. A user is
    handed out again only in a later 30 s step than its last login ended
    in: gatehouse accepts each step once per user (replay protection)."""

    def __init__(self, n: int):
        self.free = collections.deque(f"u{k}" for k in range(n))
        self.last: dict[str, int] = {}
        self.lock = threading.Lock()

    def take(self, deadline: float) -> str | None:
        while time.monotonic() < deadline:
            with self.lock:
                if self.free and self.last.get(self.free[0], -1) < totp_step():
                    return self.free.popleft()
            time.sleep(0.2)
        return None

    def give(self, user: str):
        with self.lock:
            self.last[user] = totp_step()
            self.free.append(user)


class Legit:
    """The legitimate logins and tunnels, and what became of each."""

    def __init__(self, lab: Lab, port: int, echo: int, deadline: float):
        self.lab, self.port, self.echo, self.deadline = lab, port, echo, deadline
        self.users = Users(TOTP_USERS)
        self.lock = threading.Lock()
        self.counts = collections.defaultdict(lambda: {"attempted": 0, "served": 0, "bytes": 0})
        self.failures: list[dict] = []  # kind, user, why, stderr, start (wall clock), server (its audit)

    def record(self, kind, user, ok, why, nbytes=0, stderr="", start=0.0):
        with self.lock:
            c = self.counts[kind]
            c["attempted"] += 1
            c["served"] += ok
            c["bytes"] += 2 * nbytes if ok else 0
            if not ok:
                self.failures.append(dict(kind=kind, user=user, why=why, stderr=stderr[-2000:], start=start))
                log(f"soak: legit {kind} as {user} failed: {why}")

    def login_cmd(self, user, *extra):
        cmd, env = self.lab.ssh_totp(
            self.port, user, self.lab.totp_secret(user), "-o", "NumberOfPasswordPrompts=1", *extra
        )
        return cmd, {**os.environ, **env}

    def echo_through(self, kind, user, cmd, env=None, nbytes=SOAK_TUNNEL_BYTES):
        """One ssh command whose stdin/stdout is a tunnel to the echo server."""
        payload, stderr, start = PAYLOAD[:nbytes], "", time.time()
        try:
            p = subprocess.run(cmd, input=payload, capture_output=True, env=env, timeout=LEGIT_TIMEOUT)
            ok = p.returncode == 0 and p.stdout == payload
            stderr = p.stderr.decode(errors="replace").strip()
            why = f"exit {p.returncode}, {len(p.stdout)} of {nbytes} bytes back" + (
                f": {stderr.splitlines()[-1]}" if stderr else ""
            )
        except subprocess.TimeoutExpired as e:
            ok, why = False, f"timeout ({LEGIT_TIMEOUT} s)"
            stderr = (e.stderr or b"").decode(errors="replace")
        self.record(kind, user, ok, why, nbytes, stderr, start)

    def forms(self, kind):
        """Logins of one form (`ssh -W` or the nc exec), one every SOAK_LOGIN_EVERY[kind] s."""
        while time.monotonic() < self.deadline:
            t0 = time.monotonic()
            user = self.users.take(self.deadline)
            if user is None:
                return
            if kind == "ssh -W":
                cmd, env = self.login_cmd(user, "-W", f"127.0.0.1:{self.echo}")
            else:  # what `ProxyCommand ssh jump nc -w1 %h %p` runs
                cmd, env = self.login_cmd(user)
                cmd += ["nc", "-w1", "127.0.0.1", str(self.echo)]
            self.echo_through(kind, user, cmd, env)
            self.users.give(user)
            time.sleep(max(0.0, t0 + SOAK_LOGIN_EVERY[kind] - time.monotonic()))

    def control_masters(self):
        """One ControlMaster at a time (`-N`, TOTP login), SOAK_CM_PARALLEL
        mux tunnels opening and closing through it for SOAK_CM_SECONDS."""
        k = 0
        while time.monotonic() < self.deadline - 10:
            user = self.users.take(self.deadline)
            if user is None:
                return
            k += 1
            path = self.lab.dir / f"cm{k}"
            cmd, env = self.login_cmd(user, "-N")
            cmd[1:1] = ["-o", "ControlMaster=yes", "-o", f"ControlPath={path}"]
            errf, start = self.lab.dir / f"cm{k}.err", time.time()
            with open(errf, "wb") as err:
                master = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
            self.lab.procs.append(master)  # stopped by Lab.close, whatever happens here
            up_by = time.monotonic() + 30
            while not path.exists() and master.poll() is None and time.monotonic() < up_by:
                time.sleep(0.05)
            err = errf.read_text(errors="replace").strip()
            why = f"no control socket within 30 s (exit {master.poll()})" + (f": {err.splitlines()[-1]}" if err else "")
            self.record("ControlMaster login", user, path.exists(), why, stderr=err, start=start)
            if path.exists():
                mux = self.lab.ssh(self.port, user, "-W", f"127.0.0.1:{self.echo}")
                mux[1:1] = ["-o", "ControlMaster=no", "-o", f"ControlPath={path}"]
                until = min(self.deadline, time.monotonic() + SOAK_CM_SECONDS)

                def tunnels():
                    while time.monotonic() < until:
                        self.echo_through("ControlMaster tunnel", user, mux, nbytes=SOAK_CM_TUNNEL_BYTES)
                        time.sleep(0.5)

                threads = [threading.Thread(target=tunnels) for _ in range(SOAK_CM_PARALLEL)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                stop = self.lab.ssh(self.port, user, "-O", "exit")
                stop[1:1] = ["-o", f"ControlPath={path}"]
                subprocess.run(stop, capture_output=True, timeout=20)
            try:
                master.wait(timeout=10)
            except subprocess.TimeoutExpired:
                master.kill()
                master.wait()
            self.users.give(user)


# --------------------------------------------------------------------------
# DNS: dnsperf at a fixed rate (UDP) and a TCP query loop


def dns_query(name: str, qtype: int = 1) -> bytes:
    qname = b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 1)


def dns_tcp_loop(port: int, deadline: float, out: dict):
    """A fresh TCP connection every 0.5 s with one query for a record."""
    while time.monotonic() < deadline:
        out["sent"] += 1
        q = dns_query(f"host{random.randrange(100)}.r{random.randrange(100)}.bench")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
                s.sendall(struct.pack(">H", len(q)) + q)
                buf = b""
                while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                    chunk = s.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed")
                    buf += chunk
            ok = buf[2:4] == q[:2] and buf[5] & 15 == 0  # same id, NOERROR
            out["answered" if ok else "wrong answer"] += 1
        except socket.timeout:
            out["timeouts"] += 1
        except OSError:
            out["errors"] += 1
        time.sleep(0.5)


def dnsperf_file(lab: Lab):
    """Records, names below them, AAAA of IPv4-only names, NXDOMAIN, REFUSED."""
    rnd, forms = random.Random(7), (
        "r{i}.bench A",
        "x{k}.r{i}.bench A",
        "r{i}.bench AAAA",
        "no{k}.bench A",
        "w{k}.example.com A",
    )
    path = lab.dir / "soak-queries.txt"
    path.write_text("".join(forms[k % 5].format(i=rnd.randrange(100), k=k) + "\n" for k in range(10_000)))
    return path


def dnsperf_result(text: str) -> dict:
    r = {}
    for key, label in (("sent", "Queries sent"), ("completed", "Queries completed"), ("lost", "Queries lost")):
        m = re.search(label + r":\s+(\d+)", text)
        r[key] = int(m.group(1)) if m else -1
    m = re.search(r"Response codes:\s+(.*)", text)
    r["rcodes"] = re.sub(r" \(\d+\.\d+%\)", "", m.group(1)).strip() if m else "?"
    return r


# --------------------------------------------------------------------------
# Readings


def read_metrics(port: int) -> dict:
    """The admin /metrics counters that are not zero, by full name."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError as e:
        return {"error": str(e)}
    out = {}
    for line in text.splitlines():
        if line.startswith("gatehouse_") and not line.endswith(" 0"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def sample(pid: int, admin: int, t0: float) -> dict:
    s = {"t": time.monotonic() - t0, "cpu": tree_cpu(pid)}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "Threads:")):
                k, v = line.split()[:2]
                s["rss_kib" if k == "VmRSS:" else "threads"] = int(v)
    s["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    s["metrics"] = read_metrics(admin)
    return s


def sampler(pid, admin, t0, stop: threading.Event, samples: list):
    while not stop.wait(SOAK_SAMPLE_SECONDS):
        try:
            samples.append(sample(pid, admin, t0))
        except OSError:
            log(f"soak: gatehouse (pid {pid}) is gone")
            return
        x = samples[-1]
        log(f"soak t={x['t']:.0f}s rss {x['rss_kib'] / 1024:.1f} MiB fds {x['fds']} threads {x['threads']}")


def server_view(log_path, failures):
    """Add to each failure what gatehouse's audit log says about it: the
    events (and reason or result) of the user's first connection after the
    attempt started."""
    events = collections.defaultdict(list)  # user -> [(time, conn, text)]
    users = {f["user"] for f in failures}
    conns = {}
    for line in open(log_path, errors="replace") if failures else ():
        try:
            e = json.loads(line)
            t = datetime.datetime.fromisoformat(e["timestamp"]).timestamp()
        except (ValueError, KeyError):
            continue
        user = e.get("user") or conns.get(e.get("conn"))
        if user in users:
            conns[e.get("conn")] = user
            why = e.get("reason") or e.get("result") or e.get("detail") or ""
            events[user].append((t, e.get("conn"), e.get("event"), why))
    for f in failures:  # the first connection of that user after the start, and its events then
        mine = [x for x in events[f["user"]] if f["start"] - 0.5 <= x[0] <= f["start"] + LEGIT_TIMEOUT]
        seen = [f"{ev} ({why})" if why else ev for _, conn, ev, why in mine if conn == mine[0][1]]
        f["server"] = ", ".join(seen[:8]) or "no audit event for that user then"


# --------------------------------------------------------------------------
# The attacker process: `python3 -m bench _soak_attacks CONFIG` (asyncio)


def bucket(seconds: float) -> str:
    for lo, hi in ((0, 1), (1, 5), (5, 9), (9, 12), (12, 28), (28, 35), (35, 60)):
        if seconds < hi:
            return f"{lo}-{hi} s"
    return ">= 60 s"


def source(kind: str, i: int) -> str:
    """The `i`th address of the kind's /16."""
    return f"127.{SOURCE_NETS[kind]}.{i // 254 % 256}.{i % 254 + 1}"


async def raw(src, port, send: bytes, cap: float, deadline: float) -> str:
    """One TCP connection from `src`: send `send` (maybe nothing), read
    until the server closes, `cap` s pass or the run ends; how it ended."""
    t0 = time.monotonic()
    until = min(t0 + cap, max(t0 + 1, deadline))
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0)), 5)
    except (OSError, asyncio.TimeoutError):
        return "connect failed"
    got, how = 0, "closed by the server"
    try:
        w.write(send)
        while chunk := await asyncio.wait_for(r.read(65536), max(0.01, until - time.monotonic())):
            got += len(chunk)
    except asyncio.TimeoutError:
        return (
            f"still open at our {cap:g} s limit (we closed)" if until == t0 + cap else "still open when the run ended"
        )
    except OSError:
        how = "reset by the server"
    finally:
        w.close()
    return "closed before the id string (gate)" if got == 0 else f"{how} after {bucket(time.monotonic() - t0)}"


async def ssh_try(cfg, src, user) -> str:
    """One login with a key no user has, as `user`, from `src`."""
    if not HAVE_ASYNCSSH:  # OpenSSH instead (the 100 kB names need asyncssh)
        cmd = [cfg["ssh"][0], "-b", src, *cfg["ssh"][1:], f"{user}@127.0.0.1", "true"]
        null = subprocess.DEVNULL
        p = await asyncio.create_subprocess_exec(*cmd, stdin=null, stdout=null, stderr=subprocess.PIPE)
        err = (await p.communicate())[1].decode(errors="replace")
        gate = "closed before the id string (gate)" if "kex_exchange" in err else err.strip()[-80:]
        return "permission denied" if "Permission denied" in err else gate
    import asyncssh

    loop = asyncio.get_running_loop()
    s = socket.socket()
    s.setblocking(False)
    try:
        s.bind((src, 0))
        await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", cfg["port"])), 5)
        ready = loop.create_future()
        loop.add_reader(s, lambda: ready.done() or ready.set_result(None))
        try:
            await asyncio.wait_for(ready, 10)
        finally:
            loop.remove_reader(s)
        if not s.recv(1, socket.MSG_PEEK):  # the gate closes before any byte
            s.close()
            return "closed before the id string (gate)"
        opts = dict(known_hosts=None, agent_path=None, password=None, kbdint_auth=False, login_timeout=20)
        async with asyncssh.connect(sock=s, username=user, client_keys=[cfg["bad_key"]], **opts):
            return "logged in (!)"
    except asyncssh.PermissionDenied:
        return "permission denied"
    except (OSError, asyncio.TimeoutError, asyncssh.Error) as e:
        return f"{type(e).__name__}"
    finally:
        s.close()


def dns_garbage(rnd) -> bytes:
    """Datagrams no resolver sends: noise, a response, a bad label, a
    compression loop, a question count that lies."""
    hdr = lambda flags, qd: struct.pack(">HHHHHH", rnd.randrange(65536), flags, qd, 0, 0, 0)  # noqa: E731
    return rnd.choice([os.urandom(rnd.randrange(1, 600)), hdr(0x8180, 1) + os.urandom(40), hdr(0x100, 1) + b"\x3fabc\0\0\1\0\1",
                       hdr(0x100, 1) + b"\xc0\x0c\0\1\0\1", hdr(0x100, 65535) + b"\1a\0\0\1\0\1"])  # fmt: skip


async def lane(kind, cfg, stats, deadline, n):
    lanes, pause, uses = SOAK_ATTACKS[kind]
    per_source = {"hold": 2, "dns garbage": 1}.get(kind, uses)  # those two send a batch per try
    tries = n * 1000 * per_source  # lanes take disjoint addresses
    st = stats[kind]
    rnd = random.Random(n)
    udp = None
    while time.monotonic() < deadline:
        a, tries = source(kind, tries // per_source), tries + 1
        st["sources"].add(a)
        if kind == "hold":  # `uses` at once, then (second round) the same source banned
            ends = await asyncio.gather(*[raw(a, cfg["port"], b"", 60, deadline) for _ in range(uses)])
        elif kind == "garbage":
            junk = b"SSH-2.0-OpenSSH_9.2p1\r\n" + os.urandom(rnd.randrange(16, 4096))
            ends = [await raw(a, cfg["port"], junk, 30, deadline)]
        elif kind == "truncated":  # the flood's hello (id, KEXINIT, ECDH_INIT) cut short; 15 s is past
            hello = _flood_hello()  # the first-auth deadline (10 s) and its goodbye (2 s)
            ends = [await raw(a, cfg["port"], hello[: rnd.randrange(40, len(hello) - 1)], 15, deadline)]
        elif kind in ("long user", "wrong key"):
            user = "x" * 100_000 if kind == "long user" else rnd.choice([f"u{rnd.randrange(200)}", "root", "admin"])
            ends = [await ssh_try(cfg, a, user)]
        else:  # dns garbage: `uses` datagrams from this source, the answers counted
            if udp:
                udp.close()
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((a, 0))
            udp.setblocking(False)
            for _ in range(uses):
                udp.sendto(dns_garbage(rnd), ("127.0.0.1", cfg["dns_port"]))
                st["launched"] += 1
                await asyncio.sleep(pause)
            await asyncio.sleep(0.2)
            try:
                while len(ans := udp.recv(4096)) >= 4:
                    st["ended"]["answered " + RCODES.get(ans[3] & 15, f"rcode {ans[3] & 15}")] += 1
            except BlockingIOError:
                pass
            continue
        st["launched"] += len(ends)
        for e in ends:
            st["ended"][e] += 1
        await asyncio.sleep(pause)


async def attacks(cfg) -> dict:
    deadline = time.monotonic() + cfg["seconds"]
    kinds = [k for k in SOAK_ATTACKS if k != "long user" or HAVE_ASYNCSSH]
    stats = {k: {"launched": 0, "sources": set(), "ended": collections.Counter()} for k in kinds}
    await asyncio.gather(*[lane(k, cfg, stats, deadline, n) for k in kinds for n in range(SOAK_ATTACKS[k][0])])
    d = stats["dns garbage"]
    d["ended"]["no answer"] = d["launched"] - sum(d["ended"].values())
    note = "" if HAVE_ASYNCSSH else "no asyncssh: wrong keys went through OpenSSH `ssh -b`, no 100 kB user names sent"
    return {"note": note, "kinds": {k: {**v, "sources": len(v["sources"])} for k, v in stats.items()}}


def run_attacks(config_path) -> int:
    """The attacker process: reads its config (JSON), writes its stats
    next to it (CONFIG.out)."""
    cfg = json.loads(open(config_path).read())
    result = asyncio.run(attacks(cfg))
    with open(config_path + ".out", "w") as f:
        json.dump(result, f)
    return 0


# --------------------------------------------------------------------------
# The part


def part_soak(s: Settings):
    lab = Lab(s.keep)
    try:
        jump = {"totp_users": TOTP_USERS, "limits": {"per_ip_connections": "600/min", "trusted": []}}
        g, port, dport = lab.gatehouse("gatehouse", jump=jump, dns_records=100, admin=True)
        admin = lab.admin_ports["gatehouse"]
        echo = DataServer("echo")
        bad_key = lab.dir / "attacker_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(bad_key)], check=True)
        seconds = s.soak_seconds
        ssh = lab.ssh(port, "x")[:-1]  # without asyncssh: OpenSSH with the attacker's key only
        ssh[ssh.index(str(lab.key))] = str(bad_key)
        cfg = {"port": port, "dns_port": dport, "seconds": seconds, "bad_key": str(bad_key), "ssh": ssh}
        cfg_path = lab.dir / "attacks.json"
        cfg_path.write_text(json.dumps(cfg))
        t0 = time.monotonic()
        samples = [sample(g.pid, admin, t0)]
        stop = threading.Event()
        threads = [threading.Thread(target=sampler, args=(g.pid, admin, t0, stop, samples), daemon=True)]
        attack_cmd = [sys.executable, "-m", __package__, "_soak_attacks", str(cfg_path)]
        attacker = lab.start("attacks", attack_cmd, cwd=PACKAGE_PARENT)
        dnsperf = lab.start("dnsperf", ["dnsperf", "-s", "127.0.0.1", "-p", str(dport), "-d", str(dnsperf_file(lab)),
                                        "-l", str(int(seconds)), "-Q", str(SOAK_DNS_QPS), "-c", "4"])  # fmt: skip
        deadline = t0 + seconds
        legit = Legit(lab, port, echo.port, deadline)
        tcp = collections.Counter(sent=0, answered=0, timeouts=0)
        threads += [threading.Thread(target=legit.forms, args=(k,)) for k in SOAK_LOGIN_EVERY]
        threads += [threading.Thread(target=legit.control_masters), threading.Thread(target=dns_tcp_loop, args=(dport, deadline, tcp))]  # fmt: skip
        log(f"soak: {seconds / 60:g} min; gatehouse pid {g.pid}, ssh {port}, dns {dport}, admin {admin}")
        for t in threads:
            t.start()
        for t in threads[1:]:
            t.join()
        echo.close()
        for p in (attacker, dnsperf):
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                log("soak: attacker or dnsperf overran; Lab.close stops it")
        stop.set()
        threads[0].join()
        end = sample(g.pid, admin, t0)  # the last reading under load...
        time.sleep(5)
        after = sample(g.pid, admin, t0)  # ...and once the connections closed
        out = cfg_path.with_name("attacks.json.out")
        atk = json.loads(out.read_text()) if out.exists() else {"note": "the attackers left no result", "kinds": {}}
        perf = dnsperf_result((lab.dir / "dnsperf.log").read_text(errors="replace"))
        server_view(lab.dir / "gatehouse.log", legit.failures)
        return report(s, samples + [end], after, legit, tcp, perf, atk)
    finally:
        lab.close()


def report(s: Settings, samples, after, legit: Legit, tcp, perf, atk):
    warm = next((x for x in samples if x["t"] >= s.soak_warmup), samples[-1])
    end = samples[-1]
    mib = lambda kib: fmt(kib / 1024)  # noqa: E731
    growth = end["rss_kib"] - warm["rss_kib"]
    fails = len(legit.failures)
    post = [x for x in samples if x["t"] >= warm["t"]]  # least squares over the readings after warm-up
    trend = (
        statistics.linear_regression([x["t"] for x in post], [x["rss_kib"] for x in post]).slope if len(post) > 2 else 0
    )
    top = {k: max(x[k] for x in samples) for k in ("rss_kib", "fds", "threads")}
    usage = [
        [name] + [f(x[k]) for x in (samples[0], warm, top, end, after)]
        for name, k, f in (("RSS MiB", "rss_kib", mib), ("open fds", "fds", str), ("threads", "threads", str))
    ]
    cpu = (end["cpu"] - samples[0]["cpu"]) / max(1e-9, end["t"])
    step = max(1, len(samples) // 20)
    counter = lambda x, name: fmt(x["metrics"].get(f"gatehouse_jump_{name}_total", 0), 0)  # noqa: E731
    series = [
        [fmt(x["t"], 0), mib(x["rss_kib"]), x["fds"], x["threads"],
         fmt((x["cpu"] - p["cpu"]) / max(1e-9, x["t"] - p["t"]) * 100, 0), counter(x, "connections"), counter(x, "bans")]
        for p, x in zip(samples[::step], samples[step::step])
    ]  # fmt: skip
    rows = [
        [k, c["attempted"], c["served"], c["attempted"] - c["served"], fmt(c["bytes"] / MIB, 0)]
        for k, c in legit.counts.items()
    ]
    why = collections.Counter(f"{f['kind']}: `{f['why']}` (gatehouse: {f['server']})" for f in legit.failures)
    attacks = [[k, f"127.{SOURCE_NETS[k]}.0.0/16, {v['sources']} used", v["launched"],
                "; ".join(f"{e} {n}" for e, n in sorted(v["ended"].items(), key=lambda kv: -kv[1]) if n)]
               for k, v in atk["kinds"].items()]  # fmt: skip
    m = end["metrics"]
    labels = {k: re.findall(r'="([^"]*)"', k) for k in m if "auth_total" in k}
    auth = ", ".join(f"{' '.join(v)} {m[k]:.0f}" for k, v in labels.items())
    verdict = (
        f"**Verdict**: RSS after warm-up {mib(warm['rss_kib'])} -> end {mib(end['rss_kib'])} MiB: {growth / 1024:+.1f} "
        f"MiB ({growth / max(1, warm['rss_kib']) * 100:+.1f}%), max {mib(top['rss_kib'])}, trend after warm-up "
        f"{trend * 3600 / 1024:+.1f} MiB/h; fds {samples[0]['fds']} at the start, {after['fds']} after "
        f"({after['fds'] - samples[0]['fds']:+d}), max {top['fds']}; legit failures: {fails} of "
        f"{sum(c['attempted'] for c in legit.counts.values())}."
    )
    md = [
        f"One gatehouse (jump + dns + admin) for {s.soak_seconds / 60:g} min: default limits, `trusted: []`, "
        "`per_ip_connections: 600/min` (all legitimate load comes from 127.0.0.1), `mfa: required`, "
        f"{TOTP_USERS} users with provisioned secrets, zone `bench` (100 records), an echo server granted. At once: "
        f"key + TOTP logins, each a different user (`ssh -W` every {SOAK_LOGIN_EVERY['ssh -W']:g} s and the "
        f"`nc -w1` exec form every {SOAK_LOGIN_EVERY['nc exec']:g} s, each echoing {SOAK_TUNNEL_BYTES // MIB} MiB "
        f"each way, every byte checked; one ControlMaster at a time for {SOAK_CM_SECONDS} s with "
        f"{SOAK_CM_PARALLEL} mux tunnels of {SOAK_CM_TUNNEL_BYTES // MIB} MiB opening and closing); dnsperf at "
        f"{SOAK_DNS_QPS} QPS (UDP) and a TCP query every 0.5 s; the attacks below, each kind from its own /16, "
        "rotating addresses (holders: 6 connections per source that never send an id, twice per source). Readings "
        f"every {SOAK_SAMPLE_SECONDS} s; warm-up = the first {s.soak_warmup:g} s; 'end' = the last reading under "
        "load, 'after' = 5 s after it stopped.",
        "",
        verdict,
        "",
        table(["gatehouse", "start", "warm-up", "max", "end", "after"], usage),
        "",
        f"CPU: {fmt(cpu * 100, 0)}% of one core on average. Over time:",
        "",
        table(["t s", "RSS MiB", "fds", "threads", "CPU %", "connections", "bans"], series),
        "",
        table(["legitimate", "attempted", "served", "failed", "MiB through (both ways)"], rows),
        "",
        "Failures: " + ("none." if not why else "; ".join(f"{w} ({n}x)" for w, n in why.most_common(20))),
        "",
        f"DNS: dnsperf (UDP) sent {perf['sent']}, answered {perf['completed']}, lost (timeouts) {perf['lost']}; "
        f"rcodes {perf['rcodes']}. TCP: sent {tcp['sent']}, answered {tcp['answered']}, timeouts {tcp['timeouts']}"
        + "".join(f", {k} {v}" for k, v in tcp.items() if k not in ("sent", "answered", "timeouts"))
        + ".",
        "",
        table(["attack", "sources", "launched", "how they ended"], attacks),
        "",
        f"Bans issued (/metrics): {m.get('gatehouse_jump_bans_total', 0):.0f}; connections past the gate "
        f"{m.get('gatehouse_jump_connections_total', 0):.0f}; auth results: {auth or 'none'}."
        + (f" **Not done here**: {atk['note']}." if atk.get("note") else ""),
    ]
    data = {"samples": samples + [after], "legit": dict(legit.counts), "failures": legit.failures,
            "dns": {"udp": perf, "tcp": dict(tcp)}, "attacks": atk, "verdict": verdict}  # fmt: skip
    return "\n".join(md), data
