#!/usr/bin/env node
// Checks spec/ferry.ksy against the test vectors in spec/vectors/.
//
//   cd spec && npm ci && node check-kaitai.mjs [VECTORS_DIR]
//
// Compiles ferry.ksy to JavaScript in memory with the kaitai-struct-compiler
// package (used as a library), parses the bytes of every *valid* vector
// (spec/README.md: `end` is "clean" and no item is `rejected`) with the
// top-level type its direction and start select, turns the parsed object tree
// into the `items` list of spec/README.md and compares it with the vector's.
// A client-to-server vector is parsed with the parameter `trailer` set as its
// `"trailer"` key says (the server announced TRAILER); a valid vector that uses
// the trailing form must also FAIL to parse without it ([PUT-7], [REQ-2]).
// Prints one line per failing vector and a final line
// `kaitai: N passed, M failed, K skipped` (skipped = vectors that are not
// valid). Exits 1 if any vector failed or none was checked.

import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { load as loadYaml } from 'js-yaml';

const require = createRequire(import.meta.url);
const KaitaiStructCompiler = require('kaitai-struct-compiler');
const KaitaiStream = require('kaitai-struct/KaitaiStream');

const here = dirname(fileURLToPath(import.meta.url));
const vectorsDir = resolve(process.argv[2] ?? join(here, 'vectors'));

// The runtime decodes non-ASCII strings with `new TextDecoder(encoding)`, which
// drops a leading U+FEFF (BOM). A Ferry name or text is its bytes as they are
// (PROTOCOL.md § 10.3), so decode keeping a BOM; invalid sequences still become
// U+FFFD, as § 2.3 [ENC-3] asks of a receiver of error messages and help text.
const runtimeBytesToStr = KaitaiStream.bytesToStr;
KaitaiStream.bytesToStr = (arr, encoding) => {
  if (encoding != null && /^utf-?8$/i.test(encoding)) {
    return new TextDecoder('utf-8', { ignoreBOM: true }).decode(arr);
  }
  return runtimeBytesToStr(arr, encoding);
};

// The runtime truncates a byte count to 32 bits (`length |= 0`) before checking
// it against what is left, so a `size` of 2^32 + 2 would read 2 bytes and a
// size of 2^40 none, silently. Check the full count first.
const runtimeMapUint8Array = KaitaiStream.prototype.mapUint8Array;
KaitaiStream.prototype.mapUint8Array = function mapUint8Array(length) {
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new RangeError(`byte count ${length} is not a non-negative safe integer`);
  }
  if (length > this.size - this.pos) throw new KaitaiStream.EOFError(length, this.size - this.pos);
  return runtimeMapUint8Array.call(this, length);
};

// ---------------------------------------------------------------------------
// Compile the grammar and load the generated module(s), all in memory.

