meta:
  id: ferry
  title: Ferry file-transfer protocol, version 1
  ks-version: '0.11'
  license: CC0-1.0
  endian: be
doc: |
  Kaitai Struct grammar of every message of the Ferry protocol, version 1.
  PROTOCOL.md is normative; this grammar is derived from it and, where the two
  disagree, PROTOCOL.md is right (PROTOCOL.md, preamble).

  Every multi-byte integer is big-endian (PROTOCOL.md § 2.2, [ENC-1]).

  The root type `ferry` reads nothing. A byte stream is parsed with one of the
  top-level types below, chosen by its direction and by where in a connection
  it begins:

  * `c2s_handshake` - client to server, from the first byte of a connection:
    the client hello and then requests, or a legacy request (first byte 0x00).
  * `c2s_session` - client to server, after both hellos: requests.

  Both client-to-server types take a parameter `trailer`: whether the server
  announced the TRAILER capability (§ 4.5, § 6.5). Only with it are PUT modes
  0x80 and 0x81 and the FETCH opcode (0x0B) valid; without it they are
  unknown values, MALFORMED ([PUT-7], [REQ-2], [TRL-1]).
  * `s2c_handshake` - server to client, from the first byte of a connection:
    the server hello (or an error) and then replies.
  * `s2c_session` - server to client, after both hellos: replies. The FETCH
    reply tag 0x8B is parsed without a parameter: only a FETCH, which a
    client sends only under TRAILER, can elicit it ([TRL-8]).
  * `s2c_legacy` - server to client: the reply to a legacy request (§ 15).

  This is a grammar of the framing only: it does not check name rules (§ 10),
  protocol limits (§ 3) or digests (§ 6.3).
doc-ref: PROTOCOL.md

