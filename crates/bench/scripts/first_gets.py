#!/usr/bin/env python3
# Usage: python3 crates/bench/scripts/first_gets.py target/release/ferryd [async|blocking]
# (issue 10: no blocking-pool thread may wait for a hash permit while a newcomer waits).
# 600 first GETs (offset = size) of an unhashed 8 GiB sparse file on the async engine, then a
# fresh hello+LIST: how long does the newcomer wait?
import os, shutil, socket, struct, subprocess, sys, tempfile, time
ferryd = sys.argv[1]; engine = sys.argv[2] if len(sys.argv) > 2 else "async"
root = tempfile.mkdtemp()
with open(os.path.join(root, "big.bin"), "wb") as f: f.truncate(8 << 30)
p = subprocess.Popen([ferryd, "--engine", engine, "--listen", "127.0.0.1:0", "--root", root, "--log-level", "warn",
                      "--max-clients", "5000", "--max-per-ip", "5000"], stdout=subprocess.PIPE)
addr = p.stdout.readline().decode().split()[-1]; host, port = addr.rsplit(":", 1); port = int(port)
hello = b"FERRY" + struct.pack(">HHH", 1, 1, 0)
name = b"big.bin"; get = b"\x03" + struct.pack(">I", len(name)) + name + struct.pack(">Q", 8 << 30)
socks = []
t0 = time.time()
for i in range(600):
    s = socket.create_connection((host, port)); s.sendall(hello + get); socks.append(s)
sent = time.time() - t0
t1 = time.time()
f = socket.create_connection((host, port)); f.settimeout(120); f.sendall(hello + b"\x01")
buf = b""
while len(buf) < 36 + 5: buf += f.recv(4096)
waited = time.time() - t1
print(f"{engine}: 600 GETs sent in {sent:.2f} s; fresh hello+LIST answered in {waited*1000:.1f} ms; reply tag {buf[36]:#x}")
p.terminate(); p.wait()
shutil.rmtree(root)
