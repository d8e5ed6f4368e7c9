#!/usr/bin/env python3
"""Check the recorded sessions in spec/transcripts/*.ft (stdlib only).

Parses every transcript per the format of spec/README.md ("Transcripts"), plus the proposed
extensions documented in spec/transcripts/README.md:

  --- connection   a line that ends one connection and opens the next one
  rest             S: only, any bytes (possibly none) until the server closes
  opt:F            S: only, an opt<T>: 0x00, or 0x01 followed by what field F matches

Then it replays each transcript against a small model of a version 1 server (PROTOCOL.md) with an
empty namespace (every name carrying ${P} is unique to the run, so it does not exist beforehand)
and checks that:

  * headers are well formed; every step carries a trailing "# [ID] ..." comment; every id exists in
    PROTOCOL.md and @requires lists exactly the ids the steps cite;
  * every field is well formed, wildcards appear only on S: lines, every C: line holds exactly one
    message (or a prefix the server must reject before reading further);
  * every S: line matches the reply the model predicts for the oldest unanswered request: tags,
    error codes, names, sizes, digests (checked with hashlib), data, the connection closing after a
    fatal error, BYE or a legacy reply; wildcards are used only where servers may differ;
  * every valid name starts with ${P}; every file a successful PUT creates is deleted before the
    transcript ends; no two transcripts use the same ${P} name (so they may run in parallel);
  * @role and @capability cover what the transcript needs (write for PUT/DELETE, RESUME for a GET
    or FETCH with 0 < offset <= size, STATUS for STATUS, TRAILER for PUT modes 0x80/0x81 and FETCH);
  * no S: line depends on a server's free choice: a FETCH from offset 0 of an existing file may be
    answered with tag 0x83 or 0x8B (PROTOCOL.md 7.10, TRL-7 is a SHOULD), so it cannot be matched.

Usage: check_transcripts.py [DIR_OR_FILE ...]   (default: the transcripts/ next to this tools/ dir)
Exit status 0 when every transcript passes, 1 otherwise.
"""

import glob
import hashlib
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC_DIR = os.path.dirname(HERE)
PROTOCOL_MD = os.path.join(os.path.dirname(SPEC_DIR), "PROTOCOL.md")

SAMPLE_P = "ftcheck-0001-"        # what the checker substitutes for ${P}
SAMPLE_TOKEN = "ftcheck-token"    # what it substitutes for ${TOKEN}: the token the server accepts

NAME_LEN_CEILING = 4096
TOKEN_LEN_MAX = 256
FILE_SIZE_CEILING = 2 ** 63 - 1
SAFE_NAME_LEN = 64                # a valid name longer than this might exceed some max_name_len

ROLES = {"read": 1, "write": 2, "admin": 3}
CAPABILITIES = {"LEGACY", "RESUME", "STATUS", "SHUTDOWN", "TRAILER"}
INT_WIDTH = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "i64": 8}
STR_WIDTH = {"str8": 1, "str16": 2, "str32": 4, "name": 4}
ID_RE = re.compile(r"\[([A-Z]+-[0-9]+)\]")

MALFORMED, UNSUPPORTED_VERSION, UNAUTHORIZED, TOO_LARGE = 0x0100, 0x0101, 0x0102, 0x0105
NOT_FOUND, BAD_NAME, EXISTS, CHECKSUM_MISMATCH, BAD_OFFSET = 0x0200, 0x0201, 0x0203, 0x0204, 0x0205
REQUEST_NAMES = {0x01: "LIST", 0x02: "STAT", 0x03: "GET", 0x04: "PUT", 0x05: "DELETE",
                 0x06: "STATUS", 0x07: "HELP", 0x08: "BYE", 0x09: "SHUTDOWN", 0x0B: "FETCH"}
TRAILING_MODE_BIT = 0x80         # PUT modes 0x80/0x81: the digest follows the data (section 6.5)


class CheckError(Exception):
    pass


class Short(Exception):
    """The bytes of a line end inside a message."""


class Misaligned(Exception):
    """A wildcard or extension field sits where a different wire field is expected."""


# --------------------------------------------------------------------------------------------
# Lexing and field parsing


