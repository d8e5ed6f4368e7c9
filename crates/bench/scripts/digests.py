#!/usr/bin/env python3
"""Issue 12's figures: digests computed ahead and kept across restarts.

Usage: python3 crates/bench/scripts/digests.py target/release/ferryd target/release/ferry [FILES] [GIB]
(release builds; FILES files of GIB GiB each, default 10 x 1; needs FILES*GIB*2+1 GiB free in TMPDIR).

1. FILES files of random bytes are copied into a new root by hand (cp), then ferryd starts: the time
   until its log says background hashing is done. While it runs: a fresh `ferry list` (ms), and a
   `ferry get` of a file not hashed yet, with default client settings (must succeed).
2. Once hashing is done: each file's first `ferry get` against a second GET of the same file.
3. ferryd restarted: its scan's count of files to hash (0 means every digest was read back), and
   each file's first GET after the restart against a second GET.
"""
import os, re, shutil, subprocess, sys, tempfile, time

ferryd, ferry_bin = sys.argv[1], sys.argv[2]
files = int(sys.argv[3]) if len(sys.argv) > 3 else 10
gib = int(sys.argv[4]) if len(sys.argv) > 4 else 1
work = tempfile.mkdtemp(prefix="ferry-digests-")
src, root, out = (os.path.join(work, d) for d in ("src", "root", "out"))
for d in (src, root, out):
    os.mkdir(d)
names = [f"file{i:02}.bin" for i in range(files)]
print(f"making {files} x {gib} GiB of random bytes in {work}", flush=True)
for n in names:
    subprocess.run(["dd", "if=/dev/urandom", f"of={os.path.join(src, n)}", "bs=1M", f"count={gib * 1024}",
                    "status=none"], check=True)
for n in names:
    subprocess.run(["cp", os.path.join(src, n), root], check=True)
shutil.rmtree(src)


def start(log):
    p = subprocess.Popen([ferryd, "--listen", "127.0.0.1:0", "--root", root], stdout=subprocess.PIPE,
                         stderr=open(log, "w"), env={**os.environ, "NO_COLOR": "1", "FERRYD_LOG": "info"})
    addr = p.stdout.readline().decode().split()[-1]
    return p, addr


def ferry(addr, *args):
    t = time.monotonic()
    r = subprocess.run([ferry_bin, "--server", addr, "-q", "--no-digest-cache", *args], capture_output=True, text=True)
    return time.monotonic() - t, r



def get_rate(addr, name):
    dest = os.path.join(out, name)
    secs, r = ferry(addr, "get", name, "-o", dest, "--force")
    assert r.returncode == 0, r.stderr
    os.remove(dest)
    return gib * (1 << 30) / secs / 1e9


def wait_log(log, pattern, timeout=3600):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        m = re.search(pattern, open(log).read())
        if m:
            return m
        time.sleep(0.05)
    raise SystemExit(f"no {pattern!r} in {log}")


log1 = os.path.join(work, "ferryd-1.log")
t0 = time.monotonic()
p, addr = start(log1)
wait_log(log1, r"scanned the root")
lists = []
for _ in range(5):
    secs, r = ferry(addr, "list")
    assert r.returncode == 0, r.stderr
    lists.append(secs * 1000)
# The last file in the queue is not hashed yet: GET it with default client settings.
secs, r = ferry(addr, "get", names[-1], "-o", os.path.join(out, "during.bin"))
print(f"during background hashing: fresh `ferry list` {min(lists):.0f}-{max(lists):.0f} ms (5 runs); "
      f"`ferry get {names[-1]}` exit {r.returncode} in {secs:.1f} s {r.stderr.strip()[:200]}")
os.remove(os.path.join(out, "during.bin"))
m = wait_log(log1, r"background hashing done: .*secs=([0-9.]+)")
done = time.monotonic() - t0
print(f"background hashing of {files} x {gib} GiB: done {done:.1f} s after ferryd started "
      f"(its log: {float(m.group(1)):.1f} s of hashing)")
ratios = []
for n in names:
    first, second = get_rate(addr, n), get_rate(addr, n)
    ratios.append(first / second)
    print(f"  {n}: first GET {first:.2f} GB/s, second {second:.2f} GB/s, ratio {first / second:.2f}")
print(f"first GET / second GET after background hashing: min {min(ratios):.2f}, median "
      f"{sorted(ratios)[len(ratios) // 2]:.2f}")
p.terminate(); p.wait()

log2 = os.path.join(work, "ferryd-2.log")
p, addr = start(log2)
m = wait_log(log2, r"scanned the root.*digests_known=(\d+) to_hash=(\d+)")
print(f"after a restart: digests read back {m.group(1)}, files to hash {m.group(2)}")
ratios = []
for n in names:
    first, second = get_rate(addr, n), get_rate(addr, n)
    ratios.append(first / second)
print(f"first GET / second GET after the restart: min {min(ratios):.2f}, median "
      f"{sorted(ratios)[len(ratios) // 2]:.2f}")
hashed = len(re.findall(r"hashed a file", open(log2).read()))
print(f"files hashed by the restarted server: {hashed} (its log)")
p.terminate(); p.wait()
shutil.rmtree(work)
