#!/usr/bin/env python3
"""A small Ferry client in Python, written from PROTOCOL.md: a second, independent client for
`conformance client` to judge, and an example of how to wrap a client for its contract.

    pyferry.py --server HOST:PORT [--timeout SECONDS] [--profile v1|legacy]
               [--dir DIR] [--path PATH] {get,put,list,rm} NAME

get downloads NAME to DIR/NAME (through DIR/NAME.part, renamed only once the MD5 of the whole file
matches), put uploads the local file PATH as NAME, list prints the server's files, rm deletes
NAME. Exit status: 0 success, 1 refused or failed. It uses the standard library only.

Every rule it follows is a small function or constant, so that conformance/tests/broken_clients
can break exactly one of them.
"""

import argparse
import hashlib
import os
import socket
import struct
import sys
import time

NAME_LEN_CEILING = 4096
ERROR_MESSAGE_MAX = 1024
TRANSIENT = {0x0103, 0x0104, 0x0106}  # BUSY, SHUTTING_DOWN, TIMEOUT
RESUME = 0x02
TRAILER = 0x10
RETRIES = 3
BACKOFF = 0.2
# Every read and write has a deadline ([TIME-6], [TIME-11]).
DEADLINES = True


class ProtocolError(Exception):
    """The server broke the protocol: the connection is over, nothing it sent is used."""


class Fatal(Exception):
    """A fatal error code: the connection is over ([ERR-4], [ERR-5])."""

    def __init__(self, code, message):
        super().__init__(f"error 0x{code:04x}: {escape(message)}")
        self.code = code


class Refused(Exception):
    """A recoverable error code: the request failed, the connection goes on."""

    def __init__(self, code, message):
        super().__init__(f"error 0x{code:04x}: {escape(message)}")
        self.code = code


class Lost(Exception):
    """The connection broke or timed out: worth another attempt."""


class Mismatch(Exception):
    """The data did not match its MD5."""


def escape(text):
    """[NAME-12]: control characters are escaped before printing."""
    return "".join(c if c.isprintable() else f"\\u{{{ord(c):x}}}" for c in text)


def check_name(raw):
    """[NAME-11]: every name from the server is checked against § 10.1 before any use."""
    if not 1 <= len(raw) <= NAME_LEN_CEILING:
        raise ProtocolError(f"the server sent a name of {len(raw)} bytes")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("the server sent a name that is not UTF-8") from None
    bad = [c for c in name if c in "/\\" or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F]
    if bad or name in (".", "..") or name.startswith(".ferry"):
        raise ProtocolError(f"the server sent an invalid name {escape(name)!r}")
    return name


def check_version(version, low, high):
    """[HELLO-7]: the version chosen lies within the range offered."""
    if not low <= version <= high:
        raise ProtocolError(f"the server chose version {version}, outside {low}..{high}")


def check_capabilities(caps):
    """[HELLO-8]: bits this client does not know are ignored."""
    return caps


def check_tag(tag, expected):
    """[REQ-7]: a reply answers the oldest request, or is an error."""
    if tag != expected:
        raise ProtocolError(f"reply tag 0x{tag:02x} does not answer the request (0x{expected:02x})")


def decode_message(raw):
    """[ENC-7], [ENC-3]: an error message that is not UTF-8 is shown with U+FFFD, never refused."""
    return raw.decode("utf-8", "replace")


def is_fatal(code):
    """[ERR-5]: only 0x02xx is recoverable; unknown codes follow their range."""
    return not 0x0200 <= code <= 0x02FF


def is_transient(error):
    """Worth another attempt on a new connection (§ 9.2)."""
    return isinstance(error, Lost) or (isinstance(error, Fatal) and error.code in TRANSIENT)


def digest_hex(raw):
    """[FRAME-4]: digits 0-9, a-f, A-F; anything else is malformed."""
    if len(raw) != 32 or any(chr(b) not in "0123456789abcdefABCDEF" for b in raw):
        raise ProtocolError("the digest is not 32 hexadecimal digits")
    return raw.decode("ascii").lower()


def md5_of_file(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path, md5, resumed):
    """[FRAME-5]: the whole file — bytes kept and bytes received — matches the frame's MD5."""
    return md5_of_file(path) == md5


def offers_trailer(caps):
    """[TRL-1]: FETCH only to a server that announced TRAILER."""
    return bool(caps & TRAILER)


def verify_trailer(path, md5):
    """[TRL-10]: a file sent in the trailing form is received only once its trailer matches."""
    return md5_of_file(path) == md5


def same_file(identity, size, md5):
    """[GET-7]: a resumed download continues only the file it began."""
    return identity == (size, md5)


def part_path(dest):
    return dest + ".part"


def local_name(asked, frame_name):
    """The local file is named by what the user asked for."""
    return asked


