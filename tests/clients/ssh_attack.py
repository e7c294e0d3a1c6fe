#!/usr/bin/env python3
"""Hostile SSH clients for the end-to-end tests (tests/hostile.rs,
tests/credentials.rs), on asyncssh (and paramiko where it can do more):
what OpenSSH will not do on purpose.

  login        one login attempt: a chosen user-key signature algorithm
               (SHA-1 `ssh-rsa`), a user name of N bytes, a TOTP code;
               with --sign-when, the key is probed, then signed for only
               once told to go on (the server's view may change between)
  cert-then-key
               (paramiko) on one connection: a certificate for one user
               (partial success: that user is enrolled), then another
               user's plain key; open a tunnel as the second user and
               hold it until told to stop, then say whether the
               server has closed the connection
  rekey-storm  log in, open a tunnel, and re-key after every packet until
               told to stop and --min round trips are done (or the
               server ends the connection)
  channel-flood
               log in, open --channels session channels and push data
               into each that nothing reads, until the server takes no
               more; then hold the connection until told to stop
  stalled-tunnel
               log in, push data into a tunnel whose target never reads,
               and echo data through a second tunnel of the same
               connection meanwhile
  env-flood    log in, open a tunnel and echo through it, then send
               --requests `env` requests on a session channel nobody
               reads (and one that wants a reply); hold until told to
               stop, close that channel, and echo through the tunnel
               again
  enroll-flood log in with the key alone (a user who may only enroll), open
               the enrollment screen and type `1` + DEL into it as fast as
               the server takes them, never reading the echo (the client's
               receive window stays closed), until told to stop
  window-flood open --connections connections, each with --tunnels
               tunnels to a target that never reads, and push data into
               every tunnel until the server takes no more; then hold them
               until told to stop

The Rust test says "go on" (sign, stop) with SIGUSR1, never a file to poll
for: its handler is in place before the first line is printed.

Every subcommand prints `key: value` lines on stdout for the Rust test to
read, and exits 0 when it got in, 2 when the server refused the login, 1
on anything else. Bounded in count and time; talks to loopback only.
"""

import argparse
import asyncio
import os
import signal
import sys
import threading
import time

import asyncssh
from asyncssh.packet import String

REFUSED = 2

# Set by SIGUSR1 from the Rust test (see `told`).
GO_ON = threading.Event()


def say(key, value):
    print(f"{key}: {value}", flush=True)


class Client(asyncssh.SSHClient):
    """Answers the `Verification code:` prompt with --code, if given."""

    def __init__(self, code):
        self.code = code

    def kbdint_auth_requested(self):
        return ""

    def kbdint_challenge_received(self, name, instructions, lang, prompts):
        for prompt, _echo in prompts:
            say("prompt", prompt.strip())
        if not prompts:
            return []
        if self.code is None:
            # Abort keyboard-interactive: no code to give.
            return None
        return [self.code] * len(prompts)

    def password_auth_requested(self):
        return None


def options(args, **extra):
    kwargs = dict(
        host=args.host,
        port=args.port,
        username=args.user if args.user_len is None else "x" * args.user_len,
        client_keys=[asyncssh.read_private_key(args.key)],
        known_hosts=None,
        agent_path=None,
        preferred_auth=["publickey", "keyboard-interactive"],
        login_timeout=60,
    )
    if args.sig_alg:
        kwargs["signature_algs"] = [args.sig_alg]
    if args.source:
        kwargs["local_addr"] = (args.source, 0)
    kwargs.update(extra)
    return kwargs


def sign_when(args):
    """Sign only once `args.sign_when` exists, after writing `args.probed`
    when the server accepted the probe (asyncssh probes first, then signs
    on USERAUTH_PK_OK)."""
    send = asyncssh.auth._ClientPublicKeyAuth._send_signed_request
    deadline = time.monotonic() + 60

    async def late(self):
        open(args.probed, "w").close()
        say("probe", "accepted")
        await told(deadline)
        await send(self)

    asyncssh.auth._ClientPublicKeyAuth._send_signed_request = late


