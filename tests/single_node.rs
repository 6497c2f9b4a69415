//! One real node driven with the `redis` crate: the paper's shopping cart, durability across restart and kill -9,
//! and the client protocol's edges.

mod common;

use common::{TestNode, get, raw_exchange};
use redis::AsyncCommands;

async fn set_ctx(con: &mut redis::aio::MultiplexedConnection, key: &str, value: &str, ctx: &str) {
    let r: String = redis::cmd("SET").arg(key).arg(value).arg("CONTEXT").arg(ctx).query_async(con).await.unwrap();
    assert_eq!(r, "OK");
}

/// Paper §4.4: concurrent writes become siblings; a write whose context covers them reconciles them.
#[tokio::test]
async fn shopping_cart_siblings_and_reconciliation() {
    let node = TestNode::start(&[]);
    let mut c = node.conn().await;
    let (vals, ctx) = get(&mut c, "cart").await;
    assert!(vals.is_empty(), "never-written key: no siblings");
    let empty = ctx.expect("a never-written key still reads with a context");
    // Two clients that both found the cart missing create it: both writes stay, as siblings.
    set_ctx(&mut c, "cart", "[]", &empty).await;
    set_ctx(&mut c, "cart", "[cup]", &empty).await;
    assert_eq!(get(&mut c, "cart").await.0, vec!["[]", "[cup]"]);

    let _: () = c.set("cart", "[]").await.unwrap();
    let (vals, ctx0) = get(&mut c, "cart").await;
    assert_eq!(vals, vec!["[]"]);
    let ctx0 = ctx0.unwrap();

    // Two clients read the same context and write through the same node.
    set_ctx(&mut c, "cart", "[book]", &ctx0).await;
    set_ctx(&mut c, "cart", "[pen]", &ctx0).await;
    let (vals, ctx1) = get(&mut c, "cart").await;
    assert_eq!(vals, vec!["[book]", "[pen]"], "both concurrent writes survive as siblings");

    // The client merges and writes back with the context that covers both.
    set_ctx(&mut c, "cart", "[book,pen]", &ctx1.unwrap()).await;
    let (vals, _) = get(&mut c, "cart").await;
    assert_eq!(vals, vec!["[book,pen]"]);

    // A stale context supersedes only what it covered: the reconciled value stays as a sibling.
    set_ctx(&mut c, "cart", "[stale]", &ctx0).await;
    let (vals, _) = get(&mut c, "cart").await;
    assert_eq!(vals, vec!["[book,pen]", "[stale]"]);

    // A blind SET leaves one value, like Redis.
    let _: () = c.set("cart", "[final]").await.unwrap();
    assert_eq!(get(&mut c, "cart").await.0, vec!["[final]"]);

    // DEL: empty siblings, but a context (the tombstone's).
    let n: i64 = c.del("cart").await.unwrap();
    assert_eq!(n, 1);
    let (vals, ctx) = get(&mut c, "cart").await;
    assert!(vals.is_empty());
    assert!(ctx.is_some(), "a deleted key still has a context");
    let n: i64 = c.del("cart").await.unwrap();
    assert_eq!(n, 0, "deleting a deleted key counts nothing");
}

#[tokio::test]
async fn context_delete_keeps_concurrent_writes() {
    let node = TestNode::start(&[]);
    let mut c = node.conn().await;
    let _: () = c.set("k", "v1").await.unwrap();
    let (_, ctx) = get(&mut c, "k").await;
    let ctx = ctx.unwrap();
    // Someone writes concurrently with our delete.
    set_ctx(&mut c, "k", "v2", &ctx).await;
    let n: i64 = redis::cmd("DELCTX").arg("k").arg(&ctx).query_async(&mut c).await.unwrap();
    assert_eq!(n, 0, "v1 was already superseded by v2 on this node");
    assert_eq!(get(&mut c, "k").await.0, vec!["v2"], "the concurrent write survives the delete");
    let (_, ctx) = get(&mut c, "k").await;
    let n: i64 = redis::cmd("DELCTX").arg("k").arg(ctx.unwrap()).query_async(&mut c).await.unwrap();
    assert_eq!(n, 1);
    assert!(get(&mut c, "k").await.0.is_empty());
}

#[tokio::test]
async fn bad_context_is_refused_and_writes_nothing() {
    let node = TestNode::start(&[]);
    let mut c = node.conn().await;
    let _: () = c.set("k", "v").await.unwrap();
    let (_, ctx) = get(&mut c, "k").await;
    let mut bad = ctx.unwrap();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    for token in [bad.as_str(), "", "%%%", "AAAA"] {
        let err = redis::cmd("SET")
            .arg("k")
            .arg("evil")
            .arg("CONTEXT")
            .arg(token)
            .query_async::<String>(&mut c)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("invalid context"), "{err}");
        let err = redis::cmd("DELCTX").arg("k").arg(token).query_async::<i64>(&mut c).await.unwrap_err();
        assert!(err.to_string().contains("invalid context"), "{err}");
    }
    assert_eq!(get(&mut c, "k").await.0, vec!["v"]);
    // A genuine token of another key is refused too: it would remove versions this client never read.
    let _: () = c.set("other", "o").await.unwrap();
    let (_, other_ctx) = get(&mut c, "other").await;
    let err = redis::cmd("SET")
        .arg("k")
        .arg("evil")
        .arg("CONTEXT")
        .arg(other_ctx.unwrap())
        .query_async::<String>(&mut c)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid context"), "{err}");
    assert_eq!(get(&mut c, "k").await.0, vec!["v"]);
}

