#!/usr/bin/perl
# Perl Redis (Debian's libredis-perl) against the cluster compat/clients.sh starts: see that script for what is
# checked. It connects as the default user (versioned replies) and turns its connection to the plain mode with
# CLIENT VALUES PLAIN on every connect.
use strict;
use warnings;
use Redis;
use Time::HiRes qw(sleep);

my @ports = split ' ', $ENV{PORTS};
my ($passed, $failed) = (0, 0);
sub check {
    my ($what, $ok) = @_;
    if ($ok) { $passed++ } else { $failed++ }
    print(($ok ? 'PASS' : 'FAIL') . " Perl Redis: $what\n");
}
sub refused { # refused(pattern, code): the code dies with an error that matches
    my ($pattern, $code) = @_;
    my $ok = eval { $code->(); 1 };
    return !$ok && $@ =~ $pattern;
}
sub plain {
    my ($port) = @_;
    return Redis->new(server => "127.0.0.1:$port", password => 'default-secret', read_timeout => 10,
        on_connect => sub { $_[0]->client_values('PLAIN') });
}

eval {
    my $r = plain($ports[0]);
    check('plain get', $r->set('pl:k', 'v') eq 'OK' && $r->get('pl:k') eq 'v' && !defined $r->get('pl:none'));

    my @res;
    $r->set("pl:p$_", $_, sub { push @res, $_[0] }) for 0 .. 99;
    $r->get('pl:p99', sub { push @res, $_[0] });
    $r->wait_all_responses;
    check('pipeline answered in order', @res == 101 && $res[0] eq 'OK' && $res[100] eq '99');

    $r->multi;
    $r->set('pl:tx:a', '1');
    $r->incr('pl:tx:n');
    $r->get('pl:tx:a');
    my @tx = $r->exec;
    check('transaction', "@tx" eq 'OK 1 1');
    $r->multi;
    $r->set('pl:tx:c', '1');
    check('a command we do not offer is refused while queuing', refused(qr/unknown command 'nosuchcommand'/i,
        sub { $r->nosuchcommand('x') }));
    check('transaction with an unknown command aborts', refused(qr/EXECABORT/, sub { $r->exec }));
    check('aborted transaction applied nothing', !defined $r->get('pl:tx:c') && $r->ping eq 'PONG');
    check('WATCH refused', refused(qr/WATCH is not supported/, sub { $r->watch('pl:k') }));

    check('mset', $r->mset('pl:m1' => 'a', 'pl:m2' => 'b') eq 'OK');
    my @got = $r->mget('pl:m1', 'pl:none', 'pl:m2');
    check('mget', @got == 3 && $got[0] eq 'a' && !defined $got[1] && $got[2] eq 'b');
    check('del many', $r->del('pl:m1', 'pl:m2', 'pl:none') == 2);

    check('set ex, ttl', $r->set('pl:e', 'v', 'EX', 100) eq 'OK' && $r->ttl('pl:e') >= 99);
    check('expire, persist', $r->expire('pl:e', 50) == 1 && $r->pttl('pl:e') <= 50000 && $r->persist('pl:e') == 1
        && $r->ttl('pl:e') == -1);
    check('setex', $r->setex('pl:x', 30, 'v') eq 'OK' && $r->get('pl:x') eq 'v' && $r->ttl('pl:x') > 0);
    check('set nx px', $r->set('pl:short', 'v', 'NX', 'PX', 300) eq 'OK'
        && !defined $r->set('pl:short', 'w', 'NX', 'PX', 300));
    sleep 1.2;
    check('expired key reads as absent', !defined $r->get('pl:short') && $r->exists('pl:short') == 0
        && $r->ttl('pl:short') == -2);

    check('incr', $r->incr('pl:n') == 1 && $r->incrby('pl:n', 9) == 10 && $r->get('pl:n') eq '10');
    check('sets', $r->sadd('pl:s', 'a', 'b') == 2 && join(',', sort $r->smembers('pl:s')) eq 'a,b');
    my %h = ($r->hset('pl:h', 'f', '1', 'g', '2') == 2) ? $r->hgetall('pl:h') : ();
    check('hashes', ($h{f} // '') eq '1' && ($h{g} // '') eq '2' && keys %h == 2);
    check('lists', $r->rpush('pl:l', 'a', 'b') == 2 && $r->lpush('pl:l', 'z') == 3
        && join(',', $r->lrange('pl:l', 0, -1)) eq 'z,a,b');
    check('sorted sets', $r->zadd('pl:z', 1.5, 'a', 0.5, 'b') == 2 && join(',', $r->zrange('pl:z', 0, -1)) eq 'b,a');
    check('type', $r->type('pl:z') eq 'zset' && $r->type('pl:k') eq 'string');

    # The default user's versioned mode: siblings and a context, and a write that supersedes what it covers.
    check('client values versioned', $r->client_values('VERSIONED') eq 'OK');
    my ($siblings, $context) = $r->get('pl:k');
    check('versioned get', ref $siblings eq 'ARRAY' && "@$siblings" eq 'v' && length $context);
    check('set with context', $r->set('pl:k', 'w', 'CONTEXT', $context) eq 'OK');
    check('back to plain', $r->client_values('PLAIN') eq 'OK' && $r->get('pl:k') eq 'w');

    # Key iteration over the cluster: written through one node, scanned through another.
    for my $b (0 .. 9) {
        $r->mset(map { ("pl:scan:$_", 'v') } $b * 1000 .. $b * 1000 + 999);
    }
    my $other = plain($ports[1]);
    my ($cursor, %seen) = (0);
    do {
        my ($next, $keys) = $other->scan($cursor, 'MATCH', 'pl:scan:*', 'COUNT', 500);
        $seen{$_} = 1 for @$keys;
        $cursor = $next;
    } while ($cursor ne '0');
    check('scan through another node sees all 10000 keys', keys %seen == 10000);
    my @some = $other->keys('pl:scan:99*');
    check('keys with a pattern', @some == 111);
    1;
} or check("no exception: $@", 0);
print "Perl Redis: $passed passed, $failed failed\n";
exit($failed ? 1 : 0);
