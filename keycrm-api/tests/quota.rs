//! Adaptive pacing against each window model of the simulator's quota, on tokio's paused
//! clock.
//!
//! wiremock answers from its own runtime thread, whose clock a paused test clock does not
//! reach, so the quota here is the simulator's [`QuotaCounter`] served by a small HTTP/1.1
//! loop inside the test's runtime: server and client read the same paused clock, and a
//! minute of quota takes no real time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keycrm_api::mock::{Quota, QuotaCounter, Window};
use keycrm_api::{Client, ClientBuilder, PacingMode, RateLimitBudget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const KEY: &str = "sk-test-quota";
const MODELS: [Window; 3] = [Window::Fixed, Window::Rolling, Window::TokenBucket];

/// What the quota server saw.
#[derive(Default)]
struct Seen {
    /// Arrival times (since the server started) and whether each passed.
    arrivals: Vec<(Duration, bool)>,
}

struct QuotaServer {
    addr: SocketAddr,
    counter: Arc<Mutex<QuotaCounter>>,
    seen: Arc<Mutex<Seen>>,
    start: Instant,
}

impl QuotaServer {
    async fn start(quota: Quota) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counter = Arc::new(Mutex::new(QuotaCounter::new(quota)));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let start = Instant::now();
        let (c, s) = (counter.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(stream, c.clone(), s.clone(), start));
            }
        });
        Self {
            addr,
            counter,
            seen,
            start,
        }
    }

    fn client(&self) -> ClientBuilder {
        Client::builder()
            .api_key(KEY)
            .base_url(format!("http://{}", self.addr))
    }

    fn rejected(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .arrivals
            .iter()
            .filter(|(_, ok)| !ok)
            .count()
    }

    fn arrivals(&self) -> Vec<(Duration, bool)> {
        self.seen.lock().unwrap().arrivals.clone()
    }

    /// Another user of the same key spends `n` requests now.
    fn spend_elsewhere(&self, n: u32) {
        let now = self.start.elapsed();
        let mut counter = self.counter.lock().unwrap();
        for _ in 0..n {
            counter.hit(now);
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    counter: Arc<Mutex<QuotaCounter>>,
    seen: Arc<Mutex<Seen>>,
    start: Instant,
) {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let body_len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + body_len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..head_end + body_len);
        let now = start.elapsed();
        let answer = counter.lock().unwrap().hit(now);
        seen.lock().unwrap().arrivals.push((now, answer.allowed));
        let (status, body) = if answer.allowed {
            (
                200,
                r#"{"current_page":1,"last_page":1,"data":[{"id":1,"name":"new"}]}"#,
            )
        } else {
            (429, r#"{"message":"Too Many Attempts."}"#)
        };
        let wall = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + now;
        let mut out = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in answer.headers(wall) {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(body);
        if stream.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// `tasks` tasks share `total` requests; returns when all are answered. Every call must
/// succeed.
async fn run(client: &Client, tasks: usize, total: usize) {
    assert_eq!(calls(client, tasks, total).await, total);
}

/// `tasks` tasks share `total` calls; returns how many succeeded.
async fn calls(client: &Client, tasks: usize, total: usize) -> usize {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (c, next) = (client.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let mut ok = 0;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                ok += usize::from(c.order_status_list().send().await.is_ok());
            }
            ok
        }));
    }
    let mut ok = 0;
    for h in handles {
        ok += h.await.unwrap();
    }
    ok
}

fn quota(model: Window, headers: bool) -> Quota {
    Quota::per_minute(60).with_model(model).headers(headers)
}

