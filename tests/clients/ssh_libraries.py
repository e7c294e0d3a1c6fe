#!/usr/bin/env python3
"""The C SSH libraries through the jump host, by their PyPI bindings
(tests/clients/libraries.rs), the four things a new user tries:

  libssh2  (ssh2-python) key, then `userauth_list` (a `none` request)
           names keyboard-interactive, then the code through libssh2's
           keyboard-interactive callback.
  libssh   (ssh-python) key (SSH_AUTH_PARTIAL), `userauth_list`, then the
           code through libssh's kbdint prompt loop.

Each prints the jump host's key as it saw it (the test compares). On one
login: a `direct-tcpip` channel to the granted echo server
with the bytes of --data written and read back into --out, and a channel
to the port not granted (the refusal printed as the library gives it);
then a second connection with the right key and --wrong-code.

Prints `key: value` lines (the libraries' own words) for the Rust test,
which decides; a traceback and a non-zero exit on anything unforeseen.
Loopback only, bounded in time (30 s socket and library timeouts).
"""

import argparse
import base64
import hashlib
import socket
import sys

CHUNK = 32 * 1024


def say(key, value):
    print(f"{key}: {value}", flush=True)


def text(value):
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def fingerprint(digest):
    """OpenSSH's form of a SHA-256 digest of a host key."""
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def error(e):
    """An exception as `Class message`, its bytes arguments as text."""
    return " ".join([type(e).__name__, *(text(a) for a in e.args)])


def connect(args):
    return socket.create_connection((args.host, args.port), timeout=30)


# -- libssh2 -----------------------------------------------------------------


def libssh2_login(args, code):
    """Key, then the methods left, then `code`: the session and the result."""
    from ssh2.exceptions import AuthenticationError
    from ssh2.session import Session

    sock = connect(args)
    session = Session()
    session.set_timeout(30_000)
    session.handshake(sock)
    # The key itself, hashed here: the binding's hostkey_hash() reads the
    # digest as a C string (cut at a zero byte, or running past its end).
    blob, _kind = session.hostkey()
    say("host key", fingerprint(hashlib.sha256(blob).digest()))
    try:
        session.userauth_publickey_fromfile(args.user, args.key)
    except AuthenticationError:
        # libssh2 reports a partial success as a failure; what is left
        # comes from a `none` request.
        pass
    say("after key", ",".join(session.userauth_list(args.user) or []))

    def answer(_name, _instruction, prompts, *_rest):
        for prompt in prompts:
            say("prompt", text(prompt).strip())
        return [code.encode() for _ in prompts]

    try:
        session.userauth_keyboardinteractive_callback(args.user, answer)
    except AuthenticationError as e:
        return session, sock, f"{type(e).__name__} {session.last_error() or e}"
    return session, sock, "authenticated" if session.userauth_authenticated() else "no"


def libssh2_echo(session, args, data):
    host, port = args.echo.rsplit(":", 1)
    channel = session.direct_tcpip_ex(host, int(port), "127.0.0.1", 0)
    # libssh2 queues what arrives while it writes, up to its 2 MiB window:
    # 1 MiB written whole before reading cannot stall.
    for start in range(0, len(data), CHUNK):
        chunk = data[start : start + CHUNK]
        while chunk:
            _, written = channel.write(chunk)
            chunk = chunk[written:]
    channel.send_eof()
    back = bytearray()
    while True:
        size, got = channel.read()
        if size <= 0:
            break
        back += got
    channel.close()
    return bytes(back)


def libssh2_refused(session, args):
    from ssh2.exceptions import ChannelFailure

    host, port = args.refused.rsplit(":", 1)
    try:
        session.direct_tcpip_ex(host, int(port), "127.0.0.1", 0)
    except ChannelFailure as e:
        return f"{type(e).__name__} {session.last_error()}"
    return None


def via_libssh2(args, data):
    session, _sock, result = libssh2_login(args, args.code)
    say("after code", result)
    with open(args.out, "wb") as f:
        f.write(libssh2_echo(session, args, data))
    say("refused", libssh2_refused(session, args))
    session.disconnect()
    _session, _sock, result = libssh2_login(args, args.wrong_code)
    say("wrong code", result)