#[tokio::test]
async fn sibling_hard_limit_refuses_the_write() {
    let node = TestNode::start(&["--sibling-soft-limit", "2", "--sibling-hard-limit", "3"]);
    let mut c = node.conn().await;
    let _: () = c.set("k", "v0").await.unwrap();
    let (_, ctx0) = get(&mut c, "k").await;
    let ctx0 = ctx0.unwrap();
    // Three writes from the same stale context: three concurrent siblings, the hard limit.
    for v in ["a", "b", "c"] {
        set_ctx(&mut c, "k", v, &ctx0).await;
    }
    assert_eq!(get(&mut c, "k").await.0, vec!["a", "b", "c"]);
    let err =
        redis::cmd("SET").arg("k").arg("d").arg("CONTEXT").arg(&ctx0).query_async::<String>(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("hard limit 3"), "{err}");
    assert_eq!(get(&mut c, "k").await.0, vec!["a", "b", "c"], "the refused write changed nothing");
    // Resolving with the full context is always possible.
    let (_, ctx) = get(&mut c, "k").await;
    set_ctx(&mut c, "k", "abc", &ctx.unwrap()).await;
    assert_eq!(get(&mut c, "k").await.0, vec!["abc"]);
}

#[tokio::test]
async fn everything_acknowledged_survives_restart_and_kill9() {
    let mut node = TestNode::start(&[]);
    let mut c = node.conn().await;
    for i in 0..500 {
        let _: () = c.set(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    let _: () = c.set("cart", "a").await.unwrap();
    let (_, ctx) = get(&mut c, "cart").await;
    set_ctx(&mut c, "cart", "b", ctx.as_ref().unwrap()).await;
    set_ctx(&mut c, "cart", "c", ctx.as_ref().unwrap()).await;
    let _: i64 = c.del("k0").await.unwrap();
    let info: String = redis::cmd("INFO").arg("dynamo").query_async(&mut c).await.unwrap();
    let actor = field(&info, "actor");
    drop(c);

    assert!(node.stop().success(), "graceful shutdown exits 0");
    node.restart();
    let mut c = node.conn().await;
    check_data(&mut c).await;
    let info: String = redis::cmd("INFO").arg("dynamo").query_async(&mut c).await.unwrap();
    assert_eq!(field(&info, "start"), "clean");
    assert_eq!(field(&info, "actor"), actor, "a clean restart keeps the actor");

    // Writes right before kill -9 are acknowledged, so they must survive it.
    for i in 500..1000 {
        let _: () = c.set(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    drop(c);
    node.kill9();
    node.restart();
    let mut c = node.conn().await;
    check_data(&mut c).await;
    for i in 500..1000 {
        assert_eq!(get(&mut c, &format!("k{i}")).await.0, vec![format!("v{i}")]);
    }
    let info: String = redis::cmd("INFO").arg("dynamo").query_async(&mut c).await.unwrap();
    assert_eq!(field(&info, "start"), "unclean");
    assert_ne!(field(&info, "actor"), actor, "after a crash the node must not reuse its actor");
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(n, 1000, "k1..k999 plus cart");
}

async fn check_data(c: &mut redis::aio::MultiplexedConnection) {
    for i in 1..500 {
        assert_eq!(get(c, &format!("k{i}")).await.0, vec![format!("v{i}")]);
    }
    let (vals, ctx) = get(c, "k0").await;
    assert!(vals.is_empty() && ctx.is_some(), "the delete survived");
    assert_eq!(get(c, "cart").await.0, vec!["b", "c"], "siblings survived");
}

fn field(info: &str, name: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("INFO has no {name}: {info}"))
        .trim()
        .to_string()
}

#[tokio::test]
async fn every_durability_mode_survives_a_graceful_restart() {
    for mode in ["fsync", "os", "buffered"] {
        let mut node = TestNode::start(&["--durability", mode]);
        let mut c = node.conn().await;
        for i in 0..200 {
            let _: () = c.set(format!("k{i}"), format!("{mode}{i}")).await.unwrap();
        }
        drop(c);
        assert!(node.stop().success());
        node.restart();
        let mut c = node.conn().await;
        for i in 0..200 {
            assert_eq!(get(&mut c, &format!("k{i}")).await.0, vec![format!("{mode}{i}")], "mode {mode}");
        }
    }
}

#[tokio::test]
async fn fsync_mode_survives_kill9() {
    let mut node = TestNode::start(&["--durability", "fsync"]);
    let mut c = node.conn().await;
    // Concurrent writers share fsyncs (group commit); each acknowledged write must survive.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let _: () = c.set(format!("t{t}:{i}"), i).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    node.kill9();
    node.restart();
    c = node.conn().await;
    for t in 0..8 {
        for i in 0..50 {
            assert_eq!(get(&mut c, &format!("t{t}:{i}")).await.0, vec![i.to_string()]);
        }
    }
}

#[tokio::test]
async fn pipelined_and_inline_requests_are_answered_in_order() {
    let node = TestNode::start(&[]);
    let mut req = Vec::new();
    for i in 0..100 {
        req.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n$2\r\np{}\r\n$1\r\n{}\r\n", i % 10, i % 10).as_bytes());
        req.extend_from_slice(b"PING\r\n");
    }
    req.extend_from_slice(b"ECHO \"two words\"\r\n");
    let expected: Vec<u8> =
        "+OK\r\n+PONG\r\n".repeat(100).into_bytes().into_iter().chain(b"$9\r\ntwo words\r\n".iter().copied()).collect();
    let (out, closed) = raw_exchange(node.port, &req, expected.len()).await;
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
    assert!(!closed);
}

#[tokio::test]
async fn protocol_errors_close_only_that_connection() {
    let node =
        TestNode::start(&["--max-value-bytes", "1000", "--max-request-bytes", "70000", "--max-key-bytes", "100"]);
    let mut good = node.conn().await;
    let _: () = good.set("k", "v").await.unwrap();
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n$999999999\r\n", "invalid bulk length"),
        (b"*99999999999\r\n", "invalid multibulk length"),
        (b"*2\r\n:1\r\n", "expected '$'"),
        (b"*1\r\n$4\r\nPINGxx", "CRLF"),
        (b"PING \"unterminated\r\n", "unbalanced quotes"),
    ];
    for (bytes, msg) in cases {
        let (out, closed) = raw_exchange(node.port, bytes, 10).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("-ERR Protocol error") && text.contains(msg), "{text:?} for {bytes:?}");
        assert!(closed, "connection must close after {msg}");
    }
    // The earlier request on a connection is still answered before the error.
    let (out, closed) = raw_exchange(node.port, b"PING\r\n*x\r\n", 30).await;
    assert!(String::from_utf8_lossy(&out).starts_with("+PONG\r\n-ERR Protocol error"));
    assert!(closed);
    // Oversized key and value get clear errors, the connection stays usable.
    let big = "x".repeat(101);
    let err = good.set::<_, _, ()>(&big, "v").await.unwrap_err();
    assert!(err.to_string().contains("max_key_bytes"), "{err}");
    // The other client never noticed.
    assert_eq!(get(&mut good, "k").await.0, vec!["v"]);
}

#[tokio::test]
async fn redis_errors_use_redis_words() {
    let node = TestNode::start(&[]);
    let mut c = node.conn().await;
    let e = redis::cmd("FOO").arg("a").arg("b").query_async::<()>(&mut c).await.unwrap_err();
    assert!(e.to_string().contains("unknown command 'FOO', with args beginning with: 'a' 'b'"), "{e}");
    let e = redis::cmd("GET").query_async::<()>(&mut c).await.unwrap_err();
    assert!(e.to_string().contains("wrong number of arguments for 'get' command"), "{e}");
    let e = redis::cmd("SET").arg("k").arg("v").arg("BOGUS").query_async::<()>(&mut c).await.unwrap_err();
    assert!(e.to_string().contains("syntax error"), "{e}");
    let e = redis::cmd("SET").arg("k").arg("v").arg("EX").arg("0").query_async::<()>(&mut c).await.unwrap_err();
    assert!(e.to_string().contains("invalid expire time in 'set' command"), "{e}");
    let e = redis::cmd("SELECT").arg("1").query_async::<()>(&mut c).await.unwrap_err();
    assert!(e.to_string().contains("DB index is out of range"), "{e}");
    let ok: String = redis::cmd("SELECT").arg("0").query_async(&mut c).await.unwrap();
    assert_eq!(ok, "OK");
    let n: i64 = redis::cmd("EXISTS").arg("nope").arg("nope").query_async(&mut c).await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn requirepass_gates_every_command_until_auth() {
    let node = TestNode::start(&["--requirepass", "s3cret"]);
    let (out, _) = raw_exchange(node.port, b"GET k\r\nAUTH wrong\r\nAUTH s3cret\r\nPING\r\n", 200).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("-NOAUTH Authentication required.\r\n-WRONGPASS"), "{text}");
    assert!(text.ends_with("+OK\r\n+PONG\r\n"), "{text}");
    let client = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/", node.port)).unwrap();
    let mut c = common::connect(&client).await;
    let _: () = c.set("k", "v").await.unwrap();
    let info: String = redis::cmd("INFO").arg("stats").query_async(&mut c).await.unwrap();
    assert!(info.contains("auth_failures:1"), "{info}");
}

#[tokio::test]
async fn resp3_after_hello_3() {
    let node = TestNode::start(&[]);
    let (out, _) =
        raw_exchange(node.port, b"HELLO 3\r\nSET k v\r\nGET missing\r\nCONFIG GET appendonly\r\n", 400).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("%8\r\n"), "HELLO 3 answers a RESP3 map: {text}");
    // A missing key reads as no siblings and a context token (one that covers nothing), never a null.
    assert!(text.contains("+OK\r\n*2\r\n*0\r\n$"), "{text}");
    assert!(text.contains("\r\n%1\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n"), "{text}");
}

