// /watch/{id}: hls.js plays the content's master playlist, and every fragment is checked
// before the player sees it: its BLAKE3 against the publisher-signed manifest (and the node's
// Merkle proof header against the signed root). A fragment that does not match is fetched
// again from the next node of the master playlist's redundant streams, the node that sent it
// is avoided from then on and reported to the node that served this page
// (POST /v1/reports/bad-segment). The state is shown in words and kept in window.mhcWatch.

// The light build: no DRM, subtitles, alternate audio or content steering, which this page
// does not use.
import Hls from 'hls.js/light';
import { createBLAKE3 } from 'hash-wasm';
import { ManifestError, equalBytes, toHex, verifySignedManifest } from './manifest.js';
import { proofProblem } from './merkle.js';

const config = JSON.parse(document.querySelector('meta[name="mhc-watch"]').content);
const params = new URLSearchParams(location.search);
// ?verify=0 plays without checking (the benchmark's baseline), and says so.
const verifying = params.get('verify') !== '0';

const state = {
  verified: 0,
  failed: 0,
  node: null,
  error: null,
  playing: false,
  verifying,
  refetched: 0,
  failures: [],
  firstFrameMs: null,
  currentTime: 0,
  // The longest the player waited for data once playing, in ms.
  longestStallMs: 0,
  bench: null,
};
window.mhcWatch = state;

const $ = (id) => document.getElementById(id);
// How long a node may take to send a fragment again after another node's copy failed.
const REFETCH_TIMEOUT_MS = 10000;
const started = performance.now();

function render() {
  $('verified').textContent = verifying ? String(state.verified) : 'not checked (verify=0)';
  $('failed').textContent = String(state.failed);
  $('node').textContent = state.node ?? '–';
  let status;
  if (state.error) status = state.error;
  else if (!verifying) status = 'Playing without verification: segments are not checked.';
  else if (state.playing) {
    status = `Playing. Every segment so far matched the publisher's signed manifest (${state.verified} verified).`;
  } else status = 'Checking the publisher\u2019s signature…';
  $('status').textContent = status;
  $('status').className = state.error ? 'bad' : state.failed ? 'warn' : 'ok';
  const list = $('failures');
  list.replaceChildren(
    ...state.failures.map((f) => {
      const li = document.createElement('li');
      li.textContent = f;
      return li;
    }),
  );
}

function fail(message) {
  state.error = message;
  render();
}

// The origin (scheme://host:port) of every media playlist the master playlist lists, in its
// order: the nodes holding the rendition.
function nodesOf(masterText, base) {
  const nodes = [];
  const lines = masterText.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].startsWith('#EXT-X-STREAM-INF')) continue;
    const uri = (lines[i + 1] || '').trim();
    if (!uri || uri.startsWith('#')) continue;
    const origin = new URL(uri, base).origin;
    if (!nodes.includes(origin)) nodes.push(origin);
  }
  return nodes;
}

// Which manifest entry a fragment URL names: {index, kind: 'segment'|'init', version}.
function entryOf(url, contentId) {
  const u = new URL(url);
  const prefix = `/v1/content/${contentId}/`;
  if (!u.pathname.startsWith(prefix)) return null;
  const rest = u.pathname.slice(prefix.length);
  const version = u.searchParams.has('v') ? Number(u.searchParams.get('v')) : null;
  if (rest === 'init.mp4') return { kind: 'init', index: -1, version };
  const m = /^seg\/(\d+)\.(ts|m4s|aac)$/.exec(rest);
  if (!m) return null;
  return { kind: 'segment', index: Number(m[1]), version };
}

function header(details, name) {
  if (!details) return null;
  if (typeof details.getResponseHeader === 'function') return details.getResponseHeader(name);
  if (details.headers && typeof details.headers.get === 'function') return details.headers.get(name);
  return null;
}