# -- libssh ------------------------------------------------------------------

AUTH = {0: "success", 1: "denied", 2: "partial", 3: "info", 4: "again", -1: "error"}


def libssh_login(args, code):
    """Key, then the methods left, then `code`: the session and the result."""
    from ssh import options
    from ssh.exceptions import AuthenticationDenied, AuthenticationPartial
    from ssh.key import import_privkey_file
    from ssh.session import Session

    sock = connect(args)
    session = Session()
    session.options_set(options.HOST, args.host)
    session.options_set(options.USER, args.user)
    session.options_set_port(args.port)
    session.options_set(options.TIMEOUT, "30")
    session.set_socket(sock)
    session.connect()
    blob = base64.b64decode(session.get_server_publickey().export_pubkey_base64())
    say("host key", fingerprint(hashlib.sha256(blob).digest()))
    try:
        session.userauth_publickey(import_privkey_file(args.key))
        say("key", "success")
    except AuthenticationPartial:
        say("key", "partial")
    # libssh's method bits: 2 publickey, 16 keyboard-interactive.
    methods = session.userauth_list()
    left = [name for bit, name in [(2, "publickey"), (16, "keyboard-interactive")] if methods & bit]
    say("after key", ",".join(left))
    try:
        result = session.userauth_kbdint(args.user, "")
        while result == 3:  # SSH_AUTH_INFO: prompts to answer
            for i in range(session.userauth_kbdint_getnprompts()):
                say("prompt", text(session.userauth_kbdint_getprompt(i, b"\0")).strip())
                session.userauth_kbdint_setanswer(i, code.encode())
            result = session.userauth_kbdint(args.user, "")
    except AuthenticationDenied as e:
        return session, sock, error(e)
    return session, sock, AUTH.get(result, result)


def libssh_echo(session, args, data):
    host, port = args.echo.rsplit(":", 1)
    channel = session.channel_new()
    channel.open_forward(host, int(port), "127.0.0.1", 0)
    back = bytearray()

    def drain():
        while True:
            size, got = channel.read_nonblocking()
            if size <= 0:
                return
            back.extend(got)

    # Read what came back between writes: libssh's window is its own.
    for start in range(0, len(data), CHUNK):
        channel.write(data[start : start + CHUNK])
        drain()
    channel.send_eof()
    while True:
        size, got = channel.read()
        if size <= 0:
            break
        back.extend(got)
    channel.close()
    return bytes(back)


def libssh_refused(session, args):
    from ssh.exceptions import SSHError

    host, port = args.refused.rsplit(":", 1)
    channel = session.channel_new()
    try:
        channel.open_forward(host, int(port), "127.0.0.1", 0)
    except SSHError as e:
        return error(e)
    return None


def via_libssh(args, data):
    session, _sock, result = libssh_login(args, args.code)
    say("after code", "authenticated" if result == "success" else result)
    with open(args.out, "wb") as f:
        f.write(libssh_echo(session, args, data))
    say("refused", libssh_refused(session, args))
    session.disconnect()
    _session, _sock, result = libssh_login(args, args.wrong_code)
    say("wrong code", result)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("library", choices=["libssh2", "libssh"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="the jump host's port")
    p.add_argument("--user", required=True)
    p.add_argument("--key", required=True, help="ed25519 private key (OpenSSH format)")
    p.add_argument("--code", required=True, help="the current code")
    p.add_argument("--wrong-code", required=True)
    p.add_argument("--echo", required=True, help="HOST:PORT granted, an echo server")
    p.add_argument("--refused", required=True, help="HOST:PORT not granted")
    p.add_argument("--data", required=True, help="the bytes to send through --echo")
    p.add_argument("--out", required=True, help="where to write what came back")
    args = p.parse_args()
    with open(args.data, "rb") as f:
        data = f.read()
    if args.library == "libssh2":
        via_libssh2(args, data)
    else:
        via_libssh(args, data)
    sys.exit(0)


if __name__ == "__main__":
    main()
