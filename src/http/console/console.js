// The dynamo-kv console: reads the node's JSON API (/api/...) and its Prometheus metrics every second and draws
// them. Plain DOM and SVG, no library, nothing fetched from elsewhere. Values from the API are only ever set as
// text, never parsed as HTML.
'use strict';

const REFRESH_MS = 1000;
const HISTORY = 120; // samples kept for the charts (two minutes)
const SVG = 'http://www.w3.org/2000/svg';

const history = { hints: [], rates: [] };
let lastMetrics = null; // { at, commands, buckets } of the previous scrape, for rates and percentiles
let transferRate = null; // { at, done } when the current transition was first seen, for its ETA

function el(tag, attrs = {}, ...children) {
  const e = tag.startsWith('svg:') ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function replace(id, ...children) {
  const target = document.getElementById(id);
  target.replaceChildren(...children);
  return target;
}

// A colour per member: a categorical palette in the order of the sorted member ids (so a cluster's members keep
// their colours while its membership stays the same), then hues spread by a hash.
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7',
  '#9c755f', '#86bcb6'];
let memberColours = new Map();

function setMembers(ids) {
  memberColours = new Map([...ids].sort().map((id, i) => [id, PALETTE[i]]));
}

function colour(id) {
  const fixed = memberColours.get(id);
  if (fixed) return fixed;
  let h = 2166136261;
  for (const ch of id) h = Math.imul(h ^ ch.codePointAt(0), 16777619) >>> 0;
  return `hsl(${h % 360}, 55%, 55%)`;
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function bar(fraction, big = false) {
  const pct = Math.max(0, Math.min(1, fraction)) * 100;
  return el('div', { class: big ? 'bar big' : 'bar' }, el('div', { style: `width:${pct.toFixed(1)}%` }));
}

async function getJson(path) {
  const r = await fetch(path, { cache: 'no-store' });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

async function getText(path) {
  const r = await fetch(path, { cache: 'no-store' });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.text();
}

function renderSummary(node) {
  const item = (label, value) => el('span', {}, `${label} `, el('b', {}, value));
  replace('summary',
    el('span', { id: 'node-id' }, el('b', {}, node.node_id)),
    el('span', { class: `badge ${node.cluster_state}`, id: 'cluster-state', title: node.waiting_reason || '' },
      node.cluster_state === 'ok' ? 'serving' : `waiting: ${node.waiting_reason}`),
    item('members', `${node.members - node.members_unreachable}/${node.members} up`),
    item('ring v', node.ring_version),
    item('partitions', node.partitions),
    item('N/R/W', `${node.n}/${node.r}/${node.w}`),
    item('keys here', node.local_live_keys),
    item('clients', node.connected_clients),
    item('clock skew ≤', `${node.clock_skew_max_ms} ms`),
    item('up', ago(node.uptime_s)),
    item('version', node.version));
}

function arc(cx, cy, r0, r1, a0, a1) {
  const p = (r, a) => `${(cx + r * Math.cos(a)).toFixed(2)} ${(cy + r * Math.sin(a)).toFixed(2)}`;
  const large = a1 - a0 > Math.PI ? 1 : 0;
  return `M ${p(r1, a0)} A ${r1} ${r1} 0 ${large} 1 ${p(r1, a1)} L ${p(r0, a1)} A ${r0} ${r0} 0 ${large} 0 ${p(r0, a0)} Z`;
}

function renderRing(ring, members) {
  const svg = document.getElementById('ring');
  const q = ring.partitions.length;
  svg.setAttribute('data-partitions', q);
  svg.setAttribute('data-transition', ring.transition);
  const parts = [];
  const step = (2 * Math.PI) / Math.max(q, 1);
  const gap = q > 1 ? 0 : 0.0001; // one partition: a whole circle, drawn as an arc just short of it
  for (const p of ring.partitions) {
    const a0 = p.partition * step - Math.PI / 2;
    const a1 = a0 + step - gap;
    const owner = p.preference_list[0] || '';
    const title = `partition ${p.partition} (${p.state}): ${p.preference_list.slice(0, ring.n).join(', ')}`
      + (p.next ? ` → ${p.next.slice(0, ring.n).join(', ')}` : '');
    parts.push(el('svg:path', {
      d: arc(200, 200, ring.transition ? 150 : 120, 190, a0, a1), fill: colour(owner),
      class: `partition ${p.state}`, 'data-partition': p.partition, 'data-owner': owner,
    }, el('svg:title', {}, title)));
    if (ring.transition && p.next) {
      const next = p.next[0] || '';
      parts.push(el('svg:path', {
        d: arc(200, 200, 105, 145, a0, a1), fill: colour(next), class: `partition next ${p.state}`,
        'data-next-owner': next,
      }, el('svg:title', {}, title)));
    }
  }
  parts.push(el('svg:text', { x: 200, y: 196 }, q ? `${q} partitions` : 'no ring yet'));
  parts.push(el('svg:text', { x: 200, y: 214 }, ring.transition ? 'outer: now · inner: next' : `ring v${ring.version}`));
  svg.replaceChildren(...parts);
  replace('legend', ...members.map((m) => el('span', {},
    el('span', { class: 'swatch', style: `background:${colour(m.id)}` }), `${m.id} (${m.partitions})`)));
}

// Each member's load as it reports it, with commands/s from the previous report.
let lastLoad = new Map();

function loads(reports) {
  const now = Date.now() / 1000;
  const out = new Map();
  for (const r of reports) {
    if (!r.load) {
      out.set(r.id, { error: r.error });
      continue;
    }
    const before = lastLoad.get(r.id);
    const rate = before && now > before.at
      ? Math.max(0, Math.round((r.load.commands_processed - before.commands) / (now - before.at))) : null;
    out.set(r.id, { ...r.load, rate });
    lastLoad.set(r.id, { at: now, commands: r.load.commands_processed });
  }
  return out;
}

function renderMembers(members, load) {
  const rows = members.map((m) => {
    const l = load.get(m.id) || {};
    return el('tr', { class: m.status, 'data-member-id': m.id, 'data-status': m.status,
      'data-live-keys': l.live_keys },
    el('td', {}, m.this_node ? `${m.id} (this node)` : m.id),
    el('td', {}, el('span', { class: `badge ${m.status}` }, m.status)),
    el('td', {}, el('span', { class: `badge ${m.member === 'valid' ? 'ok' : m.member}` }, m.member)),
    el('td', {}, m.partitions),
    el('td', { title: l.error || '' }, l.live_keys === undefined ? '—' : l.live_keys),
    el('td', {}, l.rate === undefined || l.rate === null ? '—' : l.rate),
    el('td', {}, l.connected_clients === undefined ? '—' : l.connected_clients),
    el('td', {}, l.disk_bytes === undefined ? '—' : bytes(l.disk_bytes)),
    el('td', {}, m.this_node ? '—' : ago(m.last_heard_s)),
    el('td', {}, m.clock_offset_ms === null ? '—' : `${m.clock_offset_ms > 0 ? '+' : ''}${m.clock_offset_ms} ms`),
    el('td', {}, m.writes === 'ok' ? 'ok' : el('span', { class: 'badge stopped', title: m.writes }, 'stopped')),
    el('td', {}, m.client));
  });
  document.querySelector('#members tbody').replaceChildren(...rows);
}

function renderTransition(t) {
  const box = replace('transition');
  box.setAttribute('data-in-progress', t.in_progress);
  box.setAttribute('data-transfers-total', t.transfers_total);
  box.setAttribute('data-transfers-done', t.transfers_done);
  if (!t.in_progress) {
    transferRate = null;
    box.append(el('p', {}, `No transition: ring version ${t.ring_version} is stable. `
      + `${t.completed_here} transfers received by this node since it started.`));
    return;
  }
  const now = Date.now() / 1000;
  if (!transferRate || transferRate.version !== t.ring_version) {
    transferRate = { version: t.ring_version, at: now, done: t.transfers_done };
  }
  const elapsed = now - transferRate.at;
  const rate = elapsed > 2 ? (t.transfers_done - transferRate.done) / elapsed : 0;
  const left = t.transfers_total - t.transfers_done;
  const eta = rate > 0 ? `about ${ago(Math.round(left / rate))} left` : 'ETA after the first transfers';
  box.append(
    el('p', {}, `Moving to ring version ${t.ring_version}: ${t.transfers_done} of ${t.transfers_total} transfers `
      + `done, ${eta}.`),
    bar(t.transfers_total ? t.transfers_done / t.transfers_total : 0, true));
  if (t.active) {
    const a = t.active;
    const of = a.total_keys === null ? '' : ` of ${a.total_keys}`;
    box.append(el('p', { class: 'active-transfer' },
      `Receiving partition ${a.partition} from ${a.from} (${a.phase}): ${a.keys}${of} keys, ${bytes(a.bytes)}, `
      + `${a.keys_per_s} keys/s${a.eta_s === null ? '' : `, ${ago(a.eta_s)} left`}`));
  }
  const list = el('div', { class: 'transfers' });
  for (const x of t.transfers.slice(0, 512)) {
    let fraction = x.done ? 1 : 0;
    if (!x.done && t.active && t.active.partition === x.partition && t.active.to === x.to && t.active.total_keys) {
      fraction = t.active.keys / t.active.total_keys;
    }
    list.append(el('div', { 'data-transfer': `${x.partition}:${x.to}`, 'data-done': x.done },
      `p${x.partition} → ${x.to}`, bar(fraction)));
  }
  box.append(list);
}

// Draws series (name → values, oldest first) as lines on one scale.
function chart(id, series) {
  const all = [...series.values()].flat();
  const max = Math.max(1, ...all);
  const lines = [...series].map(([name, values]) => el('svg:polyline', {
    points: values.map((v, i) => `${(i * 400) / Math.max(HISTORY - 1, 1)},${(78 - (v / max) * 74).toFixed(1)}`)
      .join(' '),
    style: name ? `stroke:${colour(name)}` : null,
  }, el('svg:title', {}, `${name || 'total'}: now ${values[values.length - 1]}, peak ${Math.max(...values)}`)));
  replace(id, ...lines);
}

function renderHints(hints) {
  const total = hints.reduce((s, h) => s + h.count, 0);
  // One series per target, kept while it has had hints in the last two minutes.
  history.hints.push(new Map(hints.map((h) => [h.target, h.count])));
  if (history.hints.length > HISTORY) history.hints.shift();
  const targets = new Set(history.hints.flatMap((sample) => [...sample.keys()]));
  const series = new Map([...targets].map((t) => [t, history.hints.map((sample) => sample.get(t) || 0)]));
  const box = replace('hints');
  box.setAttribute('data-hints-total', total);
  if (!hints.length) {
    box.append(el('p', {}, 'No hints held: every write reached its replicas.'));
  } else {
    box.append(el('table', {},
      el('thead', {}, el('tr', {}, el('th', {}, 'for'), el('th', {}, 'hints'), el('th', {}, 'bytes'),
        el('th', {}, 'oldest'))),
      el('tbody', {}, ...hints.map((h) => el('tr', { 'data-hint-target': h.target }, el('td', {}, h.target),
        el('td', {}, h.count), el('td', {}, bytes(h.bytes)), el('td', {}, ago(h.oldest_s)))))));
  }
  chart('hint-chart', series.size ? series : new Map([['', history.hints.map(() => 0)]]));
}

function renderAntiEntropy(ae, partitions) {
  replace('antientropy', el('p', {}, `${ae.exchanges} exchanges, ${ae.keys_repaired} keys repaired, `
    + `${bytes(ae.bytes)} exchanged, ${ae.full_passes} full passes, ${ae.tombstones_reaped} tombstones reaped.`));
  const age = new Map(ae.last_exchange_s);
  const cells = [];
  for (let p = 0; p < partitions; p++) {
    const s = age.get(p);
    const kind = s === undefined ? '' : s < 60 ? 'fresh' : s < 600 ? 'recent' : 'stale';
    const title = s === undefined ? `partition ${p}: no exchange here` : `partition ${p}: exchanged ${ago(s)} ago`;
    cells.push(el('div', { class: kind, 'data-partition': p, title }));
  }
  replace('ae-grid', ...cells);
}

// Prometheus text: the total of dynamo_commands_total and the latency histogram summed over commands.
function parseMetrics(text) {
  let commands = 0;
  const buckets = new Map();
  for (const line of text.split('\n')) {
    if (line.startsWith('dynamo_commands_total{')) {
      commands += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
    } else if (line.startsWith('dynamo_command_seconds_bucket{')) {
      const le = /le="([^"]+)"/.exec(line);
      if (le) {
        const bound = le[1] === '+Inf' ? Infinity : Number(le[1]);
        buckets.set(bound, (buckets.get(bound) || 0) + (Number(line.slice(line.lastIndexOf(' ') + 1)) || 0));
      }
    }
  }
  return { at: Date.now() / 1000, commands, buckets };
}

