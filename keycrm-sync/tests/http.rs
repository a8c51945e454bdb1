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

mod support;
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

#[tokio::test]
async fn management_routes_refuse_missing_and_wrong_tokens_with_json_401() {
    let rig = rig().await;
    for (method, path) in MANAGEMENT {
        let response = rig
            .http
            .request(method.parse().unwrap(), rig.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"keycrm-sync\""
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "missing_token", "{method} {path}");
        assert!(body["message"].as_str().unwrap().contains("Bearer"));

        let (status, body) = rig.call(method, path, Some("wrong")).await;
        assert_eq!(status, 401, "{method} {path}");
        assert_eq!(body["error"], "invalid_token");
        assert!(!body.to_string().contains(TOKEN), "never echoes the token");
        // Another scheme is no bearer token.
        let response = rig
            .http
            .request(method.parse().unwrap(), rig.url(path))
            .header("Authorization", format!("Basic {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
    }
    // Streams take the token as a query parameter too (browsers cannot send headers there).
    let response = rig
        .http
        .get(rig.url("/events?access_token=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = rig
        .http
        .get(rig.url(&format!("/events?access_token={TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The public routes need nothing.
    let (status, body) = rig.call("GET", "/healthz", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = rig.call("GET", "/readyz", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["ready"], true);
    let response = rig.http.get(rig.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("sessionStorage") && html.contains("EventSource"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
}

#[tokio::test]
async fn an_empty_admin_token_refuses_everything_and_public_metrics_is_an_option() {
    let rig = rig_with(
        |mut o| {
            o.admin_token = Secret::new("");
            o.public_metrics = true;
            o
        },
        "",
    )
    .await;
    let (status, body) = rig.call("GET", "/sync/status", Some("")).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "missing_token");
    let (status, body) = rig.call("GET", "/sync/status", Some("x")).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("invalid_token"))
    );
    let response = rig.http.get(rig.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let rig = rig().await;
    let (status, body) = rig.admin("GET", "/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    let (status, body) = rig.admin("PUT", "/sync/status").await;
    assert_eq!(status, 405);
    assert_eq!(body["error"], "method_not_allowed");
}

#[tokio::test]
async fn the_router_mounts_under_a_prefix() {
    let rig = rig_with(|o| o, "/ops/keycrm").await;
    assert!(rig.base.ends_with("/ops/keycrm"));
    let (status, _) = rig.call("GET", "/healthz", None).await;
    assert_eq!(status, 200);
    let (status, body) = rig.admin("GET", "/sync/status").await;
    assert_eq!(status, 200, "{body}");
    let (status, page) = rig.call("GET", "", None).await;
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("KeyCRM sync"));
}

#[tokio::test]
async fn sync_routes_answer_the_run_report_or_404() {
    let rig = rig().await;
    rig.host.put_order(order(1));
    let (status, report) = rig.admin("POST", "/sync/orders/WMS-1").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["pushed"], 1);
    assert!(report["requests"].as_u64().unwrap() >= 1);
    for path in [
        "/sync/orders/WMS-404",
        "/sync/buyers/nobody",
        "/sync/products/none",
        "/sync/offers/none",
        "/sync/widgets/1",
    ] {
        let (status, body) = rig.admin("POST", path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"], "not_found", "{path}");
    }
    // A KeyCRM outage is a 503 the caller may retry.
    rig.mock.faults().fail_next(100, 503);
    rig.host
        .edit_order("WMS-1", |o| o.status = Some("approved".into()));
    let (status, body) = rig.admin("POST", "/sync/orders/WMS-1").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "keycrm_unavailable");
}

#[tokio::test]
async fn full_resync_is_a_background_job_with_202_409_and_progress() {
    let rig = rig().await;
    for n in 1..=3 {
        rig.host.put_order(order(n));
    }
    let mut events = sse(&rig, None).await;
    // Slow KeyCRM, so that the job is still running when asked again.
    rig.mock.faults().set_latency(Duration::from_millis(150));
    let response = rig
        .http
        .post(rig.url("/sync/full-resync"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let job: Value = response.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("jobs/{id}"));
    assert_eq!(job["state"], "running");
    let (status, body) = rig.admin("POST", "/sync/full-resync").await;
    assert_eq!(status, 409);
    assert_eq!(body["error"], "job_running");
    let (status, running) = rig.admin("GET", &format!("/sync/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(running["id"], id);
    let (_, live) = rig.admin("GET", "/sync/status").await;
    assert_eq!(live["job"], id);
    // Progress on the event stream: started, the records, done.
    let started = events.next_of("job").await;
    assert_eq!(started.data["state"], "running");
    assert!(started.id.is_some());
    let mut records = 0;
    let done = loop {
        let frame = events.next().await.unwrap();
        match frame.data["type"].as_str().unwrap() {
            "applied" | "pushed" | "failed" => records += 1,
            "job" if frame.data["state"] != "running" => break frame,
            _ => {}
        }
    };
    assert_eq!(done.data["state"], "succeeded", "{:?}", done.data);
    assert!(records >= 3, "three orders (and their buyers) pushed");
    assert_eq!(done.data["processed"], records);
    let (status, finished) = rig.admin("GET", &format!("/sync/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(finished["state"], "succeeded");
    assert_eq!(finished["processed"], records);
    assert_eq!(finished["report"]["pushed"], 3);
    assert!(finished["finished_at"].is_string());
    // Another may start now.
    rig.mock.faults().clear();
    let (status, again) = rig.admin("POST", "/sync/full-resync").await;
    assert_eq!(status, 202);
    assert_ne!(again["id"], id);
    let (status, body) = rig.admin("GET", "/sync/jobs/job-999").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn status_conflicts_and_dead_letters_with_retry_and_discard() {
    let rig = rig().await;
    // A status the configuration does not map: dead-lettered on its only attempt.
    rig.host.put_order(CanonicalOrder {
        status: Some("lost-in-space".into()),
        ..order(7)
    });
    rig.engine.run_once().await.unwrap();
    let (status, body) = rig.admin("GET", "/sync/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["dead_letters"], 1);
    assert_eq!(body["per_kind"]["order"]["dead_lettered"], 1);
    assert!(body["quota"]["requests"].as_u64().unwrap() >= 1);
    assert_eq!(body["alerts"], json!([]));
    assert!(body["last_event_id"].as_u64().unwrap() >= 1);
    let (status, dead) = rig.admin("GET", "/sync/dead-letters").await;
    assert_eq!(status, 200);
    let dead = dead.as_array().unwrap().clone();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["local_id"], "WMS-7");
    assert_eq!(dead[0]["kind"], "order");
    assert!(dead[0].get("payload").is_none(), "no customer data");
    assert!(!dead[0].to_string().contains("Покупець"));
    let id = dead[0]["id"].as_i64().unwrap();

    let (status, body) = rig
        .admin("POST", &format!("/sync/dead-letters/{id}/retry"))
        .await;
    assert_eq!(status, 200);
    assert!(body["queued"].is_i64());
    let (_, dead) = rig.admin("GET", "/sync/dead-letters").await;
    assert_eq!(dead, json!([]));
    let (status, body) = rig
        .admin("POST", &format!("/sync/dead-letters/{id}/retry"))
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );

    rig.engine.run_once().await.unwrap();
    let (_, dead) = rig.admin("GET", "/sync/dead-letters").await;
    let id = dead[0]["id"].as_i64().unwrap();
    let (status, body) = rig
        .admin("DELETE", &format!("/sync/dead-letters/{id}"))
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = rig
        .admin("DELETE", &format!("/sync/dead-letters/{id}"))
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
    let (status, _) = rig.admin("DELETE", "/sync/dead-letters/not-a-number").await;
    assert_eq!(status, 404);

    let (status, conflicts) = rig.admin("GET", "/sync/conflicts").await;
    assert_eq!(status, 200);
    assert!(conflicts.is_array());
}

#[tokio::test]
async fn conflicts_list_both_values_and_the_winner() {
    let rig = rig().await;
    rig.host.put_order(order(3));
    rig.engine.run_once().await.unwrap();
    let remote = rig
        .engine
        .store()
        .get_mapping(keycrm_sync::model::EntityKind::Order, "WMS-3")
        .await
        .unwrap()
        .unwrap()
        .remote_id
        .unwrap();
    // Both sides change the manager comment.
    rig.mock
        .crm()
        .edit_order(remote, json!({"manager_comment": "from KeyCRM"}));
    rig.host
        .edit_order("WMS-3", |o| o.comment = Some("from the warehouse".into()));
    rig.engine.run_once().await.unwrap();
    let (status, conflicts) = rig.admin("GET", "/sync/conflicts").await;
    assert_eq!(status, 200);
    let list = conflicts.as_array().unwrap();
    let c = list
        .iter()
        .find(|c| c["local_id"] == "WMS-3")
        .unwrap_or_else(|| panic!("{conflicts}"));
    assert!(c["local"].is_string() && c["remote"].is_string(), "{c}");
    assert!(c["winner"].is_string());
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_requests_latency_and_queues() {
    let rig = rig().await;
    rig.host.put_order(order(1));
    rig.engine.run_once().await.unwrap();
    let response = rig
        .http
        .get(rig.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    for needle in [
        "keycrm_requests_total{",
        "status=\"200\"",
        "keycrm_request_duration_seconds_bucket",
        "keycrm_rate_limited_total 0",
        "keycrm_quota_waits_total",
        "keycrm_sync_outbox_depth 0",
        "keycrm_sync_inbox_backlog 0",
        "keycrm_sync_inbox_oldest_age_seconds",
        "keycrm_sync_dead_letters 0",
        "keycrm_sync_runs_total{outcome=\"ok\"} 1",
        "keycrm_sync_run_duration_seconds_count 1",
        "keycrm_sync_last_success_timestamp_seconds{kind=\"order\"}",
        "keycrm_sync_alerts_firing{alert=\"sync_errors\"} 0",
        "keycrm_sync_records{kind=\"order\",state=\"synced\"} 1",
        "keycrm_sync_conflicts_total",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(!text.contains("Покупець"), "no customer data in metrics");
}

#[tokio::test]
async fn sse_events_have_increasing_ids_and_resume_from_last_event_id() {
    let rig = rig().await;
    let mut first = sse(&rig, None).await;
    for n in 1..=3 {
        rig.host.put_order(order(n));
    }
    rig.engine.run_once().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let frame = first.next_of("pushed").await;
        assert_eq!(frame.data["id"].as_u64(), frame.id);
        ids.push(frame.id.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // A client that saw the first event resumes after it: the rest is replayed, then live.
    let mut resumed = sse(&rig, Some(ids[0])).await;
    assert_eq!(resumed.next().await.unwrap().id, Some(ids[0] + 1));
    assert_eq!(resumed.next_of("pushed").await.id, Some(ids[1]));
    assert_eq!(resumed.next_of("pushed").await.id, Some(ids[2]));
    // `?last_event_id=` does the same for clients that cannot send headers.
    let response = rig
        .http
        .get(rig.url(&format!("/events?last_event_id={}", ids[1])))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let mut by_query = SseReader::new(response);
    assert_eq!(by_query.next().await.unwrap().id, Some(ids[1] + 1));
    assert_eq!(by_query.next_of("pushed").await.id, Some(ids[2]));
}

#[tokio::test]
async fn a_resume_older_than_the_replay_buffer_gets_a_gap_notice() {
    let rig = rig_with(
        |mut o| {
            o.replay_buffer = 2;
            o
        },
        "",
    )
    .await;
    let mut watcher = sse(&rig, None).await;
    for n in 1..=4 {
        rig.host.put_order(order(n));
    }
    rig.engine.run_once().await.unwrap();
    let mut last = 0;
    for _ in 0..4 {
        last = watcher.next_of("pushed").await.id.unwrap();
    }
    let mut late = sse(&rig, Some(last - 3)).await;
    let gap = late.next().await.unwrap();
    assert_eq!(gap.data["type"], "gap");
    assert_eq!(gap.id, None);
    assert_eq!(late.next().await.unwrap().id, Some(last - 1));
    assert_eq!(late.next().await.unwrap().id, Some(last));
}

#[tokio::test]
async fn streams_end_on_shutdown_and_graceful_shutdown_does_not_hang() {
    let rig = rig().await;
    let mut events = sse(&rig, None).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "{}/ws?access_token={TOKEN}",
        rig.base.replace("http://", "ws://")
    ))
    .await
    .unwrap();
    // The engine's own subscription holds no borrow and ends too.
    let subscription = rig.engine.subscribe();
    drop(rig.engine.clone());
    rig.shutdown.cancel();
    assert!(events.next().await.is_none(), "the SSE stream ended");
    let mut closed = false;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("the socket closes in time")
    {
        if matches!(
            message,
            Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_)
        ) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the WebSocket was closed");
    let rest: Vec<_> =
        tokio::time::timeout(Duration::from_secs(20), subscription.collect::<Vec<_>>())
            .await
            .expect("subscribe() ends on shutdown");
    assert!(rest.is_empty());
    tokio::time::timeout(Duration::from_secs(20), rig.server)
        .await
        .expect("graceful shutdown finished with clients connected")
        .unwrap();
}

#[tokio::test]
async fn websocket_carries_the_same_numbered_events() {
    let rig = rig().await;
    let url = format!("{}/ws", rig.base.replace("http://", "ws://"));
    // Without a token the upgrade is refused.
    assert!(tokio_tungstenite::connect_async(url.clone()).await.is_err());
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    rig.host.put_order(order(5));
    rig.engine.run_once().await.unwrap();
    let pushed = loop {
        let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let value: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
        if value["type"] == "pushed" {
            break value;
        }
    };
    assert_eq!(pushed["local_id"], "WMS-5");
    assert!(pushed["id"].as_u64().unwrap() >= 1);
    ws.send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await
        .unwrap();
}

#[tokio::test]
async fn readyz_is_503_when_keycrm_is_silent_with_work_pending() {
    let clock = Arc::new(VirtualClock::new());
    let rig = rig_with(
        {
            let clock = clock.clone();
            move |mut o| {
                o.clock = clock;
                o.alert_interval = None;
                o
            }
        },
        "",
    )
    .await;
    rig.mock.faults().fail_next(1000, 503);
    rig.host.put_order(order(1));
    let _ = rig.engine.run_once().await;
    clock.advance(Duration::from_secs(100));
    let (status, body) = rig.call("GET", "/readyz", None).await;
    assert_eq!(status, 200, "{body}");
    clock.advance(Duration::from_secs(60));
    let (status, body) = rig.call("GET", "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["error"], "not_ready");
    assert_eq!(body["store"], true);
    assert!(body["pending"].as_u64().unwrap() >= 1);
    // KeyCRM answers again: ready.
    rig.mock.faults().clear();
    let _ = rig
        .service
        .engine()
        .client()
        .order_status_list()
        .send()
        .await;
    let (status, _) = rig.call("GET", "/readyz", None).await;
    assert_eq!(status, 200);
}

#[test]
fn sync_errors_have_an_http_classification() {
    let not_found = SyncError::NotFound {
        kind: keycrm_sync::model::EntityKind::Order,
        local_id: "x".into(),
    };
    let e = HttpError::from_sync(&not_found);
    assert_eq!((e.status, e.error), (404, "not_found"));
    assert_eq!(e.body()["error"], "not_found");
    let e = HttpError::from_sync(&SyncError::MassZeroing {
        zeroed: 9,
        total: 10,
        limit: 50.0,
    });
    assert_eq!((e.status, e.error), (409, "mass_zeroing"));
    let e = HttpError::from_sync(&SyncError::Config("x".into()));
    assert_eq!(e.status, 500);
    let e = HttpError::from_sync(&SyncError::Store(keycrm_sync::store::StoreError::Backend(
        "db down".into(),
    )));
    assert_eq!((e.status, e.error), (503, "store_unavailable"));
    let e = HttpError::from_sync(&SyncError::Host(keycrm_sync::host::HostError("h".into())));
    assert_eq!((e.status, e.error), (500, "host_error"));
}

/// `subscribe()` holds no borrow of the engine: the stream outlives it (compile-time proof).
fn owned_events(
    engine: Engine,
) -> impl futures::Stream<Item = keycrm_sync::SyncEvent> + Send + 'static {
    engine.subscribe()
}

#[tokio::test]
async fn subscribe_outlives_the_engine_handle_and_ends_on_engine_shutdown() {
    let rig = rig().await;
    let events = owned_events(rig.engine.clone());
    let task = tokio::spawn(events.collect::<Vec<_>>());
    rig.host.put_order(order(9));
    rig.engine.run_once().await.unwrap();
    rig.engine.shutdown();
    let seen = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the stream ended on shutdown")
        .unwrap();
    assert!(seen.iter().any(
        |e| matches!(e, keycrm_sync::SyncEvent::Pushed { local_id, .. } if local_id == "WMS-9")
    ));
}

#[tokio::test]
async fn the_webhook_route_answers_as_the_receiver_without_the_admin_token() {
    let rig = rig_with(
        |mut o| {
            o.webhook = Some(keycrm_sync::webhook::ReceiverSettings {
                token: Secret::new("hook-token"),
                limits: keycrm_sync::webhook::ParseLimits {
                    max_bytes: 2048,
                    ..Default::default()
                },
                ..Default::default()
            });
            o
        },
        "",
    )
    .await;
    let body = json!({
        "event": keycrm_sync::webhook::ORDER_STATUS_EVENT,
        "context": {"id": 10001, "status_id": 2, "updated_at": "2026-11-30 02:00:00"}
    })
    .to_string();
    let post = |query: &str, content_type: &str, body: String| {
        rig.http
            .post(rig.url(&format!("/webhooks/keycrm{query}")))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases = [
        ("", "application/json", body.clone(), 401, "unauthorized"),
        (
            "?token=wrong",
            "application/json",
            body.clone(),
            401,
            "unauthorized",
        ),
        (
            "?token=hook-token",
            "text/plain",
            body.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "?token=hook-token",
            "application/json",
            "{".to_string(),
            400,
            "invalid_webhook",
        ),
        (
            "?token=hook-token",
            "application/json",
            "x".repeat(4096),
            413,
            "payload_too_large",
        ),
    ];
    for (query, content_type, payload, status, code) in cases {
        let response = post(query, content_type, payload).await.unwrap();
        assert_eq!(response.status(), status, "{query} {content_type}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], code, "{answer}");
        assert!(!answer.to_string().contains("hook-token"));
    }
    assert_eq!(
        rig.engine.status().await.unwrap().inbox_backlog,
        0,
        "nothing stored"
    );
    let response = post("?token=hook-token", "application/json", body.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "stored");
    let response = post("?token=hook-token", "application/json", body)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "duplicate"
    );
    // Durable before the answer; applied later by the inbox worker or a run.
    assert_eq!(rig.engine.status().await.unwrap().inbox_backlog, 1);
    let metrics = rig.admin("GET", "/metrics").await.1;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("keycrm_sync_inbox_backlog 1")
    );
}
