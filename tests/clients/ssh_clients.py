#!/usr/bin/env python3
"""Well-behaved SSH libraries through the jump host, as scripts and
Ansible use them (tests/clients.rs):

  paramiko  key, then the `Verification code:` prompt (keyboard-interactive
            after partial success), then a `direct-tcpip` channel to the
            target's sshd, and paramiko's SSHClient.connect(sock=channel)
            over it as the second hop: the way Ansible and Fabric chain
            hosts. Runs a command there.
  asyncssh  the same with asyncssh: connect(tunnel=jump connection).

The code comes from `oathtool --totp -b SECRET` when the prompt is shown,
as a person would type it. Prints `key: value` lines for the Rust test;
exits 0 on success, 1 otherwise. Loopback only, bounded in time.
"""

import argparse
import asyncio
import socket
import subprocess
import sys


def say(key, value):
    print(f"{key}: {value}", flush=True)


def code(secret):
    out = subprocess.run(
        ["oathtool", "--totp", "-b", secret], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def via_paramiko(args):
    import paramiko

    key = paramiko.Ed25519Key.from_private_key_file(args.key)
    sock = socket.create_connection((args.host, args.port), timeout=30)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = transport.auth_timeout = 30
    transport.start_client(timeout=30)
    say("jump host key", transport.get_remote_server_key().get_name())
    # Partial success: the answer names what is still needed.
    needed = transport.auth_publickey(args.user, key)
    say("after key", ",".join(needed) or "authenticated")

    def answer(_title, instructions, prompts):
        if instructions:
            say("notice", instructions.strip())
        for prompt, _echo in prompts:
            say("prompt", prompt.strip())
        return [code(args.secret) for _ in prompts]

    if needed:
        needed = transport.auth_interactive(args.user, answer)
        say("after code", ",".join(needed) or "authenticated")
    host, port = args.target.rsplit(":", 1)
    channel = transport.open_channel(
        "direct-tcpip", (host, int(port)), ("127.0.0.1", 0), timeout=30
    )
    # The second hop, paramiko's usual way: SSHClient over the channel.
    target = paramiko.SSHClient()
    target.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    target.connect(
        host,
        port=int(port),
        username=args.target_user,
        pkey=key,
        sock=channel,
        look_for_keys=False,
        allow_agent=False,
        timeout=30,
    )
    _, stdout, _ = target.exec_command(args.command, timeout=30)
    say("output", stdout.read().decode().strip())
    say("exit", stdout.channel.recv_exit_status())
    target.close()
    transport.close()
    return 0


class KbdClient:
    """asyncssh's client side: answers the code prompt with oathtool."""

    def __init__(self, secret):
        import asyncssh

        class Client(asyncssh.SSHClient):
            def kbdint_auth_requested(self):
                return ""

            def kbdint_challenge_received(self, name, instructions, lang, prompts):
                if instructions:
                    say("notice", instructions.strip())
                for prompt, _echo in prompts:
                    say("prompt", prompt.strip())
                return [code(secret) for _ in prompts]

        self.factory = Client


async def via_asyncssh(args):
    import asyncssh

    key = asyncssh.read_private_key(args.key)
    common = dict(known_hosts=None, agent_path=None, client_keys=[key], login_timeout=30)
    # With --cert, the jump host sees the certificate (the target the key).
    jump_keys = [(key, asyncssh.read_certificate(args.cert))] if args.cert else [key]
    async with asyncssh.connect(
        args.host,
        args.port,
        username=args.user,
        client_factory=KbdClient(args.secret).factory,
        preferred_auth=["publickey", "keyboard-interactive"],
        **{**common, "client_keys": jump_keys},
    ) as jump:
        host, port = args.target.rsplit(":", 1)
        async with asyncssh.connect(
            host, int(port), tunnel=jump, username=args.target_user, **common
        ) as target:
            result = await target.run(args.command, timeout=30)
            say("output", str(result.stdout).strip())
            say("exit", result.exit_status)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("library", choices=["paramiko", "asyncssh"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="the jump host's port")
    p.add_argument("--user", required=True)
    p.add_argument("--key", required=True, help="ed25519 private key (OpenSSH format)")
    p.add_argument("--secret", required=True, help="base32 TOTP secret")
    p.add_argument("--target", required=True, help="HOST:PORT of the sshd behind")
    p.add_argument("--target-user", required=True)
    p.add_argument("--command", default="echo hello-from-target")
    p.add_argument("--cert", help="asyncssh: an OpenSSH user certificate for the key, for the jump host")
    args = p.parse_args()
    if args.library == "paramiko":
        sys.exit(via_paramiko(args))
    sys.exit(asyncio.run(via_asyncssh(args)))


if __name__ == "__main__":
    main()
