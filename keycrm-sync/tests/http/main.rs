//! The service layer over real HTTP on loopback: every route, status code and auth rule,
//! SSE/WebSocket streams with ids, resume, shutdown, jobs, metrics.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use keycrm_api::clock::VirtualClock;
use keycrm_api::mock::KeyCrmMock;
use keycrm_sync::canonical::{CanonicalOrder, Mappings};
use keycrm_sync::config::{Secret, SyncConfig};
use keycrm_sync::host::MemoryHost;
use keycrm_sync::http::{HttpError, HttpOptions, Service, router_with};
use keycrm_sync::store::{MemoryStore, Store};
use keycrm_sync::{CancellationToken, SyncEngine, SyncError};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod health;
mod streams;
mod sync;

use support::{config_with, line, no_retry_client, simulator};

const TOKEN: &str = "s3cret-admin-token";

fn config() -> SyncConfig {
    SyncConfig {
        retry_attempts: 1,
        ..config_with(&["new", "approved"], &["cod"], &["main"])
    }
}

fn order(n: u32) -> CanonicalOrder {
    CanonicalOrder {
        lines: vec![line(format!("SKU-{n}"), "Чай", 2, "149.90")],
        ..support::order(n)
    }
}

type Engine = SyncEngine<MemoryStore, MemoryHost>;

struct Rig {
    mock: KeyCrmMock,
    host: MemoryHost,
    engine: Engine,
    service: Service<MemoryStore, MemoryHost>,
    base: String,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
}

async fn rig_with(adjust: impl FnOnce(HttpOptions) -> HttpOptions, prefix: &str) -> Rig {
    let mock = simulator().await;
    let client = no_retry_client(&mock);
    let config = config();
    let host = MemoryHost::new(Mappings::from_config(&config));
    let shutdown = CancellationToken::new();
    let engine: Engine = SyncEngine::builder()
        .client(client)
        .store(MemoryStore::new())
        .host(host.clone())
        .config(config)
        .shutdown(shutdown.clone())
        .build()
        .unwrap();
    let service = Service::new(engine.clone(), adjust(HttpOptions::new(TOKEN)));
    let app = if prefix.is_empty() {
        router_with(service.clone())
    } else {
        axum::Router::new().nest(prefix, router_with(service.clone()))
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .unwrap();
    });
    Rig {
        mock,
        host,
        engine,
        service,
        base: format!("http://{addr}{prefix}"),
        http: reqwest::Client::new(),
        server,
        shutdown,
    }
}

async fn rig() -> Rig {
    rig_with(|o| o, "").await
}

impl Rig {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn admin(&self, method: &str, path: &str) -> (StatusCode, Value) {
        self.call(method, path, Some(TOKEN)).await
    }
}

/// Reads SSE frames off a streaming response.
struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

#[derive(Debug)]
struct Frame {
    id: Option<u64>,
    data: Value,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        Self {
            stream: response
                .bytes_stream()
                .map(|r| r.map(|b| b.to_vec()))
                .boxed(),
            buffer: String::new(),
        }
    }

    /// The next data frame (keep-alive comments skipped); `None` when the stream ended.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some(Frame {
                    id,
                    data: serde_json::from_str(&data).unwrap(),
                });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.stream.next())
                .await
                .expect("an SSE frame in time")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk.ok()?).unwrap());
        }
    }

    /// The next frame of a type.
    async fn next_of(&mut self, kind: &str) -> Frame {
        loop {
            let frame = self.next().await.expect("the stream goes on");
            if frame.data["type"] == kind {
                return frame;
            }
        }
    }
}

async fn sse(rig: &Rig, last_event_id: Option<u64>) -> SseReader {
    let mut request = rig.http.get(rig.url("/events")).bearer_auth(TOKEN);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    SseReader::new(response)
}

const MANAGEMENT: &[(&str, &str)] = &[
    ("GET", "/sync/status"),
    ("GET", "/sync/conflicts"),
    ("GET", "/sync/dead-letters"),
    ("POST", "/sync/dead-letters/1/retry"),
    ("DELETE", "/sync/dead-letters/1"),
    ("POST", "/sync/orders/WMS-1"),
    ("POST", "/sync/buyers/b-1"),
    ("POST", "/sync/products/p-1"),
    ("POST", "/sync/offers/o-1"),
    ("POST", "/sync/full-resync"),
    ("GET", "/sync/jobs/job-1"),
    ("GET", "/metrics"),
    ("GET", "/events"),
    ("GET", "/ws"),
];