async def login(args):
    if args.sign_when:
        sign_when(args)
    try:
        conn, _ = await asyncssh.create_connection(
            lambda: Client(args.code), **options(args)
        )
    except asyncssh.PermissionDenied:
        # Not the exception's text: it quotes the user name, maybe 100 kB.
        say("result", "refused")
        return REFUSED
    async with conn:
        say("result", "authenticated")
        return 0


# Counts the KEXINITs this client sends (the first one included).
KEXINITS = 0
_send_kexinit = asyncssh.connection.SSHConnection._send_kexinit


def _counting_kexinit(self):
    global KEXINITS
    KEXINITS += 1
    return _send_kexinit(self)


async def rekey_storm(args):
    # rekey_bytes=1: asyncssh starts a new key exchange before the first
    # packet it sends after each one completes, so every echo round trip
    # through the tunnel is one re-key the server must run.
    asyncssh.connection.SSHConnection._send_kexinit = _counting_kexinit
    deadline = time.monotonic() + args.seconds
    try:
        conn, _ = await asyncssh.create_connection(
            lambda: Client(args.code), **options(args, rekey_bytes=1)
        )
    except asyncssh.PermissionDenied:
        # Not the exception's text: it quotes the user name, maybe 100 kB.
        say("result", "refused")
        return REFUSED
    say("result", "authenticated")
    host, port = args.to.rsplit(":", 1)
    closed = "no"
    trips = 0
    try:
        reader, writer = await conn.open_connection(host, int(port))
        while (
            (trips < args.min or not GO_ON.is_set())
            and KEXINITS < args.max
            and time.monotonic() < deadline
        ):
            writer.write(b"x")
            got = await asyncio.wait_for(reader.read(1), 30)
            if not got:
                closed = "yes (tunnel eof)"
                break
            trips += 1
            if trips == args.announce:
                say("storming", KEXINITS)
        else:
            # Still served after the stop: one more round trip proves it.
            writer.write(b"y")
            got = await asyncio.wait_for(reader.read(1), 30)
            say("alive after stop", "yes" if got == b"y" else "no")
    except (asyncssh.Error, OSError, asyncio.TimeoutError) as e:
        closed = f"yes ({type(e).__name__}: {e})"
    say("round trips", trips)
    say("rekeys", max(KEXINITS - 1, 0))
    say("closed by server", closed)
    conn.close()
    return 0


async def connect(args):
    """The connection, or None (said `result: refused`) if refused."""
    try:
        conn, _ = await asyncssh.create_connection(
            lambda: Client(args.code), **options(args)
        )
    except asyncssh.PermissionDenied:
        say("result", "refused")
        return None
    say("result", "authenticated")
    return conn


async def open_bare_session(conn):
    """A session channel with no request on it (no shell, no exec): what
    the server does with data sent there is the question. asyncssh has no
    public call for it; 2.24.1's own channel class does the open."""
    chan = asyncssh.channel.SSHClientChannel(
        conn, asyncio.get_running_loop(), "strict", None, "strict",
        2 * 1024 * 1024, 32768,
    )
    await chan._open(b"session")
    session = asyncssh.SSHClientSession()
    chan._session = session
    session.connection_made(chan)
    return chan


def unsent(writers):
    return sum(w.get_write_buffer_size() for w in writers)


async def push(writers, budget, settle, deadline, chunk=None):
    """Write CHUNK-sized pieces (or `chunk`) into every writer (at most
    `budget` bytes each), keeping at most one chunk waiting in asyncssh,
    until nothing has left the client for `settle` seconds: the bytes the
    server took."""
    chunk = CHUNK if chunk is None else chunk
    written = [0] * len(writers)
    taken, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < settle and time.monotonic() < deadline:
        for i, w in enumerate(writers):
            if written[i] < budget and w.get_write_buffer_size() < len(chunk):
                w.write(chunk)
                written[i] += len(chunk)
        now_taken = sum(written) - unsent(writers)
        if now_taken != taken:
            taken, quiet_since = now_taken, time.monotonic()
        await asyncio.sleep(0.02)
    return sum(written), taken


