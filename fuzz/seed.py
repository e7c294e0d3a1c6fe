#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (Python 3 stdlib only).

- dns_request: DNS queries built by hand in wire format (RFC 1035, RFC 6891),
  one per case of dns/src/message.rs and dns/src/answer.rs tests;
- config_load: the example config of config/src/load.rs's tests (extracted
  from the source), vagrant/gatehouse.yaml, and the smaller configs of the
  DNS and jump tests;
- nc_command: the command lines of jump/src/exec.rs's tests;
- sk_signature: security keys' signature blobs (PROTOCOL.u2f) as a client
  sends them, for every flags byte OpenSSH's sk-dummy and real tokens send,
  and the malformed shapes of jump/src/fido/tests.rs;
- dns_update: RFC 2136 UPDATEs as BIND's `nsupdate` sends them (captured
  here from the real client, signed with the fuzz target's key and not),
  each stored raw (first byte 0) and to be re-signed (first byte 1), plus
  TSIG records cut short or naming another algorithm;
- ssh_preauth: what OpenSSH's `ssh` sends before authentication
  (identification, KEXINIT, KEX_ECDH_INIT), captured here from the real
  client talking to a fake server that plays back a fixed KEXINIT.

Run it again after changing the tests it draws from: `python3 fuzz/seed.py`.
Files found by the fuzzer and kept as regressions (`crash-*`, named
`regress-*`) are never touched.
"""

import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)
CORPUS = os.path.join(FUZZ, "corpus")


def write(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# ---- DNS --------------------------------------------------------------------

TYPES = {"A": 1, "NS": 2, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28, "ANY": 255}


def qname(name):
    out = b""
    for label in name.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def opt(payload=1232, version=0, do=False):
    """An OPT pseudo-record (RFC 6891 §6.1.2): root name, TYPE 41."""
    flags = 0x8000 if do else 0
    return b"\0" + struct.pack(">HHBBHH", 41, payload, 0, version, flags, 0)


def query(name, qtype="A", qclass=1, ident=0x4242, flags=0x0100, edns=None,
          questions=1, extra=b"", arcount=None, ancount=0):
    """flags 0x0100: QR=0, OPCODE=QUERY, RD=1."""
    body = qname(name) + struct.pack(">HH", TYPES.get(qtype, qtype) if isinstance(qtype, str) else qtype, qclass)
    additional = b"" if edns is None else edns
    if arcount is None:
        arcount = 0 if edns is None else 1
    header = struct.pack(">HHHHHH", ident, flags, questions, ancount, 0, arcount)
    return header + body * questions + extra + additional


def dns_seeds():
    t = "dns_request"
    write(t, "a-saxophone", query("saxophone.sean"))
    write(t, "a-mixed-case", query("Admin.Saxophone.SEAN"))
    write(t, "a-below-record", query("x.cdn.saxophone.sean"))
    write(t, "a-empty-non-terminal", query("only.below.sean"))
    write(t, "a-nxdomain", query("x.nothing.sean"))
    write(t, "a-outside", query("example.com"))
    write(t, "aaaa-big-edns-4096", query("big.sean", "AAAA", edns=opt(4096)))
    write(t, "aaaa-big-no-edns", query("big.sean", "AAAA"))
    write(t, "aaaa-big-edns-100", query("big.sean", "AAAA", edns=opt(100)))
    write(t, "aaaa-v6only", query("v6only.test", "AAAA", edns=opt(1232)))
    write(t, "any-gateway", query("gateway.sean", "ANY"))
    write(t, "soa-apex", query("sean", "SOA", edns=opt(1232)))
    write(t, "ns-apex", query("test", "NS"))
    write(t, "mx-record", query("trombone.sean", "MX"))
    write(t, "txt-chaos", query("version.bind", "TXT", qclass=3))
    write(t, "edns-version-1", query("saxophone.sean", edns=opt(1232, version=1)))
    write(t, "edns-do-bit", query("saxophone.sean", edns=opt(1232, do=True)))
    write(t, "edns-two-opt", query("saxophone.sean", edns=opt() + opt(), arcount=2))
    write(t, "two-questions", query("saxophone.sean", questions=2))
    write(t, "no-question", struct.pack(">HHHHHH", 7, 0x0100, 0, 0, 0, 0))
    write(t, "notify-opcode", query("saxophone.sean", "SOA", flags=0x2000))
    write(t, "response-dropped", query("saxophone.sean", flags=0x8100))
    # QNAME is a compression pointer to itself (RUSTSEC-2026-0119's shape).
    write(t, "pointer-loop", struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0)
          + b"\xc0\x0c\x00\x01\x00\x01")
    # An answer-section record whose owner points back at the question.
    answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 1])
    write(t, "answer-with-pointer", query("saxophone.sean", extra=answer, ancount=1))


# ---- config -----------------------------------------------------------------

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK1dTTVTtn4JwyiQdj4r0dSAaAiTbAKgVWl7VZBO6m2j"
       " sean@laptop")


def load_rs_example():
    """The `example()` of config/src/load.rs's tests, formatted as Rust would."""
    text = open(os.path.join(ROOT, "config/src/load.rs")).read()
    m = re.search(r'fn example\(\) -> String \{\s*format!\(\s*r#"(.*?)"#', text, re.S)
    if not m:
        sys.exit("seed.py: cannot find example() in config/src/load.rs")
    return m.group(1).replace("{KEY}", KEY).replace("{{", "{").replace("}}", "}")