#[tokio::test]
async fn max_clients_refuses_extra_connections_cleanly() {
    let node = TestNode::start(&["--max-clients", "2"]);
    let mut a = node.conn().await;
    let _b = node.conn().await;
    let (out, closed) = raw_exchange(node.port, b"PING\r\n", 40).await;
    assert_eq!(String::from_utf8_lossy(&out), "-ERR max number of clients reached\r\n");
    assert!(closed);
    let pong: String = redis::cmd("PING").query_async(&mut a).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn thousands_of_concurrent_clients() {
    let node = TestNode::start(&[]);
    let mut tasks = Vec::new();
    for i in 0..2000 {
        let port = node.port;
        tasks.push(tokio::spawn(async move {
            let key = format!("c{i}");
            let req = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nx\r\nPING\r\n", key.len());
            let (out, _) = raw_exchange(port, req.as_bytes(), 12).await;
            assert_eq!(out, b"+OK\r\n+PONG\r\n");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = node.conn().await;
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(n, 2000);
}

/// Reads `s` until the server closes it (EOF or reset); false if it is still open after `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Idle clients, slow senders (a request trickling in a byte at a time) and clients that never read their replies
/// are disconnected by their timeouts, so none of them holds a task or buffers forever; other clients are served
/// throughout.
#[tokio::test]
async fn idle_slow_and_unread_clients_are_disconnected_by_their_timeouts() {
    use tokio::io::AsyncWriteExt;
    let node = TestNode::start(&[
        "--client-idle-timeout-secs",
        "2",
        "--client-frame-timeout-secs",
        "1",
        "--client-write-timeout-secs",
        "1",
    ]);
    let addr = ("127.0.0.1", node.port);
    let mut good = node.conn().await;
    let big = vec![b'v'; 1 << 20];
    let _: () = good.set("big", big.as_slice()).await.unwrap();

    // Idle: one PING, then silence.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"PING\r\n").await.unwrap();

    // Slow sender: a SET whose value arrives one byte every 200 ms; the frame timeout counts from its first byte.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"*3\r\n$3\r\nSET\r\n$4\r\nslow\r\n$100\r\n").await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if slow.write_all(b"x").await.is_err() {
                break;
            }
        }
        slow
    });

    // Unread: 200 pipelined GETs of a 1 MiB value, never read.
    let mut unread = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut pipeline = Vec::new();
    for _ in 0..200 {
        pipeline.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n");
    }
    unread.write_all(&pipeline).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;

    // Meanwhile a well-behaved client is served (a new one: the first sat idle, so it was disconnected too).
    let mut good = node.conn().await;
    let pong: String = redis::cmd("PING").query_async(&mut good).await.unwrap();
    assert_eq!(pong, "PONG");
    let wait = std::time::Duration::from_secs(20);
    assert!(closed_within(&mut idle, wait).await, "the idle client was disconnected");
    let mut slow = trickle.await.unwrap();
    assert!(closed_within(&mut slow, wait).await, "the slow sender was disconnected");
    let (vals, _) = get(&mut good, "slow").await;
    assert!(vals.is_empty(), "the incomplete SET was never applied");
    // The unread client gets at most what the socket buffers held when its writes stalled, then the close.
    assert!(closed_within(&mut unread, wait).await, "the client that never read was disconnected");
    let info: String = redis::cmd("INFO").arg("clients").query_async(&mut good).await.unwrap();
    let timeouts: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("client_timeouts:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("INFO clients has client_timeouts");
    assert!(timeouts >= 3, "{info}");
}

/// Redis 6 style users from the config file: an admin user (written `full`, as older configs do), a write user that
/// may write but not run ADMIN, a read-only user whose writes and admin commands answer NOPERM (pipelined or not),
/// ACL WHOAMI, and a default user that is disabled once named users exist.
#[tokio::test]
async fn users_from_the_config_file_with_admin_write_and_read_access() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "[[users]]\nname = \"app\"\npassword = \"app-secret\"\naccess = \"full\"\n\n\
         [[users]]\nname = \"reader\"\npassword = \"read-secret\"\naccess = \"read\"\n\n\
         [[users]]\nname = \"service\"\npassword = \"write-secret\"\naccess = \"write\"\n",
    )
    .unwrap();
    let node = TestNode::start(&["--config", config.to_str().unwrap()]);
    let (out, _) = raw_exchange(node.port, b"GET k\r\nAUTH anything\r\nAUTH default anything\r\n", 300).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("-NOAUTH"), "{out}");
    assert_eq!(out.matches("-WRONGPASS").count(), 2, "the default user is disabled: {out}");

    let client = redis::Client::open(format!("redis://app:app-secret@127.0.0.1:{}/", node.port)).unwrap();
    let mut app = common::connect(&client).await;
    let _: () = app.set("k", "v").await.unwrap();
    let who: String = redis::cmd("ACL").arg("WHOAMI").query_async(&mut app).await.unwrap();
    assert_eq!(who, "app");

    let client = redis::Client::open(format!("redis://reader:read-secret@127.0.0.1:{}/", node.port)).unwrap();
    let mut reader = common::connect(&client).await;
    let who: String = redis::cmd("ACL").arg("WHOAMI").query_async(&mut reader).await.unwrap();
    assert_eq!(who, "reader");
    let (vals, _) = get(&mut reader, "k").await;
    assert_eq!(vals, vec!["v"]);
    for cmd in [redis::cmd("SET").arg("k").arg("w").clone(), redis::cmd("DEL").arg("k").clone()] {
        let err = cmd.query_async::<()>(&mut reader).await.unwrap_err();
        assert!(err.to_string().to_uppercase().contains("NOPERM"), "{err}");
    }
    let err = redis::cmd("ADMIN").arg("MEMBERS").query_async::<()>(&mut reader).await.unwrap_err();
    assert!(err.to_string().to_uppercase().contains("NOPERM"), "{err}");
    // Pipelined writes take the concurrent path; they are refused all the same.
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg("k").arg("x").cmd("SET").arg("other").arg("y").cmd("GET").arg("k");
    let replies: Vec<redis::Value> = pipe.query_async(&mut reader).await.unwrap_or_default();
    assert!(replies.is_empty() || matches!(replies[0], redis::Value::ServerError(_)), "{replies:?}");
    let (vals, _) = get(&mut app, "k").await;
    assert_eq!(vals, vec!["v"], "nothing the reader sent was written");
    let (vals, _) = get(&mut app, "other").await;
    assert!(vals.is_empty());

    // An application's user writes, but cannot take the node out of the cluster; an admin can.
    let client = redis::Client::open(format!("redis://service:write-secret@127.0.0.1:{}/", node.port)).unwrap();
    let mut service = common::connect(&client).await;
    let _: () = service.set("svc", "1").await.unwrap();
    assert_eq!(get(&mut service, "svc").await.0, vec!["1"]);
    for sub in ["LEAVE", "MEMBERS"] {
        let err = redis::cmd("ADMIN").arg(sub).query_async::<()>(&mut service).await.unwrap_err();
        let text = err.to_string();
        assert!(text.to_uppercase().contains("NOPERM") && text.contains("'admin'"), "{err}");
    }
    let members: redis::Value = redis::cmd("ADMIN").arg("MEMBERS").query_async(&mut app).await.unwrap();
    assert!(format!("{members:?}").contains("valid"), "{members:?}");
    // A lone node cannot leave (no one would hold its data): refused on its merits, not for lack of rights.
    let refused = redis::cmd("ADMIN").arg("LEAVE").query_async::<redis::Value>(&mut app).await;
    assert!(!format!("{refused:?}").to_uppercase().contains("NOPERM"), "{refused:?}");

    let (out, _) = raw_exchange(node.port, b"AUTH reader wrong-password\r\n", 60).await;
    assert!(String::from_utf8_lossy(&out).starts_with("-WRONGPASS"));
    let info: String = redis::cmd("INFO").arg("stats").query_async(&mut app).await.unwrap();
    assert!(info.contains("auth_failures:3"), "{info}");
}

