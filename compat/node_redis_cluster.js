#!/usr/bin/env node
// node-redis's createCluster (Debian's node-redis 4.5) against a 5-node cluster, unmodified: it learns the slot
// map from CLUSTER SLOTS and sends each key to one of its replicas, so writes are not forwarded; its user is
// configured with `values = "plain"`, so get() returns strings as against Redis; when a node is killed nothing is
// lost. Run with NODE_PATH=/usr/share/nodejs (compat/run.sh sets it).
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { createClient, createCluster } = require('redis');
const calculateSlot = require('cluster-key-slot');

const BIN = process.env.DYNAMO_KV_BIN || 'target/debug/dynamo-kv';
const BASE = parseInt(process.env.PORT || '7321', 10);
const KEYS = parseInt(process.env.KEYS || '10000', 10);
const USER = { username: 'app', password: 'app-secret' };
let passed = 0;
let failed = 0;
function check(what, ok) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${what}`);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// node-redis queues a command for a node it is reconnecting to and may never settle it: bound every call.
function bounded(promise, ms = 5000) {
  return Promise.race([promise, sleep(ms).then(() => { throw new Error(`no reply in ${ms} ms`); })]);
}

function start(i) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dkv-node-'));
  const config = path.join(dir, 'node.toml');
  fs.writeFileSync(config, `[[users]]\nname = "app"\npassword = "app-secret"\naccess = "admin"\nvalues = "plain"\n`);
  const args = ['serve', '--node-id', `nr${i}`, '--listen', `127.0.0.1:${BASE + i}`,
    '--peer-listen', `127.0.0.1:${BASE + 10000 + i}`, '--data-dir', path.join(dir, 'data'), '--config', config,
    '--membership-interval-ms', '200', '--request-timeout-ms', '1000'];
  if (i > 0) args.push('--seeds', `127.0.0.1:${BASE + 10000}`);
  return spawn(BIN, args, { stdio: ['ignore', 'ignore', 'ignore'] });
}

async function node(i) {
  const c = createClient({ socket: { host: '127.0.0.1', port: BASE + i, reconnectStrategy: false }, ...USER });
  c.on('error', () => {});
  await c.connect();
  return c;
}

async function info(i, field) {
  const c = await node(i);
  try {
    const text = await c.sendCommand(['INFO', 'all']);
    const line = text.split('\r\n').find((l) => l.startsWith(`${field}:`));
    return line ? line.slice(field.length + 1) : undefined;
  } finally {
    await c.quit();
  }
}

async function settled(count) {
  const deadline = Date.now() + 60000;
  for (;;) {
    let ok = true;
    for (let i = 0; i < count && ok; i++) {
      try {
        ok = (await info(i, 'members')) === String(count) && (await info(i, 'ring_transition')) === 'none'
          && (await info(i, 'recovery')) === 'none';
      } catch (e) {
        ok = false;
      }
    }
    if (ok) return;
    if (Date.now() > deadline) throw new Error('cluster did not settle');
    await sleep(200);
  }
}

async function forwarded(ids) {
  let sum = 0;
  for (const i of ids) sum += parseInt(await info(i, 'writes_forwarded'), 10);
  return sum;
}

async function inChunks(ids, f) {
  const out = [];
  for (let i = 0; i < ids.length; i += 100) out.push(...await Promise.all(ids.slice(i, i + 100).map(f)));
  return out;
}

async function main() {
  const procs = [];
  for (let i = 0; i < 5; i++) {
    procs.push(start(i));
    await sleep(i === 0 ? 500 : 100);
  }
  try {
    await settled(5);
    const cluster = createCluster({
      rootNodes: [{ url: `redis://127.0.0.1:${BASE}` }],
      defaults: { ...USER, socket: { connectTimeout: 2000 } },
    });
    cluster.on('error', () => {});
    await cluster.connect();
    check('the client sees 5 masters', cluster.getMasters().length === 5);
    const ids = [...Array(KEYS).keys()];
    const before = await forwarded([0, 1, 2, 3, 4]);
    await inChunks(ids, (i) => cluster.set(`nr${i}`, `v${i}`));
    const got = await inChunks(ids, (i) => cluster.get(`nr${i}`));
    check(`${KEYS} keys written and read back as strings`, got.every((v, i) => v === `v${i}`));
    const fwd = (await forwarded([0, 1, 2, 3, 4])) - before;
    check(`writes go to a replica of their key (${fwd} of ${KEYS} forwarded)`, fwd <= KEYS / 100);

    // node-redis 4.5 refreshes its map only on MOVED or ASK, never on a connection error, and queues a dead node's
    // commands until it comes back (as it would with Redis Cluster): its slots stay routed there. Every other
    // slot carries on through the client, and a plain client through any node reads the dead node's keys.
    const onDead = (i) => cluster.getSlotMaster(calculateSlot(`nr${i}`)).id === 'nr4';
    procs[4].kill('SIGKILL');
    const live = ids.filter((i) => !onDead(i));
    const readBack = await inChunks(live, async (i) => {
      try {
        return (await bounded(cluster.get(`nr${i}`))) === `v${i}`;
      } catch (e) {
        return false;
      }
    });
    check(`after a node is killed the ${live.length} keys of live slots read back`, readBack.every((ok) => ok));
    const wrote = await inChunks(live.slice(0, 1000), async (i) => {
      try {
        await bounded(cluster.set(`nr${i}`, `w${i}`));
        return (await bounded(cluster.get(`nr${i}`))) === `w${i}`;
      } catch (e) {
        return false;
      }
    });
    check('and writes go on', wrote.every((ok) => ok));
    const plain = await node(0);
    const deadKeys = ids.filter(onDead);
    const found = await inChunks(deadKeys, async (i) => (await plain.get(`nr${i}`)) === `v${i}`);
    check(`the dead node's ${deadKeys.length} keys read back through any node`, found.every((ok) => ok));
    await plain.quit();
    await bounded(cluster.disconnect()).catch(() => {});
  } finally {
    for (const p of procs) p.kill('SIGKILL');
  }
  console.log(`node-redis cluster: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.log(`FAIL ${e.stack || e}`);
  console.log(`node-redis cluster: ${passed} passed, ${failed + 1} failed`);
  process.exit(1);
});
