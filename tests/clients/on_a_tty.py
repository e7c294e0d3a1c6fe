#!/usr/bin/env python3
"""Run a command on a terminal of its own and type the TOTP code, as a
person would, whenever `Verification code:` shows on it (tests/clients/).

PuTTY's plink and dropbear's dbclient ask for the code on the controlling
terminal (/dev/tty), even when they are a ProxyCommand with stdin and
stdout piped to ssh: no askpass. This gives them one.

  on_a_tty.py --secret BASE32 [--secret BASE32 ...] -- COMMAND ARGS...

The n-th prompt gets the current code for the n-th secret (the last one
repeats). Everything the terminal showed is copied to stdout; the exit
status is the command's. Killed after --seconds (default 60).
"""

import argparse
import os
import pty
import select
import subprocess
import sys
import time

PROMPT = b"Verification code:"


def code(secret):
    out = subprocess.run(
        ["oathtool", "--totp", "-b", secret], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--secret", action="append", required=True)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command")
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(command[0], command)
    seen, answered, status = b"", 0, None
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the terminal's last user closed it
            break
        if not chunk:
            break
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        seen += chunk
        if seen.count(PROMPT) > answered:
            secret = args.secret[min(answered, len(args.secret) - 1)]
            os.write(fd, (code(secret) + "\r").encode())
            answered += 1
    else:
        os.kill(pid, 9)
        print(f"\non_a_tty: killed after {args.seconds} s", file=sys.stderr)
    if status is None:
        _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