/// Sends `batch` (inline commands, one per line) in one write and reads until `expect` appears in the replies.
async fn batch_replies(node: &TestNode, batch: &str, expect: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(batch.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(expect) {
        assert!(std::time::Instant::now() < deadline, "no {expect:?} in {:?}", String::from_utf8_lossy(&out));
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed; got {:?}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_transaction_runs_its_queue_at_exec_and_nothing_after_a_queuing_error() {
    let node = TestNode::start(&[]);
    // As redis-py's pipeline() and node-redis's multi().exec() send it: one batch.
    let out = batch_replies(&node, "MULTI\r\nSET tx:a 1\r\nSET tx:b 2\r\nEXEC\r\nPING done\r\n", "done").await;
    assert_eq!(out, "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n$4\r\ndone\r\n", "{out}");
    let mut c = node.conn().await;
    assert_eq!(common::get(&mut c, "tx:a").await.0, vec!["1"]);
    assert_eq!(common::get(&mut c, "tx:b").await.0, vec!["2"]);

    // An error while queuing (an unknown command, a wrong arity) aborts EXEC, and nothing queued is applied.
    let out =
        batch_replies(&node, "MULTI\r\nSET tx:c 1\r\nNOSUCHCMD\r\nSET tx:d\r\nEXEC\r\nPING done\r\n", "done").await;
    assert!(out.contains("EXECABORT Transaction discarded because of previous errors."), "{out}");
    assert!(out.contains("unknown command 'NOSUCHCMD'") && out.contains("wrong number of arguments"), "{out}");
    let out = batch_replies(&node, "MULTI\r\nSET tx:e 1\r\nEXEC\r\n", "*1").await;
    assert!(out.ends_with("*1\r\n+OK\r\n"), "{out}");
    assert!(common::get(&mut c, "tx:c").await.0.is_empty(), "an aborted transaction applied a write");

    // DISCARD drops the queue; the usual misuse errors; WATCH refused loudly, UNWATCH harmless.
    let out = batch_replies(&node, "MULTI\r\nSET tx:f 1\r\nDISCARD\r\nEXEC\r\nDISCARD\r\nPING done\r\n", "done").await;
    assert!(
        out.starts_with("+OK\r\n+QUEUED\r\n+OK\r\n-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n"),
        "{out}"
    );
    assert!(common::get(&mut c, "tx:f").await.0.is_empty(), "a discarded transaction applied a write");
    let out =
        batch_replies(&node, "MULTI\r\nMULTI\r\nWATCH k\r\nEXEC\r\nWATCH k\r\nUNWATCH\r\nPING done\r\n", "done").await;
    assert!(out.contains("-ERR MULTI calls can not be nested") && out.contains("-ERR WATCH inside MULTI"), "{out}");
    assert!(out.contains("-ERR WATCH is not supported") && out.contains("+OK\r\n$4\r\ndone"), "{out}");

    // A command that fails when it runs answers its error in place; the others still apply (no rollback).
    let out = batch_replies(&node, "MULTI\r\nSET tx:g 1 CONTEXT garbage\r\nSET tx:h 1\r\nEXEC\r\n", "*2").await;
    let tail = &out[out.find("*2").unwrap()..];
    assert!(tail.starts_with("*2\r\n-ERR invalid context") && tail.ends_with("+OK\r\n"), "{out}");
    assert_eq!(common::get(&mut c, "tx:h").await.0, vec!["1"]);
}

#[tokio::test]
async fn a_transaction_cannot_queue_more_than_max_request_bytes() {
    let node = TestNode::start(&["--max-request-bytes", "8192", "--max-value-bytes", "2048", "--max-key-bytes", "64"]);
    let value = "x".repeat(2000);
    let sets: String = (1..=5).map(|i| format!("SET big:{i} {value}\r\n")).collect();
    let batch = format!("MULTI\r\n{sets}EXEC\r\nPING done\r\n");
    let out = batch_replies(&node, &batch, "done").await;
    assert!(out.contains("-ERR transaction too large"), "{out}");
    assert!(out.contains("EXECABORT"), "{out}");
    let mut c = node.conn().await;
    assert!(common::get(&mut c, "big:1").await.0.is_empty(), "an aborted transaction applied a write");
}

/// MSET writes each pair, MGET answers per key what GET would, UNLINK deletes as DEL, and EXISTS counts many keys.
#[tokio::test]
async fn multi_key_commands_answer_per_key() {
    let node = TestNode::start(&[]);
    let mut c = node.conn().await;
    let _: () = redis::cmd("MSET").arg(&["a", "1", "b", "2", "c", "3"]).query_async(&mut c).await.unwrap();
    let replies: Vec<redis::Value> = redis::cmd("MGET").arg(&["a", "none", "c"]).query_async(&mut c).await.unwrap();
    let parsed: Vec<_> = replies.into_iter().map(common::parse_get).collect();
    assert_eq!(parsed[0].0, vec!["1"]);
    assert!(parsed[1].0.is_empty() && parsed[1].1.is_some(), "a missing key reads as GET reads it: {parsed:?}");
    assert_eq!(parsed[2].0, vec!["3"]);
    // Each MGET context writes back like GET's: it supersedes the value read.
    set_ctx(&mut c, "a", "one", parsed[0].1.as_ref().unwrap()).await;
    assert_eq!(get(&mut c, "a").await.0, vec!["one"]);

    let n: i64 = redis::cmd("EXISTS").arg(&["a", "b", "none", "a"]).query_async(&mut c).await.unwrap();
    assert_eq!(n, 3, "repeats count, as in Redis");
    let n: i64 = redis::cmd("UNLINK").arg(&["a", "b", "none"]).query_async(&mut c).await.unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("EXISTS").arg(&["a", "b", "c"]).query_async(&mut c).await.unwrap();
    assert_eq!(n, 1);

    let err = redis::cmd("MSET").arg(&["a", "1", "b"]).query_async::<()>(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("wrong number of arguments for 'mset'"), "{err}");
    let n: i64 = redis::cmd("EXISTS").arg("a").query_async(&mut c).await.unwrap();
    assert_eq!(n, 0, "a refused MSET writes nothing");
    // Many keys at once: more than are ever in flight together.
    let mut args = Vec::new();
    for i in 0..500 {
        args.push(format!("many:{i}"));
        args.push(format!("v{i}"));
    }
    let _: () = redis::cmd("MSET").arg(&args).query_async(&mut c).await.unwrap();
    let keys: Vec<String> = (0..500).map(|i| format!("many:{i}")).collect();
    let _: () = redis::cmd("CLIENT").arg("VALUES").arg("PLAIN").query_async(&mut c).await.unwrap();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await.unwrap();
    assert_eq!(values, (0..500).map(|i| Some(format!("v{i}"))).collect::<Vec<_>>(), "in request order");
}

/// The plain mode answers GET and MGET with Redis's bulk strings; siblings answer a SIBLINGS error, or with
/// `--plain-siblings newest` the value written last.
#[tokio::test]
async fn plain_mode_answers_like_redis_and_says_when_there_are_siblings() {
    for rule in ["error", "newest"] {
        let node = TestNode::start(&["--plain-siblings", rule]);
        let mut c = node.conn().await;
        let mode: String = redis::cmd("CLIENT").arg("VALUES").query_async(&mut c).await.unwrap();
        assert_eq!(mode, "versioned", "versioned stays the default");
        let (_, empty) = get(&mut c, "cart").await;
        set_ctx(&mut c, "cart", "[cup]", empty.as_ref().unwrap()).await;
        let _: () = c.set("single", "v").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        set_ctx(&mut c, "cart", "[pen]", empty.as_ref().unwrap()).await;

        let _: () = redis::cmd("CLIENT").arg("VALUES").arg("plain").query_async(&mut c).await.unwrap();
        let v: Option<String> = c.get("single").await.unwrap();
        assert_eq!(v.as_deref(), Some("v"));
        let v: Option<String> = c.get("none").await.unwrap();
        assert_eq!(v, None);
        let got = c.get::<_, Option<String>>("cart").await;
        let mget = redis::cmd("MGET").arg(&["single", "cart"]).query_async::<Vec<Option<String>>>(&mut c).await;
        match rule {
            "error" => {
                let err = got.unwrap_err().to_string();
                assert!(err.contains("SIBLINGS") && err.contains("2 concurrent values"), "{err}");
                assert!(mget.unwrap_err().to_string().contains("SIBLINGS"));
            }
            _ => {
                assert_eq!(got.unwrap().as_deref(), Some("[pen]"), "the value written last");
                assert_eq!(mget.unwrap(), vec![Some("v".into()), Some("[pen]".into())]);
            }
        }
        // A plain SET (no context) supersedes both, as a Redis user expects.
        let _: () = c.set("cart", "[book]").await.unwrap();
        let v: Option<String> = c.get("cart").await.unwrap();
        assert_eq!(v.as_deref(), Some("[book]"));
        let _: () = redis::cmd("CLIENT").arg("VALUES").arg("VERSIONED").query_async(&mut c).await.unwrap();
        assert_eq!(get(&mut c, "cart").await.0, vec!["[book]"]);
    }
}

/// A user's `values` in the config file sets the mode its connections start in; the node's `--values` sets the
/// default user's.
#[tokio::test]
async fn a_user_or_the_node_can_default_to_the_plain_mode() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "requirepass = \"pw\"\nvalues = \"plain\"\n\n\
         [[users]]\nname = \"legacy\"\npassword = \"l\"\naccess = \"write\"\n\n\
         [[users]]\nname = \"modern\"\npassword = \"m\"\naccess = \"write\"\nvalues = \"versioned\"\n",
    )
    .unwrap();
    let node = TestNode::start(&["--config", config.to_str().unwrap()]);
    for (user, pass, plain) in [("default", "pw", true), ("legacy", "l", true), ("modern", "m", false)] {
        let client = redis::Client::open(format!("redis://{user}:{pass}@127.0.0.1:{}/", node.port)).unwrap();
        let mut c = common::connect(&client).await;
        let _: () = c.set("k", "v").await.unwrap();
        let v: redis::Value = c.get("k").await.unwrap();
        assert_eq!(matches!(v, redis::Value::BulkString(_)), plain, "{user}: {v:?}");
    }
}

/// SET NX and XX write only when a quorum read finds the key absent or present; SETNX answers 1 or 0.
#[tokio::test]
async fn conditional_sets_judge_on_a_read_and_never_overwrite_a_concurrent_creation() {
    let node = TestNode::start(&[]);
    let mut c = node.conn().await;
    let set = |args: &[&str]| redis::cmd("SET").arg(args).clone();
    let r: Option<String> = set(&["k", "v1", "XX"]).query_async(&mut c).await.unwrap();
    assert_eq!(r, None, "XX on a missing key writes nothing");
    assert!(get(&mut c, "k").await.0.is_empty());
    let r: Option<String> = set(&["k", "v1", "NX"]).query_async(&mut c).await.unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    let r: Option<String> = set(&["k", "v2", "NX"]).query_async(&mut c).await.unwrap();
    assert_eq!(r, None, "NX on a present key writes nothing");
    let r: Option<String> = set(&["k", "v3", "XX"]).query_async(&mut c).await.unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    assert_eq!(get(&mut c, "k").await.0, vec!["v3"]);
    let n: i64 = redis::cmd("SETNX").arg("k").arg("x").query_async(&mut c).await.unwrap();
    assert_eq!(n, 0);
    let n: i64 = redis::cmd("SETNX").arg("fresh").arg("x").query_async(&mut c).await.unwrap();
    assert_eq!(n, 1);
    // A creation that raced the NX (its client also read the key absent) stays beside it, as a sibling.
    let (_, empty) = get(&mut c, "race").await;
    let r: Option<String> = set(&["race", "nx", "NX"]).query_async(&mut c).await.unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    set_ctx(&mut c, "race", "other", empty.as_ref().unwrap()).await;
    assert_eq!(get(&mut c, "race").await.0, vec!["nx", "other"]);
    let err = set(&["k", "v", "NX", "XX"]).query_async::<()>(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("syntax error"), "{err}");
    let (_, k_ctx) = get(&mut c, "k").await;
    let err = set(&["k", "v", "NX", "CONTEXT", k_ctx.as_ref().unwrap()]).query_async::<()>(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("take no CONTEXT"), "{err}");
    let err = set(&["k", "v", "EX", "5", "KEEPTTL"]).query_async::<()>(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("syntax error"), "{err}");
    let err = set(&["k", "v", "GET", "CONTEXT", k_ctx.as_ref().unwrap()]).query_async::<()>(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("takes no CONTEXT"), "{err}");
}

/// CLIENT LIST and INFO show every connection in Redis's form; CLIENT KILL closes the ones it matches.
#[tokio::test]
async fn client_list_info_and_kill() {
    let node = TestNode::start(&[]);
    let mut victim = tokio::net::TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    victim.write_all(b"CLIENT SETNAME victim\r\nCLIENT ID\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(':') {
        let n = victim.read(&mut buf).await.unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let victim_id: u64 = text.split(':').nth(1).unwrap().trim().parse().unwrap();

    let mut c = node.conn().await;
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut c).await.unwrap();
    let line = list.lines().find(|l| l.starts_with(&format!("id={victim_id} "))).expect("the victim is listed");
    assert!(
        line.contains(" name=victim ") && line.contains(" cmd=client") && line.contains(" user=default "),
        "{line}"
    );
    assert!(list.lines().count() >= 2, "{list}");
    let me: String = redis::cmd("CLIENT").arg("INFO").query_async(&mut c).await.unwrap();
    assert!(me.contains("cmd=client|info") && me.contains(&format!("laddr=127.0.0.1:{}", node.port)), "{me}");
    let only: String = redis::cmd("CLIENT").arg("LIST").arg("ID").arg(victim_id).query_async(&mut c).await.unwrap();
    assert_eq!(only.lines().count(), 1);

    let n: i64 = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(victim_id).query_async(&mut c).await.unwrap();
    assert_eq!(n, 1);
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), victim.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(n, 0, "the killed connection is closed");
    // The victim sees its connection close before the server has forgotten it: wait for that.
    common::eventually(std::time::Duration::from_secs(5), "the killed client leaves CLIENT LIST", || {
        let mut c = c.clone();
        async move {
            let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut c).await.unwrap();
            (!list.contains(&format!("id={victim_id} "))).then_some(()).ok_or(list)
        }
    })
    .await;
    let n: i64 = redis::cmd("CLIENT").arg("KILL").arg("ADDR").arg("10.0.0.1:1").query_async(&mut c).await.unwrap();
    assert_eq!(n, 0);
    let err = redis::cmd("CLIENT").arg("KILL").arg("10.0.0.1:1").query_async::<()>(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("No such client"), "{err}");
    // SKIPME defaults to yes: a client does not kill itself by its own user.
    let n: i64 = redis::cmd("CLIENT").arg("KILL").arg("USER").arg("default").query_async(&mut c).await.unwrap();
    assert_eq!(n, 0);
    let _: () = redis::cmd("PING").query_async(&mut c).await.unwrap();
}

