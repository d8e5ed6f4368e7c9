#!/usr/bin/env python3
"""Build the fuzz targets' seed corpus from spec/vectors/*.json and spec/transcripts/*.ft.

Writes fuzz/corpus/<target>/seed-<source>-<variant> in each target's input format
(fuzz/src/lib.rs, fuzz/README.md). Standard library only, deterministic. The corpus directory
is not committed: CI and developers regenerate it with

    python3 fuzz/make-corpus.py            # into fuzz/corpus/
    python3 fuzz/make-corpus.py --out DIR  # elsewhere

Seeds already present are overwritten; inputs libFuzzer added are left alone.
"""

import argparse
import hashlib
import json
import re
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC = HERE.parent / "spec"

HELLO = b"FERRY" + struct.pack(">HHH", 1, 1, 0)
# A server hello (tag 0x80): v1, write role, capabilities 0x1f (TRAILER included), the defaults
# of ServerConfig.
SERVER_HELLO = bytes([0x80]) + struct.pack(">HBIIQIII", 1, 2, 0x1F, 255, 1 << 40, 8, 300000, 3600000)

# Server config bytes (fuzz/src/server.rs, `config`).
ANON_WRITE, ANON_READ, ANON_ADMIN, ANON_NONE = 0, 1, 2, 3
NO_LEGACY, NAME16, SIZE4 = 0x08, 0x40, 0x80
# Host bytes of server_machine (fuzz/src/server.rs, `config_with`, `trailing_replies`): the
# default host; a server without TRAILER; a host answering FETCH from 0 in the trailing form.
HOST_DEFAULT, HOST_NO_TRAILER, HOST_TRAILING_REPLIES = 0, 1, 2
# c2s_stream config bit: read as a server announcing TRAILER.
C2S_TRAILER = 0x20
# client_machine config bits (fuzz/src/client.rs, `fuzz_client`): end to end; the server answers
# FETCH from 0 in the trailing form.
CLIENT_E2E, CLIENT_TRAILING_REPLIES = 0x01, 0x20

# Schedules (fuzz/src/server.rs, `run_scheduled`): whole; small reads with blocked reads,
# partial writes and polls in between; EOF part way; a day passing part way.
SCHEDULES = {
    "whole": b"",
    "mixed": bytes([0x00] * 24 + [0x83, 0x00, 0xC0, 0x04, 0x80, 0x0F, 0xBF, 0x01] * 12),
    "eof": bytes([0x1F, 0x81, 0xFC]),
    "timeout": bytes([0x1F, 0xF8]),
}
# Legacy server side (fuzz/fuzz_targets/legacy.rs): (variant, mode byte, server config bits).
# Mode 0x04: the store fails the first command.
LEGACY_VARIANTS = (("on", 0, 0), ("off", 0, NO_LEGACY), ("noanon", 0, ANON_NONE), ("fault", 0x04, 0))
# Client schedules (fuzz/src/client.rs, `run`): whole, and small reads with polls.
CLIENT_SCHEDULES = {
    "whole": b"",
    "mixed": bytes([0x00] * 24 + [0x80, 0x02, 0x07, 0xFF] * 16),
}


def vectors():
    for path in sorted((SPEC / "vectors").glob("*.json")):
        v = json.loads(path.read_text())
        v["bytes"] = bytes.fromhex("".join(v["hex"].split()))
        yield path.stem, v


# ----- transcripts: just enough of spec/README.md's format to render the C: lines ------------

VARS = {"${P}": "fz-", "${TOKEN}": ""}


def subst(text):
    for k, v in VARS.items():
        text = text.replace(k, v)
    return text


def tokens(line):
    out, cur, quoted, escaped = [], "", False, False
    for ch in line:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch.isspace() and not quoted:
            if cur:
                out.append(cur)
            cur = ""
            continue
        cur += ch
    if cur:
        out.append(cur)
    return out


def strip_comment(line):
    quoted, escaped = False, False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def number(s):
    return int(s, 16) if s.startswith("0x") else int(s)


