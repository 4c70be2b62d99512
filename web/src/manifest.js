// The signed manifest as mhc-node serves it (GET /v1/content/{id}/manifest): one format byte
// (1) and the postcard encoding of SignedManifest { manifest, signature: [u8; 64] }. The
// publisher signs b"mhc-manifest-v1" ‖ postcard(manifest) (manifest/src/manifest.rs), so the
// signed bytes are everything between the format byte and the last 64 bytes.
//
// Decoding follows postcard's wire format: unsigned integers are LEB128 varints, strings and
// sequences a varint length then their items, Option a 0/1 byte, enum variants a varint
// index, fixed-size byte arrays raw.

import * as ed from '@noble/ed25519';
import { sha512 } from '@noble/hashes/sha2.js';

// Synchronous verification with a JS SHA-512: WebCrypto is absent on plain-HTTP pages.
ed.hashes.sha512 = sha512;

const FORMAT_VERSION = 1;
const DOMAIN_TAG = new TextEncoder().encode('mhc-manifest-v1');
const SIGNATURE_LEN = 64;
// As manifest/src/manifest.rs bounds them.
const MAX_SEGMENTS = 100000;
const MAX_STRING = 4096;

const MEDIA_KINDS = ['audio', 'video'];
const SEGMENT_FORMATS = ['ts', 'fmp4', 'aac'];

export class ManifestError extends Error {}

class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.i = 0;
  }
  byte() {
    if (this.i >= this.b.length) throw new ManifestError('the manifest ends early');
    return this.b[this.i++];
  }
  // An unsigned varint of at most 64 bits, as a Number (exact up to 2^53).
  varint() {
    let value = 0;
    let scale = 1;
    for (let n = 0; n < 10; n++) {
      const b = this.byte();
      value += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return value;
      scale *= 128;
    }
    throw new ManifestError('a varint longer than 10 bytes');
  }
  raw(n) {
    if (this.i + n > this.b.length) throw new ManifestError('the manifest ends early');
    const out = this.b.subarray(this.i, this.i + n);
    this.i += n;
    return out;
  }
  string() {
    const len = this.varint();
    if (len > MAX_STRING) throw new ManifestError(`a string of ${len} bytes`);
    return new TextDecoder('utf-8', { fatal: true }).decode(this.raw(len));
  }
  option(read) {
    const tag = this.byte();
    if (tag === 0) return null;
    if (tag === 1) return read();
    throw new ManifestError(`an Option tagged ${tag}`);
  }
  variant(names) {
    const i = this.varint();
    if (i >= names.length) throw new ManifestError(`unknown variant ${i}`);
    return names[i];
  }
}

function decodeManifest(bytes) {
  const r = new Reader(bytes);
  const m = {};
  m.contentId = r.string();
  m.version = r.varint();
  m.title = r.string();
  m.artistId = r.string();
  m.mediaKind = r.variant(MEDIA_KINDS);
  m.hls = {
    targetDurationS: r.varint(),
    segmentFormat: r.variant(SEGMENT_FORMATS),
    codecs: r.option(() => r.string()),
    bandwidthBps: r.varint(),
    averageBandwidthBps: r.varint(),
    init: r.option(() => ({ size: r.varint(), hash: r.raw(32) })),
  };
  const n = r.varint();
  if (n > MAX_SEGMENTS) throw new ManifestError(`${n} segments`);
  m.segments = [];
  for (let i = 0; i < n; i++) {
    m.segments.push({ durationMs: r.varint(), size: r.varint(), hash: r.raw(32) });
  }
  m.merkleRoot = r.raw(32);
  m.publisher = r.raw(32);
  if (r.i !== bytes.length) throw new ManifestError(`${bytes.length - r.i} bytes after the manifest`);
  return m;
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function fromHex(s) {
  if (!/^([0-9a-fA-F]{2})*$/.test(s)) throw new ManifestError(`not hex: ${s.slice(0, 80)}`);
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

// Decodes a signed manifest and checks its signature against the trusted publisher keys
// (hex). Returns the manifest; throws ManifestError saying why it is refused.
export function verifySignedManifest(bytes, trustedPublishers) {
  if (bytes.length < 1 + SIGNATURE_LEN) throw new ManifestError('the manifest is too short');
  if (bytes[0] !== FORMAT_VERSION) throw new ManifestError(`manifest format ${bytes[0]}, expected ${FORMAT_VERSION}`);
  const body = bytes.subarray(1, bytes.length - SIGNATURE_LEN);
  const signature = bytes.subarray(bytes.length - SIGNATURE_LEN);
  const manifest = decodeManifest(body);
  const publisher = toHex(manifest.publisher);
  if (!trustedPublishers.includes(publisher)) {
    throw new ManifestError(`signed by ${publisher.slice(0, 16)}…, which is not a publisher this page trusts`);
  }
  const message = new Uint8Array(DOMAIN_TAG.length + body.length);
  message.set(DOMAIN_TAG);
  message.set(body, DOMAIN_TAG.length);
  let ok = false;
  try {
    // Strict RFC 8032 verification, as the node's (ed25519-dalek's verify_strict).
    ok = ed.verify(signature, message, manifest.publisher, { zip215: false });
  } catch (e) {
    throw new ManifestError(`the signature cannot be checked: ${e.message}`);
  }
  if (!ok) throw new ManifestError(`the signature does not match publisher ${publisher.slice(0, 16)}…`);
  return manifest;
}
