//! Webhook intake over real HTTP on loopback: 64 concurrent senders post KeyCRM order-status
//! webhooks to a hyper server whose route calls the engine's `WebhookReceiver`, which commits
//! them in groups to a real SQLite file with the production settings (WAL, `synchronous=FULL`).
//!
//! Prints, for the same server and the same load:
//!
//! - the floor: a bare handler that parses the JSON and stores nothing;
//! - the receiver: accepted and durably committed webhooks per second, p50 and p99 answer time;
//! - the receiver again while a full resync runs against a paced simulator;
//! - the ratio of receiver to floor throughput.
//!
//! ```sh
//! cargo bench --bench webhook_ingest            # 20,000 webhooks per phase
//! cargo bench --bench webhook_ingest -- 5000    # another count
//! ```

#![recursion_limit = "256"]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use keycrm::api::mock::{KeyCrmMock, Quota, SeedConfig};
use keycrm::sync::SyncEngine;
use keycrm::sync::canonical::Mappings;
use keycrm::sync::config::{Secret, SyncConfig};
use keycrm::sync::host::MemoryHost;
use keycrm::sync::store::{SqliteStore, Store};
use keycrm::sync::webhook::{WebhookReceiver, WebhookRequest};
use serde_json::json;

const SENDERS: usize = 64;
const TOKEN: &str = "bench-token-5f1c2a9e";

fn main() {
    let n: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run(n));
}

/// A KeyCRM order context as the automation trigger sends it (the raw order row).
fn body(id: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "event": "order.change_order_status",
        "context": {
            "id": id, "source_uuid": format!("WMS-{id}"), "global_source_uuid": null,
            "status_on_source": null, "source_id": 1, "client_id": 1000 + id % 500,
            "grand_total": "1249.50", "total_discount": "0.00", "margin_sum": "312.00",
            "expenses_sum": "0.00", "discount_amount": "0.00", "discount_percent": "0.00",
            "shipping_price": "70.00", "taxes": "0.00", "register_id": null,
            "fiscal_result": [], "fiscal_status": null, "shipping_type_id": null,
            "manager_id": 3, "status_group_id": 2, "status_id": 4,
            "closed_from": null, "status_changed_at": "2026-01-29T18:53:35.000000Z",
            "status_expired_at": null, "parent_id": null, "manager_comment": "Передзвонити",
            "client_comment": null, "is_gift": false, "promocode": null, "wrap_price": "0.00",
            "gift_wrap": false, "payment_status": "not_paid", "gift_message": null,
            "last_synced_at": null, "created_at": "2026-01-29 18:40:02",
            "updated_at": "2026-01-29 18:53:35", "closed_at": null, "deleted_at": null,
            "ordered_at": "2026-01-29 18:40:02", "source_updated_at": null,
            "payments_total": "0.00", "is_expired": false, "has_reserves": true,
            "products_total": "1179.50"
        }
    }))
    .expect("JSON")
}

fn reply(status: u16) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response
}

async fn handle(
    receiver: WebhookReceiver,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let length = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(length) = length
        && let Err(rejection) = receiver.check_length(length)
    {
        return Ok(reply(rejection.status()));
    }
    let limit = receiver.settings().limits.max_bytes;
    let Ok(collected) = Limited::new(request.into_body(), limit).collect().await else {
        return Ok(reply(413));
    };
    let bytes = collected.to_bytes();
    if path == "/bare" {
        // The floor: parse the JSON, store nothing.
        let parsed = serde_json::from_slice::<serde_json::Value>(&bytes);
        return Ok(reply(if parsed.is_ok() { 200 } else { 400 }));
    }
    let mut webhook = WebhookRequest::new(&bytes);
    webhook.query = query.as_deref();
    webhook.content_type = content_type.as_deref();
    Ok(reply(match receiver.receive(webhook).await {
        Ok(accepted) => accepted.status(),
        Err(rejection) => rejection.status(),
    }))
}

