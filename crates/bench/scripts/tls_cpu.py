#!/usr/bin/env python3
"""Server CPU per 4 KiB GET on one persistent connection, plain or TLS (PROTOCOL.md § 18).

Usage: tls_cpu.py HOST PORT SERVER_PID plain|tls COUNT [CA_PEM]

Serve a root holding `small.bin` (4096 bytes) with both listeners, for example
  ferryd --background-hashes 0 --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0 \
         --tls-cert certs/cert.pem --tls-key certs/key.pem --root ROOT
then run it against the plain port and the TLS port in turn (CA_PEM: `ferryd gen-cert`'s ca.pem).
It GETs the file 200 times to warm up, then COUNT times, and divides the server's CPU time
(utime + stime from /proc/PID/stat, 10 ms ticks: use tens of thousands of GETs) by COUNT.
"""
import socket, ssl, struct, sys, time
host, port, pid, use_tls, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "tls", int(sys.argv[5])
ca = sys.argv[6] if len(sys.argv) > 6 else "certs/ca.pem"
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0
s = socket.create_connection((host, port))
if use_tls:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["ferry/1"])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    s = ctx.wrap_socket(s, server_hostname="localhost")
    assert s.selected_alpn_protocol() == "ferry/1"
def recv_exact(k):
    b = b""
    while len(b) < k:
        c = s.recv(k - len(b))
        assert c
        b += c
    return b
s.sendall(b"FERRY" + struct.pack(">HHH", 1, 1, 0))
# server hello: tag, version u16, role u8, caps u32, max_name u32, max_file u64, max_clients u32, 3x u32 timeouts
recv_exact(1 + 2 + 1 + 4 + 4 + 8 + 4 + 4 + 4 + 4)
name = b"small.bin"
req = b"\x03" + struct.pack(">I", len(name)) + name + struct.pack(">Q", 0)
def get():
    s.sendall(req)
    head = recv_exact(1 + 8 + 4)
    assert head[0] == 0x83, head
    nl = struct.unpack(">I", head[9:13])[0]
    rest = recv_exact(nl + 8 + 32)
    size = struct.unpack(">Q", rest[nl:nl + 8])[0]
    recv_exact(size)
for _ in range(200):
    get()
c0, t0 = cpu(), time.time()
for _ in range(n):
    get()
c1, t1 = cpu(), time.time()
print(f"{'tls' if use_tls else 'plain'}: {n} GETs of 4 KiB, server CPU {(c1-c0)/n*1e6:.1f} us/GET, {n/(t1-t0):.0f} GET/s")
