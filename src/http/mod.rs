//! The node's HTTP port (`--metrics-listen`, alias `--http-listen`): Prometheus metrics at `/metrics`, the JSON
//! admin API under `/api/` and the web console at `/`, whose page, script and style are compiled into the binary
//! (no build step, nothing fetched from elsewhere: it works offline).
//!
//! * `/metrics` needs no credentials (Prometheus scrapes it), as before the console existed.
//! * `/` and `/api/` need them when the node has a password or users: HTTP Basic with any user of the config
//!   file (every access level may read), or `default` and the `requirepass` password. The port speaks plain HTTP,
//!   so a bare port binds 127.0.0.1; beyond loopback, put it behind a TLS reverse proxy.
//! * Everything is read-only: changes stay with `dynamo-kv admin`.

mod api;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commands::NodeContext;

/// The process's metrics recorder, once installed: one per process (a `dev` cluster's nodes share it).
static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histograms are compacted (the recorder leaves it to its owner).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// Longest a client may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the HTTP port could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The metrics recorder could not be built or installed.
    #[error("metrics recorder: {reason}")]
    Recorder {
        /// What failed.
        reason: String,
    },
}

/// Installs the process-wide metrics recorder: latencies (`*_seconds`) become histograms with buckets from 50 µs
/// to 5 s, so p50/p99/p99.9 can be derived, and siblings per read a histogram of counts. Until it is installed,
/// metrics are discarded and `/metrics` is empty.
pub fn install_recorder() -> Result<(), HttpError> {
    let error = |e: &dyn std::fmt::Display| HttpError::Recorder { reason: e.to_string() };
    let buckets = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .map_err(|e| error(&e))?
        .set_buckets_for_metric(
            Matcher::Full("dynamo_read_siblings".into()),
            &[0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 100.0],
        )
        .map_err(|e| error(&e))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| error(&e))?;
    let _ = PROMETHEUS.set(handle);
    Ok(())
}

/// Serves the HTTP port until `cancel` fires; each connection is a task of `tracker`.
pub async fn serve(listener: TcpListener, node: Arc<NodeContext>, cancel: CancellationToken, tracker: TaskTracker) {
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "HTTP: the console at /, the admin API under /api/, Prometheus metrics at /metrics");
    if addr.is_some_and(|a| !a.ip().is_loopback()) && !node.config.auth_required() {
        tracing::warn!(
            ?addr,
            "the HTTP port listens beyond loopback with no password or users configured: the console and the \
             admin API are open to anyone who reaches it (and /metrics always is); configure users or put it \
             behind an authenticating TLS reverse proxy"
        );
    }
    let upkeep = tracker.spawn(upkeep(cancel.clone()));
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (node, cancel) = (node.clone(), cancel.clone());
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(respond(&node, peer, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                biased;
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    let _ = upkeep.await;
}

async fn upkeep(cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {
                if let Some(h) = PROMETHEUS.get() {
                    h.run_upkeep();
                }
            }
        }
    }
}

/// The console's files, compiled in.
const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

async fn respond(node: &NodeContext, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET: the console and the API are read-only\n");
    }
    let path = req.uri().path();
    if path == "/metrics" {
        let body = PROMETHEUS.get().map(PrometheusHandle::render).unwrap_or_default();
        return reply(StatusCode::OK, "text/plain; version=0.0.4", body.into());
    }
    if !authorized(node, req.headers().get(header::AUTHORIZATION)) {
        tracing::debug!(%peer, path, "HTTP request without valid credentials");
        let mut r = text(StatusCode::UNAUTHORIZED, "credentials required: a user of this node's config file\n");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"dynamo-kv\""));
        return r;
    }
    match path {
        "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML.into()),
        "/console.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", CONSOLE_JS.into()),
        "/console.css" => reply(StatusCode::OK, "text/css; charset=utf-8", CONSOLE_CSS.into()),
        _ if path.starts_with("/api/") => match api::answer(node, &path[5..], req.uri().query().unwrap_or("")).await {
            Ok(json) => reply(StatusCode::OK, "application/json", json.into()),
            Err(api::ApiError::NotFound { path }) => {
                text(StatusCode::NOT_FOUND, &format!("no API at /api/{path}: see docs/HTTP.md\n"))
            }
            Err(e @ api::ApiError::BadRequest { .. }) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "not found: the console is at /, the API under /api/\n"),
    }
}

/// Whether the request may see the console and the API: always when the node asks no password, else HTTP Basic
/// credentials that AUTH would accept.
fn authorized(node: &NodeContext, credentials: Option<&HeaderValue>) -> bool {
    if !node.config.auth_required() {
        return true;
    }
    // The scheme's name is case-insensitive (RFC 9110).
    let Some(encoded) = credentials
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .and_then(|(scheme, rest)| scheme.eq_ignore_ascii_case("basic").then_some(rest))
    else {
        return false;
    };
    use base64::Engine as _;
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else { return false };
    let user = String::from_utf8_lossy(&decoded[..colon]);
    node.config.grant(&user, &decoded[colon + 1..]).is_some()
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The console's data is live: never from a cache.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    r
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", Bytes::copy_from_slice(body.as_bytes()))
}