# The attack: 99 packets of 200 KiB per channel.
CHUNK = b"x" * (200 * 1024)


async def told(deadline):
    """Until the Rust test says go on (SIGUSR1), or `deadline`."""
    left = max(deadline - time.monotonic(), 0)
    await asyncio.get_running_loop().run_in_executor(None, GO_ON.wait, left)


async def channel_flood(args):
    deadline = time.monotonic() + args.seconds
    conn = await connect(args)
    if conn is None:
        return REFUSED
    chans = [await open_bare_session(conn) for _ in range(args.channels)]
    say("channels", len(chans))
    written, taken = await push(chans, 99 * len(CHUNK), args.settle, deadline)
    say("written", written)
    say("taken", taken)
    say("flooded", "yes")
    await told(deadline)
    # Still connected: the server refused nothing, it just stopped reading.
    alive = not conn._transport.is_closing() and all(not c.is_closing() for c in chans)
    say("alive after stop", "yes" if alive else "no")
    conn.close()
    return 0


async def window_used_up(chan, deadline):
    """Whether, before `deadline`, the server has left `chan` no window to
    send in while data waits (asyncssh keeps the window in `_send_window`)."""
    while time.monotonic() < deadline:
        if chan._send_window == 0 and chan.get_write_buffer_size() > 0:
            return True
        await asyncio.sleep(0.01)
    return False


async def stalled_tunnel(args):
    deadline = time.monotonic() + args.seconds
    conn = await connect(args)
    if conn is None:
        return REFUSED
    host, port = args.sink.rsplit(":", 1)
    _, stuck_writer = await conn.open_connection(host, int(port))
    stuck = stuck_writer.channel
    host, port = args.to.rsplit(":", 1)
    reader, writer = await conn.open_connection(host, int(port))

    async def echo():
        echoed = 0
        piece = b"e" * 65536
        for _ in range(args.round_trips):
            writer.write(piece)
            got = await asyncio.wait_for(reader.readexactly(len(piece)), 30)
            echoed += len(got)
        return echoed

    stuck_push = asyncio.ensure_future(
        push([stuck], 64 * 1024 * 1024, args.settle, deadline)
    )
    # The stuck tunnel's window first: the server grants it nothing more.
    say("stuck window used up", "yes" if await window_used_up(stuck, deadline) else "no")
    echoed = await echo()
    written, taken = await stuck_push
    say("stuck written", written)
    say("stuck taken", taken)
    say("echoed", echoed)
    conn.close()
    return 0


async def env_flood(args):
    deadline = time.monotonic() + args.seconds
    conn = await connect(args)
    if conn is None:
        return REFUSED
    host, port = args.to.rsplit(":", 1)
    reader, writer = await conn.open_connection(host, int(port))

    async def echoes(line):
        writer.write(line)
        got = await asyncio.wait_for(reader.readexactly(len(line)), 30)
        return "yes" if got == line else "no"

    say("echo before", await echoes(b"before\n"))
    chan = await open_bare_session(conn)
    value = String("v" * args.value_len)
    for i in range(args.requests):
        # As OpenSSH's SendEnv does: no reply wanted.
        chan._send_request(b"env", String(f"GH_{i}"), value)
        if i % 500 == 499:
            await asyncio.sleep(0)
    # The server answers in order: this reply comes after all the others.
    answer = await asyncio.wait_for(
        chan._make_request(b"env", String("LANG"), String("C")), 60
    )
    say("env sent", args.requests + 1)
    say("last env", {True: "accepted", False: "refused"}.get(answer, answer))
    say("flooded", "yes")
    await told(deadline)
    chan.close()
    await asyncio.wait_for(chan.wait_closed(), 30)
    say("echo after", await echoes(b"after\n"))
    alive = not conn._transport.is_closing()
    say("alive after stop", "yes" if alive else "no")
    conn.close()
    return 0


