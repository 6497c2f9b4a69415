//! Settings reach a real node from flags, DYNAMO_KV_* environment variables and the TOML file, with
//! flag > environment > file.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn flag_beats_env_beats_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        format!(
            "node_id = \"from-file\"\ndata_dir = \"{}\"\nmax_clients = 11\nmax_array_len = 22\nsibling_soft_limit = 33\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dynamo-kv"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .args(["--max-clients", "111"])
        .env("DYNAMO_KV_MAX_CLIENTS", "999")
        .env("DYNAMO_KV_MAX_ARRAY_LEN", "222")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let addr = words[words.iter().position(|w| *w == "clients").unwrap() + 2].to_string();
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let mut con = client.get_connection().unwrap();
    let get = |con: &mut redis::Connection, name: &str| -> String {
        let v: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(con).unwrap();
        v[1].clone()
    };
    assert_eq!(get(&mut con, "maxclients"), "111", "flag beats env and file");
    assert_eq!(get(&mut con, "max-array-len"), "222", "env beats file");
    assert_eq!(get(&mut con, "sibling-soft-limit"), "33", "file beats default");
    let info: String = redis::cmd("INFO").arg("dynamo").query(&mut con).unwrap();
    assert!(info.contains("node_id:from-file"), "{info}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn bad_settings_fail_at_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dynamo-kv"))
        .args(["serve", "--node-id", "n1", "--data-dir"])
        .arg(dir.path())
        .args(["--sibling-soft-limit", "50", "--sibling-hard-limit", "10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sibling_hard_limit"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_dynamo-kv")).args(["serve", "--node-id", "n1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("data_dir is required"));

    // A data directory belongs to one node id.
    let run = |id: &str| {
        Command::new(env!("CARGO_BIN_EXE_dynamo-kv"))
            .args(["serve", "--listen", "127.0.0.1:0", "--node-id", id, "--data-dir"])
            .arg(dir.path().join("d"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = run("n1");
    let mut line = String::new();
    BufReader::new(first.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("ready"));
    let out = run("n1").wait_with_output().unwrap();
    assert!(!out.status.success(), "a second process on a data directory in use must not start");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another dynamo-kv process"));
    first.kill().unwrap();
    first.wait().unwrap();
    let out = run("n2").wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to node 'n1'"));
}