async fn serve(receiver: WebhookReceiver) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(receiver.clone(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    accepted: usize,
}

/// `ids` webhooks from [`SENDERS`] concurrent senders, each on its own keep-alive connection.
async fn load(url: &str, ids: std::ops::Range<usize>) -> Figures {
    let total = ids.len();
    let bodies: Vec<Vec<u8>> = ids.map(body).collect();
    let bodies = Arc::new(bodies);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for sender in 0..SENDERS {
        let bodies = bodies.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .http1_only()
                .build()
                .expect("client");
            let mut latencies = Vec::new();
            let mut accepted = 0;
            for i in (sender..bodies.len()).step_by(SENDERS) {
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(bodies[i].clone())
                    .send()
                    .await
                    .expect("the server answers");
                latencies.push(sent.elapsed());
                if response.status() == 200 {
                    accepted += 1;
                }
            }
            (latencies, accepted)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut accepted = 0;
    for task in tasks {
        let (l, a) = task.await.expect("sender");
        latencies.extend(l);
        accepted += a;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        per_second: total as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        accepted,
    }
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<46} {:>9.0}/s   p50 {:>6.2} ms   p99 {:>6.2} ms   accepted {}",
        f.per_second,
        f.p50.as_secs_f64() * 1000.0,
        f.p99.as_secs_f64() * 1000.0,
        f.accepted
    );
}

async fn run(n: usize) {
    let dir = std::env::temp_dir().join(format!("keycrm-webhook-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("sync.db");
    let store = SqliteStore::open(&path).expect("store");

    // A paced simulator: KeyCRM's quota of 60 requests per minute would make a resync take
    // hours, so 600 per minute with 20 ms of latency per request; the client paces itself to it.
    let mock = KeyCrmMock::builder()
        .quota(Quota::per_minute(600))
        .start()
        .await;
    mock.seed(SeedConfig {
        products: 300,
        orders: 300,
        buyers: 100,
        ..SeedConfig::default()
    });
    mock.faults().set_latency(Duration::from_millis(20));
    let config = SyncConfig {
        api_key: Secret::new("bench"),
        webhook_secret: Secret::new(TOKEN),
        source_id: Some(1),
        status_ids: (1..=12).map(|i| (format!("s{i}"), i)).collect(),
        payment_method_ids: (1..=5).map(|i| (format!("m{i}"), i)).collect(),
        warehouse_ids: BTreeMap::from([("main".to_string(), 1), ("lviv".to_string(), 2)]),
        ..SyncConfig::default()
    };
    let engine = SyncEngine::builder()
        .client(
            mock.client_builder()
                .requests_per_minute(600)
                .build()
                .expect("client"),
        )
        .store(store)
        .host(MemoryHost::new(Mappings::from_config(&config)))
        .config(config)
        .build()
        .expect("engine");
    let receiver = engine.webhook_receiver();
    let addr = serve(receiver.clone()).await;
    let webhook_url = format!("http://{addr}/keycrm?token={TOKEN}");
    let bare_url = format!("http://{addr}/bare");

    println!(
        "webhook_ingest: {n} webhooks per phase, {SENDERS} concurrent senders, HTTP/1.1 on \
         loopback, SQLite file (WAL, synchronous=FULL), 2 runtime threads"
    );
    // Warm-up (connections, page cache), not measured.
    load(&bare_url, 0..SENDERS * 4).await;

    let floor = load(&bare_url, 0..n).await;
    print("bare handler (parse JSON, store nothing)", &floor);

    let before = receiver.stats();
    let intake = load(&webhook_url, 0..n).await;
    print("receiver (token, parse, durable group commit)", &intake);
    let after = receiver.stats();
    let groups = after.groups - before.groups;
    println!(
        "  {} stored in {groups} commits: {:.1} webhooks per fsync",
        after.stored - before.stored,
        (after.stored - before.stored) as f64 / groups.max(1) as f64
    );
    let committed = engine.store().counts().await.expect("counts").inbox_backlog;

    let resync = tokio::spawn({
        let engine = engine.clone();
        async move { engine.full_resync().await }
    });
    // Let the resync get going (it reads statuses, then pages through KeyCRM).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = load(&webhook_url, n..2 * n).await;
    let still_running = !resync.is_finished();
    print("receiver during a full resync (paced sim)", &busy);
    let last = receiver.stats();
    println!(
        "  {} stored in {} commits: {:.1} webhooks per fsync",
        last.stored - after.stored,
        last.groups - after.groups,
        (last.stored - after.stored) as f64 / (last.groups - after.groups).max(1) as f64
    );
    resync.abort();

    println!(
        "ratio receiver / bare: {:.2} (during resync: {:.2}); inbox rows after the receiver \
         phase: {committed}; resync still running during the load: {still_running}; simulator \
         requests: {}",
        intake.per_second / floor.per_second,
        busy.per_second / floor.per_second,
        mock.request_count(),
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