def split_tokens(text):
    """Split a step's text into field tokens and the trailing comment ('' when none)."""
    tokens, i, n = [], 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text[i] == "#":
            return tokens, text[i:]
        start = i
        while i < n and not text[i].isspace():
            if text[i] == '"':
                j = i + 1
                while j < n and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
                if j >= n:
                    raise CheckError("unterminated string")
                i = j + 1
            else:
                i += 1
        tokens.append(text[start:i])
    return tokens, ""


def decode_text(quoted):
    try:
        text = json.loads(quoted)
    except ValueError as e:
        raise CheckError(f"bad string {quoted}: {e}")
    if not isinstance(text, str):
        raise CheckError(f"bad string {quoted}")
    for var in re.findall(r"\$\{([^}]*)\}", text):
        if var not in ("P", "TOKEN"):
            raise CheckError(f"unknown variable ${{{var}}} in {quoted}")
    text = text.replace("${P}", SAMPLE_P).replace("${TOKEN}", SAMPLE_TOKEN)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise CheckError(f"string {quoted} is not valid Unicode (lone surrogate)")


def parse_int(spec, width, signed):
    try:
        value = int(spec, 0) if re.fullmatch(r"-?(0x[0-9a-fA-F]+|[0-9]+)", spec) else None
    except ValueError:
        value = None
    if value is None:
        raise CheckError(f"bad integer {spec!r}")
    lo, hi = (-(2 ** (8 * width - 1)), 2 ** (8 * width - 1) - 1) if signed else (0, 2 ** (8 * width) - 1)
    if not lo <= value <= hi:
        raise CheckError(f"integer {spec} does not fit its width")
    return value.to_bytes(width, "big", signed=signed)


def parse_field(tok, side, nested=False):
    """Return a list of atoms: ('b', bytes), ('any', n), ('lenany', width), ('opt', atoms), ('rest',)."""
    def s_only(what):
        if side != "S":
            raise CheckError(f"{what} is allowed on S: lines only")

    if tok.startswith('"'):
        return [("b", decode_text(tok))]
    m = re.fullmatch(r"(u8|u16|u32|u64|i64):(.*)", tok)
    if m:
        width = INT_WIDTH[m.group(1)]
        if m.group(2) == "*":
            s_only(tok)
            return [("any", width)]
        if m.group(2).startswith("-") and m.group(1) != "i64":
            raise CheckError(f"negative value in {tok}")
        return [("b", parse_int(m.group(2), width, m.group(1) == "i64"))]
    m = re.fullmatch(r"x:([0-9a-fA-F]*)", tok)
    if m:
        if len(m.group(1)) % 2:
            raise CheckError(f"odd number of hex digits in {tok}")
        return [("b", bytes.fromhex(m.group(1)))]
    m = re.fullmatch(r"(str8|str16|str32|name):(.*)", tok)
    if m:
        width = STR_WIDTH[m.group(1)]
        if m.group(2) == "*":
            s_only(tok)
            return [("lenany", width)]
        if not m.group(2).startswith('"'):
            raise CheckError(f"bad field {tok}")
        data = decode_text(m.group(2))
        if len(data) >= 256 ** width:
            raise CheckError(f"text too long for {m.group(1)}")
        return [("b", len(data).to_bytes(width, "big") + data)]
    m = re.fullmatch(r"md5:(.*)", tok)
    if m:
        if m.group(1) == "*":
            s_only(tok)
            return [("any", 32)]
        if not m.group(1).startswith('"'):
            raise CheckError(f"bad field {tok}")
        return [("b", hashlib.md5(decode_text(m.group(1))).hexdigest().encode())]
    m = re.fullmatch(r"fill:([0-9]+):(0x[0-9a-fA-F]+|[0-9]+)", tok)
    if m:
        count, byte = int(m.group(1)), int(m.group(2), 0)
        if byte > 255 or count > 100_000_000:
            raise CheckError(f"bad fill {tok}")
        return [("b", bytes([byte]) * count)]
    m = re.fullmatch(r"\*:([0-9]+)", tok)
    if m:
        s_only(tok)
        return [("any", int(m.group(1)))]
    if tok == "rest":                                   # extension
        s_only(tok)
        if nested:
            raise CheckError("rest cannot be nested in opt:")
        return [("rest",)]
    m = re.fullmatch(r"opt:(.+)", tok)                  # extension
    if m:
        s_only(tok)
        if nested:
            raise CheckError("opt: cannot be nested")
        return [("opt", parse_field(m.group(1), side, nested=True))]
    raise CheckError(f"unknown field {tok!r}")


