// Verify an auditmw JSONL export without auditmw: node verify_jsonl.mjs [--reserialized] FILE
//
// The same checks, messages and exit codes as verify_jsonl.py (docs/format.md). Needs
// Node 18 or newer and the RFC 8785 reference implementation (npm install canonicalize).
// Exit 0: every chain intact; 1: names the first bad line; 2: usage error or unreadable file.

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import canonicalize from "canonicalize";

const GENESIS = "0".repeat(64);
// The members of an entry, sorted: every field of an event but "hash".
const ENTRY_FIELDS = (
  "action details id ip_address log outcome prev_hash request_id resource resource_id seq " +
  "timestamp user_agent user_email user_id"
).split(" ");
// Format 2 adds these two members to the entry.
const FORMAT_2_FIELDS = [...ENTRY_FIELDS, "commitments", "format"].sort();
// The members after the entry in every line auditmw writes, from the last ',"hash":"' on
// (an opening's value is a JSON string: no unescaped '"hash":"' can follow it).
const HASH_MEMBER = /^,"hash":"([0-9a-f]{64})"(?:,"openings":(\{.*\}))?\}$/s;
// A JSON string, or a JSON number: in valid JSON, the only tokens that contain digits.
const TOKEN = /"[^"\\]*(?:\\.[^"\\]*)*"|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/g;
// A JSON string, with the colon after it when it is a member name.
const STRING = /"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?/g;
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function countNames(value) {
  if (value === null || typeof value !== "object") return 0;
  const items = Object.values(value);
  const own = Array.isArray(value) ? 0 : items.length;
  return items.reduce((count, item) => count + countNames(item), own);
}

// JSON.parse reads numbers as IEEE 754 doubles, as RFC 8785 does. It keeps the last of two
// members with the same name, which I-JSON (RFC 7493) forbids: a reader could see one value
// while the hash covers another. So the names written are counted against those read.
function parse(text) {
  const value = JSON.parse(text);
  const written = [...text.matchAll(STRING)].filter((match) => match[1] !== undefined).length;
  if (written !== countNames(value)) throw new Error("duplicate member name");
  return value;
}

// The entry's text, the hash the line claims for it, the entry's members, and the
// openings (an empty object when the line has none).
function read(line, reserialized) {
  if (reserialized) {
    // The entry is every member but "hash" and "openings", written anew with RFC 8785.
    const event = parse(line);
    const claimed = event !== null && typeof event === "object" ? event.hash : undefined;
    if (typeof claimed !== "string") throw new Error('no "hash" member');
    const openings = event.openings ?? {};
    delete event.hash;
    delete event.openings;
    return [canonicalize(event), claimed, event, openings];
  }
  const at = line.lastIndexOf(',"hash":"');
  const found = at >= 0 ? HASH_MEMBER.exec(line.slice(at)) : null;
  if (found === null) {
    throw new Error(
      'the line does not end with its "hash" member as auditmw writes it ' +
        "(if another tool rewrote the file, see --reserialized)",
    );
  }
  const entry = line.slice(0, at) + "}";
  return [entry, found[1], parse(entry), parse(found[2] ?? "{}")];
}

// log, seq and prev_hash: strings and a small integer, read alike everywhere.
function chainFields(event) {
  const names = event !== null && typeof event === "object" ? Object.keys(event).sort() : [];
  const format2 = JSON.stringify(names) === JSON.stringify(FORMAT_2_FIELDS) && event.format === 2;
  if (Array.isArray(event) || (JSON.stringify(names) !== JSON.stringify(ENTRY_FIELDS) && !format2)) {
    throw new Error("not an event: the entry must have exactly the 15 entry members");
  }
  const { log, seq, prev_hash: prevHash } = event;
  if (!(typeof log === "string" && Number.isSafeInteger(seq) && typeof prevHash === "string")) {
    throw new Error("log and prev_hash must be strings and seq an integer");
  }
  return [log, seq, prevHash];
}

// What is wrong with the openings of a format-2 entry, or null. Each is the salt (hex)
// and the canonical JSON text of a value the entry commits to at a JSON Pointer; an
// erased value's opening is simply gone.
function opened(event, openings) {
  const commitments = event.commitments ?? {};
  const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
  if (!isObject(openings) || !isObject(commitments)) {
    return "the openings or the commitments are not JSON objects";
  }
  for (const [pointer, opening] of Object.entries(openings)) {
    if (!(Array.isArray(opening) && opening.length === 2)) {
      return `the opening of ${pointer} is not [salt, value]`;
    }
    const [salt, value] = opening;
    const digest = createHash("sha256").update(Buffer.from(salt, "hex")).update(value, "utf8");
    if (commitments[pointer] !== digest.digest("hex")) {
      return `personal value modified: the opening of ${pointer} does not match`;
    }
  }
  return null;
}

// Throw unless the entry is RFC 8785 canonical JSON, as auditmw hashed it.
//
// The structure (member order, escapes, no spaces, no name twice) is compared with every
// number quoted as a string, so that no number is read. Then each number on its own must
// be what RFC 8785 writes for it as a double: the only check that parses numbers.
function checkCanonical(entry) {
  const quoted = entry.replace(TOKEN, (token) => (token[0] === '"' ? token : `"${token}"`));
  if (canonicalize(JSON.parse(quoted)) !== quoted) {
    throw new Error(
      "not RFC 8785 canonical JSON: members reordered, repeated or re-escaped, or spaces " +
        "added (if another tool rewrote the file, see --reserialized)",
    );
  }
  for (const [token] of entry.matchAll(TOKEN)) {
    if (token[0] !== '"' && canonicalize(Number(token)) !== token) {
      throw new Error(`the number ${token} is not written as RFC 8785 writes it`);
    }
  }
}

// The lines of a file as bytes, split at \n only.
async function* lines(path) {
  let rest = Buffer.alloc(0);
  for await (const chunk of createReadStream(path)) {
    rest = Buffer.concat([rest, chunk]);
    for (let end = rest.indexOf(10); end !== -1; end = rest.indexOf(10)) {
      yield rest.subarray(0, end);
      rest = rest.subarray(end + 1);
    }
  }
  if (rest.length > 0) yield rest;
}

// Python's repr() of a plain string, so that both scripts print the same.
const repr = (text) => `'${JSON.stringify(text).slice(1, -1)}'`;

async function verify(path, reserialized) {
  const heads = new Map(); // log -> [seq, hash] of its last entry
  let lineNo = 0;
  for await (const bytes of lines(path)) {
    lineNo += 1;
    let where = "unreadable";
    let problem;
    try {
      const line = UTF8.decode(bytes).replace(/[\r\n]+$/, "");
      if (/^[ \t\r\n]*$/.test(line)) continue;
      const [entry, claimed, event, openings] = read(line, reserialized);
      const [log, seq, prevHash] = chainFields(event);
      where = `log ${repr(log)} seq ${seq}`;
      if (!reserialized) checkCanonical(entry);
      const digest = createHash("sha256").update(Buffer.from([0])).update(entry, "utf8");
      const hash = digest.digest("hex");
      const [headSeq, headHash] = heads.get(log) ?? [0, GENESIS];
      if (hash !== claimed) {
        problem = "entry modified: its hash does not match its content";
      } else if (seq !== headSeq + 1) {
        problem = `expected seq ${headSeq + 1}: entries missing, reordered or repeated`;
      } else if (prevHash !== headHash) {
        problem = "broken link: prev_hash is not the hash of the entry before";
      } else if (opened(event, openings) !== null) {
        problem = opened(event, openings);
      } else {
        heads.set(log, [seq, hash]);
        continue;
      }
    } catch (error) {
      // not UTF-8 or JSON, not an event, not canonical...
      problem = `not a valid entry: ${error.message}`;
    }
    console.log(`FAIL line ${lineNo} (${where}): ${problem}`);
    return 1;
  }
  const total = [...heads.values()].reduce((sum, [seq]) => sum + seq, 0);
  console.log(`OK: ${total} entries intact`);
  for (const [log, [seq, hash]] of heads) {
    console.log(`  log ${repr(log)}: last seq ${seq}, head hash ${hash}`);
  }
  return 0;
}

const args = process.argv.slice(2);
const reserialized = args[0] === "--reserialized";
const files = reserialized ? args.slice(1) : args;
if (files.length !== 1) {
  console.error("usage: node verify_jsonl.mjs [--reserialized] FILE");
  process.exitCode = 2;
} else {
  try {
    process.exitCode = await verify(files[0], reserialized);
  } catch (error) {
    // missing or unreadable file: not a verdict on the log
    console.error(`cannot read ${files[0]}: ${error.message}`);
    process.exitCode = 2;
  }
}
