#!/usr/bin/env python3
"""The first download of a file the server has not hashed: GET (digest first) against FETCH
(digest after the data, PROTOCOL.md § 7.10), as ratios to `md5sum` of the same file, measured in
one run.

    cargo build --release -p ferryd
    python3 crates/bench/scripts/cold_get.py target/release/ferryd [--mib 1024] [--rounds 3]

For each engine and each request, a fresh ferryd (`--digests off --background-hashes 0`, so it
knows no digest) serves one file written just before (so it is in the page cache, as it is for
`md5sum`). The client here hashes what it receives with Python's hashlib (OpenSSL's MD5) and
checks it against the digest the server sent; the time runs from the request to the verified end.
Standard library only.
"""

import argparse
import hashlib
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HELLO = b"FERRY" + struct.pack(">HHH", 1, 1, 0)
SERVER_HELLO_LEN = 1 + 2 + 1 + 4 + 4 + 8 + 4 + 4 + 4 + 4
OP_GET, OP_FETCH = 0x03, 0x0B
TAG_GET, TAG_FETCH_TRAILING = 0x83, 0x8B
CHUNK = 1 << 20


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise EOFError("the server closed the connection")
        buf += part
    return bytes(buf)


def download(addr, name, opcode):
    """Downloads `name` with `opcode`; returns (seconds, tag) once the data is verified."""
    sock = socket.create_connection(addr)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(HELLO)
    hello = recv_exact(sock, SERVER_HELLO_LEN)
    if hello[0] != 0x80:
        raise RuntimeError(f"no server hello: {hello!r}")
    raw = name.encode()
    start = time.perf_counter()
    sock.sendall(bytes([opcode]) + struct.pack(">I", len(raw)) + raw + struct.pack(">Q", 0))
    tag = recv_exact(sock, 1)[0]
    if tag == TAG_GET:
        recv_exact(sock, 8)
    elif tag != TAG_FETCH_TRAILING:
        raise RuntimeError(f"unexpected reply tag 0x{tag:02x}")
    (name_len,) = struct.unpack(">I", recv_exact(sock, 4))
    recv_exact(sock, name_len)
    (size,) = struct.unpack(">Q", recv_exact(sock, 8))
    announced = recv_exact(sock, 32) if tag == TAG_GET else None
    md5 = hashlib.md5()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    left = size
    while left:
        n = sock.recv_into(view, min(left, CHUNK))
        if n == 0:
            raise EOFError("the server closed the connection inside the data")
        md5.update(view[:n])
        left -= n
    if announced is None:
        announced = recv_exact(sock, 32)
    if md5.hexdigest().encode() != announced.lower():
        raise RuntimeError("the data does not match its digest")
    seconds = time.perf_counter() - start
    sock.close()
    return seconds, tag


def serve(ferryd, root, engine):
    proc = subprocess.Popen(
        [ferryd, "--engine", engine, "--root", root, "--listen", "127.0.0.1:0", "--digests", "off",
         "--background-hashes", "0", "--log-level", "warn"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        m = re.match(r"listening on (\S+):(\d+)", line.strip())
        if m:
            return proc, (m.group(1), int(m.group(2)))
    proc.kill()
    raise RuntimeError("ferryd printed no address")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ferryd")
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engines", default="blocking,async")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, "cold.bin")
        with open(path, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(CHUNK))
        size = args.mib * CHUNK
        rates = {}
        for _ in range(args.rounds):
            t = time.perf_counter()
            subprocess.run(["md5sum", path], check=True, stdout=subprocess.DEVNULL)
            rates.setdefault("md5sum", []).append(size / (time.perf_counter() - t))
            for engine in args.engines.split(","):
                for label, opcode in (("GET", OP_GET), ("FETCH", OP_FETCH)):
                    proc, addr = serve(args.ferryd, root, engine)
                    try:
                        seconds, tag = download(addr, "cold.bin", opcode)
                    finally:
                        proc.terminate()
                        proc.wait()
                    key = f"{engine} {label} (reply 0x{tag:02x})"
                    rates.setdefault(key, []).append(size / seconds)
        base = statistics.median(rates["md5sum"])
        print(f"{args.mib} MiB, median of {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}")
        for key, values in rates.items():
            rate = statistics.median(values)
            print(f"{key:32} {rate / 1e9:6.3f} GB/s  {rate / base:5.2f}x md5sum")


if __name__ == "__main__":
    sys.exit(main())
