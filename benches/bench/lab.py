"""The servers under test and the loopback helpers they need.

Owns: Lab (a /tmp/gatehouse-bench.* folder with a client key; starts
gatehouse, sshd, sshd with PAM TOTP and dnsmasq in it, writes their
configs, builds ssh command lines with SSH_OPTS, and on close stops every
process and client it started, removes its PAM service file and deletes
the folder), DataServer (loopback sink, source and one-byte servers),
free_port, wait_tcp, record_ip, jump_pair.
Must not: measure or format anything; the parts time what the Lab starts.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .settings import DNSMASQ, GATEHOUSE, KNOTD, NSD, SSHD
from .util import log


def free_port(udp_too: bool = False) -> int:
    """A port free on 127.0.0.1 for TCP (and UDP). Released before use: a
    race with another program is possible, and then the server fails to
    start and the part says so."""
    for _ in range(50):
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        try:
            if udp_too:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
                finally:
                    u.close()
            return port
        finally:
            t.close()
    raise RuntimeError("no free port")


def wait_tcp(port: int, proc: subprocess.Popen, what: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


# --------------------------------------------------------------------------
# Loopback data servers: sink, source, one byte


class DataServer:
    """A loopback TCP server on its own thread.

    mode "sink":   reads exactly `nbytes` per connection, then closes; puts
                   (bytes, first-byte time, last-byte time) on `results`.
    mode "source": sends `nbytes` per connection, then closes.
    mode "one":    sends one byte `x`, then closes (the login benchmark).
    mode "echo":   sends back what it reads until the peer's EOF, then
                   closes (the soak checks every byte of a tunnel).
    """

    def __init__(self, mode: str, nbytes: int = 0):
        self.mode, self.nbytes = mode, nbytes
        self.results: queue.Queue = queue.Queue()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.mode == "one":
                try:
                    conn.sendall(b"x")
                finally:
                    conn.close()
            else:
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket):
        try:
            if self.mode == "echo":
                while chunk := conn.recv(1 << 16):
                    conn.sendall(chunk)
            elif self.mode == "sink":
                buf = bytearray(4 << 20)
                got, first = 0, None
                while got < self.nbytes:
                    n = conn.recv_into(buf)
                    if n == 0:
                        break
                    if first is None:
                        first = time.perf_counter()
                    got += n
                self.results.put((got, first, time.perf_counter()))
            else:
                chunk = memoryview(bytes(4 << 20))
                left = self.nbytes
                while left > 0:
                    n = min(left, len(chunk))
                    conn.sendall(chunk[:n])
                    left -= n
        except OSError as e:
            if self.mode == "sink":
                self.results.put((0, None, None))
            log(f"{self.mode}: {e}")
        finally:
            conn.close()

    def close(self):
        self.sock.close()


# --------------------------------------------------------------------------
# The servers


class Lab:
    """A temporary folder with a client key, and the servers started in it."""

    def __init__(self, keep: bool = False):
        self.dir = Path(tempfile.mkdtemp(prefix="gatehouse-bench."))
        os.chmod(self.dir, 0o700)
        self.keep = keep
        self.procs: list[subprocess.Popen] = []
        # name -> the admin endpoint's port, for gatehouse(admin=True).
        self.admin_ports: dict[str, int] = {}
        # Files outside self.dir to remove on close (a PAM service file).
        self.cleanup: list[Path] = []
        self.key = self.dir / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(self.key)],
            check=True,
        )
        self.pub = (self.dir / "id_ed25519.pub").read_text().strip()

    def start(self, name: str, cmd, **kw) -> subprocess.Popen:
        logf = open(self.dir / f"{name}.log", "wb")
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def gatehouse(
        self,
        name: str,
        jump: dict | None = None,
        dns_records: int | None = None,
        admin=False,
        extra: list[str] | None = None,
    ):
        """Start gatehouse; returns (process, ssh port or None, dns port or None).
        With `admin`, also the admin endpoint (/metrics), its port in
        self.admin_ports[name]."""
        state = self.dir / f"{name}-state"
        state.mkdir(mode=0o700)
        lines = [f"state_dir: {state}", "log: { format: json, level: info }", *(extra or [])]
        ssh_port = dns_port = None
        if jump is not None:
            ssh_port = free_port()
            limits = jump.get("limits", {"trusted": ["127.0.0.0/8"]})
            totp_users = jump.get("totp_users", 0)
            lines += [
                "jump:",
                f'  listen: ["127.0.0.1:{ssh_port}"]',
                f"  mfa: {'required' if totp_users else 'optional'}",
                f"  limits: {json.dumps(limits)}",
                "  users:",
                "    bench:",
                f"      keys: [{json.dumps(self.pub)}]",
                "      groups: [bench]",
            ]
            for k in range(totp_users):
                lines += [
                    f"    u{k}:",
                    f"      keys: [{json.dumps(self.pub)}]",
                    "      groups: [bench]",
                    f"      totp_secret_file: {self.totp_secret(f'u{k}')}",
                ]
            lines += [
                "  groups:",
                "    bench:",
                '      allow: ["127.0.0.0/8:*"]',
            ]
        if dns_records is not None:
            dns_port = free_port(udp_too=True)
            lines += [
                "dns:",
                f'  listen: ["127.0.0.1:{dns_port}"]',
                "  ttl: 60s",
                # A benchmark is one network sending far more than any
                # client: no rate limit, as NSD runs with rrl-ratelimit: 0.
                "  rate_limit: { per_network: off }",
                "  zones:",
                "    bench:",
                "      records:",
            ]
            lines += [f"        r{i}: {record_ip(i)}" for i in range(dns_records)]
        if admin:
            self.admin_ports[name] = free_port()
            lines += [f'admin: {{ listen: "127.0.0.1:{self.admin_ports[name]}" }}']
        # The config gets a folder of its own: gatehouse watches the config's
        # folder for changes, and would wake up for every line written to
        # the logs if they were next to it.
        etc = self.dir / f"{name}-etc"
        etc.mkdir(mode=0o700)
        config = etc / "gatehouse.yaml"
        config.write_text("\n".join(lines) + "\n")
        p = self.start(name, [str(GATEHOUSE), "run", "--config", str(config)])
        if ssh_port:
            wait_tcp(ssh_port, p, "gatehouse")
        if dns_port:
            wait_tcp(dns_port, p, "gatehouse")
        if admin:
            wait_tcp(self.admin_ports[name], p, "gatehouse")
        return p, ssh_port, dns_port

    def totp_secret(self, user: str) -> Path:
        """A provisioned TOTP secret for `user` (base32, 0600): the file
        gatehouse's `totp_secret_file` names and the askpass helper reads."""
        secrets = self.dir / "totp-secrets"
        secrets.mkdir(mode=0o700, exist_ok=True)
        path = secrets / user
        if not path.exists():
            path.write_text(base64.b32encode(os.urandom(20)).decode() + "\n")
            os.chmod(path, 0o600)
        return path

    def askpass(self) -> Path:
        """SSH_ASKPASS helper answering `Verification code:` with oathtool,
        from the secret file named by $BENCH_TOTP_SECRET."""
        path = self.dir / "askpass-totp"
        if not path.exists():
            path.write_text('#!/bin/sh\nexec oathtool --totp -b "$(cat "$BENCH_TOTP_SECRET")"\n')
            os.chmod(path, 0o700)
        return path

    def ssh_totp(self, port: int, user: str, secret: Path, *extra: str):
        """An ssh login that answers the code prompt: (command, environment)."""
        cmd = self.ssh(port, user, *extra)
        cmd[cmd.index("BatchMode=yes")] = "BatchMode=no"
        env = {
            "SSH_ASKPASS": str(self.askpass()),
            "SSH_ASKPASS_REQUIRE": "force",
            "BENCH_TOTP_SECRET": str(secret),
        }
        return cmd, env

    def sshd_pam_totp(self, name: str):
        """sshd with publickey + keyboard-interactive through
        pam_google_authenticator, or None when the module is not installed.
        sshd names its PAM service after its program name, so it runs
        through a symlink and the service file is /etc/pam.d/<that name>
        (removed again by close())."""
        module = glob.glob("/usr/lib/*/security/pam_google_authenticator.so") + glob.glob(
            "/lib/*/security/pam_google_authenticator.so"
        )
        if not module or not os.access("/etc/pam.d", os.W_OK):
            return None
        service = f"gatehouse-bench-{os.getpid()}"
        ga = self.dir / "google_authenticator"
        ga.write_text(self.totp_secret("pam").read_text() + '" TOTP_AUTH\n')
        os.chmod(ga, 0o600)
        pam = Path("/etc/pam.d") / service
        pam.write_text(
            f"auth required pam_google_authenticator.so secret={ga} user=root\n"
            "account required pam_permit.so\n"
            "session required pam_permit.so\n"
        )
        self.cleanup.append(pam)
        link = self.dir / service
        link.symlink_to(SSHD)
        p, port = self.sshd(
            name,
            binary=str(link),
            extra="UsePAM yes\nKbdInteractiveAuthentication yes\n"
            "AuthenticationMethods publickey,keyboard-interactive\nPermitRootLogin yes\n",
        )
        return p, port

    def sshd(self, name: str, max_startups: str | None = "1000", binary: str = "", extra: str = ""):
        """Start an OpenSSH sshd as a jump host; returns (process, port)."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        host_key = self.dir / f"{name}_host_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True
        )
        auth = self.dir / "authorized_keys"
        auth.write_text(self.pub + "\n")
        port = free_port()
        config = self.dir / f"{name}_config"
        text = (
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"PidFile {self.dir / name}.pid\nAuthorizedKeysFile {auth}\n"
            + extra
            + "StrictModes no\nUsePAM no\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nAllowTcpForwarding yes\n"
            "X11Forwarding no\nPrintMotd no\nPrintLastLog no\nUseDNS no\n"
            "LogLevel INFO\nMaxSessions 1000\n"
        )
        if max_startups:
            text += f"MaxStartups {max_startups}\n"
        config.write_text(text)
        p = self.start(name, [binary or SSHD, "-D", "-e", "-f", str(config)])
        wait_tcp(port, p, "sshd")
        return p, port

    def dnsmasq(self, name: str, records: int):
        conf = self.dir / f"{name}.conf"
        conf.write_text("".join(f"address=/.r{i}.bench/{record_ip(i)}\n" for i in range(records)))
        port = free_port(udp_too=True)
        p = self.start(
            name,
            [
                DNSMASQ,
                "--no-resolv",
                "--no-hosts",
                "-p",
                str(port),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "-k",
                "-C",
                str(conf),
                "--log-facility=-",
            ],
        )
        wait_tcp(port, p, "dnsmasq")
        return p, port

    def bench_zone(self, records: int) -> Path:
        """The zone `bench.` as a zone file for Knot and NSD: `rN` and the
        wildcard `*.rN` for every record, which answers what gatehouse's
        `rN: IP` answers (the name and every name below it)."""
        path = self.dir / f"bench-{records}.zone"
        lines = [
            "$ORIGIN bench.",
            "$TTL 60",
            "@ SOA ns.bench. hostmaster.bench. 1 3600 600 86400 60",
            "@ NS ns.bench.",
            "ns A 127.0.0.1",
        ]
        for i in range(records):
            lines += [f"r{i} A {record_ip(i)}", f"*.r{i} A {record_ip(i)}"]
        path.write_text("\n".join(lines) + "\n")
        return path

    def knot(self, name: str, records: int, workers: int = 2):
        """Knot DNS (knotd), udp-workers = cores."""
        zone = self.bench_zone(records)
        port = free_port(udp_too=True)
        run = self.dir / f"{name}-run"
        run.mkdir()
        conf = self.dir / f"{name}.conf"
        conf.write_text(
            "server:\n"
            f"    listen: 127.0.0.1@{port}\n"
            f"    rundir: {run}\n"
            f"    udp-workers: {workers}\n"
            "    tcp-workers: 1\n"
            "    background-workers: 1\n"
            "log:\n  - target: stderr\n    any: warning\n"
            f"database:\n    storage: {run}\n"
            "zone:\n"
            f"  - domain: bench\n    file: {zone}\n    storage: {run}\n"
            "    journal-content: none\n    zonefile-sync: -1\n"
        )
        p = self.start(name, [KNOTD, "-c", str(conf)])
        wait_tcp(port, p, "knotd")
        return p, port

    def nsd(self, name: str, records: int, workers: int = 2):
        """NSD, server-count = cores, rrl-ratelimit 0 (its default RRL would
        drop most of a benchmark)."""
        zone = self.bench_zone(records)
        port = free_port(udp_too=True)
        conf = self.dir / f"{name}.conf"
        conf.write_text(
            "server:\n"
            f"  ip-address: 127.0.0.1@{port}\n"
            f"  server-count: {workers}\n"
            '  username: ""\n'
            '  chroot: ""\n'
            f"  zonesdir: {self.dir}\n"
            f"  pidfile: {self.dir}/{name}.pid\n"
            f"  xfrdfile: {self.dir}/{name}-xfrd.state\n"
            f"  zonelistfile: {self.dir}/{name}-zone.list\n"
            '  database: ""\n'
            "  rrl-ratelimit: 0\n"
            "  verbosity: 0\n"
            "remote-control:\n  control-enable: no\n"
            f"zone:\n  name: bench\n  zonefile: {zone}\n"
        )
        p = self.start(name, [NSD, "-d", "-c", str(conf)])
        wait_tcp(port, p, "nsd")
        return p, port

    def ssh(self, port: int, user: str, *extra: str, cipher: str | None = None, kex: str | None = None):
        """`kex` replaces SSH_OPTS's curve25519-sha256 (ssh takes the first
        value of an option, so a later `-o KexAlgorithms=` would not)."""
        opts = SSH_OPTS if kex is None else [f"KexAlgorithms={kex}" if o.startswith("KexAlgorithms=") else o for o in SSH_OPTS]
        cmd = ["ssh", "-F", "/dev/null", "-i", str(self.key), *opts, "-p", str(port)]
        if cipher:
            cmd += ["-c", cipher]
        return cmd + list(extra) + [f"{user}@127.0.0.1"]

    def stop_clients(self):
        """Kill the background ssh clients of this lab (they name our key)."""
        marker = str(self.key).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if cmdline.startswith(b"ssh\0") and marker in cmdline:
                try:
                    os.kill(int(entry), signal.SIGTERM)
                except OSError:
                    pass

    def close(self):
        self.stop_clients()
        for path in self.cleanup:
            path.unlink(missing_ok=True)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.keep:
            log(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


SSH_OPTS = [
    "-o", "IdentitiesOnly=yes",
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "ControlMaster=no",
    "-o", "ControlPath=none",
    "-o", "KexAlgorithms=curve25519-sha256",
    "-o", "HostKeyAlgorithms=ssh-ed25519",
    "-o", "Compression=no",
    "-o", "ConnectTimeout=10",
]  # fmt: skip


def record_ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def jump_pair(lab: Lab, max_startups="1000"):
    """Both jump hosts; [(name, process, port, user)]."""
    g, gport, _ = lab.gatehouse("gatehouse", jump={})
    s, sport = lab.sshd("sshd", max_startups=max_startups)
    user = os.environ.get("USER") or subprocess.run(
        ["id", "-un"], capture_output=True, text=True
    ).stdout.strip()
    return [("gatehouse", g, gport, "bench"), ("sshd", s, sport, user)]
