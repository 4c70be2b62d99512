// /ui: the cluster as the node serving this page sees it (GET /v1/cluster, /v1/content,
// /v1/route/{id}?client=IP), refreshed every few seconds. Read-only; it shows nothing the
// viewer plane does not already answer.

const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? '')));
  return e;
}

function ago(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${ms} ms ago`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s ago`;
  return `${Math.round(ms / 60000)} min ago`;
}

function until(ms) {
  if (!ms) return '–';
  const left = ms - Date.now();
  const date = new Date(ms).toISOString().slice(0, 16).replace('T', ' ');
  if (left <= 0) return `expired ${date}`;
  return `${date} (${Math.round(left / 86400000)} d)`;
}

function bytesPerS(b) {
  if (!b) return '0';
  if (b > 1e9) return `${(b / 1e9).toFixed(1)} GB/s`;
  if (b > 1e6) return `${(b / 1e6).toFixed(1)} MB/s`;
  return `${(b / 1e3).toFixed(1)} kB/s`;
}

function renderSelf(c) {
  const s = c.self;
  const emergency = s.emergency || {};
  $('self').replaceChildren(
    el('dt', {}, 'This node'),
    el('dd', {}, `${s.role} in ${s.region}, ${s.peer_id}`),
    el('dt', {}, 'Mode'),
    el('dd', { id: 'mode', class: c.mode === 'normal' ? 'ok' : 'bad' }, c.mode === 'normal' ? 'normal' : `${c.mode}: ${emergency.reason || 'no reason given'}`),
    el('dt', {}, 'Members'),
    el('dd', {}, `${c.counts.alive} alive, ${c.counts.suspect} suspect, ${c.counts.dead} dead`),
  );
}

function renderMembers(c) {
  const rows = [c.self, ...c.members].map((m) =>
    el(
      'tr',
      { 'data-peer': m.peer_id, class: `state-${m.state}` },
      el('td', { title: m.peer_id }, m.peer_id.slice(-12)),
      el('td', {}, m.role),
      el('td', {}, m.region),
      el('td', {}, m.state),
      el('td', {}, m.mode),
      el('td', {}, m.load ? `${m.load.connections_open ?? 0} conns, ${bytesPerS(m.load.bytes_out_per_s)}` : '–'),
      el('td', {}, m === c.self ? 'this node' : ago(m.last_seen_ms)),
      el('td', {}, until(m.certificate?.not_after_ms)),
      el('td', {}, m.addrs?.http || ''),
    ),
  );
  $('members').replaceChildren(...rows);
}

// Every content this node holds, heard announced, or a member says it holds, with the nodes
// holding it (from their heartbeats).
function renderContent(list, c) {
  const titles = new Map(list.map((x) => [x.id, x]));
  const holders = new Map();
  const hold = (id, who) => holders.set(id, [...(holders.get(id) || []), who]);
  for (const x of list) hold(x.id, `this ${c.self.role}`);
  for (const m of c.members) {
    for (const h of m.held || []) hold(h.id, `${m.role} ${m.peer_id.slice(-12)}`);
  }
  const ids = [...new Set([...holders.keys(), ...(c.announced || []).map((a) => a.id)])].sort();
  const rows = ids.map((id) =>
    el(
      'tr',
      { 'data-content': id },
      el('td', {}, el('a', { href: `/watch/${encodeURIComponent(id)}` }, id)),
      el('td', {}, titles.get(id)?.title ?? ''),
      el('td', {}, titles.get(id)?.version ?? ''),
      el('td', {}, (holders.get(id) || []).join(', ') || 'no node alive'),
    ),
  );
  $('contents').replaceChildren(...rows);
  const select = $('route-content');
  const chosen = select.value;
  select.replaceChildren(...ids.map((id) => el('option', { value: id }, id)));
  if (chosen) select.value = chosen;
}

function renderBadSegments(reports) {
  const items = reports
    .slice()
    .reverse()
    .map((r) =>
      el('li', {}, `${new Date(r.received_at_ms).toLocaleTimeString()}: ${r.content} segment ${r.segment ?? '?'} from ${r.node}: ${r.reason}`),
    );
  $('bad-segments').replaceChildren(...(items.length ? items : [el('li', {}, 'none')]));
}

async function refresh() {
  try {
    const [cluster, content] = await Promise.all([
      fetch('/v1/cluster', { cache: 'no-store' }).then((r) => r.json()),
      fetch('/v1/content', { cache: 'no-store' }).then((r) => r.json()),
    ]);
    const list = Array.isArray(content) ? content : content.content || [];
    renderSelf(cluster);
    renderMembers(cluster);
    renderContent(list, cluster);
    renderBadSegments(cluster.bad_segment_reports || []);
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    $('updated').className = 'ok';
  } catch (e) {
    $('updated').textContent = `cannot reach this node: ${e.message}`;
    $('updated').className = 'bad';
  }
}

async function explain(event) {
  event.preventDefault();
  const id = $('route-content').value;
  const ip = $('route-ip').value.trim();
  const out = $('route-answer');
  if (!id) return;
  const q = ip ? `?client=${encodeURIComponent(ip)}` : '';
  const resp = await fetch(`/v1/route/${encodeURIComponent(id)}${q}`, { cache: 'no-store' });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    out.replaceChildren(el('p', { class: 'bad' }, body.error || `HTTP ${resp.status}`));
    return;
  }
  const client = body.client || {};
  const place = [client.city, client.country, client.continent].filter(Boolean).join(', ');
  const items = (body.candidates || []).map((c) =>
    el(
      'li',
      { class: c.chosen ? 'ok' : '' },
      `${c.role} ${c.peer_id.slice(-12)} in ${c.region}${c.distance_km == null ? '' : `, ${Math.round(c.distance_km)} km`}: ${c.reason}`,
    ),
  );
  out.replaceChildren(
    el('p', {}, `A viewer at ${client.address} (${place || 'place unknown'}; ${client.location_source}) goes to ${body.chosen ? body.chosen.playlist : 'no node'}.`),
    el('p', {}, `Ranking: ${body.ranking}.`),
    el('ol', {}, ...items),
  );
}

$('route-form').addEventListener('submit', explain);
refresh();
setInterval(refresh, REFRESH_MS);