def merge(atoms):
    out = []
    for a in atoms:
        if a[0] == "b" and out and out[-1][0] == "b":
            out[-1] = ("b", out[-1][1] + a[1])
        elif a[0] == "b" and not a[1]:
            continue
        else:
            out.append(a)
    return out


class Reader:
    def __init__(self, atoms):
        self.atoms, self.i, self.off = merge(atoms), 0, 0

    def _cur(self):
        while self.i < len(self.atoms):
            a = self.atoms[self.i]
            size = len(a[1]) if a[0] == "b" else a[1] if a[0] == "any" else None
            if size is not None and self.off >= size:
                self.i, self.off = self.i + 1, 0
                continue
            return a
        return None

    def at_end(self):
        return self._cur() is None

    def remaining_concrete(self):
        a = self._cur()
        return 0 if a is None or a[0] != "b" else len(a[1]) - self.off

    def take(self, n, what="bytes"):
        out, known = bytearray(), True
        while n:
            a = self._cur()
            if a is None:
                raise Short(f"the line ends inside {what}")
            if a[0] == "b":
                k = min(n, len(a[1]) - self.off)
                out += a[1][self.off:self.off + k]
            elif a[0] == "any":
                k = min(n, a[1] - self.off)
                known = False
            else:
                raise Misaligned(f"{what}: found a {a[0]} field where {n} fixed bytes belong")
            self.off += k
            n -= k
        return bytes(out) if known else None

    def int(self, width, what, signed=False):
        b = self.take(width, what)
        return None if b is None else int.from_bytes(b, "big", signed=signed)

    def is_lenany(self, width, what):
        a = self._cur()
        if a is not None and a[0] == "lenany":
            if a[1] != width:
                raise Misaligned(f"{what}: wildcard of the wrong length width")
            self.i, self.off = self.i + 1, 0
            return True
        return False

    def prefixed(self, width, what, limit=None):
        """(length, bytes); either may be None when a wildcard covers it."""
        if self.is_lenany(width, what):
            return None, None
        n = self.int(width, f"length of {what}")
        if n is None:
            raise Misaligned(f"{what}: wildcard length; write str{8 * width}:* instead")
        if limit is not None and n > limit:
            return n, None
        return n, self.take(n, what)

    def opt(self, fn, what):
        """('either'|'present'|'absent', value)."""
        a = self._cur()
        if a is not None and a[0] == "opt":
            self.i, self.off = self.i + 1, 0
            sub = Reader(a[1])
            value = fn(sub)
            if not sub.at_end():
                raise Misaligned(f"{what}: opt: holds more than one value")
            return "either", value
        p = self.take(1, f"presence byte of {what}")
        if p is None:
            raise Misaligned(f"{what}: wildcard presence byte; write opt:F instead")
        if p == b"\x00":
            return "absent", None
        if p == b"\x01":
            return "present", fn(self)
        raise CheckError(f"{what}: presence byte {p.hex()}")

    def rest(self):
        a = self._cur()
        if a is not None and a[0] == "rest":
            self.i, self.off = self.i + 1, 0
            return True
        return False


# --------------------------------------------------------------------------------------------
# Server model


def name_problem(nb):
    """Why the name breaks PROTOCOL.md § 10.1 (None when valid, max_name_len aside)."""
    if not nb:
        return "empty"
    try:
        s = nb.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid UTF-8"
    for ch in s:
        o = ord(ch)
        if ch in "/\\" or o < 0x20 or o == 0x7F or 0x80 <= o <= 0x9F:
            return f"contains U+{o:04X}"
    if s in (".", ".."):
        return "is . or .."
    if s.startswith(".ferry"):
        return "starts with .ferry"
    return None


def md5hex(data):
    return hashlib.md5(data).hexdigest().encode()


def pred(kind, **kw):
    kw["kind"] = kind
    return kw


