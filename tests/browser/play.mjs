#!/usr/bin/env node
// Headless-Chromium HLS playback check of an mhc-node playlist.
//
//   node tests/browser/play.mjs <playlist-url> [min_seconds=3] [timeout_s=40]
//
// 1. Serves a tiny page (hls.js + a muted autoplay <video>) from a local HTTP server on a
//    different origin than the playlist, so the daemon's CORS headers are exercised, and waits
//    until video.currentTime >= min_seconds, a fatal hls.js error, or the timeout.
// 2. From inside that page (so cross-origin header exposure is exercised too), fetches the
//    playlist and its first media segment; in Node, checks BLAKE3(body) == x-mhc-segment-hash
//    and the rs_merkle inclusion proof (x-mhc-merkle-proof, x-mhc-segment-index "i/n") against
//    x-mhc-merkle-root.
// 3. Prints one JSON line {"ok","currentTime","errors","segmentVerified"} on stdout (details on
//    stderr) and exits 0 only if playback reached min_seconds without a fatal error AND the
//    segment verified; 1 otherwise (2 on bad usage).
//
// Uses Debian's /usr/bin/chromium (playwright-core never downloads a browser). An HTTPS
// playlist whose certificate is not from a public CA (a test CA) is trusted by its key only:
// MHC_TLS_SPKI=<base64 SHA-256 of the certificate's SubjectPublicKeyInfo> becomes Chromium's
// --ignore-certificate-errors-spki-list, which accepts that one key and no other.

import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium } from './chromium.mjs';
import { blake3 } from '@noble/hashes/blake3.js';

const HERE = dirname(fileURLToPath(import.meta.url));

function log(...a) {
  process.stderr.write(`[play] ${a.join(' ')}\n`);
}

// ---------- arguments ----------
const [urlArg, minArg, timeoutArg] = process.argv.slice(2);
if (!urlArg || urlArg === '-h' || urlArg === '--help') {
  process.stderr.write('usage: node play.mjs <playlist-url> [min_seconds=3] [timeout_s=40]\n');
  process.exit(2);
}
let playlistUrl;
try {
  playlistUrl = new URL(urlArg).href;
} catch {
  process.stderr.write(`not a URL: ${urlArg}\n`);
  process.exit(2);
}
const minSeconds = minArg === undefined ? 3 : Number(minArg);
const timeoutS = timeoutArg === undefined ? 40 : Number(timeoutArg);
if (!(minSeconds >= 0) || !(timeoutS > 0)) {
  process.stderr.write('min_seconds must be >= 0 and timeout_s > 0\n');
  process.exit(2);
}

// ---------- result + cleanup ----------
const result = { ok: false, currentTime: 0, errors: [], segmentVerified: false };
let server = null;
let context = null;
let userDataDir = null;
let finished = false;

function removeUserDataDir() {
  if (userDataDir) {
    try {
      rmSync(userDataDir, { recursive: true, force: true });
    } catch (e) {
      log(`could not remove ${userDataDir}: ${e.message}`);
    }
    userDataDir = null;
  }
}

function withTimeout(promise, ms) {
  return Promise.race([promise, new Promise((r) => setTimeout(r, ms).unref())]);
}

async function finish(code) {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(result) + '\n');
  if (context) {
    // Playwright also kills the browser process on Node exit, so a hung close cannot keep us.
    await withTimeout(context.close().catch(() => {}), 5000);
  }
  if (server) {
    server.closeAllConnections?.();
    await withTimeout(new Promise((r) => server.close(() => r())), 2000);
  }
  removeUserDataDir();
  process.exit(code);
}

// Hard overall limit: whatever is stuck, report and leave.
const hardDeadline = Date.now() + (timeoutS + 10) * 1000;
const hardTimer = setTimeout(() => {
  result.errors.push({ type: 'timeout', details: `hard timeout after ${timeoutS + 10}s`, fatal: true });
  finish(1);
}, (timeoutS + 10) * 1000);
hardTimer.unref();
process.on('SIGINT', () => finish(1));
process.on('SIGTERM', () => finish(1));