async function compileGrammar() {
  const ksyPath = join(here, 'ferry.ksy');
  const ksy = loadYaml(readFileSync(ksyPath, 'utf8'));
  const importer = {
    importYaml(name) {
      return Promise.resolve(loadYaml(readFileSync(join(here, `${name}.ksy`), 'utf8')));
    },
  };
  let files;
  try {
    files = await KaitaiStructCompiler.compile('javascript', ksy, importer, false);
  } catch (e) {
    const msg = e instanceof Error ? e.message : (e?.getMessage?.() ?? String(e));
    throw new Error(`kaitai-struct-compiler failed on ferry.ksy: ${msg}`);
  }
  const loaded = new Map();
  const loadModule = (fileName) => {
    if (loaded.has(fileName)) return loaded.get(fileName);
    const exports = {};
    loaded.set(fileName, exports);
    const req = (spec) => {
      if (spec === 'kaitai-struct/KaitaiStream') return KaitaiStream;
      const base = spec.replace(/^\.\//, '').replace(/\.js$/, '') + '.js';
      if (Object.hasOwn(files, base)) return loadModule(base);
      throw new Error(`generated code requires unknown module ${spec}`);
    };
    new Function('exports', 'require', 'module', files[fileName])(exports, req, { exports });
    return exports;
  };
  const main = loadModule('Ferry.js');
  if (!main.Ferry) throw new Error(`compiler output has no Ferry class (files: ${Object.keys(files).join(', ')})`);
  return main.Ferry;
}

// ---------------------------------------------------------------------------
// Kaitai object tree -> items (spec/README.md, "Items").

class CheckError extends Error {}

// u64 and i64 fields are read by the runtime as Numbers: exact only below 2^53.
function int64(value, what) {
  if (!Number.isSafeInteger(value)) {
    throw new CheckError(`${what} = ${value} is not a safe integer: the Kaitai JS runtime cannot represent it exactly`);
  }
  return value;
}

const hexOf = (bytes) => Buffer.from(bytes).toString('hex');
const md5Of = (m) => m.value.toLowerCase();
const optMd5 = (o) => (o.presence === 1 ? md5Of(o.value) : null);
const optTime = (o, what) => (o.presence === 1 ? int64(o.value, what) : null);

// A trailing frame (PROTOCOL.md § 6.5): the data, then the digest as a
// `trailer` item, then `data_end`.
function trailingItems(frame) {
  const data = frame.data.length > 0 ? [{ type: 'data', hex: hexOf(frame.data) }] : [];
  return [...data, { type: 'trailer', md5: md5Of(frame.md5) }, { type: 'data_end' }];
}

function dataItems(frame) {
  const expected = int64(frame.size, 'frame size') - int64(frame.offset, 'frame offset');
  if (frame.data.length !== expected) {
    throw new CheckError(`frame data is ${frame.data.length} bytes, size - offset is ${expected}`);
  }
  // One `data` item with all the bytes (none when there are no bytes), then
  // `data_end` (spec/README.md, "Items"; spec/tools/make_vectors.py).
  const data = frame.data.length > 0 ? [{ type: 'data', hex: hexOf(frame.data) }] : [];
  return [...data, { type: 'data_end' }];
}

function makeConverters(Ferry) {
  const Op = Ferry.Opcode;
  const Tag = Ferry.ReplyTag;

  function request(r) {
    const b = r.body;
    switch (r.opcode) {
      case Op.LIST: return [{ type: 'list' }];
      case Op.STAT: return [{ type: 'stat', name: b.name.value }];
      case Op.GET: return [{ type: 'get', name: b.name.value, offset: int64(b.offset, 'GET offset') }];
      case Op.FETCH: return [{ type: 'fetch', name: b.name.value, offset: int64(b.offset, 'FETCH offset') }];
      case Op.PUT: {
        const mode = b.isCreateOnly ? 'create_only' : 'overwrite';
        if (b.isTrailing) {
          const t = b.trailingFrame;
          return [
            { type: 'put', mode, name: t.name.value, size: int64(t.size, 'PUT size'), md5: null },
            ...trailingItems(t),
          ];
        }
        const f = b.frame;
        return [
          { type: 'put', mode, name: f.name.value, size: int64(f.size, 'PUT size'), md5: md5Of(f.md5) },
          ...dataItems(f),
        ];
      }
      case Op.DELETE: return [{ type: 'delete', name: b.name.value }];
      case Op.STATUS: return [{ type: 'status' }];
      case Op.HELP: return [{ type: 'help' }];
      case Op.BYE: return [{ type: 'bye' }];
      case Op.SHUTDOWN: return [{ type: 'shutdown' }];
      default: throw new CheckError(`unexpected opcode ${r.opcode}`);
    }
  }

  function error(b) {
    return { type: 'error', code: b.code, message: b.message.value };
  }

  function entry(e, type) {
    return {
      type,
      name: e.name.value,
      size: int64(e.size, 'entry size'),
      mtime_ms: int64(e.mtime, 'entry mtime'),
      md5: optMd5(e.md5),
    };
  }

  function reply(r) {
    const b = r.body;
    switch (r.tag) {
      case Tag.LIST:
        return [{ type: 'list_start', count: b.count }, ...b.entries.map((e) => entry(e, 'entry'))];
      case Tag.STAT:
        return [entry(b, 'stat_ok')];
      case Tag.GET: {
        const f = b.frame;
        return [
          {
            type: 'get_ok',
            offset: int64(b.offset, 'GET reply offset'),
            name: f.name.value,
            size: int64(f.size, 'GET reply size'),
            md5: md5Of(f.md5),
          },
          ...dataItems(f),
        ];
      }
      case Tag.FETCH_TRAILING:
        return [{ type: 'fetch_trailing', name: b.name.value, size: int64(b.size, 'FETCH reply size') }, ...trailingItems(b)];
      case Tag.PUT: return [{ type: 'put_ok', replaced: b.outcome === Ferry.PutOutcome.REPLACED }];
      case Tag.DELETE: return [{ type: 'delete_ok' }];
      case Tag.STATUS:
        return [
          { type: 'status_start', count: b.count },
          ...b.records.map((c) => ({
            type: 'connection',
            id: int64(c.id, 'connection id'),
            peer: c.peer.value,
            connected_ms: int64(c.connected, 'connected'),
            disconnected_ms: optTime(c.disconnected, 'disconnected'),
            bytes_in: int64(c.bytesIn, 'bytes_in'),
            bytes_out: int64(c.bytesOut, 'bytes_out'),
          })),
        ];
      case Tag.HELP: return [{ type: 'help_ok', text: b.text.value }];
      case Tag.BYE: return [{ type: 'bye_ok' }];
      case Tag.SHUTDOWN: return [{ type: 'shutdown_ok' }];
      case Tag.ERROR: return [error(b)];
      default: throw new CheckError(`unexpected reply tag ${r.tag}`);
    }
  }

  function helloReply(h) {
    if (h.tag === Tag.ERROR) return [error(h.body)];
    const s = h.body;
    return [{
      type: 'hello_ok',
      version: s.version,
      role: s.role,
      capabilities: s.capabilities,
      max_name_len: s.maxNameLen,
      max_file_size: int64(s.maxFileSize, 'max_file_size'),
      max_clients: s.maxClients,
      idle_timeout_ms: s.idleTimeoutMs,
      head_timeout_ms: s.headTimeoutMs,
      progress_timeout_ms: s.progressTimeoutMs,
    }];
  }

  // direction/start -> [top-level type, object tree -> items]
  return {
    'c2s/handshake': [Ferry.C2sHandshake, (o) => {
      if (o.isLegacy) return [{ type: 'legacy_get', name: o.legacyRequest.name.value }];
      const t = o.hello.token;
      return [
        { type: 'hello', min_version: o.hello.minVersion, max_version: o.hello.maxVersion, token: t.len === 0 ? null : t.value },
        ...o.requests.flatMap(request),
      ];
    }],
    'c2s/session': [Ferry.C2sSession, (o) => o.requests.flatMap(request)],
    's2c/handshake': [Ferry.S2cHandshake, (o) => [...helloReply(o.hello), ...(o.replies ?? []).flatMap(reply)]],
    's2c/session': [Ferry.S2cSession, (o) => o.replies.flatMap(reply)],
    's2c/legacy': [Ferry.S2cLegacy, (o) => {
      if (o.isOk) {
        const f = o.frame;
        return [
          { type: 'legacy_ok', name: f.name.value, size: int64(f.size, 'legacy size'), md5: md5Of(f.md5) },
          ...dataItems(f),
        ];
      }
      return [{ type: 'legacy_error', message: o.errorMessage }];
    }],
  };
}

// ---------------------------------------------------------------------------
// Vectors.

function isValid(v) {
  return v.end === 'clean' && Array.isArray(v.items) && !v.items.some((i) => i && i.type === 'rejected');
}

function parseHex(hex) {
  if (typeof hex !== 'string') throw new CheckError('`hex` is not a string');
  const clean = hex.replace(/\s+/g, '');
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(clean)) throw new CheckError('`hex` is not an even number of hex digits');
  return new Uint8Array(Buffer.from(clean, 'hex'));
}