function percentile(delta, q) {
  const bounds = [...delta.keys()].sort((a, b) => a - b);
  const total = delta.get(Infinity) || 0;
  if (!total) return null;
  for (const b of bounds) {
    if (delta.get(b) >= q * total) return b;
  }
  return Infinity;
}

function ms(bound) {
  if (bound === null) return '—';
  if (bound === Infinity) return '> 5 s';
  return `≤ ${(bound * 1000).toFixed(bound < 0.001 ? 2 : 1)} ms`;
}

function renderRates(metricsText) {
  const now = parseMetrics(metricsText);
  const box = replace('rates');
  if (lastMetrics && now.at > lastMetrics.at) {
    const dt = now.at - lastMetrics.at;
    const rate = Math.max(0, (now.commands - lastMetrics.commands) / dt);
    const delta = new Map();
    for (const [b, v] of now.buckets) delta.set(b, Math.max(0, v - (lastMetrics.buckets.get(b) || 0)));
    history.rates.push(Math.round(rate));
    if (history.rates.length > HISTORY) history.rates.shift();
    box.setAttribute('data-rate', Math.round(rate));
    box.append(el('div', {}, el('b', {}, Math.round(rate)), 'commands/s'),
      el('div', {}, el('b', {}, ms(percentile(delta, 0.5))), 'p50 latency'),
      el('div', {}, el('b', {}, ms(percentile(delta, 0.99))), 'p99 latency'),
      el('div', {}, el('b', {}, now.commands), 'commands since start'));
  } else {
    box.append(el('div', {}, 'measuring…'));
  }
  lastMetrics = now;
  chart('rate-chart', new Map([['', history.rates]]));
}

