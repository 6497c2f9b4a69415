# redis-rb (Debian's ruby-redis) against the cluster compat/clients.sh starts: see that script for what is checked.
require 'redis'

PORTS = ENV.fetch('PORTS').split.map(&:to_i)
$passed = 0
$failed = 0
def check(what, ok)
  ok ? $passed += 1 : $failed += 1
  puts "#{ok ? 'PASS' : 'FAIL'} redis-rb: #{what}"
end

def refused(pattern)
  yield
  false
rescue Redis::CommandError => e
  e.message.include?(pattern)
end

def app(port)
  Redis.new(host: '127.0.0.1', port: port, username: 'app', password: 'app-secret', timeout: 10)
end

begin
  r = app(PORTS[0])
  check('plain get', r.set('rb:k', 'v') == 'OK' && r.get('rb:k') == 'v' && r.get('rb:none').nil?)

  res = r.pipelined do |p|
    100.times { |i| p.set("rb:p#{i}", i.to_s) }
    p.get('rb:p99')
  end
  check('pipeline answered in order', res.length == 101 && res[0] == 'OK' && res[100] == '99')

  res = r.multi do |m|
    m.set('rb:tx:a', '1')
    m.incr('rb:tx:n')
    m.get('rb:tx:a')
  end
  check('transaction', res == ['OK', 1, '1'])
  # redis-rb sends MULTI, the commands and EXEC in one batch, and raises the first error (as against Redis).
  aborted = refused("unknown command 'nosuchcommand'") do
    r.multi do |m|
      m.set('rb:tx:c', '1')
      m.call(:nosuchcommand, 'x')
    end
  end
  check('transaction with an unknown command aborts', aborted)
  check('aborted transaction applied nothing', r.get('rb:tx:c').nil? && r.ping == 'PONG')
  check('WATCH refused', refused('WATCH is not supported') { r.watch('rb:k') })

  check('mset', r.mapped_mset('rb:m1' => 'a', 'rb:m2' => 'b') == 'OK')
  check('mget', r.mget('rb:m1', 'rb:none', 'rb:m2') == ['a', nil, 'b'])
  check('del many', r.del('rb:m1', 'rb:m2', 'rb:none') == 2)

  check('set ex, ttl', r.set('rb:e', 'v', ex: 100) == 'OK' && [99, 100].include?(r.ttl('rb:e')))
  check('expire, persist', r.expire('rb:e', 50) == true && r.pttl('rb:e') <= 50_000 && r.persist('rb:e') == true &&
                           r.ttl('rb:e') == -1)
  check('setex', r.setex('rb:x', 30, 'v') == 'OK' && r.get('rb:x') == 'v' && r.ttl('rb:x').positive?)
  check('set nx px', r.set('rb:short', 'v', nx: true, px: 300) == true &&
                     r.set('rb:short', 'w', nx: true, px: 300) == false)
  sleep 1.2
  check('expired key reads as absent', r.get('rb:short').nil? && r.exists('rb:short').zero? && r.ttl('rb:short') == -2)

  check('incr', r.incr('rb:n') == 1 && r.incrby('rb:n', 9) == 10 && r.get('rb:n') == '10')
  check('sets', r.sadd('rb:s', %w[a b]) == 2 && r.smembers('rb:s').sort == %w[a b])
  check('hashes', r.mapped_hmset('rb:h', 'f' => '1', 'g' => '2') == 'OK' &&
                  r.hgetall('rb:h') == { 'f' => '1', 'g' => '2' })
  check('lists', r.rpush('rb:l', %w[a b]) == 2 && r.lpush('rb:l', 'z') == 3 && r.lrange('rb:l', 0, -1) == %w[z a b])
  check('sorted sets', r.zadd('rb:z', [[1.5, 'a'], [0.5, 'b']]) == 2 &&
                       r.zrange('rb:z', 0, -1, with_scores: true) == [['b', 0.5], ['a', 1.5]])
  check('type', r.type('rb:z') == 'zset' && r.type('rb:k') == 'string')

  # The versioned mode through redis-rb's call: siblings and a context, and a write that supersedes what it covers.
  check('client values versioned', r.call(:client, 'values', 'versioned') == 'OK')
  got = r.call(:get, 'rb:k')
  check('versioned get', got.is_a?(Array) && got[0] == ['v'] && got[1].is_a?(String))
  check('set with context', r.call(:set, 'rb:k', 'w', 'CONTEXT', got[1]) == 'OK')
  check('back to plain', r.call(:client, 'values', 'plain') == 'OK' && r.get('rb:k') == 'w')

  # Key iteration over the cluster: written through one node, scanned through another.
  10.times { |b| r.mapped_mset((b * 1000...(b + 1) * 1000).to_h { |i| ["rb:scan:#{i}", 'v'] }) }
  other = app(PORTS[1])
  seen = other.scan_each(match: 'rb:scan:*', count: 500).to_a.uniq
  check('scan through another node sees all 10000 keys', seen.length == 10_000)
  check('keys with a pattern', other.keys('rb:scan:99*').length == 111)
rescue StandardError => e
  check("no exception: #{e.class}: #{e.message}", false)
end
puts "redis-rb: #{$passed} passed, #{$failed} failed"
exit($failed.zero? ? 0 : 1)