class Transcript:
    def __init__(self, path):
        self.path = path
        self.fname = os.path.basename(path)
        self.errors = []
        self.warnings = []
        self.headers = {"title": None, "requires": None, "role": None, "capability": [], "legacy": False}
        self.step_ids = set()
        self.connections = []        # list of list of steps (side, atoms, lineno, raw)
        self.store = {}              # name bytes -> data bytes
        self.valid_names = set()     # every valid name the transcript uses (decoded with SAMPLE_P)
        self.need_role = "read"
        self.need_caps = set()
        self.uses_legacy = False
        self.steps = 0
        self.cur_line = 0
        self.extensions = set()      # proposed format extensions the transcript uses

    def err(self, lineno, msg):
        lineno = lineno or self.cur_line
        self.errors.append(f"{self.fname}:{lineno}: {msg}")

    def warn(self, lineno, msg):
        self.warnings.append(f"{self.fname}:{lineno}: {msg}")

    # ---- parsing

    def parse(self, known_ids):
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        steps = []                       # [side, text, lineno, comment_seen]
        current = []
        seen_step = False
        for lineno, raw in enumerate(lines, 1):
            line = raw.rstrip("\r")
            if not line.strip():
                continue
            if line.startswith("#"):
                continue
            if line[0].isspace():
                if not current:
                    self.err(lineno, "continuation line without a step before it")
                    continue
                last = current[-1]
                if last[3]:
                    self.err(lineno, "continuation after a line with a comment (ambiguous): "
                                     "put the comment on the last line of the step")
                last[1] += " " + line.strip()
                try:
                    last[3] = bool(split_tokens(line.strip())[1])
                except CheckError as e:
                    self.err(lineno, str(e))
                continue
            if line.startswith("@"):
                if seen_step:
                    self.err(lineno, "header after the first step")
                self.parse_header(line, lineno, known_ids)
                continue
            if line.strip() == "--- connection":
                self.extensions.add("connection")
                if not current:
                    self.err(lineno, "--- connection before any step")
                steps.append(current)
                current = []
                continue
            m = re.match(r"([CS]):(\s|$)(.*)", line)
            if not m:
                self.err(lineno, f"unrecognised line: {line!r}")
                continue
            seen_step = True
            try:
                _, comment = split_tokens(m.group(3))
            except CheckError as e:
                self.err(lineno, str(e))
                continue
            current.append([m.group(1), m.group(3), lineno, bool(comment)])
        steps.append(current)
        if not any(steps):
            self.err(0, "no steps")
            return
        for conn_steps in steps:
            conn = []
            for side, text, lineno, _ in conn_steps:
                self.steps += 1
                try:
                    tokens, comment = split_tokens(text)
                except CheckError as e:
                    self.err(lineno, str(e))
                    continue
                ids = ID_RE.findall(comment)
                if not ids:
                    self.err(lineno, "step without a trailing '# [ID] ...' comment")
                for i in ids:
                    if i not in known_ids:
                        self.err(lineno, f"[{i}] is not a requirement id of PROTOCOL.md")
                self.step_ids.update(ids)
                if not tokens:
                    self.err(lineno, "empty step")
                    continue
                if side == "S" and tokens == ["close"]:
                    conn.append(("S", "close", lineno))
                    continue
                if "close" in tokens:
                    self.err(lineno, "'close' must stand alone on an S: line")
                    continue
                atoms = []
                try:
                    for tok in tokens:
                        atoms.extend(parse_field(tok, side))
                except CheckError as e:
                    self.err(lineno, str(e))
                    continue
                self.extensions.update(a[0] for a in atoms if a[0] in ("opt", "rest"))
                if any(a[0] == "rest" for a in atoms[:-1]):
                    self.err(lineno, "rest must be the last field of its line")
                conn.append((side, atoms, lineno))
            self.connections.append(conn)
        h = self.headers
        if not h["title"]:
            self.err(0, "missing @title")
        if h["requires"] is None:
            self.err(0, "missing @requires")
        else:
            missing = self.step_ids - h["requires"]
            unused = h["requires"] - self.step_ids
            if missing:
                self.err(0, "ids cited by steps but not in @requires: " + " ".join(sorted(missing)))
            if unused:
                self.err(0, "ids in @requires that no step cites: " + " ".join(sorted(unused)))

    def parse_header(self, line, lineno, known_ids):
        m = re.match(r"@([a-z]+)(?:\s+(.*))?$", line)
        if not m:
            self.err(lineno, f"bad header {line!r}")
            return
        key, value = m.group(1), (m.group(2) or "").strip()
        h = self.headers
        if key == "title":
            if h["title"] is not None:
                self.err(lineno, "duplicate @title")
            if not value:
                self.err(lineno, "empty @title")
            h["title"] = value
        elif key == "requires":
            if h["requires"] is not None:
                self.err(lineno, "duplicate @requires")
            ids = value.split()
            if not ids:
                self.err(lineno, "empty @requires")
            for i in ids:
                if not re.fullmatch(r"[A-Z]+-[0-9]+", i):
                    self.err(lineno, f"bad id {i!r} in @requires (write ids without brackets)")
                elif i not in known_ids:
                    self.err(lineno, f"{i} is not a requirement id of PROTOCOL.md")
            h["requires"] = set(ids)
        elif key == "role":
            if h["role"] is not None:
                self.err(lineno, "duplicate @role")
            if value not in ROLES:
                self.err(lineno, f"@role must be read, write or admin, not {value!r}")
            h["role"] = value
        elif key == "capability":
            for cap in value.split():
                if cap not in CAPABILITIES:
                    self.err(lineno, f"unknown capability {cap}")
                h["capability"].append(cap)
            if not value:
                self.err(lineno, "empty @capability")
        elif key == "legacy":
            if value:
                self.err(lineno, "@legacy takes no value")
            h["legacy"] = True
        else:
            self.err(lineno, f"unknown header @{key}")

    # ---- replay against the model

    def replay(self):
        for conn in self.connections:
            if conn:
                self.replay_connection(conn)
        if self.store:
            self.err(0, "files created but not deleted before the end: "
                     + ", ".join(repr(n.decode("utf-8", "replace").replace(SAMPLE_P, "${P}"))
                                 for n in self.store))
        role = self.headers["role"] or "read"
        if ROLES[role] < ROLES[self.need_role]:
            self.err(0, f"@role {role}, but the transcript needs {self.need_role}")
        for cap in sorted(self.need_caps - set(self.headers["capability"])):
            self.err(0, f"the transcript needs @capability {cap}")
        if self.uses_legacy != self.headers["legacy"]:
            self.err(0, "@legacy must be given exactly when a connection uses the legacy profile")

    def replay_connection(self, conn):
        queue = []            # predictions not yet matched
        state = {"first": True, "closing": False, "closed_seen": False, "legacy": False}
        last = conn[-1]
        if last[0] != "S" or last[1] != "close":
            self.err(last[2], "a connection must end with 'S: close'")
        matched_close = False   # a reply after which the server closes has been matched
        for side, atoms, lineno in conn:
            self.cur_line = lineno
            if state["closed_seen"]:
                self.err(lineno, "step after 'S: close' (start a new connection with --- connection)")
                return
            if side == "C":
                if matched_close:
                    self.err(lineno, "the client sends after the server has closed, or after BYE")
                    continue
                data = b"".join(a[1] for a in atoms)
                p = self.request(data, lineno, state)
                if p is not None:
                    queue.append(p)
                continue
            if atoms == "close":
                state["closed_seen"] = True
                if queue:
                    self.err(lineno, f"close expected, but {len(queue)} request(s) still await a reply")
                elif not state["closing"]:
                    self.err(lineno, "the server has no reason to close here")
                continue
            if not queue:
                self.err(lineno, "S: line with no request awaiting a reply (the runner would wait forever)"
                         if not matched_close else "reply after the server has closed")
                continue
            p = queue.pop(0)
            reader = Reader(atoms)
            try:
                self.match(p, reader, lineno)
                if reader.rest():
                    if not reader.at_end():
                        self.err(lineno, "rest must be the last field")
                    for q in queue:
                        if q["kind"] in ("put", "delete"):
                            self.err(lineno, "rest swallows the reply of a request that changes the namespace")
                    if not (state["closing"] or any(q.get("closes") for q in queue)):
                        self.err(lineno, "rest reads until EOF, but nothing makes the server close")
                    queue.clear()
                    state["closing"] = True
                elif not reader.at_end():
                    self.err(lineno, "bytes left over after the reply (one reply per S: line)")
            except (Short, Misaligned, CheckError) as e:
                self.err(lineno, f"{p['kind']} reply: {e}")
            if p.get("closes"):
                matched_close = True

    def request(self, data, lineno, state):
        """Model the server reading one C: message; return the predicted reply or None."""
        if state.get("bye"):
            self.err(lineno, "the client sends after BYE [BYE-2]")
            return None
        if state["closing"]:
            return None                      # pipelined behind a fatal error: never answered
        r = Reader([("b", data)])
        try:
            if state["first"]:
                state["first"] = False
                if data[:1] == b"\x00":
                    self.uses_legacy = True
                    state["legacy"] = True
                    p = self.legacy_request(r)
                else:
                    p = self.hello(r)
            elif state["legacy"]:
                return None
            else:
                p = self.v1_request(r, lineno)
        except Short as e:
            self.err(lineno, f"incomplete message: {e}")
            return None
        if p["kind"] == "bye":
            state["bye"] = True
        if p.get("closes"):
            state["closing"] = True
        elif not r.at_end():
            self.err(lineno, "more than one message on a C: line (one message per line)")
        if p["kind"] == "error" and p["code"] < 0x0200:
            p["closes"] = True
            state["closing"] = True
        return p

    def fatal(self, code):
        return pred("error", code=code, closes=True)

    def hello(self, r):
        magic = r.take(5, "magic")
        if magic != b"FERRY":
            return self.fatal(MALFORMED)
        lo, hi = r.int(2, "min_version"), r.int(2, "max_version")
        if lo == 0 or lo > hi:
            return self.fatal(MALFORMED)
        n = r.int(2, "token length")
        if n > TOKEN_LEN_MAX:
            return self.fatal(TOO_LARGE)
        token = r.take(n, "token")
        if any(not 0x21 <= b <= 0x7E for b in token):
            return self.fatal(MALFORMED)
        if not lo <= 1 <= hi:
            return self.fatal(UNSUPPORTED_VERSION)
        if token and token != SAMPLE_TOKEN.encode():
            return self.fatal(UNAUTHORIZED)
        return pred("hello")

    def read_name(self, r, what="name"):
        n = r.int(4, f"length of {what}")
        if n > NAME_LEN_CEILING:
            return None, self.fatal(TOO_LARGE)
        nb = r.take(n, what)
        problem = name_problem(nb)
        if problem is None:
            self.valid_names.add(nb)
            if not nb.startswith(SAMPLE_P.encode()):
                self.err(0, f"valid name {nb!r} does not start with ${{P}}")
            if len(nb) > SAFE_NAME_LEN:
                self.warn(0, f"name {nb!r} is longer than {SAFE_NAME_LEN} bytes")
        return nb, (pred("error", code=BAD_NAME) if problem else None)

    def need_write(self):
        if ROLES[self.need_role] < ROLES["write"]:
            self.need_role = "write"

    def v1_request(self, r, lineno):
        op = r.take(1, "opcode")[0]
        if op not in REQUEST_NAMES:
            return self.fatal(MALFORMED)
        if op in (0x01, 0x06, 0x07, 0x08, 0x09):
            if op == 0x09:
                self.err(lineno, "transcripts must not send SHUTDOWN (it could stop a shared server)")
            if op == 0x06:
                self.need_caps.add("STATUS")
            kind = {0x01: "list", 0x06: "status", 0x07: "help", 0x08: "bye", 0x09: "shutdown"}[op]
            return pred(kind, closes=(op == 0x08))
        if op in (0x02, 0x05):
            name, refused = self.read_name(r)
            if refused:
                return refused
            if op == 0x05:
                self.need_write()
                if name not in self.store:
                    return pred("error", code=NOT_FOUND)
                del self.store[name]
                return pred("delete")
            if name not in self.store:
                return pred("error", code=NOT_FOUND)
            return pred("stat", name=name, data=self.store[name])
        if op in (0x03, 0x0B):
            if op == 0x0B:
                self.need_caps.add("TRAILER")        # [TRL-1]
            name, refused = self.read_name(r)
            if refused and refused.get("closes"):
                return refused
            offset = r.int(8, "offset")
            if refused:
                return refused
            if name not in self.store:
                return pred("error", code=NOT_FOUND)
            data = self.store[name]
            if offset > len(data):
                return pred("error", code=BAD_OFFSET)
            if offset > 0:
                self.need_caps.add("RESUME")
            elif op == 0x0B:
                # [TRL-7] is a SHOULD: tag 0x83 or 0x8B, whichever the server prefers.
                self.err(lineno, "a FETCH from offset 0 of an existing file may be answered with tag 0x83 "
                         "or 0x8B: no transcript can match it (fetch from an offset above 0 [TRL-6])")
            return pred("get", name=name, offset=offset, data=data)
        # PUT; modes 0x80 and 0x81 have the trailing form (sections 6.5, 7.4)
        mode = r.take(1, "mode")[0]
        if mode not in (0, 1, 0x80, 0x81):
            return self.fatal(MALFORMED)
        trailing = bool(mode & TRAILING_MODE_BIT)
        if trailing:
            self.need_caps.add("TRAILER")            # [TRL-1]
        name, refused = self.read_name(r)
        if refused and refused.get("closes"):
            return refused
        size = r.int(8, "size")
        if size > FILE_SIZE_CEILING:
            return self.fatal(TOO_LARGE)
        if size > 100_000_000:
            self.warn(lineno, "PUT size above 100 MB may exceed a server's max_file_size")
        if not trailing:
            digest = r.take(32, "md5")
            if not re.fullmatch(rb"[0-9a-fA-F]{32}", digest):
                return self.fatal(MALFORMED)
        data = r.take(size, "PUT data")
        if trailing:
            digest = r.take(32, "trailer")
            if not re.fullmatch(rb"[0-9a-fA-F]{32}", digest):
                if refused:
                    # [TRL-4]: MALFORMED, but an early refusal (PUT-5, a MAY) may come first.
                    self.err(lineno, "a refused trailing PUT with a bad trailer: whether the refusal comes "
                             "before MALFORMED is the server's choice")
                return self.fatal(MALFORMED)
        self.need_write()
        if refused:
            return refused
        if mode & 1 and name in self.store:
            return pred("error", code=EXISTS)
        if digest.lower() != md5hex(data):
            return pred("error", code=CHECKSUM_MISMATCH)
        outcome = 1 if name in self.store else 0
        self.store[name] = data
        return pred("put", outcome=outcome, name=name)

    def legacy_request(self, r):
        n = r.int(4, "legacy name length")
        if n > NAME_LEN_CEILING:               # above any max_name_len: refused unread [LEG-4]
            return pred("legacy_error", closes=True)
        nb = r.take(n, "legacy name")
        if name_problem(nb) is None:
            self.valid_names.add(nb)
            if not nb.startswith(SAMPLE_P.encode()):
                self.err(0, f"valid name {nb!r} does not start with ${{P}}")
        if name_problem(nb) or nb not in self.store:
            return pred("legacy_error", closes=True)
        return pred("legacy_ok", name=nb, data=self.store[nb], closes=True)

    # ---- matching an S: line against a prediction

    def expect(self, got, want, what):
        if got is None:
            raise CheckError(f"{what} is a wildcard, but every server must send {want!r:.60}")
        if got != want:
            if isinstance(want, int) and ("tag" in what or "code" in what):
                got, want = f"0x{got:02x}", f"0x{want:02x}"
            elif isinstance(want, bytes) and len(want) > 40:
                got, want = f"{len(got)} bytes {got[:16]!r}...", f"{len(want)} bytes {want[:16]!r}..."
            raise CheckError(f"{what}: transcript expects {got}, the server must send {want}")

    def frame(self, r, name, data, offset):
        _, got_name = r.prefixed(4, "name")
        self.expect(got_name, name, "name")
        self.expect(r.int(8, "size"), len(data), "size")
        self.expect(r.take(32, "md5"), md5hex(data), "md5 (lowercase [FRAME-3])")
        if r.rest():
            raise CheckError("rest in place of file data")
        self.expect(r.take(len(data) - offset, "file data"), data[offset:], "file data")

    def match(self, p, r, lineno):
        kind = p["kind"]
        if kind in ("legacy_ok", "legacy_error"):
            if kind == "legacy_ok":
                self.expect(r.take(2, "legacy status"), b"OK", "legacy status")
                self.frame(r, p["name"], p["data"], 0)
            else:
                self.expect(r.take(5, "legacy status"), b"ERROR", "legacy status")
                a = r._cur()
                if a is None or a[0] != "rest":
                    raise CheckError("a legacy error message runs to EOF: match it with rest")
            return
        tag = r.int(1, "tag")
        if tag is None:
            raise CheckError("the reply tag is a wildcard")
        if kind == "error":
            self.expect(tag, 0xFF, "tag")
            self.expect(r.int(2, "error code"), p["code"], "error code")
            length, _ = r.prefixed(2, "error message")
            if length is not None:
                self.warn(lineno, "a concrete error message: messages differ between servers")
            return
        want_tag = {"hello": 0x80, "list": 0x81, "stat": 0x82, "get": 0x83, "put": 0x84, "delete": 0x85,
                    "status": 0x86, "help": 0x87, "bye": 0x88, "shutdown": 0x89}[kind]
        self.expect(tag, want_tag, "tag")
        if kind == "hello":
            self.expect(r.int(2, "version"), 1, "version")
            role = r.int(1, "role")
            if role is not None:
                self.warn(lineno, "a concrete role in the server hello: the runner's token decides it")
            for width, what in ((4, "capabilities"), (4, "max_name_len"), (8, "max_file_size"),
                                (4, "max_clients"), (4, "idle_timeout_ms"), (4, "head_timeout_ms"),
                                (4, "progress_timeout_ms")):
                if r.int(width, what) is not None:
                    self.warn(lineno, f"a concrete {what} in the server hello: it varies")
        elif kind in ("list", "status"):
            if r.int(4, "count") is not None:
                raise CheckError("the count varies between servers: write u32:* then rest")
            if r._cur() is None or r._cur()[0] != "rest":
                raise CheckError("the entries cannot be matched: follow the count with rest")
        elif kind == "stat":
            _, got_name = r.prefixed(4, "name")
            self.expect(got_name, p["name"], "name")
            self.expect(r.int(8, "size"), len(p["data"]), "size")
            if r.int(8, "mtime", signed=True) is not None:
                raise CheckError("mtime varies: write i64:*")
            how, digest = r.opt(lambda sub: sub.take(32, "md5"), "md5")
            if how != "either":
                raise CheckError("a server MAY omit md5 [LIST-3]: write opt:md5:\"...\"")
            self.expect(digest, md5hex(p["data"]), "md5")
        elif kind == "get":
            self.expect(r.int(8, "offset"), p["offset"], "offset echo")
            self.frame(r, p["name"], p["data"], p["offset"])
        elif kind == "put":
            self.expect(r.int(1, "outcome"), p["outcome"], "outcome")
        elif kind == "help":
            length, _ = r.prefixed(4, "help text")
            if length is not None:
                raise CheckError("help text varies: write str32:*")