def field(tok):
    if tok.startswith('"'):
        return subst(json.loads(tok)).encode()
    kind, _, value = tok.partition(":")
    widths = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "i64": 8}
    if kind in widths:
        return (number(value) % (1 << 64)).to_bytes(8, "big")[8 - widths[kind]:]
    prefixed = {"str8": 1, "str16": 2, "str32": 4, "name": 4}
    if kind in prefixed:
        text = subst(json.loads(value)).encode()
        return len(text).to_bytes(prefixed[kind], "big") + text
    if kind == "x":
        return bytes.fromhex(value)
    if kind == "md5":
        return hashlib.md5(subst(json.loads(value)).encode()).hexdigest().encode()
    if kind == "fill":
        count, byte = value.split(":")
        return bytes([number(byte)]) * number(count)
    raise ValueError(f"unknown field {tok!r}")


def transcripts():
    """Yields (name, headers, [client bytes of each connection])."""
    for path in sorted((SPEC / "transcripts").glob("*.ft")):
        headers, conns, last = {}, [[]], None
        lines = []
        for raw in path.read_text().splitlines():
            content = strip_comment(raw).strip()
            if not content:
                continue
            if raw[:1] in (" ", "\t") and lines:
                lines[-1] += " " + content
            else:
                lines.append(content)
        for line in lines:
            if line.startswith("@"):
                key, _, value = line[1:].partition(" ")
                headers[key] = value.strip()
            elif line.startswith("---"):
                conns.append([])
            elif line.startswith("C:"):
                conns[-1].append(b"".join(field(t) for t in tokens(line[2:])))
        yield path.stem, headers, [b"".join(c) for c in conns]


def role_config(headers):
    return {"admin": ANON_ADMIN, "write": ANON_WRITE}.get(headers.get("role", "read"), ANON_READ)


# ----- requests a client must have sent for a vector's replies to fit ------------------------


def name_field(n):
    n = n.encode()
    return struct.pack(">I", len(n)) + n


def requests_for(items):
    out = b""
    for it in items:
        t = it["type"]
        if t == "list_start":
            out += b"\x01"
        elif t == "stat_ok":
            out += b"\x02" + name_field(it["name"])
        elif t == "get_ok":
            out += b"\x03" + name_field(it["name"]) + struct.pack(">Q", it["offset"])
        elif t == "fetch_trailing":
            out += b"\x0b" + name_field(it["name"]) + struct.pack(">Q", 0)
        elif t == "put_ok":
            out += b"\x04\x00" + name_field("x") + struct.pack(">Q", 0) + hashlib.md5(b"").hexdigest().encode()
        elif t == "delete_ok":
            out += b"\x05" + name_field("x")
        elif t == "error":
            out += b"\x02" + name_field("x")
        else:
            out += {"status_start": b"\x06", "help_ok": b"\x07", "bye_ok": b"\x08", "shutdown_ok": b"\x09"}.get(t, b"")
    return out


def client_input(cfg, server_cfg, section, ops, server_bytes):
    return bytes([cfg, server_cfg]) + struct.pack(">H", len(section)) + section + bytes([len(ops)]) + ops + server_bytes


# ----- the seeds ------------------------------------------------------------------------------


