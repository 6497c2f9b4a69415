#!/usr/bin/env node
// node-redis (Debian's node-redis 4.5) against the cluster compat/clients.sh starts: see that script for what is
// checked. Run with NODE_PATH=/usr/share/nodejs.
'use strict';
const { createClient } = require('redis');

const PORTS = process.env.PORTS.split(' ').map(Number);
let passed = 0;
let failed = 0;
function check(what, ok) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'PASS' : 'FAIL'} node-redis: ${what}`);
}
async function refused(pattern, promise) {
  try {
    await promise;
    return false;
  } catch (e) {
    return pattern.test(String(e.message || e));
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function app(port) {
  const c = createClient({ socket: { host: '127.0.0.1', port }, username: 'app', password: 'app-secret' });
  c.on('error', () => {});
  await c.connect();
  return c;
}

async function main() {
  const r = await app(PORTS[0]);
  check('plain get', await r.set('nr:k', 'v') === 'OK' && await r.get('nr:k') === 'v'
    && await r.get('nr:none') === null);

  // Commands issued together go out as one pipeline.
  const res = await Promise.all([...Array(100).keys()].map((i) => r.set(`nr:p${i}`, `${i}`)).concat([r.get('nr:p99')]));
  check('pipeline answered in order', res.length === 101 && res[0] === 'OK' && res[100] === '99');
  const batch = await r.multi().set('nr:b', '1').get('nr:b').execAsPipeline();
  check('multi as a pipeline', JSON.stringify(batch) === '["OK","1"]');

  const tx = await r.multi().set('nr:tx:a', '1').incr('nr:tx:n').get('nr:tx:a').exec();
  check('transaction', JSON.stringify(tx) === '["OK",1,"1"]');
  // node-redis sends MULTI, the commands and EXEC in one batch.
  check('transaction with an unknown command aborts', await refused(/EXECABORT|unknown command/,
    r.multi().set('nr:tx:c', '1').addCommand(['NOSUCHCOMMAND', 'x']).exec()));
  check('aborted transaction applied nothing', await r.get('nr:tx:c') === null && await r.ping() === 'PONG');
  check('WATCH refused', await refused(/WATCH is not supported/, r.watch('nr:k')));

  check('mset', await r.mSet({ 'nr:m1': 'a', 'nr:m2': 'b' }) === 'OK');
  check('mget', JSON.stringify(await r.mGet(['nr:m1', 'nr:none', 'nr:m2'])) === '["a",null,"b"]');
  check('del many', await r.del(['nr:m1', 'nr:m2', 'nr:none']) === 2);

  check('set ex, ttl', await r.set('nr:e', 'v', { EX: 100 }) === 'OK' && [99, 100].includes(await r.ttl('nr:e')));
  check('expire, persist', await r.expire('nr:e', 50) === true && await r.pTTL('nr:e') <= 50000
    && await r.persist('nr:e') === true && await r.ttl('nr:e') === -1);
  check('setex', await r.setEx('nr:x', 30, 'v') === 'OK' && await r.get('nr:x') === 'v' && await r.ttl('nr:x') > 0);
  check('set nx px', await r.set('nr:short', 'v', { NX: true, PX: 300 }) === 'OK'
    && await r.set('nr:short', 'w', { NX: true, PX: 300 }) === null);
  await sleep(1200);
  check('expired key reads as absent', await r.get('nr:short') === null && await r.exists('nr:short') === 0
    && await r.ttl('nr:short') === -2);

  check('incr', await r.incr('nr:n') === 1 && await r.incrBy('nr:n', 9) === 10 && await r.get('nr:n') === '10');
  check('sets', await r.sAdd('nr:s', ['a', 'b']) === 2 && (await r.sMembers('nr:s')).sort().join() === 'a,b');
  check('hashes', await r.hSet('nr:h', { f: '1', g: '2' }) === 2
    && JSON.stringify(await r.hGetAll('nr:h')) === '{"f":"1","g":"2"}');
  check('lists', await r.rPush('nr:l', ['a', 'b']) === 2 && await r.lPush('nr:l', 'z') === 3
    && (await r.lRange('nr:l', 0, -1)).join() === 'z,a,b');
  check('sorted sets', await r.zAdd('nr:z', [{ score: 1.5, value: 'a' }, { score: 0.5, value: 'b' }]) === 2
    && (await r.zRange('nr:z', 0, -1)).join() === 'b,a');
  check('type', await r.type('nr:z') === 'zset' && await r.type('nr:k') === 'string');

  // The versioned mode through sendCommand: siblings and a context, and a write that supersedes what it covers.
  check('client values versioned', await r.sendCommand(['CLIENT', 'VALUES', 'VERSIONED']) === 'OK');
  const got = await r.sendCommand(['GET', 'nr:k']);
  check('versioned get', Array.isArray(got) && JSON.stringify(got[0]) === '["v"]' && typeof got[1] === 'string');
  check('set with context', await r.sendCommand(['SET', 'nr:k', 'w', 'CONTEXT', got[1]]) === 'OK');
  check('back to plain', await r.sendCommand(['CLIENT', 'VALUES', 'PLAIN']) === 'OK' && await r.get('nr:k') === 'w');

  // Key iteration over the cluster: written through one node, scanned through another.
  for (let b = 0; b < 10; b++) {
    const pairs = {};
    for (let i = b * 1000; i < (b + 1) * 1000; i++) pairs[`nr:scan:${i}`] = 'v';
    await r.mSet(pairs);
  }
  const other = await app(PORTS[1]);
  const seen = new Set();
  for await (const key of other.scanIterator({ MATCH: 'nr:scan:*', COUNT: 500 })) seen.add(key);
  check('scan through another node sees all 10000 keys', seen.size === 10000);
  check('keys with a pattern', (await other.keys('nr:scan:99*')).length === 111);
  await other.quit();
  await r.quit();
}

main()
  .catch((e) => check(`no exception: ${e.stack || e}`, false))
  .finally(() => {
    console.log(`node-redis: ${passed} passed, ${failed} failed`);
    process.exit(failed ? 1 : 0);
  });