def discard(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def put_digest(md5):
    """[FRAME-3]: lowercase digits."""
    return md5.encode("ascii")


def put_data(data):
    """[PUT-6], [FRAME-1]: exactly the file's bytes."""
    return data


class Conn:
    def __init__(self, addr, timeout, legacy=False):
        host, port = addr.rsplit(":", 1)
        self.timeout = timeout
        self.broken = False
        self.sock = socket.create_connection((host, int(port)), timeout=timeout if DEADLINES else None)
        self.sock.settimeout(timeout if DEADLINES else None)
        self.caps = 0
        if legacy:
            return
        self.sock.sendall(b"FERRY" + struct.pack(">HHH", 1, 1, 0))
        tag = self.u8()
        if tag == 0xFF:
            self.error()
        if tag != 0x80:
            raise ProtocolError(f"the server's hello starts with 0x{tag:02x}")
        version, role, caps = struct.unpack(">HBI", self.recv(7))
        self.recv(4 + 8 + 4 + 4 + 4 + 4)
        check_version(version, 1, 1)
        self.caps = check_capabilities(caps)

    def recv(self, n):
        out = bytearray()
        while len(out) < n:
            try:
                chunk = self.sock.recv(min(n - len(out), 1 << 16))
            except (socket.timeout, OSError) as e:
                self.broken = True
                raise Lost(f"the connection failed: {e}") from None
            if not chunk:
                self.broken = True
                raise Lost("the server closed the connection in the middle of a reply")
            out += chunk
        return bytes(out)

    def u8(self):
        return self.recv(1)[0]

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.broken = True
            raise Lost(f"the connection failed: {e}") from None

    def error(self):
        code, length = struct.unpack(">HH", self.recv(4))
        if length > ERROR_MESSAGE_MAX:  # [ERR-2]: fatal, and not read
            self.broken = True
            raise ProtocolError(f"an error message of {length} bytes")
        message = decode_message(self.recv(length))
        if is_fatal(code):
            self.broken = True
            raise Fatal(code, message)
        raise Refused(code, message)

    def reply(self, expected):
        tag = self.u8()
        if tag == 0xFF:
            self.error()
        try:
            check_tag(tag, expected)
        except ProtocolError:
            self.broken = True
            raise

    def name(self):
        (length,) = struct.unpack(">I", self.recv(4))
        if length > NAME_LEN_CEILING:
            self.broken = True
            raise ProtocolError(f"a name length of {length}")
        try:
            return check_name(self.recv(length))
        except ProtocolError:
            self.broken = True
            raise

    def bye(self):
        """[BYE-3]: say goodbye and wait for the answer, unless the connection is over."""
        if not self.broken:
            try:
                self.sock.sendall(b"\x08")
                self.recv(1)
            except Exception:
                pass
        self.sock.close()


def attempt_get(args, dest, state):
    conn = Conn(args.server, args.timeout)
    try:
        part = part_path(dest)
        offset = 0
        if state.get("identity") and conn.caps & RESUME and os.path.exists(part):
            offset = os.path.getsize(part)
        name = args.name.encode("utf-8")
        fetch = offers_trailer(conn.caps)
        opcode = b"\x0b" if fetch else b"\x03"
        conn.send(opcode + struct.pack(">I", len(name)) + name + struct.pack(">Q", offset))
        tag = conn.u8()
        if tag == 0xFF:
            conn.error()
        if fetch and offset == 0 and tag == 0x8B:  # [TRL-6], [TRL-8]: only then
            return trailing_get(args, conn, state)
        try:
            check_tag(tag, 0x83)
        except ProtocolError:
            conn.broken = True
            raise
        (echoed,) = struct.unpack(">Q", conn.recv(8))
        frame_name = conn.name()
        (size,) = struct.unpack(">Q", conn.recv(8))
        md5 = digest_hex(conn.recv(32))
        if echoed != offset or offset > size:
            conn.broken = True
            raise ProtocolError("the reply's offset is not the one asked for")
        dest = os.path.join(args.dir, local_name(args.name, frame_name))
        part = part_path(dest)
        if offset > 0 and not same_file(state["identity"], size, md5):
            conn.broken = True  # the data that follows is of no use
            discard(part)
            state["identity"] = None
            raise Lost("the file changed on the server; starting again")
        state["identity"] = (size, md5)
        with open(part, "ab" if offset else "wb") as f:
            left = size - offset
            while left:
                chunk = conn.recv(min(left, 1 << 16))
                f.write(chunk)
                left -= len(chunk)
        if not verify(part, md5, offset > 0):
            discard(part)
            raise Mismatch(f"{escape(args.name)}: the data does not match its MD5")
        os.replace(part, dest)
        return 0
    except Exception as e:
        if not isinstance(e, (Refused, Mismatch)):
            conn.broken = True  # nothing more is sent on a connection the server broke
        raise
    finally:
        conn.bye()


def trailing_get(args, conn, state):
    """A FETCH reply in the trailing form (§ 7.10): the data, then its MD5."""
    frame_name = conn.name()
    (size,) = struct.unpack(">Q", conn.recv(8))
    dest = os.path.join(args.dir, local_name(args.name, frame_name))
    part = part_path(dest)
    state["identity"] = None  # unverified bytes are not resumed
    with open(part, "wb") as f:
        left = size
        while left:
            chunk = conn.recv(min(left, 1 << 16))
            f.write(chunk)
            left -= len(chunk)
    md5 = digest_hex(conn.recv(32))
    if not verify_trailer(part, md5):
        discard(part)
        raise Mismatch(f"{escape(args.name)}: the data does not match its trailer")
    os.replace(part, dest)
    return 0


def legacy_get(args, dest):
    conn = Conn(args.server, args.timeout, legacy=True)
    try:
        name = args.name.encode("utf-8")
        conn.send(struct.pack(">I", len(name)) + name)
        status = conn.recv(2)
        if status == b"ER":
            if conn.recv(3) != b"ROR":
                raise ProtocolError("a legacy reply that is neither OK nor ERROR")
            # [LEG-6]: at most ERROR_MESSAGE_MAX bytes, and a bounded wait for the end.
            kept, until = b"", time.monotonic() + args.timeout
            while len(kept) < ERROR_MESSAGE_MAX and time.monotonic() < until:
                try:
                    chunk = conn.sock.recv(ERROR_MESSAGE_MAX - len(kept))
                except OSError:
                    break
                if not chunk:
                    break
                kept += chunk
            raise Refused(0x0200, decode_message(kept))
        if status != b"OK":
            raise ProtocolError("a legacy reply that is neither OK nor ERROR")
        conn.name()
        (size,) = struct.unpack(">Q", conn.recv(8))
        md5 = digest_hex(conn.recv(32))
        part = part_path(dest)
        with open(part, "wb") as f:
            left = size
            while left:
                chunk = conn.recv(min(left, 1 << 16))
                f.write(chunk)
                left -= len(chunk)
        if not verify(part, md5, False):
            discard(part)
            raise Mismatch(f"{escape(args.name)}: the data does not match its MD5")
        os.replace(part, dest)
        return 0
    finally:
        conn.broken = True
        conn.sock.close()


def get(args):
    dest = os.path.join(args.dir, args.name)
    if args.profile == "legacy":
        return legacy_get(args, dest)
    state = {"identity": None}
    for attempt in range(RETRIES + 1):
        try:
            return attempt_get(args, dest, state)
        except Exception as e:
            if not is_transient(e) or attempt == RETRIES:
                raise
            time.sleep(BACKOFF)
    return 1


def once(args, op):
    for attempt in range(RETRIES + 1):
        try:
            conn = Conn(args.server, args.timeout)
        except Exception as e:
            if not is_transient(e) or attempt == RETRIES:
                raise
            time.sleep(BACKOFF)
            continue
        try:
            return op(conn)
        except Exception as e:
            if not isinstance(e, Refused):
                conn.broken = True
            raise
        finally:
            conn.bye()


def list_files(args):
    def op(conn):
        conn.send(b"\x01")
        conn.reply(0x81)
        (count,) = struct.unpack(">I", conn.recv(4))
        rows = []
        for _ in range(count):
            name = conn.name()
            size, _mtime = struct.unpack(">Qq", conn.recv(16))
            present = conn.u8()
            if present not in (0, 1):  # [ENC-4]
                conn.broken = True
                raise ProtocolError(f"presence byte 0x{present:02x}")
            md5 = digest_hex(conn.recv(32)) if present else "-"
            rows.append(f"{size:>12}  {md5}  {escape(name)}")
        print("\n".join(rows))
        return 0

    return once(args, op)


def put(args):
    with open(args.path, "rb") as f:
        data = f.read()
    md5 = hashlib.md5(data).hexdigest()

    def op(conn):
        name = args.name.encode("utf-8")
        head = b"\x04\x00" + struct.pack(">I", len(name)) + name + struct.pack(">Q", len(data))
        conn.send(head + put_digest(md5) + put_data(data))
        conn.reply(0x84)
        if conn.u8() not in (0, 1):
            conn.broken = True
            raise ProtocolError("a PUT outcome that is neither 0 nor 1")
        return 0

    return once(args, op)


def rm(args):
    def op(conn):
        name = args.name.encode("utf-8")
        conn.send(b"\x05" + struct.pack(">I", len(name)) + name)
        conn.reply(0x85)
        return 0

    return once(args, op)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", required=True)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--profile", choices=["v1", "legacy"], default="v1")
    p.add_argument("--dir", default=".")
    p.add_argument("--path")
    p.add_argument("op", choices=["get", "put", "list", "rm"])
    p.add_argument("name")
    args = p.parse_args(argv)
    try:
        return {"get": get, "put": put, "list": list_files, "rm": rm}[args.op](args)
    except Exception as e:
        print(f"pyferry: {escape(str(e))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