async function main() {
  const hasher = await createBLAKE3();
  const blake3 = (data) => {
    hasher.init();
    hasher.update(data);
    return hasher.digest('binary');
  };
  if (params.get('bench') === '1') state.bench = benchBlake3(blake3);

  // The signed manifest of a version (null: the latest), fetched from the page's node once.
  const manifests = new Map();
  const fetchManifest = async (version) => {
    const url = version === null ? config.manifest : `${config.manifest}?v=${version}`;
    const resp = await fetch(url, { cache: 'no-store' });
    if (!resp.ok) throw new ManifestError(`its manifest could not be fetched (HTTP ${resp.status})`);
    const m = verifySignedManifest(new Uint8Array(await resp.arrayBuffer()), config.publishers);
    if (m.contentId !== config.content) throw new ManifestError(`the manifest is for ${m.contentId}`);
    if (version !== null && m.version !== version) throw new ManifestError(`asked for version ${version}, got ${m.version}`);
    manifests.set(m.version, m);
    return m;
  };
  let manifest;
  try {
    manifest = await fetchManifest(null);
  } catch (e) {
    const why = e instanceof ManifestError ? e.message : `the manifest could not be read (${e.message})`;
    return fail(`This content cannot be played: ${why}.`);
  }
  // A fragment of another version (one published while the page plays, or the one a node
  // still serves) is checked against that version's signed manifest.
  const manifestFor = async (version) => {
    if (version === null || version === manifest.version) return manifest;
    return manifests.get(version) ?? (await fetchManifest(version));
  };
  document.title = `${manifest.title} — mhc`;
  $('title').textContent = manifest.title;

  const masterResp = await fetch(config.master, { cache: 'no-store' });
  if (!masterResp.ok) return fail(`No node can play this content now (HTTP ${masterResp.status}).`);
  const nodes = nodesOf(await masterResp.text(), location.href);
  if (nodes.length === 0) return fail('No node can play this content now.');
  const bad = new Set();

  // Why `data` is not entry `e` of the signed manifest `m`, or null.
  const problem = (m, e, data, details) => {
    if (e === null) return 'it is not a segment of this content';
    const want = e.kind === 'init' ? m.hls.init?.hash : m.segments[e.index]?.hash;
    if (!want) return 'the signed manifest has no such segment';
    const got = blake3(new Uint8Array(data));
    if (!equalBytes(got, want)) return `its BLAKE3 ${toHex(got).slice(0, 16)}… is not the signed ${toHex(want).slice(0, 16)}…`;
    const proof = header(details, 'x-mhc-merkle-proof');
    if (e.kind === 'segment' && proof !== null) {
      const index = header(details, 'x-mhc-segment-index') ?? '';
      const p = proofProblem(blake3, got, e.index, m.segments.length, proof, index, m.merkleRoot);
      if (p) return p;
    }
    return null;
  };

  const report = (e, node, why) => {
    const body = JSON.stringify({
      content: config.content,
      version: e && e.version !== null ? e.version : manifest.version,
      segment: e ? e.index : null,
      node,
      reason: why,
    });
    fetch(config.report, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      keepalive: true,
    }).catch(() => {});
  };

  // The same fragment from the other nodes, in order, until one verifies; each may take
  // REFETCH_TIMEOUT_MS and no more bytes than the signed size; `signal` ends it (the loader
  // was aborted).
  const refetch = async (m, url, e, signal) => {
    const size = e.kind === 'init' ? m.hls.init.size : m.segments[e.index].size;
    for (const node of nodes) {
      if (bad.has(node) || signal.aborted) continue;
      const u = new URL(url);
      const alt = node + u.pathname + u.search;
      try {
        const resp = await fetch(alt, { signal: AbortSignal.any([signal, AbortSignal.timeout(REFETCH_TIMEOUT_MS)]) });
        if (!resp.ok || Number(resp.headers.get('content-length') ?? 0) > size) continue;
        const data = await resp.arrayBuffer();
        const why = problem(m, e, data, resp);
        if (why === null) return { data, node };
        noteFailure(e, node, why);
      } catch {
        // That node is unreachable, slow, or the load was aborted; try the next.
      }
    }
    return null;
  };

  const noteFailure = (e, node, why) => {
    state.failed++;
    bad.add(node);
    const what = e === null ? 'a fragment' : e.kind === 'init' ? 'the init segment' : `segment ${e.index}`;
    state.failures.push(`${what} from ${node} was refused: ${why}. That node is avoided from now on.`);
    report(e, node, why);
    render();
  };

  const BaseLoader = Hls.DefaultConfig.loader;
  class VerifyingLoader extends BaseLoader {
    load(context, loaderConfig, callbacks) {
      // A node that lied once is not asked again.
      const origin = new URL(context.url).origin;
      if (bad.has(origin)) {
        const good = nodes.find((n) => !bad.has(n));
        if (good) {
          const u = new URL(context.url);
          context.url = good + u.pathname + u.search;
        }
      }
      const onSuccess = callbacks.onSuccess;
      const self = this;
      this.aborter = new AbortController();
      const wrapped = {
        ...callbacks,
        onSuccess(response, stats, ctx, details) {
          if (!verifying) {
            state.node = new URL(ctx.url).origin;
            return onSuccess(response, stats, ctx, details);
          }
          const e = entryOf(ctx.url, config.content);
          const origin = new URL(ctx.url).origin;
          (async () => {
            let m;
            try {
              m = await manifestFor(e === null ? null : e.version);
            } catch (err) {
              if (!self.gone) callbacks.onError({ code: 0, text: `version ${e.version}: ${err.message}` }, ctx, details, stats);
              return;
            }
            if (self.gone) return;
            // Its place in the playlist must be the signed one: a playlist cannot reorder,
            // repeat or retime verified segments.
            const frag = ctx.frag;
            if (e !== null && e.kind === 'segment' && frag && typeof frag.sn === 'number') {
              const signed = m.segments[e.index];
              if (frag.sn !== e.index || (signed && Math.abs(frag.duration * 1000 - signed.durationMs) > 2)) {
                fail(`The playlist from ${origin} does not match the signed manifest: it places segment ${e.index} at ${frag.sn}.`);
                noteFailure(e, origin, `its playlist places segment ${e.index} at position ${frag.sn}`);
                callbacks.onError({ code: 0, text: 'playlist does not match the signed manifest' }, ctx, details, stats);
                return;
              }
            }
            const why = problem(m, e, response.data, details);
            if (why === null) {
              state.verified++;
              state.node = origin;
              render();
              onSuccess(response, stats, ctx, details);
              return;
            }
            noteFailure(e, origin, why);
            const found = e === null ? null : await refetch(m, ctx.url, e, self.aborter.signal);
            if (self.gone) return;
            if (found === null) {
              callbacks.onError({ code: 0, text: `no node sent a verifiable copy: ${why}` }, ctx, details, stats);
              return;
            }
            state.verified++;
            state.refetched++;
            state.node = found.node;
            render();
            onSuccess({ ...response, data: found.data }, stats, ctx, details);
          })();
        },
      };
      super.load(context, loaderConfig, wrapped);
    }
    abort() {
      this.gone = true;
      this.aborter?.abort();
      super.abort();
    }
    destroy() {
      this.gone = true;
      this.aborter?.abort();
      super.destroy();
    }
  }

  if (!Hls.isSupported()) return fail('This browser cannot play HLS with Media Source Extensions.');
  const video = $('player');
  let stalledAt = null;
  video.addEventListener('playing', () => {
    if (state.firstFrameMs === null) state.firstFrameMs = performance.now() - started;
    if (stalledAt !== null) state.longestStallMs = Math.max(state.longestStallMs, performance.now() - stalledAt);
    stalledAt = null;
    state.playing = true;
    render();
  });
  video.addEventListener('waiting', () => {
    if (state.playing && stalledAt === null) stalledAt = performance.now();
  });
  video.addEventListener('timeupdate', () => {
    state.currentTime = video.currentTime;
  });
  const hls = new Hls({ fLoader: VerifyingLoader, enableWorker: false });
  // A media playlist must list every signed segment, in order (checked per fragment too).
  hls.on(Hls.Events.LEVEL_LOADED, async (_event, data) => {
    if (!verifying) return;
    const frags = data.details.fragments;
    const first = frags.length ? entryOf(frags[0].url, config.content) : null;
    let m;
    try {
      m = await manifestFor(first ? first.version : null);
    } catch (err) {
      return fail(`This content cannot be played: ${err.message}.`);
    }
    if (data.details.live === false && frags.length !== m.segments.length) {
      const origin = frags.length ? new URL(frags[0].url).origin : 'a node';
      noteFailure(null, origin, `its playlist lists ${frags.length} segments, the signed manifest ${m.segments.length}`);
      fail(`The playlist from ${origin} does not match the signed manifest (${frags.length} segments, not ${m.segments.length}).`);
      hls.stopLoad();
    }
  });
  hls.on(Hls.Events.ERROR, (_event, data) => {
    if (data.fatal) fail(`Playback stopped: ${data.details}${data.error ? ` (${data.error.message})` : ''}.`);
  });
  hls.loadSource(config.master);
  hls.attachMedia(video);
  video.muted = true;
  video.play().catch(() => {});
  render();
}

// MB/s of BLAKE3 over 32 MiB in this page (the hasher the page uses).
function benchBlake3(blake3) {
  const data = new Uint8Array(32 << 20);
  for (let i = 0; i < data.length; i += 4096) data[i] = i & 0xff;
  blake3(data.subarray(0, 1 << 20));
  const t0 = performance.now();
  let bytes = 0;
  while (performance.now() - t0 < 1000) {
    blake3(data);
    bytes += data.length;
  }
  return { blake3MBs: bytes / 1e6 / ((performance.now() - t0) / 1000) };
}

main().catch((e) => fail(`The player failed: ${e.message}`));