types:
  # ------------------------------------------------------------------
  # Top-level stream types
  # ------------------------------------------------------------------

  c2s_handshake:
    doc: |
      Client-to-server bytes from the start of a connection. A first byte 0x46
      ("F") starts a client hello (§ 4.1, § 4.2), followed by requests until the
      end of the stream (§ 5). A first byte 0x00 selects the legacy profile
      (§ 15): a single legacy request.
    doc-ref: PROTOCOL.md § 4.1, § 15.1
    params:
      - id: trailer
        type: bool
        doc: The server announced TRAILER (§ 6.5).
    seq:
      - id: legacy_request
        type: legacy_request
        if: is_legacy
      - id: hello
        type: client_hello
        if: not is_legacy
      - id: requests
        type: request(trailer)
        repeat: eos
        if: not is_legacy
    instances:
      first_byte:
        doc: The first byte of the connection, which selects the profile (§ 4.1).
        pos: 0
        type: u1
        if: _io.size > 0
      is_legacy:
        value: '_io.size > 0 and first_byte == 0x00'

  c2s_session:
    doc: Client-to-server bytes after both hellos - requests until the end of the stream (§ 5.1).
    doc-ref: PROTOCOL.md § 5.1
    params:
      - id: trailer
        type: bool
        doc: The server announced TRAILER (§ 6.5).
    seq:
      - id: requests
        type: request(trailer)
        repeat: eos

  s2c_handshake:
    doc: |
      Server-to-client bytes from the start of a connection: exactly one answer
      to the hello - the server hello or an error (§ 4.7, [HELLO-10]) - then,
      after a server hello, replies until the end of the stream. After an error
      the server closes (fatal), so nothing follows it.
    doc-ref: PROTOCOL.md § 4.3, § 4.7
    seq:
      - id: hello
        type: hello_reply
      - id: replies
        type: reply
        repeat: eos
        if: hello.tag == reply_tag::server_hello

  s2c_session:
    doc: Server-to-client bytes after both hellos - replies until the end of the stream (§ 5.1).
    doc-ref: PROTOCOL.md § 5.1
    seq:
      - id: replies
        type: reply
        repeat: eos

  s2c_legacy:
    doc: |
      The server's reply to a legacy request (§ 15.1): the 2 bytes "OK" and a
      file frame with offset 0, or the 5 bytes "ERROR" and a UTF-8 message that
      runs to the end of the connection (§ 15.4). The server then closes.
    doc-ref: PROTOCOL.md § 15.1, § 15.4
    seq:
      - id: ok_magic
        contents: 'OK'
        if: is_ok
      - id: frame
        type: file_frame(0)
        if: is_ok
      - id: error_magic
        contents: 'ERROR'
        if: not is_ok
      - id: error_message
        doc: |
          Error text to the end of the connection. May be invalid UTF-8; a
          receiver replaces each invalid sequence with U+FFFD (§ 2.3, [ENC-3]).
          A client reads at most ERROR_MESSAGE_MAX bytes of it ([LEG-6]).
        type: str
        encoding: UTF-8
        size-eos: true
        if: not is_ok
    instances:
      first_byte:
        pos: 0
        type: u1
        if: _io.size > 0
      is_ok:
        doc: The reply starts with "O" (0x4F), the first byte of "OK".
        value: '_io.size > 0 and first_byte == 0x4f'

  # ------------------------------------------------------------------
  # Handshake (§ 4)
  # ------------------------------------------------------------------

  client_hello:
    doc: The client hello, the first bytes a version 1 client sends (§ 4.2, [HELLO-1]). Its layout never changes (§ 16.1).
    doc-ref: PROTOCOL.md § 4.2
    seq:
      - id: magic
        contents: 'FERRY'
        doc: '46 45 52 52 59, "FERRY".'
      - id: min_version
        type: u2
        doc: Lowest protocol version the client speaks (at least 1).
      - id: max_version
        type: u2
        doc: Highest protocol version the client speaks (at least min_version).
      - id: token
        type: str16_ascii
        doc: Authentication token; length 0 means "no token" (§ 4.2, § 4.6, [HELLO-2]).

  hello_reply:
    doc: The server's one answer to a client hello - its hello (tag 0x80) or an error (tag 0xFF) (§ 4.7, [HELLO-10]).
    doc-ref: PROTOCOL.md § 4.3, § 4.7, § 9.1
    seq:
      - id: tag
        type: u1
        enum: reply_tag
        valid:
          any-of:
            - reply_tag::server_hello
            - reply_tag::error
      - id: body
        type:
          switch-on: tag
          cases:
            'reply_tag::server_hello': server_hello
            'reply_tag::error': error_body

  server_hello:
    doc: Body of the server hello, after its tag 0x80 (§ 4.3).
    doc-ref: PROTOCOL.md § 4.3
    seq:
      - id: version
        type: u2
        doc: The version chosen for this connection (§ 4.4, [HELLO-4]).
      - id: role
        type: u1
        enum: role
        valid:
          in-enum: true
        doc: The role granted (§ 8).
      - id: capabilities
        type: u4
        doc: Bit set of optional features (§ 4.5). Unknown bits are ignored ([HELLO-8]).
      - id: max_name_len
        type: u4
        doc: Longest name this server accepts, in bytes (§ 3.2).
      - id: max_file_size
        type: u8
        doc: Largest file this server accepts in a PUT, in bytes (§ 3.2).
      - id: max_clients
        type: u4
        doc: Connections served at once; 0 means "not announced" (§ 3.2).
      - id: idle_timeout_ms
        type: u4
        doc: Idle deadline (§ 12.3); 0 means "none".
      - id: head_timeout_ms
        type: u4
        doc: Request head deadline (§ 12.4); never 0 ([TIME-8]).
      - id: progress_timeout_ms
        type: u4
        doc: Transfer progress deadline, per PROGRESS_UNIT bytes moved (§ 12.5); never 0 ([TIME-10]).
    instances:
      cap_legacy:
        value: (capabilities & 0x01) != 0
        doc: Bit 0, LEGACY - this port also serves the legacy profile (§ 4.5, § 15).
      cap_resume:
        value: (capabilities & 0x02) != 0
        doc: Bit 1, RESUME - GET honours offsets greater than 0 (§ 4.5, § 7.3).
      cap_status:
        value: (capabilities & 0x04) != 0
        doc: Bit 2, STATUS - the STATUS command is offered (§ 4.5, § 7.6).
      cap_shutdown:
        value: (capabilities & 0x08) != 0
        doc: Bit 3, SHUTDOWN - the SHUTDOWN command is offered to admins (§ 4.5, § 7.9).
      cap_trailer:
        value: (capabilities & 0x10) != 0
        doc: |
          Bit 4, TRAILER - PUT modes 0x80 and 0x81 and FETCH, whose frames carry
          the digest after the data (§ 4.5, § 6.5, § 7.10).

  # ------------------------------------------------------------------
  # Requests (§ 5, § 7)
  # ------------------------------------------------------------------

  request:
    doc: |
      One request: a one-byte opcode, then its body (§ 5.1). An unknown opcode
      is MALFORMED ([REQ-2]) since its length cannot be known; FETCH (0x0B) is
      unknown to a server that does not announce TRAILER ([TRL-1]).
    doc-ref: PROTOCOL.md § 5.1
    params:
      - id: trailer
        type: bool
        doc: The server announced TRAILER (§ 6.5).
    seq:
      - id: opcode
        type: u1
        enum: opcode
        valid:
          expr: '_.to_i >= 0x01 and (_.to_i <= 0x09 or (_ == opcode::fetch and trailer))'
      - id: body
        type:
          switch-on: opcode
          cases:
            'opcode::stat': stat_request
            'opcode::get': get_request
            'opcode::put': put_request(trailer)
            'opcode::delete': delete_request
            'opcode::fetch': get_request
        doc: |
          LIST, STATUS, HELP, BYE and SHUTDOWN have no body (§ 7.1, § 7.6,
          § 7.7, § 7.8, § 7.9).

  stat_request:
    doc: STAT body (opcode 0x02) - the name (§ 7.2).
    doc-ref: PROTOCOL.md § 7.2
    seq:
      - id: name
        type: name

  get_request:
    doc: |
      GET body (opcode 0x03) - the name and the offset to start from (§ 7.3).
      A FETCH (opcode 0x0B) has the same body (§ 7.10).
    doc-ref: PROTOCOL.md § 7.3, § 7.10
    seq:
      - id: name
        type: name
      - id: offset
        type: u8

  put_request:
    doc: |
      PUT body (opcode 0x04) - the mode, then a file frame whose data is exactly
      `size` bytes (§ 6.1, § 7.4, [FRAME-1]). Bit 0 of the mode is create-only;
      bit 7 selects the trailing form (§ 6.5), whose digest follows the data.
    doc-ref: PROTOCOL.md § 7.4, § 6.5
    params:
      - id: trailer
        type: bool
        doc: The server announced TRAILER (§ 6.5); modes 0x80 and 0x81 need it.
    seq:
      - id: mode
        type: u1
        enum: put_mode
        valid:
          expr: '_.to_i <= 0x01 or (trailer and (_.to_i == 0x80 or _.to_i == 0x81))'
        doc: |
          0 and 1 always; 0x80 and 0x81 only under TRAILER. Any other value is
          MALFORMED ([PUT-1], [PUT-7]).
      - id: frame
        type: file_frame(0)
        if: not is_trailing
      - id: trailing_frame
        type: trailing_frame
        if: is_trailing
    instances:
      is_create_only:
        value: (mode.to_i & 0x01) != 0
        doc: Bit 0 - fail with EXISTS if the name exists.
      is_trailing:
        value: (mode.to_i & 0x80) != 0
        doc: Bit 7 - the frame has the trailing form (§ 6.5).

  delete_request:
    doc: DELETE body (opcode 0x05) - the name (§ 7.5).
    doc-ref: PROTOCOL.md § 7.5
    seq:
      - id: name
        type: name

  legacy_request:
    doc: |
      The legacy request (§ 15.1): a u32 name length, then the name. Its first
      byte is 0x00 because legacy names are shorter than 16 MiB.
    doc-ref: PROTOCOL.md § 15.1
    seq:
      - id: name
        type: name

  # ------------------------------------------------------------------
  # Replies (§ 5, § 7, § 9)
  # ------------------------------------------------------------------

  reply:
    doc: |
      One reply: a one-byte tag, then its body (§ 5.1). Tag 0x8A is never
      assigned; tags 0x8C-0xFE are reserved for later versions.
    doc-ref: PROTOCOL.md § 5.1
    seq:
      - id: tag
        type: u1
        enum: reply_tag
        valid:
          any-of:
            - reply_tag::list
            - reply_tag::stat
            - reply_tag::get
            - reply_tag::put
            - reply_tag::delete
            - reply_tag::status
            - reply_tag::help
            - reply_tag::bye
            - reply_tag::shutdown
            - reply_tag::fetch_trailing
            - reply_tag::error
        doc: |
          Any tag of § 5.1 but the server hello's (0x80), which answers only the
          client hello. 0x8A is never assigned (§ 5.1).
      - id: body
        type:
          switch-on: tag
          cases:
            'reply_tag::list': list_reply
            'reply_tag::stat': entry
            'reply_tag::get': get_reply
            'reply_tag::put': put_reply
            'reply_tag::status': status_reply
            'reply_tag::help': help_reply
            'reply_tag::fetch_trailing': trailing_frame
            'reply_tag::error': error_body
        doc: |
          DELETE (0x85), BYE (0x88) and SHUTDOWN (0x89) replies have no body
          (§ 7.5, § 7.8, § 7.9).

  list_reply:
    doc: LIST reply body (tag 0x81) - a u32 count, then count entries (§ 7.1).
    doc-ref: PROTOCOL.md § 7.1
    seq:
      - id: count
        type: u4
      - id: entries
        type: entry
        repeat: expr
        repeat-expr: count

  entry:
    doc: |
      A file entry, in a LIST reply (§ 7.1) and as the whole body of a STAT
      reply (tag 0x82, § 7.2). `md5` is absent where the server has not
      computed the digest yet ([LIST-3]).
    doc-ref: PROTOCOL.md § 7.1, § 7.2
    seq:
      - id: name
        type: name
      - id: size
        type: u8
        doc: The file's size in bytes.
      - id: mtime
        type: s8
        doc: Last modification time, `time` - i64 milliseconds since the Unix epoch (§ 2.2).
      - id: md5
        type: opt_md5

  get_reply:
    doc: |
      GET reply body (tag 0x83) - the offset echoed, then the file frame whose
      data is the `size - offset` bytes from `offset` to the end (§ 7.3, [GET-1]).
    doc-ref: PROTOCOL.md § 7.3
    seq:
      - id: offset
        type: u8
      - id: frame
        type: file_frame(offset)

  put_reply:
    doc: PUT reply body (tag 0x84) - the outcome (§ 7.4, [PUT-2]).
    doc-ref: PROTOCOL.md § 7.4
    seq:
      - id: outcome
        type: u1
        enum: put_outcome
        valid:
          in-enum: true

  status_reply:
    doc: STATUS reply body (tag 0x86) - a u32 count, then count connection records (§ 7.6).
    doc-ref: PROTOCOL.md § 7.6
    seq:
      - id: count
        type: u4
      - id: records
        type: connection_record
        repeat: expr
        repeat-expr: count

  connection_record:
    doc: One connection of the server's history, in a STATUS reply (§ 7.6).
    doc-ref: PROTOCOL.md § 7.6
    seq:
      - id: id
        type: u8
        doc: The connection's id, unique for the server's lifetime.
      - id: peer
        type: str8_ascii
        doc: The peer's address as ASCII, `IP:port` or `[IPv6]:port`, at most PEER_LEN_MAX bytes ([STATUS-2]).
      - id: connected
        type: s8
        doc: When the connection was accepted (`time`, § 2.2).
      - id: disconnected
        type: opt_time
        doc: When it closed; absent while it is open.
      - id: bytes_in
        type: u8
        doc: Bytes received from the peer.
      - id: bytes_out
        type: u8
        doc: Bytes sent to the peer.

  help_reply:
    doc: HELP reply body (tag 0x87) - a str32 of UTF-8 text, at most HELP_TEXT_MAX bytes (§ 7.7, [HELP-1]).
    doc-ref: PROTOCOL.md § 7.7
    seq:
      - id: text
        type: str32_utf8

  error_body:
    doc: |
      Error body, after its tag 0xFF (§ 9.1). The high byte of `code` tells
      whether the connection survives: 0x01xx fatal, 0x02xx recoverable
      ([ERR-4]); codes outside 0x0100-0x02FF are treated as fatal ([ERR-5]).
    doc-ref: PROTOCOL.md § 9.1, § 9.2
    seq:
      - id: code
        type: u2
        enum: error_code
      - id: message
        type: str16_utf8
        doc: UTF-8 text for a human, at most ERROR_MESSAGE_MAX bytes ([ERR-1]); may be invalid UTF-8 ([ENC-3]).
    instances:
      is_fatal:
        value: 'code.to_i < 0x0200 or code.to_i > 0x02ff'
        doc: Whether the server closes the connection after this error (§ 9.2).

  # ------------------------------------------------------------------
  # The file frame (§ 6)
  # ------------------------------------------------------------------

  file_frame:
    doc: |
      The file frame, the same in a PUT request, a GET reply and a legacy "OK"
      reply (§ 6.1). It has no terminator: the next message starts right after
      the last data byte (§ 6.2).
    doc-ref: PROTOCOL.md § 6.1, § 6.2
    params:
      - id: offset
        type: u8
        doc: |
          Where the data starts in the file: the echoed offset of a GET reply,
          0 for a PUT request and a legacy reply.
    seq:
      - id: name
        type: name
        doc: The file's name.
      - id: size
        type: u8
        doc: The size of the WHOLE file, in bytes; at most FILE_SIZE_CEILING ([FRAME-2]).
      - id: md5
        type: md5hex
        doc: The MD5 digest of the WHOLE file (§ 6.3).
      - id: data
        size: size - offset
        doc: Exactly `size - offset` bytes (`size` for a PUT) ([FRAME-1]).

  trailing_frame:
    doc: |
      The trailing form of the file frame (§ 6.5): in a PUT in mode 0x80 or
      0x81 (§ 7.4) and in a FETCH reply with tag 0x8B (§ 7.10). It always
      carries the whole file; its digest, the trailer, follows the data.
    doc-ref: PROTOCOL.md § 6.5
    seq:
      - id: name
        type: name
        doc: The file's name.
      - id: size
        type: u8
        doc: The size of the whole file, in bytes; at most FILE_SIZE_CEILING ([FRAME-2]).
      - id: data
        size: size
        doc: Exactly `size` bytes ([FRAME-1]).
      - id: md5
        type: md5hex
        doc: The MD5 digest of the `size` bytes just sent ([TRL-2]).

  # ------------------------------------------------------------------
  # Encoding types (§ 2.2)
  # ------------------------------------------------------------------

  name:
    doc: |
      `name` - a u32 byte length n, then n bytes of UTF-8: a file name (§ 2.2,
      § 10). The length is bounded by NAME_LEN_CEILING (§ 3.1).
    doc-ref: PROTOCOL.md § 2.2, § 10
    seq:
      - id: len
        type: u4
      - id: value
        type: str
        size: len
        encoding: UTF-8

  str8_ascii:
    doc: '`str8` - a u8 byte length n, then n bytes of ASCII text (§ 2.2).'
    doc-ref: PROTOCOL.md § 2.2
    seq:
      - id: len
        type: u1
      - id: value
        type: str
        size: len
        encoding: ASCII

  str16_ascii:
    doc: '`str16` - a u16 byte length n, then n bytes of ASCII text (§ 2.2).'
    doc-ref: PROTOCOL.md § 2.2
    seq:
      - id: len
        type: u2
      - id: value
        type: str
        size: len
        encoding: ASCII

  str16_utf8:
    doc: '`str16` - a u16 byte length n, then n bytes of UTF-8 text (§ 2.2, § 2.3).'
    doc-ref: PROTOCOL.md § 2.2
    seq:
      - id: len
        type: u2
      - id: value
        type: str
        size: len
        encoding: UTF-8

  str32_utf8:
    doc: '`str32` - a u32 byte length n, then n bytes of UTF-8 text (§ 2.2, § 2.3).'
    doc-ref: PROTOCOL.md § 2.2
    seq:
      - id: len
        type: u4
      - id: value
        type: str
        size: len
        encoding: UTF-8

  md5hex:
    doc: |
      `md5hex` - 32 ASCII hexadecimal digits, most significant nibble first
      (§ 2.2, § 6.3). Senders use lowercase ([FRAME-3]); receivers accept
      uppercase too ([FRAME-4]).
    doc-ref: PROTOCOL.md § 6.3
    seq:
      - id: value
        type: str
        size: 32
        encoding: ASCII

  opt_md5:
    doc: '`opt<md5hex>` - a presence byte (0x00 absent, 0x01 present), then an `md5hex` if present (§ 2.2, [ENC-4]).'
    doc-ref: PROTOCOL.md § 2.2, § 2.4
    seq:
      - id: presence
        type: u1
        enum: presence
        valid:
          in-enum: true
      - id: value
        type: md5hex
        if: presence == presence::present

  opt_time:
    doc: '`opt<time>` - a presence byte (0x00 absent, 0x01 present), then an i64 time if present (§ 2.2, [ENC-4]).'
    doc-ref: PROTOCOL.md § 2.2, § 2.4
    seq:
      - id: presence
        type: u1
        enum: presence
        valid:
          in-enum: true
      - id: value
        type: s8
        if: presence == presence::present