def config_seeds():
    t = "config_load"
    write(t, "load-rs-example.yaml", load_rs_example())
    write(t, "vagrant-gatehouse.yaml", open(os.path.join(ROOT, "vagrant/gatehouse.yaml")).read())
    # dns/src/zones.rs tests (SEAN), with an upstream as in message.rs.
    write(t, "dns-zones.yaml", """dns:
  listen: ["127.0.0.1:0"]
  ttl: 60s
  zones:
    sean:
      records:
        saxophone: 192.168.222.16
        trombone: 192.168.222.17
        gateway: [192.168.222.2, "fd00::2"]
        cdn.saxophone: 192.168.222.30
        deep.only.below: 192.168.222.40
    test:
      records:
        v6only: "fd00::9"
  upstream: ["192.0.2.53:53"]
""")
    # jump/tests/support: config_yaml("optional", key, [grant], extra).
    write(t, "jump-inprocess.yaml", f"""state_dir: state
jump:
  listen: ["127.0.0.1:0"]
  mfa: optional
  banner: "Authorized use only."
  limits: {{ trusted: ["127.0.0.0/8"], max_unauthenticated: 1000, login_grace: 2s }}
  users:
    sean: {{ keys: ["{KEY}"], groups: [dev], keys_file: sean.pub, totp_secret_file: sean.totp }}
  groups:
    dev: {{ allow: ["127.0.0.1/32:4242", "*.internal.example.net:22", "[fd00::]/8:22-2222"] }}
""")
    # Security keys with authorized_keys options (config/src/key_line.rs).
    sk = ("sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIFvdtQeUWx266KKZ"
          "fz1vZ6dje6krwWKqC2hegLlhodr1AAAABHNzaDo= sean@yubikey")
    write(t, "security-keys.yaml", f"""jump:
  listen: ["127.0.0.1:0"]
  users:
    sean:
      keys:
        - "verify-required {sk}"
        - "no-touch-required,verify-required {sk}"
        - "{sk}"
    kim:
      keys: ["verify-required {KEY}", "from=\\"10.0.0.1\\" {sk}"]
""")
    # The error cases of load.rs's tests.
    write(t, "overlapping-zones.yaml",
          'dns:\n  listen: ["127.0.0.1:53"]\n  zones:\n    sean: {}\n    dev.sean: {}\n')
    write(t, "syntax-error.yaml", 'dns:\n  listen: ["127.0.0.1:53"\n  zones: {}\n')
    write(t, "nothing-to-run.yaml", "log: { level: info }\n")
    write(t, "duplicate-key.yaml", "dns:\n  listen: []\n  listen: []\n")
    write(t, "bad-values.yaml", load_rs_example()
          .replace("login_grace: 30s", "login_grace: 30")
          .replace("per_ip_connections: 20/min", "per_ip_connections: 20/fortnight")
          .replace("192.168.222.17", "192.168.222.300")
          .replace("listen: 127.0.0.1:9100", "listen: localhost:9100")
          .replace("10.77.0.0/16:22", "10.77.0.0/33:22")
          .replace("groups: [dev]", "groups: [dev, nope]"))


# ---- nc ---------------------------------------------------------------------

def nc_seeds():
    t = "nc_command"
    # jump/src/exec.rs tests: accepted, then refused.
    good = ["nc -w1 app01.internal 22", "nc -w 5 10.0.0.1 2222", "nc -q 0 -w 3 h 22",
            "nc h 22", "netcat [fd00::1] 65535", "ncat -w60 h 1"]
    bad = ["bash", "nc", "nc h", "nc h 0", "nc h 70000", "nc -e /bin/sh h 22", "nc -l 22",
           "nc h 22 extra", "nc -w", "ls; nc h 22", ""]
    for i, text in enumerate(good):
        write(t, f"ok-{i}", text)
    for i, text in enumerate(bad):
        write(t, f"refused-{i}", text)
    write(t, "refused-not-utf8", b"\xff\xfe")


# ---- security keys ----------------------------------------------------------

