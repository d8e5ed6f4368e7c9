#!/usr/bin/env python3
"""Deliberately broken Ferry clients: conformance/clients/pyferry.py with one rule broken.

    broken.py FAULT PYFERRY-ARGUMENTS...

Each fault replaces one of pyferry's small functions; conformance/tests/broken_clients.rs checks
that `conformance client` catches every one, with the case named beside it there.
"""

import hashlib
import os
import sys

sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients"))
import pyferry  # noqa: E402


def skip_md5():
    """Never compares the data with its MD5."""
    pyferry.verify = lambda path, md5, resumed: True


def follow_names():
    """Trusts names from the server: saves under the frame's name, and lists names unchecked."""
    pyferry.check_name = lambda raw: raw.decode("utf-8", "replace")
    pyferry.local_name = lambda asked, frame_name: frame_name


def no_timeout():
    """Waits for the server for ever."""
    pyferry.DEADLINES = False


def splice_on_resume():
    """Resumes whatever the server now has, and checks only downloads that did not resume."""
    pyferry.same_file = lambda identity, size, md5: True
    verify = pyferry.verify
    pyferry.verify = lambda path, md5, resumed: resumed or verify(path, md5, resumed)


def keep_bad_files():
    """Writes straight to the final name, and keeps the file when it does not verify."""
    pyferry.part_path = lambda dest: dest
    pyferry.discard = lambda path: None


def ignore_tags():
    """Reads whatever reply comes as the one it expects."""
    pyferry.check_tag = lambda tag, expected: None


def any_version():
    """Goes on with whatever version the server chose."""
    pyferry.check_version = lambda version, low, high: None


def strict_capabilities():
    """Refuses a server that announces capability bits version 1 does not define."""

    def check(caps):
        if caps & ~0x0F:
            raise pyferry.ProtocolError(f"unknown capabilities 0x{caps:08x}")
        return caps

    pyferry.check_capabilities = check


def read_long_messages():
    """Reads an error message whatever its length."""
    pyferry.ERROR_MESSAGE_MAX = 1 << 16


def strict_utf8():
    """Fails on an error message that is not UTF-8."""
    pyferry.decode_message = lambda raw: raw.decode("utf-8")


def unknown_codes_recoverable():
    """Takes only 0x01xx for fatal: a code outside every range is recoverable to it."""
    pyferry.is_fatal = lambda code: code >> 8 == 1


def retry_on_message():
    """Retries when the message says BUSY, whatever the code."""
    transient = pyferry.is_transient
    pyferry.is_transient = lambda e: transient(e) or "BUSY" in str(e)


def raw_names():
    """Prints names as they came, control characters and all."""
    pyferry.check_name = lambda raw: raw.decode("utf-8", "replace")
    pyferry.escape = lambda text: text


def talk_after_bye():
    """Sends a second BYE after the first."""
    bye = pyferry.Conn.bye

    def twice(self):
        if not self.broken:
            try:
                self.sock.sendall(b"\x08")
            except OSError:
                pass
        bye(self)

    pyferry.Conn.bye = twice


def uppercase_digest():
    """Sends the PUT's digest in uppercase."""
    pyferry.put_digest = lambda md5: md5.upper().encode("ascii")


def short_upload():
    """Sends one data byte less than the frame announces, then closes."""
    pyferry.put_data = lambda data: data[:-1]
    reply = pyferry.Conn.reply

    def close_instead(self, expected):
        if expected == 0x84:
            self.broken = True
            raise pyferry.Lost("gave up")
        return reply(self, expected)

    pyferry.Conn.reply = close_instead
    pyferry.RETRIES = 0


def fetch_unannounced():
    """Downloads with FETCH whatever the server announced."""
    pyferry.offers_trailer = lambda caps: True


def trust_trailer():
    """Never compares the data of a trailing reply with its trailer."""
    pyferry.verify_trailer = lambda path, md5: True


FAULTS = {f.__name__.replace("_", "-"): f for f in [
    skip_md5, follow_names, no_timeout, splice_on_resume, keep_bad_files, ignore_tags, any_version,
    strict_capabilities, read_long_messages, strict_utf8, unknown_codes_recoverable, retry_on_message,
    raw_names, talk_after_bye, uppercase_digest, short_upload, fetch_unannounced, trust_trailer,
]}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in FAULTS:
        print(f"usage: broken.py {{{','.join(FAULTS)}}} PYFERRY-ARGUMENTS...", file=sys.stderr)
        sys.exit(2)
    FAULTS[sys.argv[1]]()
    sys.exit(pyferry.main(sys.argv[2:]))