def build():
    seeds = {t: {} for t in ("c2s_stream", "s2c_stream", "server_machine", "client_machine", "legacy", "transcript")}

    def server_seeds(target, prefix, source, cfg, data, trailer=False):
        for sname, ops in SCHEDULES.items():
            seeds[target][f"{source}-{sname}"] = prefix + bytes([cfg, HOST_DEFAULT, 0, len(ops)]) + ops + data
        # The store fails every other command.
        seeds[target][f"{source}-faults"] = prefix + bytes([cfg, HOST_DEFAULT, 0x55, 0]) + data
        if trailer:
            # The trailing form refused by a server without TRAILER, and FETCH answered with 0x8B.
            seeds[target][f"{source}-no-trailer"] = prefix + bytes([cfg, HOST_NO_TRAILER, 0, 0]) + data
            ops = SCHEDULES["mixed"]
            seeds[target][f"{source}-trailing-replies"] = prefix + bytes([cfg, HOST_TRAILING_REPLIES, 0, len(ops)]) + ops + data

    for name, v in vectors():
        b, start, limits = v["bytes"], v["start"], v.get("limits", {})
        if v["direction"] == "c2s":
            cfg = 1 if start == "session" else 0
            cfg |= {255: 0, 16: 1 << 1, 4096: 2 << 1}[limits.get("max_name_len", 255)]
            cfg |= {1 << 40: 0, 4: 1 << 3}[limits.get("max_file_size", 1 << 40)]
            trailer = v.get("trailer", False)
            cfg |= C2S_TRAILER if trailer else 0
            seeds["c2s_stream"][name] = bytes([cfg, 1]) + b
            server_cfg = (NAME16 if limits.get("max_name_len") == 16 else 0) | (SIZE4 if limits.get("max_file_size") == 4 else 0)
            if start == "session":
                server_seeds("server_machine", b"", name, server_cfg, HELLO + b, trailer)
                seeds["client_machine"][f"{name}-e2e"] = client_input(CLIENT_E2E, server_cfg, b[:0xFFFF], b"", b"")
                if trailer:
                    seeds["client_machine"][f"{name}-e2e-trailing"] = client_input(
                        CLIENT_E2E | CLIENT_TRAILING_REPLIES, server_cfg, b[:0xFFFF], b"", b"")
            elif b[:1] == b"\x00":
                for variant, mode, extra in LEGACY_VARIANTS:
                    seeds["legacy"][f"{name}-{variant}"] = bytes([mode, server_cfg | extra, 0]) + b
                server_seeds("server_machine", b"", name, server_cfg, b)
            else:
                server_seeds("server_machine", b"", name, server_cfg, b, trailer)
        else:
            seeds["s2c_stream"][name] = bytes([{"handshake": 0, "session": 1, "legacy": 2}[start], 1]) + b
            if start == "legacy":
                ok = [i for i in v["items"] if i["type"] == "legacy_ok"]
                nm = (ok[0]["name"] if ok else "a.txt").encode()
                for sname, ops in CLIENT_SCHEDULES.items():
                    seeds["legacy"][f"{name}-{sname}"] = bytes([1, 0, len(ops)]) + ops + bytes([len(nm)]) + nm + b
            else:
                items = v["items"][1:] if start == "handshake" else v["items"]
                server_bytes = b if start == "handshake" else SERVER_HELLO + b
                for sname, ops in CLIENT_SCHEDULES.items():
                    seeds["client_machine"][f"{name}-{sname}"] = client_input(0, 0, requests_for(items), ops, server_bytes)

    for name, headers, conns in transcripts():
        cfg = role_config(headers)
        trailer = "TRAILER" in headers.get("capability", "").split()
        for i, data in enumerate(conns):
            source = f"{name}-{i}"
            if data[:1] == b"\x00":
                for variant, mode, extra in LEGACY_VARIANTS:
                    seeds["legacy"][f"{source}-{variant}"] = bytes([mode, cfg | extra, 0]) + data
            else:
                server_seeds("server_machine", b"", source, cfg, data, trailer)
                if data.startswith(HELLO):
                    section = data[len(HELLO):][:0xFFFF]
                    for sname, ops in CLIENT_SCHEDULES.items():
                        seeds["client_machine"][f"{source}-e2e-{sname}"] = client_input(CLIENT_E2E, cfg, section, ops, b"")
                        if trailer:
                            seeds["client_machine"][f"{source}-e2e-trailing-{sname}"] = client_input(
                                CLIENT_E2E | CLIENT_TRAILING_REPLIES, cfg, section, ops, b"")
        seeds["transcript"][name] = (SPEC / "transcripts" / f"{name}.ft").read_bytes()

    for nm in ("a.txt", "bin", "empty", "missing", "..", "a" * 300):
        for sname, ops in CLIENT_SCHEDULES.items():
            for cfg in (0, NO_LEGACY, ANON_NONE):
                b = nm.encode()
                seeds["legacy"][f"e2e-{len(b)}{b[:8].hex()}-{cfg}-{sname}"] = bytes([3, cfg, len(ops)]) + ops + bytes([len(b) % 256]) + b
    return seeds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "corpus")
    args = ap.parse_args(argv)
    total = 0
    for target, files in build().items():
        d = args.out / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
            (d / f"seed-{safe}").write_bytes(data)
        total += len(files)
        print(f"{target}: {len(files)} seeds")
    print(f"{total} seeds in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