/// With `--slowlog-log-slower-than 0` every command enters the slow log, newest first, bounded by its max length.
#[tokio::test]
async fn the_slow_log_keeps_the_newest_entries_in_redis_form() {
    let node = TestNode::start(&["--slowlog-log-slower-than", "0", "--slowlog-max-len", "3"]);
    let mut c = node.conn().await;
    let _: () = redis::cmd("CLIENT").arg("SETNAME").arg("slowpoke").query_async(&mut c).await.unwrap();
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query_async(&mut c).await.unwrap();
    let big = "x".repeat(300);
    let _: () = c.set("slow:key", &big).await.unwrap();
    let _: redis::Value = redis::cmd("GET").arg("slow:key").query_async(&mut c).await.unwrap();
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query_async(&mut c).await.unwrap();
    assert_eq!(len, 3, "RESET, SET and GET (LEN itself is logged after it answers)");
    let entries: Vec<(i64, i64, i64, Vec<String>, String, String)> =
        redis::cmd("SLOWLOG").arg("GET").arg(10).query_async(&mut c).await.unwrap();
    assert_eq!(entries.len(), 3, "the max length holds");
    assert_eq!(entries[0].3, vec!["SLOWLOG", "LEN"], "newest first");
    assert_eq!(entries[1].3, vec!["GET", "slow:key"]);
    assert_eq!(entries[2].3[2], format!("{}... (172 more bytes)", "x".repeat(128)), "long arguments are cut");
    assert!(entries[0].0 > entries[1].0 && entries[1].0 > entries[2].0, "ids grow");
    assert!(entries[1].4.starts_with("127.0.0.1:") && entries[1].5 == "slowpoke", "{:?}", entries[1]);
    let config: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("slowlog-log-slower-than").query_async(&mut c).await.unwrap();
    assert_eq!(config, vec!["slowlog-log-slower-than", "0"]);
    let err = redis::cmd("SLOWLOG").arg("GET").arg(-2).query_async::<()>(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("greater than or equal to -1"), "{err}");
}