# --------------------------------------------------------------------------------------------


def known_requirement_ids():
    with open(PROTOCOL_MD, encoding="utf-8") as f:
        return set(ID_RE.findall(f.read()))


def main(argv):
    targets = argv[1:] or [os.path.join(SPEC_DIR, "transcripts")]
    paths = []
    for t in targets:
        paths.extend(sorted(glob.glob(os.path.join(t, "*.ft"))) if os.path.isdir(t) else [t])
    if not paths:
        print("no transcripts found")
        return 1
    known = known_requirement_ids()
    results, owners = [], {}
    for path in paths:
        t = Transcript(path)
        try:
            t.parse(known)
            if not t.errors:
                t.replay()
        except (OSError, UnicodeDecodeError) as e:
            t.err(0, str(e))
        for n in t.valid_names:
            owners.setdefault(n, []).append(t.fname)
        results.append(t)
    shared = {n: fs for n, fs in owners.items() if len(fs) > 1}
    for n, fs in sorted(shared.items()):
        for t in results:
            if t.fname == fs[0]:
                t.err(0, f"name {n.decode('utf-8', 'replace').replace(SAMPLE_P, '${P}')!r} "
                         f"is also used by {', '.join(fs[1:])}")
    covered = set()
    failed = 0
    for t in results:
        status = "ok  " if not t.errors else "FAIL"
        failed += bool(t.errors)
        ids = sorted(t.headers["requires"] or [])
        covered.update(ids)
        extra = []
        if t.headers["role"] and t.headers["role"] != "read":
            extra.append(f"role {t.headers['role']}")
        if t.headers["capability"]:
            extra.append("caps " + "+".join(t.headers["capability"]))
        if t.headers["legacy"]:
            extra.append("legacy")
        if t.extensions:
            extra.append("ext " + "+".join(sorted(t.extensions)))
        print(f"{status} {t.fname:34} {len(t.connections)} conn, {t.steps:2} steps, {len(ids):2} ids"
              + (f"  ({', '.join(extra)})" if extra else ""))
        for e in t.errors:
            print(f"     error: {e}")
        for w in t.warnings:
            print(f"     warning: {w}")
    print(f"\n{len(results)} transcripts, {len(results) - failed} pass, {failed} fail; "
          f"{len(covered)} of {len(known)} requirement ids cited")
    uncited = sorted(known - covered, key=lambda i: (i.split('-')[0], int(i.split('-')[1])))
    print("not cited: " + " ".join(uncited))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