async def enroll_flood(args):
    deadline = time.monotonic() + args.seconds
    conn = await connect(args)
    if conn is None:
        return REFUSED
    # A small receive window that is never re-opened: the echo is not read.
    chan, _ = await conn.create_session(
        asyncssh.SSHClientSession, term_type="xterm", window=args.window, encoding=None
    )
    chan.pause_reading()
    typing = b"1\x7f" * (len(CHUNK) // 2)
    written, taken = await push([chan], args.budget, args.settle, deadline, typing)
    say("written", written)
    say("taken", taken)
    say("flooded", "yes")
    await told(deadline)
    conn.close()
    return 0


async def window_flood(args):
    deadline = time.monotonic() + args.seconds
    host, port = args.sink.rsplit(":", 1)
    conns, writers = [], []
    for _ in range(args.connections):
        conn = await connect(args)
        if conn is None:
            return REFUSED
        conns.append(conn)
        for _ in range(args.tunnels):
            _, writer = await conn.open_connection(host, int(port))
            writers.append(writer.channel)
    say("tunnels", len(writers))
    written, taken = await push(writers, args.budget, args.settle, deadline)
    say("written", written)
    say("taken", taken)
    say("flooded", "yes")
    await told(deadline)
    for conn in conns:
        conn.close()
    return 0


def cert_then_key(args):
    # paramiko, not asyncssh: after a partial success asyncssh goes on only
    # with the methods the server names (keyboard-interactive), paramiko's
    # auth_publickey sends whatever it is asked to.
    import socket

    import paramiko

    deadline = time.monotonic() + args.seconds
    sock = socket.create_connection((args.host, args.port), timeout=30)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = transport.auth_timeout = 30
    transport.start_client(timeout=30)
    first = paramiko.Ed25519Key.from_private_key_file(args.cert_key)
    first.load_certificate(args.cert)
    needed = transport.auth_publickey(args.cert_user, first)
    say("after certificate", ",".join(needed) or "authenticated")
    second = paramiko.Ed25519Key.from_private_key_file(args.key)
    try:
        needed = transport.auth_publickey(args.user, second)
    except paramiko.AuthenticationException:
        say("result", "refused")
        return REFUSED
    say("after key", ",".join(needed) or "authenticated")
    if needed:
        return REFUSED
    say("result", "authenticated")
    host, port = args.to.rsplit(":", 1)
    channel = transport.open_channel(
        "direct-tcpip", (host, int(port)), ("127.0.0.1", 0), timeout=30
    )
    channel.settimeout(30)
    channel.sendall(b"ping\n")
    say("echo", channel.recv(5).decode().strip())
    GO_ON.wait(max(deadline - time.monotonic(), 0))
    # The server's DISCONNECT takes a moment to arrive: wait for it (at
    # most until the deadline) rather than judge at once.
    while transport.is_active() and time.monotonic() < deadline:
        time.sleep(0.05)
    say("closed by server", "no" if transport.is_active() else "yes")
    transport.close()
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("login", "rekey-storm", "channel-flood", "stalled-tunnel", "env-flood", "enroll-flood", "window-flood"):
        s = sub.add_parser(name)
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--user", default="sean")
        s.add_argument("--user-len", type=int, help="a user name of this many bytes")
        s.add_argument("--key", required=True, help="private key file (OpenSSH format)")
        s.add_argument("--sig-alg", help="the only signature algorithm to sign with")
        s.add_argument("--code", help="answer to the code prompt")
        s.add_argument("--source", help="local address to connect from")
    login_ = sub.choices["login"]
    login_.add_argument("--sign-when", action="store_true", help="sign for the key only once told to (SIGUSR1)")
    login_.add_argument("--probed", help="written when the probe was accepted")
    switch = sub.add_parser("cert-then-key")
    switch.add_argument("--host", default="127.0.0.1")
    switch.add_argument("--port", type=int, required=True)
    switch.add_argument("--cert-user", required=True, help="the certificate's user")
    switch.add_argument("--cert-key", required=True, help="its private key (ed25519)")
    switch.add_argument("--cert", required=True, help="its certificate (-cert.pub)")
    switch.add_argument("--user", required=True, help="then this user...")
    switch.add_argument("--key", required=True, help="...with this plain key (ed25519)")
    switch.add_argument("--to", required=True, help="HOST:PORT of an echo server")
    switch.add_argument("--seconds", type=float, default=60, help="at most this long")
    storm = sub.choices["rekey-storm"]
    storm.add_argument("--to", required=True, help="HOST:PORT of an echo server")
    storm.add_argument("--min", type=int, default=0, help="but not before this many round trips")
    storm.add_argument("--max", type=int, default=5000, help="at most this many key exchanges")
    storm.add_argument("--seconds", type=float, default=60, help="at most this long")
    storm.add_argument("--announce", type=int, default=20, help="say `storming` after this many round trips")
    flood = sub.choices["channel-flood"]
    flood.add_argument("--channels", type=int, default=32)
    stalled = sub.choices["stalled-tunnel"]
    stalled.add_argument("--sink", required=True, help="HOST:PORT of a server that never reads")
    stalled.add_argument("--to", required=True, help="HOST:PORT of an echo server")
    stalled.add_argument("--round-trips", type=int, default=100, help="64 KiB echoes")
    envs = sub.choices["env-flood"]
    envs.add_argument("--to", required=True, help="HOST:PORT of an echo server")
    envs.add_argument("--requests", type=int, default=10_000)
    envs.add_argument("--value-len", type=int, default=1024, help="bytes of each value")
    envs.add_argument("--seconds", type=float, default=90, help="at most this long")
    enroll = sub.choices["enroll-flood"]
    enroll.add_argument("--window", type=int, default=32768, help="the client's receive window")
    enroll.add_argument("--budget", type=int, default=128 * 1024 * 1024, help="bytes to type at most")
    windows = sub.choices["window-flood"]
    windows.add_argument("--sink", required=True, help="HOST:PORT of a server that never reads")
    windows.add_argument("--connections", type=int, default=1)
    windows.add_argument("--tunnels", type=int, default=8, help="tunnels per connection")
    windows.add_argument("--budget", type=int, default=64 * 1024 * 1024, help="bytes per tunnel at most")
    for s in (flood, stalled, enroll, windows):
        s.add_argument("--settle", type=float, default=2, help="seconds with nothing taken: done")
        s.add_argument("--seconds", type=float, default=90, help="at most this long")
    args = p.parse_args()
    # Before anything is printed: the test signals only after reading.
    signal.signal(signal.SIGUSR1, lambda *_: GO_ON.set())
    if args.command == "cert-then-key":
        import paramiko

        try:
            sys.exit(cert_then_key(args))
        except (paramiko.SSHException, OSError) as e:
            say("error", f"{type(e).__name__}: {str(e)[:200]}")
            sys.exit(1)
    run = {
        "login": login,
        "rekey-storm": rekey_storm,
        "channel-flood": channel_flood,
        "stalled-tunnel": stalled_tunnel,
        "env-flood": env_flood,
        "enroll-flood": enroll_flood,
        "window-flood": window_flood,
    }[args.command]
    try:
        sys.exit(asyncio.run(run(args)))
    except (asyncssh.Error, OSError) as e:
        say("error", f"{type(e).__name__}: {str(e)[:200]}")
        sys.exit(1)


if __name__ == "__main__":
    main()
