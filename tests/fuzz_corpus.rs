//! Replays the committed fuzz corpus (`tests/fuzz/corpus/<target>/`) through the fuzz targets' own checks, so the
//! inputs the fuzzer found interesting, and every input that once crashed a target, are regression tests under
//! plain `cargo test`, without cargo-fuzz or its instrumented build.

#[path = "fuzz/checks.rs"]
mod checks;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{}: the corpus is missing", dir.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|file| {
            let data = std::fs::read(file).unwrap();
            catch_unwind(AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{} of {} inputs failed: {failed:#?}", failed.len(), files.len());
    println!("{target}: {} inputs replayed", files.len());
}

#[test]
fn resp_request_corpus() {
    replay("resp_request", checks::resp_request);
}

#[test]
fn client_session_corpus() {
    replay("client_session", checks::client_session);
}

#[test]
fn peer_frame_corpus() {
    replay("peer_frame", checks::peer_frame);
}

#[test]
fn context_token_corpus() {
    replay("context_token", checks::context_token);
}
