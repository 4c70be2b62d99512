#!/usr/bin/env node
// Opens one of mhc-node's pages (/watch/{id}, /ui) in headless Chromium and waits until a
// condition on the page holds, then prints one JSON line on stdout and exits 0 (1 on timeout
// or a page error, 2 on bad usage).
//
//   node tests/browser/page.mjs <url> <condition> [timeout_s=40] [screenshot.png]
//
// <condition> is a JavaScript expression over `watch` (the page's window.mhcWatch, or null) and
// `text` (its visible text), checked here every 100 ms until it is truthy, e.g.
// "watch && watch.verified >= 4" (here, not in the page: the pages' Content-Security-Policy
// forbids evaluating strings, as it should). The printed JSON holds the final window.mhcWatch,
// the page's visible text, the console errors, every response that was not 2xx/3xx, and the
// Content-Security-Policy violations Chromium reported.
//
// MHC_BROWSER=firefox opens the page in Debian's Firefox ESR instead, MHC_BROWSER=webkit in
// WebKitGTK's MiniBrowser (Safari's engine); no lying there.
//
// Two ways to lie to the page, as a proxy between it and the nodes would:
//   MHC_TAMPER_PATH=/v1/content/x/seg/3.   one byte flipped in the middle of the first answer
//       to a URL whose path starts so, from whichever node is asked first (printed as
//       "tamperedOrigin"); every other node's answer passes untouched.
//   MHC_RESIGN_MANIFEST=1   every signed manifest re-signed by a fresh key (its publisher field
//       set to that key): a well-formed manifest from a publisher nobody trusts.
//   MHC_SWAP_PLAYLIST=1   in every media playlist, the URIs of the second and third segments
//       swapped: verified segments in the wrong order.

import { launchChromium, launchFirefox, launchWebKit } from './chromium.mjs';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, condition, timeoutArg, screenshot] = process.argv.slice(2);
if (!url || !condition) {
  process.stderr.write('usage: node page.mjs <url> <condition> [timeout_s=40] [screenshot.png]\n');
  process.exit(2);
}
const timeoutMs = 1000 * (timeoutArg === undefined ? 40 : Number(timeoutArg));
const holds = new Function('watch', 'text', `return (${condition});`);

const profile = mkdtempSync(join(tmpdir(), 'mhc-page-'));
const result = { ok: false, watch: null, text: '', console: [], failedResponses: [], cspViolations: [] };
let context;
try {
  let page;
  const other = { firefox: launchFirefox, webkit: launchWebKit }[process.env.MHC_BROWSER];
  if (other) {
    if (process.env.MHC_TAMPER_PATH || process.env.MHC_RESIGN_MANIFEST || process.env.MHC_SWAP_PLAYLIST) throw new Error('lying needs Chromium');
    const launched = await other();
    context = launched.browser;
    page = launched.page;
  } else {
    context = await launchChromium(profile);
    page = context.pages()[0] || (await context.newPage());
    await lie(page);
  }
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') result.console.push(m.text());
    if (/Content Security Policy|Content-Security-Policy/.test(m.text())) result.cspViolations.push(m.text());
  });
  page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`));
  page.on('response', (r) => {
    if (r.status() >= 400) result.failedResponses.push(`${r.status()} ${r.url()}`);
  });
  await page.goto(url, { waitUntil: 'load', timeout: timeoutMs });
  const look = () =>
    page.evaluate(() => ({
      watch: window.mhcWatch ? JSON.parse(JSON.stringify(window.mhcWatch)) : null,
      text: document.body.innerText,
    }));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const seen = await look();
    result.watch = seen.watch;
    result.text = seen.text;
    if (holds(seen.watch, seen.text)) {
      result.ok = true;
      break;
    }
    if (Date.now() > deadline) {
      result.why = `timed out after ${timeoutMs / 1000} s waiting for: ${condition}`;
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
} catch (e) {
  result.why = e.message;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(`${JSON.stringify(result)}\n`);

async function lie(page) {
  const tamperPath = process.env.MHC_TAMPER_PATH;
  if (tamperPath) {
    await page.route(
      (u) => u.pathname.startsWith(tamperPath),
      async (route) => {
        const origin = new URL(route.request().url()).origin;
        result.tamperedOrigin ??= origin;
        const response = await route.fetch();
        if (origin !== result.tamperedOrigin) return route.fulfill({ response });
        const body = Buffer.from(await response.body());
        body[body.length >> 1] ^= 0x01;
        result.tampered = (result.tampered || 0) + 1;
        return route.fulfill({ response, body });
      },
    );
  }
  if (process.env.MHC_SWAP_PLAYLIST === '1') {
    await page.route(
      (u) => u.pathname.endsWith('/index.m3u8'),
      async (route) => {
        const response = await route.fetch();
        const lines = (await response.text()).split('\n');
        const uris = lines.map((l, i) => [l, i]).filter(([l]) => l.includes('/seg/') || /^seg\//.test(l));
        if (uris.length >= 3) {
          const [a, b] = [uris[1][1], uris[2][1]];
          [lines[a], lines[b]] = [lines[b], lines[a]];
          result.swapped = (result.swapped || 0) + 1;
        }
        return route.fulfill({ response, body: lines.join('\n') });
      },
    );
  }
  if (process.env.MHC_RESIGN_MANIFEST === '1') {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url');
    await page.route(
      (u) => u.pathname.endsWith('/manifest'),
      async (route) => {
        const response = await route.fetch();
        const bytes = Buffer.from(await response.body());
        // [format] ‖ manifest ‖ signature(64); the manifest ends with the publisher key (32).
        const body = Buffer.from(bytes.subarray(1, bytes.length - 64));
        raw.copy(body, body.length - 32);
        const signature = sign(null, Buffer.concat([Buffer.from('mhc-manifest-v1'), body]), privateKey);
        result.resigned = raw.toString('hex');
        return route.fulfill({ response, body: Buffer.concat([bytes.subarray(0, 1), body, signature]) });
      },
    );
  }
}
process.exit(result.ok ? 0 : 1);
