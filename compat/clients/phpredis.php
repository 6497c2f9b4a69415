<?php
// phpredis (Debian's php-redis) against the cluster compat/clients.sh starts: see that script for what is checked.
$ports = explode(' ', getenv('PORTS'));
$passed = 0;
$failed = 0;
function check($what, $ok) {
    global $passed, $failed;
    if ($ok) { $passed++; } else { $failed++; }
    echo ($ok ? 'PASS' : 'FAIL') . " phpredis: $what\n";
}
function connect_as_app($port) {
    $r = new Redis();
    $r->connect('127.0.0.1', (int)$port, 10);
    $r->setOption(Redis::OPT_READ_TIMEOUT, 10);
    $r->auth(['app', 'app-secret']);
    return $r;
}

try {
    $r = connect_as_app($ports[0]);
    check('plain get', $r->set('php:k', 'v') === true && $r->get('php:k') === 'v' && $r->get('php:none') === false);
    check('the connection stays in step', $r->ping() === true && $r->get('php:k') === 'v');

    $r->pipeline();
    for ($i = 0; $i < 100; $i++) { $r->set("php:p$i", "$i"); }
    $r->get('php:p99');
    $res = $r->exec();
    check('pipeline answered in order', count($res) === 101 && $res[0] === true && $res[100] === '99');

    $r->del('php:tx:n', 'php:tx:c');
    $res = $r->multi()->set('php:tx:a', '1')->incr('php:tx:n')->get('php:tx:a')->exec();
    check('transaction', $res === [true, 1, '1']);
    // MULTI, the commands and EXEC sent in one batch. phpredis checks arity itself and cannot queue a raw command,
    // so the refused command is one we do not offer.
    $r->pipeline();
    $r->multi();
    $r->set('php:tx:c', '1');
    $r->pfAdd('php:tx:hll', ['a']);
    $r->exec();
    $res = $r->exec();
    check('transaction with an unknown command (PFADD) aborts', $res === [[]]
        && strpos((string)$r->getLastError(), "unknown command 'PFADD'") !== false);
    $r->clearLastError();
    check('aborted transaction applied nothing', $r->get('php:tx:c') === false && $r->ping() === true);
    check('WATCH refused', $r->watch('php:k') === false
        && strpos((string)$r->getLastError(), 'WATCH is not supported') !== false);
    $r->clearLastError();

    check('mset', $r->mset(['php:m1' => 'a', 'php:m2' => 'b']) === true);
    check('mget', $r->mget(['php:m1', 'php:none', 'php:m2']) === ['a', false, 'b']);
    check('del many', $r->del('php:m1', 'php:m2', 'php:none') === 2);

    check('set ex, ttl', $r->set('php:e', 'v', ['ex' => 100]) === true && in_array($r->ttl('php:e'), [99, 100]));
    check('expire, persist', $r->expire('php:e', 50) === true && $r->pttl('php:e') <= 50000
        && $r->persist('php:e') === true && $r->ttl('php:e') === -1);
    check('setex', $r->setex('php:x', 30, 'v') === true && $r->get('php:x') === 'v' && $r->ttl('php:x') > 0);
    check('set nx px', $r->set('php:short', 'v', ['nx', 'px' => 300]) === true
        && $r->set('php:short', 'w', ['nx', 'px' => 300]) === false);
    usleep(1200000);
    check('expired key reads as absent', $r->get('php:short') === false && $r->exists('php:short') === 0
        && $r->ttl('php:short') === -2);

    check('incr', $r->incr('php:n') === 1 && $r->incrBy('php:n', 9) === 10 && $r->get('php:n') === '10');
    check('sets', $r->sAdd('php:s', 'a', 'b') === 2 && count(array_diff(['a', 'b'], $r->sMembers('php:s'))) === 0);
    check('hashes', $r->hMSet('php:h', ['f' => '1', 'g' => '2']) === true
        && $r->hGetAll('php:h') == ['f' => '1', 'g' => '2']);
    check('lists', $r->rPush('php:l', 'a', 'b') === 2 && $r->lPush('php:l', 'z') === 3
        && $r->lRange('php:l', 0, -1) === ['z', 'a', 'b']);
    check('sorted sets', $r->zAdd('php:z', 1.5, 'a', 0.5, 'b') === 2 && $r->zRange('php:z', 0, -1) === ['b', 'a']);
    check('type', $r->type('php:z') === Redis::REDIS_ZSET && $r->type('php:k') === Redis::REDIS_STRING);

    // The versioned mode through rawCommand: siblings and a context, and a write that supersedes what it covers.
    check('client values versioned', $r->rawCommand('CLIENT', 'VALUES', 'VERSIONED') === true);
    $got = $r->rawCommand('GET', 'php:k');
    check('versioned get', is_array($got) && $got[0] === ['v'] && is_string($got[1]));
    check('set with context', $r->rawCommand('SET', 'php:k', 'w', 'CONTEXT', $got[1]) === true);
    check('back to plain', $r->rawCommand('CLIENT', 'VALUES', 'PLAIN') === true && $r->get('php:k') === 'w');

    // Key iteration over the cluster: written through one node, scanned through another.
    for ($b = 0; $b < 10; $b++) {
        $batch = [];
        for ($i = $b * 1000; $i < ($b + 1) * 1000; $i++) { $batch["php:scan:$i"] = 'v'; }
        $r->mset($batch);
    }
    $other = connect_as_app($ports[1]);
    $other->setOption(Redis::OPT_SCAN, Redis::SCAN_RETRY);
    $seen = [];
    $it = null;
    while (($keys = $other->scan($it, 'php:scan:*', 500)) !== false) {
        foreach ($keys as $k) { $seen[$k] = true; }
    }
    check('scan through another node sees all 10000 keys', count($seen) === 10000);
    check('keys with a pattern', count($other->keys('php:scan:99*')) === 111);
} catch (Throwable $e) {
    check('no exception: ' . get_class($e) . ': ' . $e->getMessage(), false);
}
echo "phpredis: $passed passed, $failed failed\n";
exit($failed ? 1 : 0);