async function refresh() {
  try {
    const [node, members, ring, transition, hints, ae, metrics, load] = await Promise.all([
      getJson('/api/node'), getJson('/api/members'), getJson('/api/ring'), getJson('/api/transition'),
      getJson('/api/hints'), getJson('/api/antientropy'), getText('/metrics'), getJson('/api/load')]);
    renderSummary(node);
    setMembers(members.map((m) => m.id));
    renderRing(ring, members);
    renderMembers(members, loads(load));
    renderTransition(transition);
    renderHints(hints);
    renderAntiEntropy(ae, ring.partitions.length);
    renderRates(metrics);
    document.getElementById('error').hidden = true;
    document.body.setAttribute('data-refreshed', Date.now());
  } catch (e) {
    // The node is down or restarting: say so and keep trying.
    const box = document.getElementById('error');
    box.textContent = `Cannot reach this node's API (${e.message}); retrying every second.`;
    box.hidden = false;
  }
}

async function lookUp(event) {
  event.preventDefault();
  const key = document.getElementById('key-input').value;
  if (!key) return;
  try {
    const k = await getJson(`/api/key?key=${encodeURIComponent(key)}`);
    replace('key-result', el('table', { 'data-key': key }, el('tbody', {},
      el('tr', {}, el('th', {}, 'partition'), el('td', {}, k.partition === null ? '—' : k.partition)),
      el('tr', {}, el('th', {}, 'hash slot'), el('td', {}, k.slot)),
      el('tr', {}, el('th', {}, 'position'), el('td', {}, el('code', {}, k.position))),
      el('tr', {}, el('th', {}, 'replicas'), el('td', { id: 'key-replicas' }, k.replicas.join(', '))),
      el('tr', {}, el('th', {}, 'fallbacks'), el('td', {}, k.fallbacks.join(', ') || '—')))));
  } catch (e) {
    replace('key-result', el('p', { class: 'error' }, e.message));
  }
}

document.getElementById('key-form').addEventListener('submit', lookUp);
refresh();
setInterval(refresh, REFRESH_MS);