def mpint(n):
    b = n.to_bytes((n.bit_length() + 8) // 8 or 1, "big")
    return ssh_string(b)


def sk_blob(algorithm, inner, flags, counter):
    """string algorithm, string inner signature, byte flags, uint32 counter."""
    return ssh_string(algorithm.encode()) + ssh_string(inner) + struct.pack(">BI", flags, counter)


def sk_seeds():
    t = "sk_signature"
    ed = "sk-ssh-ed25519@openssh.com"
    ecdsa = "sk-ecdsa-sha2-nistp256@openssh.com"
    # The inner signatures are not valid (nothing verifies here): their shape is.
    p256 = mpint(0x7f * 2**248 + 12345) + mpint(0x01 * 2**240 + 777)
    for flags in (0x00, 0x01, 0x04, 0x05, 0x45, 0xff):
        write(t, f"ed25519-flags-{flags:02x}", sk_blob(ed, b"\x11" * 64, flags, 0x12345678))
        write(t, f"ecdsa-flags-{flags:02x}", sk_blob(ecdsa, p256, flags, 0x12345678))
    write(t, "ed25519-counter-0", sk_blob(ed, b"\x11" * 64, 0x01, 0))
    write(t, "ed25519-counter-max", sk_blob(ed, b"\x11" * 64, 0x01, 0xffffffff))
    good = sk_blob(ed, b"\x11" * 64, 0x01, 7)
    write(t, "cut-in-trailer", good[:-2])
    write(t, "trailing-byte", good + b"\0")
    write(t, "inner-63-bytes", sk_blob(ed, b"\x11" * 63, 0x01, 7))
    write(t, "ecdsa-not-integers", sk_blob(ecdsa, b"\xff" * 40, 0x01, 7))
    write(t, "ecdsa-negative-r", sk_blob(ecdsa, ssh_string(b"\x80" + b"\0" * 31) + mpint(5), 0x01, 7))
    write(t, "plain-ed25519", ssh_string(b"ssh-ed25519") + ssh_string(b"\x11" * 64))
    write(t, "huge-length", ssh_string(ed.encode()) + struct.pack(">I", 0xfffffff0) + b"\x11" * 8)


# ---- SSH --------------------------------------------------------------------

def ssh_string(b):
    return struct.pack(">I", len(b)) + b


def packet(payload):
    """An unencrypted binary packet (RFC 4253 §6), block size 8."""
    pad = 8 - (len(payload) + 5) % 8
    if pad < 4:
        pad += 8
    return struct.pack(">IB", len(payload) + 1 + pad, pad) + payload + b"\0" * pad


def kexinit(kex, hostkey, cipher, mac):
    lists = [kex, hostkey, cipher, cipher, mac, mac, "none", "none", "", ""]
    return packet(bytes([20]) + b"\x11" * 16 + b"".join(ssh_string(x.encode()) for x in lists)
                  + b"\0" + b"\0\0\0\0")


def capture(options, server_kexinit, seconds=1.5):
    """What `ssh` sends a server that greets and offers `server_kexinit`."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    got = bytearray()

    def serve():
        conn, _ = listener.accept()
        conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n" + server_kexinit)
        conn.settimeout(0.2)
        end = time.time() + seconds
        while time.time() < end:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            got.extend(chunk)
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    with tempfile.TemporaryDirectory() as home:
        subprocess.run(
            ["ssh", "-F", "/dev/null", "-p", str(port), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={home}/known",
             "-o", "ConnectTimeout=5", *options, "fuzz@127.0.0.1", "true"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=20, check=False)
    thread.join()
    listener.close()
    return bytes(got)


def ssh_seeds():
    t = "ssh_preauth"
    # The russh server's algorithms that OpenSSH 9.2 shares.
    cases = {
        "openssh-curve25519-chacha": (["-o", "KexAlgorithms=curve25519-sha256"],
                                      ("curve25519-sha256", "ssh-ed25519",
                                       "chacha20-poly1305@openssh.com", "hmac-sha2-256")),
        "openssh-nistp256-aesgcm": (["-o", "KexAlgorithms=ecdh-sha2-nistp256",
                                     "-o", "Ciphers=aes256-gcm@openssh.com"],
                                    ("ecdh-sha2-nistp256", "ssh-ed25519",
                                     "aes256-gcm@openssh.com", "hmac-sha2-256")),
        "openssh-sntrup761-chacha": (["-o", "KexAlgorithms=sntrup761x25519-sha512@openssh.com"],
                                     ("sntrup761x25519-sha512@openssh.com", "ssh-ed25519",
                                      "chacha20-poly1305@openssh.com", "hmac-sha2-256")),
        "openssh-dh-group14-ctr": (["-o", "KexAlgorithms=diffie-hellman-group14-sha256",
                                    "-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-sha2-256-etm@openssh.com"],
                                   ("diffie-hellman-group14-sha256", "ssh-ed25519",
                                    "aes128-ctr", "hmac-sha2-256-etm@openssh.com")),
    }
    for name, (options, algs) in cases.items():
        data = capture(options, kexinit(*algs))
        if not data.startswith(b"SSH-2.0-"):
            sys.exit(f"seed.py: ssh sent nothing usable for {name}: {data[:40]!r}")
        write(t, name, data)
    # Hand-made: our own KEXINIT after the harness's identification line,
    # and identification lines alone.
    write(t, "kexinit-only", kexinit("curve25519-sha256,ext-info-c", "ssh-ed25519,rsa-sha2-256",
                                     "chacha20-poly1305@openssh.com", "hmac-sha2-256"))
    # A KEXINIT choosing sntrup761x25519, then a client init of the wrong
    # length, or with an all-zero X25519 key.
    sntrup = kexinit("sntrup761x25519-sha512,ext-info-c", "ssh-ed25519",
                     "chacha20-poly1305@openssh.com", "hmac-sha2-256")
    for name, ephemeral in {"sntrup-init-short": b"\0" * 100,
                            "sntrup-init-long": b"\1" * 1191,
                            "sntrup-init-zero-x25519": b"\2" * 1158 + b"\0" * 32}.items():
        write(t, name, sntrup + packet(bytes([30]) + ssh_string(ephemeral)))
    write(t, "id-only", b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    write(t, "id-1.99", b"SSH-1.99-old\r\n")
    write(t, "id-lf-only", b"SSH-2.0-x\n")


# The fuzz target's key (fuzz/fuzz_targets/dns_update.rs).
TSIG_KEY = "hmac-sha256:vagrant:2bcS0V0oq3K2KqwqGWq9Vu0UhXkmiu8zQ1dVrKrVGzg="


def nsupdate_packet(script, key):
    """The first datagram `nsupdate` sends for `script` (no answer given)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    port = sock.getsockname()[1]
    args = ["nsupdate", "-t", "1", "-r", "0"] + (["-y", key] if key else [])
    child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    child.communicate(f"server 127.0.0.1 {port}\nzone sean\n{script}\nsend\n".encode())
    data, _ = sock.recvfrom(65535)
    sock.close()
    return data


def update_seeds():
    t = "dns_update"
    scripts = {
        "add-a-aaaa": "update add tuba.sean 60 A 10.0.0.7\nupdate add tuba.sean 60 AAAA fd00::7",
        "replace": "prereq yxrrset trumpet.sean A 10.0.0.5\nupdate delete trumpet.sean A\n"
                   "update add trumpet.sean 60 A 10.0.0.6",
        "delete-name": "update delete trumpet.sean",
        "delete-one": "update delete trumpet.sean AAAA fd00::5",
        "prereq-nxdomain": "prereq nxdomain tuba.sean\nupdate add tuba.sean 60 A 10.0.0.7",
        "prereq-yxdomain-nxrrset": "prereq yxdomain trumpet.sean\nprereq nxrrset trumpet.sean TXT\n"
                                   "update add trumpet.sean 60 A 10.0.0.8",
        "config-name": "update add saxophone.sean 60 A 10.0.0.1",
        "below-config-name": "update add www.saxophone.sean 60 A 10.0.0.1",
        "txt": "update add tuba.sean 60 TXT \"hello\"",
        "many": "\n".join(f"update add vm{i}.sean 60 A 10.0.0.{i}" for i in range(1, 20)),
    }
    for name, script in scripts.items():
        unsigned = nsupdate_packet(script, None)
        signed = nsupdate_packet(script, TSIG_KEY)
        write(t, f"{name}-resign", b"\x01" + unsigned)
        write(t, f"{name}-signed", b"\x00" + signed)
    signed = nsupdate_packet(scripts["add-a-aaaa"], TSIG_KEY)
    # The TSIG record's MAC cut short (its length field and data), and the
    # algorithm name changed to hmac-md5's length-alike.
    write(t, "tsig-mac-truncated", b"\x00" + signed[:-10])
    write(t, "tsig-other-algorithm", b"\x00" + signed.replace(b"hmac-sha256", b"hmac-sha512"))
    write(t, "tsig-wrong-key-name", b"\x00" + signed.replace(b"\x07vagrant", b"\x07vagranu"))


def main():
    dns_seeds()
    update_seeds()
    config_seeds()
    nc_seeds()
    sk_seeds()
    ssh_seeds()
    for target in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, target))
        size = sum(os.path.getsize(os.path.join(CORPUS, target, f)) for f in files)
        print(f"{target}: {len(files)} files, {size} bytes")


if __name__ == "__main__":
    main()