#[tokio::test(start_paused = true)]
async fn with_headers_a_small_job_runs_at_once_and_a_large_one_never_sees_a_429() {
    for model in MODELS {
        let server = QuotaServer::start(quota(model, true)).await;
        let client = server.client().build().unwrap();
        let start = Instant::now();
        run(&client, 1, 30).await;
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{model:?}: 30 reads spend the fresh budget at once, took {:?}",
            start.elapsed()
        );
        run(&client, 8, 170).await;
        let elapsed = start.elapsed();
        assert_eq!(server.rejected(), 0, "{model:?}: {:?}", server.arrivals());
        let stats = client.stats();
        assert_eq!((stats.requests, stats.rate_limited), (200, 0), "{model:?}");
        assert_eq!(stats.mode, PacingMode::Adaptive);
        assert!(
            matches!(stats.budget, Some(RateLimitBudget { limit: 60, .. })),
            "{stats:?}"
        );
        // 200 requests at 60 per minute: at least three windows beyond the first; the whole
        // quota is used (at most one window of slack plus the 1 % margin).
        assert!(
            elapsed < Duration::from_secs(250),
            "{model:?}: 200 requests took {elapsed:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn without_headers_at_most_one_429_per_window() {
    for model in MODELS {
        let server = QuotaServer::start(quota(model, false)).await;
        // A burst the server punishes: the adaptive limiter halves it on each 429.
        let client = server.client().burst(20).build().unwrap();
        let start = Instant::now();
        run(&client, 8, 200).await;
        let elapsed = start.elapsed();
        let windows = elapsed.as_secs().div_ceil(60).max(1) as usize;
        let rejected = server.rejected();
        assert!(
            rejected <= windows,
            "{model:?}: {rejected} 429s in {windows} windows: {:?}",
            server.arrivals()
        );
        let stats = client.stats();
        assert_eq!(stats.budget, None);
        assert_eq!(stats.requests, 200 + rejected as u64);
        assert!(
            elapsed < Duration::from_secs(60 * 4),
            "{model:?}: paced near the quota, took {elapsed:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn without_headers_the_even_rate_never_sends_a_window_too_many() {
    for model in MODELS {
        let server = QuotaServer::start(quota(model, false)).await;
        // A burst larger than the window: only the log of our own answers keeps it in.
        let client = server.client().burst(200).build().unwrap();
        run(&client, 8, 130).await;
        assert_eq!(server.rejected(), 0, "{model:?}: {:?}", server.arrivals());
        let even = QuotaServer::start(quota(model, false)).await;
        let client = even
            .client()
            .burst(200)
            .pacing(PacingMode::Even)
            .build()
            .unwrap();
        calls(&client, 8, 130).await;
        assert!(even.rejected() > 0, "{model:?}: even mode trusts the burst");
        assert_eq!(client.stats().mode, PacingMode::Even);
    }
}

#[tokio::test(start_paused = true)]
async fn even_mode_ignores_the_headers() {
    let server = QuotaServer::start(quota(Window::Fixed, true)).await;
    let client = server.client().pacing(PacingMode::Even).build().unwrap();
    let start = Instant::now();
    run(&client, 1, 5).await;
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(4040),
        "one per 1.01 s"
    );
    assert_eq!(client.stats().budget, None);
}

#[tokio::test(start_paused = true)]
async fn in_budget_mode_a_429_still_holds_every_task_until_the_gate_opens() {
    for model in MODELS {
        let server = QuotaServer::start(quota(model, true)).await;
        let client = server.client().build().unwrap();
        run(&client, 1, 1).await;
        let known = client.stats().budget.expect("the budget is known");
        assert_eq!((known.limit, known.remaining), (60, 59), "{model:?}");
        // Another process spends the rest of the window behind our back.
        server.spend_elsewhere(59);
        run(&client, 8, 24).await;
        let arrivals = server.arrivals();
        let refused: Vec<_> = arrivals.iter().filter(|(_, ok)| !ok).collect();
        assert!(!refused.is_empty(), "{model:?}");
        let first_refusal = refused[0].0;
        let gate = first_refusal + Duration::from_secs(1);
        // Requests already on the wire when the 429 came back may be refused too; after
        // that, nobody arrives before the gate opens, and every later request passes.
        let after: Vec<_> = arrivals
            .iter()
            .filter(|(t, _)| *t > first_refusal)
            .collect();
        assert!(
            after.iter().all(|(t, ok)| *t >= gate && *ok),
            "{model:?}: {arrivals:?}"
        );
        assert!(refused.len() <= 8, "{model:?}: one per task at most");
        assert!(refused.iter().all(|(t, _)| *t == first_refusal));
    }
}