const show = (x) => (x === undefined ? '(none)' : JSON.stringify(x));

function diff(expected, actual) {
  const n = Math.max(expected.length, actual.length);
  for (let i = 0; i < n; i++) {
    if (!isDeepStrictEqual(expected[i], actual[i])) {
      return `items[${i}]: expected ${show(expected[i])}, kaitai ${show(actual[i])}` +
        (expected.length !== actual.length ? ` (${expected.length} items expected, kaitai yields ${actual.length})` : '');
    }
  }
  return 'no difference';
}

// Parses `bytes` with `Type`; client-to-server types take the `trailer`
// parameter (the server announced TRAILER).
function parse(Type, direction, bytes, trailer) {
  const io = new KaitaiStream(bytes);
  let obj;
  try {
    obj = direction === 'c2s' ? new Type(io, null, null, trailer) : new Type(io);
  } catch (e) {
    throw new CheckError(`parse failed at byte ${io.pos} of ${bytes.length}: ${e?.name ?? 'Error'}: ${e?.message ?? e}`);
  }
  if (io.pos !== io.size) throw new CheckError(`input not consumed: parser stopped at byte ${io.pos} of ${io.size}`);
  return obj;
}

// Whether the items use what only a server announcing TRAILER reads (§ 6.5).
const usesTrailer = (items) =>
  items.some((i) => i.type === 'fetch' || i.type === 'trailer' || (i.type === 'put' && i.md5 === null));