// ---------- helpers ----------
const hex = (u8) => Buffer.from(u8).toString('hex');

function fromHex(s, what) {
  if (typeof s !== 'string' || s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) {
    throw new Error(`${what} is not valid hex: ${JSON.stringify(s)}`);
  }
  return new Uint8Array(Buffer.from(s, 'hex'));
}

function eqBytes(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

// Inner node as in manifest/src/merkle.rs: blake3(0x01 ‖ left ‖ right).
function innerNode(left, right) {
  const buf = new Uint8Array(1 + left.length + right.length);
  buf[0] = 0x01;
  buf.set(left, 1);
  buf.set(right, 1 + left.length);
  return blake3(buf);
}

// rs_merkle 1.5 single-leaf proof: siblings bottom-up; a lone right-most node is promoted
// unchanged and consumes no proof hash.
function verifyMerkleProof(leaf, index, total, proofHashes, root) {
  if (!(Number.isInteger(index) && Number.isInteger(total) && index >= 0 && index < total)) {
    return { ok: false, why: `bad index ${index}/${total}` };
  }
  let h = leaf;
  let i = index;
  let size = total;
  let k = 0;
  while (size > 1) {
    if (i % 2 === 1) {
      if (k >= proofHashes.length) return { ok: false, why: 'proof too short' };
      h = innerNode(proofHashes[k++], h);
    } else if (i + 1 < size) {
      if (k >= proofHashes.length) return { ok: false, why: 'proof too short' };
      h = innerNode(h, proofHashes[k++]);
    } // else: promoted unchanged
    i = Math.floor(i / 2);
    size = Math.ceil(size / 2);
  }
  if (k !== proofHashes.length) return { ok: false, why: `proof has ${proofHashes.length - k} extra hashes` };
  if (!eqBytes(h, root)) return { ok: false, why: `computed root ${hex(h)} != ${hex(root)}` };
  return { ok: true, why: 'ok' };
}

// First URI line after #EXTINF (media playlist), or after #EXT-X-STREAM-INF (master playlist).
function firstUriAfter(text, tag) {
  const lines = text.split(/\r?\n/).map((l) => l.trim());
  let armed = false;
  for (const line of lines) {
    if (line.startsWith(tag)) armed = true;
    else if (armed && line !== '' && !line.startsWith('#')) return line;
  }
  return null;
}

// ---------- page ----------
const hlsJsPath = join(HERE, 'node_modules', 'hls.js', 'dist', 'hls.min.js');
let hlsJs;
try {
  hlsJs = readFileSync(hlsJsPath);
} catch {
  result.errors.push({ type: 'setup', details: `missing ${hlsJsPath}: run npm ci in tests/browser`, fatal: true });
  await finish(1);
}

const pageHtml = `<!doctype html>
<html><head><meta charset="utf-8"><title>mhc hls check</title></head>
<body>
<video id="v" muted autoplay playsinline width="640" height="360"></video>
<script src="/hls.min.js"></script>
<script>
window.__errors = [];
window.__events = [];
const url = ${JSON.stringify(playlistUrl).replace(/</g, '\\u003c')};
const video = document.getElementById('v');
video.muted = true;
video.addEventListener('error', () => {
  const e = video.error;
  window.__errors.push({ type: 'videoElement', details: e ? 'MediaError code ' + e.code + (e.message ? ': ' + e.message : '') : 'unknown', fatal: true });
});
if (!window.Hls) {
  window.__errors.push({ type: 'setup', details: 'hls.js did not load', fatal: true });
} else if (!Hls.isSupported()) {
  window.__errors.push({ type: 'setup', details: 'hls.js not supported here (no MediaSource?)', fatal: true });
} else {
  const hls = new Hls();
  window.__hls = hls;
  hls.on(Hls.Events.ERROR, (_ev, d) => {
    if (!d.fatal) return;
    window.__errors.push({
      type: d.type,
      details: d.details,
      fatal: true,
      reason: d.reason || (d.error && String(d.error.message || d.error)) || null,
      url: (d.frag && d.frag.url) || (d.context && d.context.url) || d.url || null,
      status: (d.response && d.response.code) ?? null,
    });
  });
  hls.on(Hls.Events.MANIFEST_PARSED, (_ev, d) => {
    window.__events.push('manifestParsed levels=' + d.levels.length);
    video.play().catch((e) => window.__events.push('play() rejected: ' + e));
  });
  hls.on(Hls.Events.FRAG_BUFFERED, (_ev, d) => window.__events.push('fragBuffered sn=' + d.frag.sn));
  hls.loadSource(url);
  hls.attachMedia(video);
}
</script>
</body></html>
`;

server = createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/' || path === '/index.html') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(pageHtml);
  } else if (path === '/favicon.ico') {
    res.writeHead(204);
    res.end();
  } else if (path === '/hls.min.js') {
    res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-store' });
    res.end(hlsJs);
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
  }
});
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const pageUrl = `http://127.0.0.1:${server.address().port}/`;
log(`page ${pageUrl} (origin differs from ${new URL(playlistUrl).origin})`);