enums:
  opcode:
    # PROTOCOL.md § 5.1. Opcode 0x0A is never assigned; 0x0B exists only under TRAILER;
    # 0x0C-0x7F are reserved; 0x80-0xFF are never requests.
    0x01:
      id: list
      doc: LIST (§ 7.1), no body.
    0x02:
      id: stat
      doc: STAT (§ 7.2), body `name`.
    0x03:
      id: get
      doc: GET (§ 7.3), body `name`, `u64` offset.
    0x04:
      id: put
      doc: PUT (§ 7.4), body `u8` mode, file frame.
    0x05:
      id: delete
      doc: DELETE (§ 7.5), body `name`.
    0x06:
      id: status
      doc: STATUS (§ 7.6), no body.
    0x07:
      id: help
      doc: HELP (§ 7.7), no body.
    0x08:
      id: bye
      doc: BYE (§ 7.8), no body.
    0x09:
      id: shutdown
      doc: SHUTDOWN (§ 7.9), no body.
    0x0b:
      id: fetch
      doc: FETCH (§ 7.10), body `name`, `u64` offset; only under TRAILER.

  reply_tag:
    # PROTOCOL.md § 4.3, § 5.1, § 9.1. Tag 0x8A is never assigned; 0x8C-0xFE are reserved.
    0x80:
      id: server_hello
      doc: Server hello (§ 4.3).
    0x81:
      id: list
      doc: LIST reply (§ 7.1).
    0x82:
      id: stat
      doc: STAT reply (§ 7.2).
    0x83:
      id: get
      doc: GET reply (§ 7.3).
    0x84:
      id: put
      doc: PUT reply (§ 7.4).
    0x85:
      id: delete
      doc: DELETE reply (§ 7.5).
    0x86:
      id: status
      doc: STATUS reply (§ 7.6).
    0x87:
      id: help
      doc: HELP reply (§ 7.7).
    0x88:
      id: bye
      doc: BYE reply (§ 7.8).
    0x89:
      id: shutdown
      doc: SHUTDOWN reply (§ 7.9).
    0x8b:
      id: fetch_trailing
      doc: FETCH reply in the trailing form (§ 7.10).
    0xff:
      id: error
      doc: Error (§ 9.1).

  error_code:
    # PROTOCOL.md § 9.2. 0x01xx fatal, 0x02xx recoverable.
    0x0100:
      id: malformed
      doc: Fatal. Bytes that do not form a valid message.
    0x0101:
      id: unsupported_version
      doc: Fatal. No common protocol version (§ 4.4).
    0x0102:
      id: unauthorized
      doc: Fatal. Unknown token, or no token where anonymous access is off (§ 4.6).
    0x0103:
      id: busy
      doc: Fatal. The server is at capacity (§ 12.1).
    0x0104:
      id: shutting_down
      doc: Fatal. The server is stopping (§ 13).
    0x0105:
      id: too_large
      doc: Fatal. A length above a ceiling, or a PUT above max_file_size (§ 3.3).
    0x0106:
      id: timeout
      doc: Fatal. A deadline passed (§ 12).
    0x0200:
      id: not_found
      doc: Recoverable. No file of that name.
    0x0201:
      id: bad_name
      doc: Recoverable. The name breaks § 10, or is longer than max_name_len.
    0x0202:
      id: forbidden
      doc: Recoverable. The role, or a read-only server, does not allow the command (§ 8).
    0x0203:
      id: exists
      doc: Recoverable. Create-only PUT of a name that exists (§ 7.4).
    0x0204:
      id: checksum_mismatch
      doc: Recoverable. The PUT data does not match its md5 (§ 7.4).
    0x0205:
      id: bad_offset
      doc: Recoverable. GET offset past the end, or resume not offered (§ 7.3).
    0x0206:
      id: storage_full
      doc: Recoverable. The server has no room for the file.
    0x0207:
      id: internal
      doc: Recoverable. The server failed in a way that is not the client's fault.
    0x0208:
      id: unsupported
      doc: Recoverable. A command this server does not offer (§ 4.5).

  role:
    # PROTOCOL.md § 4.3, § 8.1.
    1:
      id: read
      doc: LIST, STAT, GET, FETCH, STATUS, HELP, BYE.
    2:
      id: write
      doc: Everything read may, and PUT, DELETE.
    3:
      id: admin
      doc: Everything write may, and SHUTDOWN.

  put_mode:
    # PROTOCOL.md § 7.4, [PUT-1]; bit 7, the trailing form, only under TRAILER (§ 6.5).
    0:
      id: overwrite
      doc: Create the file, or replace it whole.
    1:
      id: create_only
      doc: Fail with EXISTS if the name exists.
    0x80:
      id: overwrite_trailing
      doc: Overwrite, the digest after the data (§ 6.5).
    0x81:
      id: create_only_trailing
      doc: Create-only, the digest after the data (§ 6.5).

  put_outcome:
    # PROTOCOL.md § 7.4, [PUT-2].
    0:
      id: created
      doc: The file did not exist and was created.
    1:
      id: replaced
      doc: An existing file was replaced.

  presence:
    # PROTOCOL.md § 2.2, § 2.4: the presence byte of opt<T>.
    0: absent
    1: present