function checkVector(Ferry, converters, v) {
  const key = `${v.direction}/${v.start}`;
  if (!Object.hasOwn(converters, key)) throw new CheckError(`no top-level type for direction ${show(v.direction)}, start ${show(v.start)}`);
  if (v.trailer !== undefined && (v.direction !== 'c2s' || v.trailer !== true)) {
    throw new CheckError('`trailer` is for c2s vectors only, and true when present');
  }
  const [Type, toItems] = converters[key];
  const bytes = parseHex(v.hex);
  const trailer = v.trailer === true;
  const items = toItems(parse(Type, v.direction, bytes, trailer));
  if (!isDeepStrictEqual(items, v.items)) throw new CheckError(diff(v.items, items));
  if (v.direction === 'c2s' && trailer && usesTrailer(v.items)) {
    let refused = false;
    try {
      parse(Type, v.direction, bytes, false);
    } catch (e) {
      if (!(e instanceof CheckError)) throw e;
      refused = true;
    }
    if (!refused) throw new CheckError('the grammar reads the trailing form without `trailer` (PUT-7, REQ-2, TRL-1)');
  }
}

async function main() {
  const Ferry = await compileGrammar();
  const converters = makeConverters(Ferry);
  const files = existsSync(vectorsDir)
    ? readdirSync(vectorsDir).filter((f) => f.endsWith('.json')).sort()
    : [];
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  for (const file of files) {
    let v;
    try {
      v = JSON.parse(readFileSync(join(vectorsDir, file), 'utf8'));
    } catch (e) {
      console.log(`FAIL ${file}: cannot read vector: ${e.message}`);
      failed++;
      continue;
    }
    if (!isValid(v)) {
      skipped++;
      continue;
    }
    try {
      checkVector(Ferry, converters, v);
      passed++;
    } catch (e) {
      console.log(`FAIL ${file}: ${e instanceof CheckError ? e.message : `${e?.name ?? 'Error'}: ${e?.message ?? e}`}`);
      failed++;
    }
  }
  if (passed + failed === 0) console.log(`FAIL no valid vector found in ${vectorsDir}`);
  console.log(`kaitai: ${passed} passed, ${failed} failed, ${skipped} skipped`);
  process.exitCode = failed > 0 || passed + failed === 0 ? 1 : 0;
}

main().catch((e) => {
  console.error(`check-kaitai: ${e?.stack ?? e}`);
  console.log('kaitai: 0 passed, 1 failed, 0 skipped');
  process.exitCode = 1;
});