// ---------- browser ----------
async function verifySegment(page) {
  // Fetch from inside the page: cross-origin, so the x-mhc-* headers must be CORS-exposed.
  // Each fetch gets at most 15 s, and always ends before the hard timeout would fire.
  const fetchMs = () => Math.max(1000, Math.min(15000, hardDeadline - Date.now() - 3000));
  const fetchInPage = (u) =>
    page.evaluate(async ([u, ms]) => {
      const r = await fetch(u, { cache: 'no-store', signal: AbortSignal.timeout(ms) });
      const buf = new Uint8Array(await r.arrayBuffer());
      let bin = '';
      for (let i = 0; i < buf.length; i += 0x8000) bin += String.fromCharCode.apply(null, buf.subarray(i, i + 0x8000));
      const h = (n) => r.headers.get(n);
      return {
        url: r.url,
        status: r.status,
        body64: btoa(bin),
        headers: {
          hash: h('x-mhc-segment-hash'),
          root: h('x-mhc-merkle-root'),
          proof: h('x-mhc-merkle-proof'),
          index: h('x-mhc-segment-index'),
        },
      };
    }, [u, fetchMs()]);
  const text = (r) => Buffer.from(r.body64, 'base64').toString('utf8');

  let pl = await fetchInPage(playlistUrl);
  if (pl.status !== 200) throw new Error(`playlist: HTTP ${pl.status}`);
  let plUrl = playlistUrl;
  let uri = firstUriAfter(text(pl), '#EXTINF');
  if (uri === null) {
    const variant = firstUriAfter(text(pl), '#EXT-X-STREAM-INF');
    if (variant === null) throw new Error('playlist has no #EXTINF segment and no variant');
    plUrl = new URL(variant, plUrl).href;
    pl = await fetchInPage(plUrl);
    if (pl.status !== 200) throw new Error(`variant playlist ${plUrl}: HTTP ${pl.status}`);
    uri = firstUriAfter(text(pl), '#EXTINF');
    if (uri === null) throw new Error(`variant playlist ${plUrl} has no #EXTINF segment`);
  }
  const segUrl = new URL(uri, plUrl).href;
  const seg = await fetchInPage(segUrl);
  if (seg.status !== 200) throw new Error(`segment ${segUrl}: HTTP ${seg.status}`);
  const { hash, root, proof, index } = seg.headers;
  for (const [n, v] of Object.entries({ 'x-mhc-segment-hash': hash, 'x-mhc-merkle-root': root, 'x-mhc-merkle-proof': proof, 'x-mhc-segment-index': index })) {
    if (v === null) throw new Error(`segment ${segUrl}: header ${n} missing or not CORS-exposed`);
  }
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(index);
  if (!m) throw new Error(`x-mhc-segment-index ${JSON.stringify(index)} is not i/n`);
  const i = Number(m[1]);
  const n = Number(m[2]);

  const body = new Uint8Array(Buffer.from(seg.body64, 'base64'));
  const leaf = blake3(body);
  const claimed = fromHex(hash.trim(), 'x-mhc-segment-hash');
  if (!eqBytes(leaf, claimed)) throw new Error(`BLAKE3(body)=${hex(leaf)} != x-mhc-segment-hash ${hash}`);
  const rootBytes = fromHex(root.trim(), 'x-mhc-merkle-root');
  if (rootBytes.length !== 32) throw new Error('x-mhc-merkle-root is not 32 bytes');
  const proofBytes = fromHex(proof.trim(), 'x-mhc-merkle-proof');
  if (proofBytes.length % 32 !== 0) throw new Error('x-mhc-merkle-proof is not a multiple of 32 bytes');
  const siblings = [];
  for (let o = 0; o < proofBytes.length; o += 32) siblings.push(proofBytes.subarray(o, o + 32));
  const v = verifyMerkleProof(leaf, i, n, siblings, rootBytes);
  if (!v.ok) throw new Error(`merkle proof for ${i}/${n} failed: ${v.why}`);
  // The playlist response names the root too; a segment under another root is not this content.
  if (pl.headers.root !== null && pl.headers.root.trim().toLowerCase() !== root.trim().toLowerCase()) {
    throw new Error(`segment root ${root} != playlist root ${pl.headers.root}`);
  }
  log(`segment ${segUrl}: ${body.length} bytes, blake3 ${hex(leaf)}, index ${i}/${n}, ${siblings.length} proof hashes -> root ${root} verified`);
  return true;
}

