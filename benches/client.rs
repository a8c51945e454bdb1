//! Client runtime benchmarks, printed side by side:
//!
//! (a) per-request overhead of the full stack (hooks, auth, retries bookkeeping, tracing
//!     span, typed decode) against a bare reqwest call that decodes the same type, both
//!     against the same loopback server, pacing off;
//! (b) quota adherence: 8 tasks on clones of one client against a loopback server that
//!     enforces N requests per sliding second; share of the quota achieved and 429s seen.
//!
//! ```sh
//! cargo bench --bench client
//! ```

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keycrm::api::{Client, Page, types};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "bench-key";

fn status_page() -> serde_json::Value {
    let data: Vec<_> = (1..=15)
        .map(|i| {
            json!({"id": i, "name": format!("status-{i}"), "alias": "new", "is_active": true,
                        "group_id": 1, "created_at": "2024-05-16T17:00:07.000000Z"})
        })
        .collect();
    json!({"current_page": 1, "data": data, "last_page": 1, "per_page": 15, "total": 15,
           "next_page_url": null, "prev_page_url": null, "from": 1, "to": 15,
           "first_page_url": "http://x/order/status?page=1", "last_page_url": "http://x/order/status?page=1",
           "path": "http://x/order/status"})
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    overhead().await;
    quota().await;
}

async fn overhead() {
    let server = MockServer::builder()
        .disable_request_recording()
        .start()
        .await;
    Mock::given(method("GET"))
        .and(path("/order/status"))
        .respond_with(ResponseTemplate::new(200).set_body_json(status_page()))
        .mount(&server)
        .await;
    let client = Client::builder()
        .api_key(KEY)
        .base_url(server.uri())
        .requests_per_minute(0)
        .build()
        .unwrap();
    let bare = reqwest::Client::new();
    let url = format!("{}/order/status", server.uri());

    let bare_call = || async {
        let response = bare
            .get(&url)
            .header("authorization", format!("Bearer {KEY}"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        let bytes = response.bytes().await.unwrap();
        let page: Page<types::Status> = serde_json::from_slice(&bytes).unwrap();
        black_box(page.data.len());
    };
    let sdk_call = || async {
        let page = client.order_status_list().send().await.unwrap();
        black_box(page.data.len());
    };

    // Warm up both connections, then alternate rounds so drift hits both alike.
    for _ in 0..200 {
        bare_call().await;
        sdk_call().await;
    }
    let (mut bare_samples, mut sdk_samples) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        let t = Instant::now();
        for _ in 0..100 {
            bare_call().await;
        }
        bare_samples.push(t.elapsed().as_secs_f64() / 100.0);
        let t = Instant::now();
        for _ in 0..100 {
            sdk_call().await;
        }
        sdk_samples.push(t.elapsed().as_secs_f64() / 100.0);
    }
    let bare_median = median(&mut bare_samples);
    let sdk_median = median(&mut sdk_samples);
    println!("(a) per-request time, loopback, pacing off (median of 30 rounds x 100 requests)");
    println!("    bare reqwest + decode   {:>8.1} µs", bare_median * 1e6);
    println!("    keycrm client           {:>8.1} µs", sdk_median * 1e6);
    println!(
        "    ratio client/bare       {:>8.3}   (target <= 1.15)",
        sdk_median / bare_median
    );
}

/// At most `limit` requests in any sliding `window`; 429 beyond that.
struct Quota {
    limit: usize,
    window: Duration,
    seen: Mutex<VecDeque<Instant>>,
    served: Mutex<(u64, u64)>,
}

struct QuotaResponder(Arc<Quota>);

impl Respond for QuotaResponder {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let q = &self.0;
        let now = Instant::now();
        let mut seen = q.seen.lock().unwrap();
        while seen
            .front()
            .is_some_and(|t| now.duration_since(*t) >= q.window)
        {
            seen.pop_front();
        }
        let mut served = q.served.lock().unwrap();
        if seen.len() >= q.limit {
            served.1 += 1;
            return ResponseTemplate::new(429).insert_header("Retry-After", "1");
        }
        seen.push_back(now);
        served.0 += 1;
        ResponseTemplate::new(200)
            .set_body_json(json!({"current_page": 1, "data": [], "next_page_url": null}))
    }
}

async fn quota() {
    let per_second = 100usize;
    let quota = Arc::new(Quota {
        limit: per_second,
        window: Duration::from_secs(1),
        seen: Mutex::new(VecDeque::new()),
        served: Mutex::new((0, 0)),
    });
    let server = MockServer::builder()
        .disable_request_recording()
        .start()
        .await;
    Mock::given(method("GET"))
        .and(path("/order/source"))
        .respond_with(QuotaResponder(quota.clone()))
        .mount(&server)
        .await;
    let client = Client::builder()
        .api_key(KEY)
        .base_url(server.uri())
        .requests_per_minute((per_second * 60) as u32)
        .build()
        .unwrap();
    let run_for = Duration::from_secs(6);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < run_for {
                c.order_source_list().send().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (ok, rejected) = *quota.served.lock().unwrap();
    let allowed = per_second as f64 * elapsed;
    println!(
        "(b) quota adherence: 8 tasks, server allows {per_second}/s (sliding 1 s window), {elapsed:.1} s"
    );
    println!(
        "    requests served {ok}, quota {allowed:.0}, share achieved {:.1} % (target >= 95 %)",
        100.0 * ok as f64 / allowed
    );
    println!(
        "    429s seen by the server {rejected}, by the client {} (target 0)",
        client.stats().rate_limited
    );
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