/// TYPE says `string` or `none`; STRLEN measures what a plain GET answers.
#[tokio::test]
async fn type_and_strlen() {
    let node = TestNode::start(&[]);
    let mut c = node.conn().await;
    let _: () = c.set("s", "hello").await.unwrap();
    let t: String = redis::cmd("TYPE").arg("s").query_async(&mut c).await.unwrap();
    assert_eq!(t, "string");
    let t: String = redis::cmd("TYPE").arg("missing").query_async(&mut c).await.unwrap();
    assert_eq!(t, "none");
    let n: i64 = redis::cmd("STRLEN").arg("s").query_async(&mut c).await.unwrap();
    assert_eq!(n, 5);
    let n: i64 = redis::cmd("STRLEN").arg("missing").query_async(&mut c).await.unwrap();
    assert_eq!(n, 0);
    let (_, empty) = get(&mut c, "two").await;
    set_ctx(&mut c, "two", "a", empty.as_ref().unwrap()).await;
    set_ctx(&mut c, "two", "bb", empty.as_ref().unwrap()).await;
    let err = redis::cmd("STRLEN").arg("two").query_async::<i64>(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("SIBLINGS"), "{err}");
}

/// MEMORY USAGE grows with the value and is nil for a missing key.
#[tokio::test]
async fn memory_usage_estimates_a_keys_bytes() {
    let node = TestNode::start(&[]);
    let mut c = node.conn().await;
    let _: () = c.set("small", "x").await.unwrap();
    let _: () = c.set("large", "x".repeat(10_000)).await.unwrap();
    let small: i64 = redis::cmd("MEMORY").arg("USAGE").arg("small").query_async(&mut c).await.unwrap();
    let large: i64 =
        redis::cmd("MEMORY").arg("USAGE").arg("large").arg("SAMPLES").arg(5).query_async(&mut c).await.unwrap();
    assert!(small > 0 && large >= small + 9_999, "{small} {large}");
    let none: Option<i64> = redis::cmd("MEMORY").arg("USAGE").arg("missing").query_async(&mut c).await.unwrap();
    assert_eq!(none, None);
    let err = redis::cmd("MEMORY").arg("DOCTOR").query_async::<()>(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("unknown subcommand"), "{err}");
}