async function main() {
  userDataDir = mkdtempSync(join(tmpdir(), 'mhc-play-'));
  context = await launchChromium(
    userDataDir,
    process.env.MHC_TLS_SPKI ? [`--ignore-certificate-errors-spki-list=${process.env.MHC_TLS_SPKI}`] : [],
  );
  const page = context.pages()[0] || (await context.newPage());
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') log(`console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => result.errors.push({ type: 'pageError', details: String(e.message || e), fatal: true }));

  await page.goto(pageUrl, { waitUntil: 'load', timeout: 15000 });

  const deadline = Date.now() + timeoutS * 1000;
  let state = { t: 0, errors: [] };
  while (Date.now() < deadline) {
    state = await page.evaluate(() => ({
      t: document.getElementById('v').currentTime,
      errors: window.__errors || [],
    }));
    result.currentTime = state.t;
    if (state.errors.length > 0 || state.t >= minSeconds) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  result.errors.push(...state.errors);
  const events = await page.evaluate(() => window.__events || []).catch(() => []);
  log(`events: ${events.join('; ') || '(none)'}`);
  const played = state.errors.length === 0 && state.t >= minSeconds;
  if (!played && state.errors.length === 0) {
    result.errors.push({ type: 'timeout', details: `currentTime ${state.t} < ${minSeconds} after ${timeoutS}s`, fatal: true });
  }
  log(`playback: currentTime=${state.t} (need ${minSeconds}) -> ${played ? 'ok' : 'FAILED'}`);

  try {
    result.segmentVerified = await verifySegment(page);
  } catch (e) {
    result.segmentVerified = false;
    const msg = String((e && e.message) || e).split('\n')[0];
    result.errors.push({ type: 'segmentVerify', details: msg, fatal: true });
    log(`segment verification FAILED: ${msg}`);
  }

  result.ok = played && result.segmentVerified && result.errors.length === 0;
  return result.ok ? 0 : 1;
}

let code = 1;
try {
  code = await main();
} catch (e) {
  result.ok = false;
  result.errors.push({ type: 'exception', details: String((e && e.message) || e).split('\n')[0], fatal: true });
  log(`error: ${(e && e.stack) || e}`);
}
await finish(code);
