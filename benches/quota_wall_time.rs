//! Wall time against each window model of the quota, with and without the rate-limit
//! headers, for our client in `adaptive` and `even` pacing and for a naive bursting client
//! (no pacing; on a 429 it sleeps `Retry-After`, then sends again), side by side.
//!
//! Scenarios: (a) 30 reads, (b) 68 mixed reads (order statuses and sources), (c) 600
//! requests shared by 8 concurrent tasks. Quota: 60 per minute, as KeyCRM's.
//!
//! Everything runs on tokio's paused clock: the quota is the simulator's `QuotaServer`,
//! which runs inside the bench's runtime and counts on its clock (wiremock answers from a
//! thread of its own, which a paused clock does not reach), each answer takes 20 ms of
//! simulated latency, and waiting costs no real time. Wall times are simulated seconds.
//!
//! ```sh
//! cargo bench --bench quota_wall_time   # or: cargo test --release --bench quota_wall_time
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use keycrm_api::mock::{Quota, QuotaCounter, QuotaServer, Window};
use keycrm_api::{PacingMode, QuotaModel};
use tokio::time::Instant;

const KEY: &str = "bench-key";
const LATENCY: Duration = Duration::from_millis(20);
const LIMIT: u32 = 60;

#[derive(Clone, Copy)]
enum Scenario {
    Reads30,
    Mixed68,
    Concurrent600,
}

impl Scenario {
    fn shape(self) -> (usize, usize) {
        match self {
            Scenario::Reads30 => (1, 30),
            Scenario::Mixed68 => (1, 68),
            Scenario::Concurrent600 => (8, 600),
        }
    }

    fn letter(self) -> &'static str {
        match self {
            Scenario::Reads30 => "(a)",
            Scenario::Mixed68 => "(b)",
            Scenario::Concurrent600 => "(c)",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Scenario::Reads30 => "(a) 30 reads, one task",
            Scenario::Mixed68 => "(b) 68 mixed reads, one task",
            Scenario::Concurrent600 => "(c) 600 requests, 8 concurrent tasks",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Outcome {
    wall: Duration,
    requests: u64,
    rejected: u64,
    /// What our client learnt of the server's model (`None` for the naive client).
    learnt: Option<QuotaModel>,
}

#[derive(Clone, Copy)]
enum Contender {
    Ours(PacingMode, u32),
    Naive,
}

async fn ours(server: &QuotaServer, mode: PacingMode, burst: u32, scenario: Scenario) -> Outcome {
    let client = server
        .client(KEY)
        .pacing(mode)
        .burst(burst)
        .max_retries(10)
        .build()
        .unwrap();
    let (tasks, total) = scenario.shape();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (c, next) = (client.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let ok = if i % 2 == 1 {
                    c.order_source_list().send().await.is_ok()
                } else {
                    c.order_status_list().send().await.is_ok()
                };
                assert!(ok, "every call succeeds");
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let wall = start.elapsed();
    let stats = client.stats();
    Outcome {
        wall,
        requests: stats.requests,
        rejected: stats.rate_limited,
        learnt: Some(stats.quota_model),
    }
}

/// The peer: bursts, and on a 429 sleeps `Retry-After` and sends the same request again.
async fn naive(server: &QuotaServer, scenario: Scenario) -> Outcome {
    let http = reqwest::Client::new();
    let (tasks, total) = scenario.shape();
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (http, next, sent) = (http.clone(), next.clone(), sent.clone());
        let base = server.uri();
        handles.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let url = if i % 2 == 1 {
                    format!("{base}/order/source")
                } else {
                    format!("{base}/order/status")
                };
                loop {
                    sent.fetch_add(1, Ordering::Relaxed);
                    let response = http
                        .get(&url)
                        .bearer_auth(KEY)
                        .send()
                        .await
                        .expect("loopback answers");
                    if response.status() != 429 {
                        let _ = response.bytes().await;
                        break;
                    }
                    let wait = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(1);
                    let _ = response.bytes().await;
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    Outcome {
        wall: start.elapsed(),
        requests: sent.load(Ordering::Relaxed),
        rejected: server.rejected() as u64,
        learnt: None,
    }
}

async fn measure(model: Window, headers: bool, scenario: Scenario, who: Contender) -> Outcome {
    let quota = Quota::per_minute(LIMIT).with_model(model).headers(headers);
    let server = QuotaServer::start_with_latency(quota, LATENCY).await;
    let outcome = match who {
        Contender::Ours(mode, burst) => ours(&server, mode, burst, scenario).await,
        Contender::Naive => naive(&server, scenario).await,
    };
    assert_eq!(
        outcome.rejected,
        server.rejected() as u64,
        "client and server agree on the 429s"
    );
    outcome
}

/// The most requests the model lets through in `within`: a greedy client that sends
/// whenever the counter allows and otherwise waits `Retry-After`.
fn capacity(quota: Quota, within: Duration) -> u64 {
    let mut counter = QuotaCounter::new(quota);
    let mut now = Duration::ZERO;
    let mut passed = 0;
    while now <= within {
        let answer = counter.hit(now);
        if answer.allowed {
            passed += 1;
        } else {
            now += Duration::from_secs(answer.retry_after.unwrap_or(1));
        }
    }
    passed
}

/// Requests that passed, as a share of what the server offered during the run.
fn quota_use(quota: Quota, o: &Outcome) -> f64 {
    let passed = o.requests - o.rejected;
    100.0 * passed as f64 / capacity(quota, o.wall) as f64
}

/// The model `adaptive` learnt, in a word or two.
fn learnt(o: &Outcome) -> String {
    match o.learnt {
        Some(QuotaModel::Lenient { passed }) => format!("lenient ({passed} probes passed)"),
        Some(QuotaModel::TokenBucket { refill }) => {
            format!("token bucket ({} ms)", refill.as_millis())
        }
        Some(QuotaModel::Window) => "window".to_string(),
        Some(_) | None => "-".to_string(),
    }
}

fn cell(o: &Outcome) -> String {
    format!(
        "{:>8.2}s {:>4} {:>3}",
        o.wall.as_secs_f64(),
        o.requests,
        o.rejected
    )
}

/// One row of the table: a server model, with or without headers, and each contender's
/// outcome (in the order of `CONTENDERS`).
struct Row {
    scenario: Scenario,
    model: Window,
    headers: bool,
    outcomes: Vec<Outcome>,
}

const CONTENDERS: [(&str, Contender); 4] = [
    ("adaptive", Contender::Ours(PacingMode::Adaptive, 1)),
    ("even", Contender::Ours(PacingMode::Even, 1)),
    ("naive burst", Contender::Naive),
    ("adaptive b=60", Contender::Ours(PacingMode::Adaptive, 60)),
];
const ADAPTIVE: usize = 0;
const NAIVE: usize = 2;
const ADAPTIVE_B60: usize = 3;

impl Row {
    fn name(&self) -> String {
        let headers = if self.headers {
            "+headers"
        } else {
            "no headers"
        };
        format!("{:?} {headers}", self.model)
    }

    /// `who`'s wall time over the naive client's.
    fn ratio(&self, who: usize) -> f64 {
        self.outcomes[who].wall.as_secs_f64() / self.outcomes[NAIVE].wall.as_secs_f64().max(1e-9)
    }

    /// The least time 600 requests need at the quota (540 s) over `who`'s wall time.
    fn pace(&self, who: usize) -> f64 {
        100.0 * 540.0 / self.outcomes[who].wall.as_secs_f64()
    }
}

/// Which of issue 17's goals the table meets, for `who`, and where it does not.
fn goals(rows: &[Row], who: usize) {
    let name = CONTENDERS[who].0;
    let short: Vec<_> = rows
        .iter()
        .filter(|r| !matches!(r.scenario, Scenario::Concurrent600) && r.ratio(who) > 1.1)
        .map(|r| format!("{} {} {:.2}x", r.scenario.letter(), r.name(), r.ratio(who)))
        .collect();
    let with_429: Vec<_> = rows
        .iter()
        .filter(|r| r.headers && r.outcomes[who].rejected > 0)
        .map(|r| format!("{} {}", r.scenario.letter(), r.name()))
        .collect();
    let slow: Vec<_> = rows
        .iter()
        .filter(|r| matches!(r.scenario, Scenario::Concurrent600) && r.pace(who) < 95.0)
        .map(|r| format!("{} {:.1} %", r.name(), r.pace(who)))
        .collect();
    let per_window: Vec<_> = rows
        .iter()
        .filter(|r| {
            let windows = r.outcomes[who].wall.as_secs_f64() / 60.0;
            r.outcomes[who].rejected as f64 > windows.ceil().max(1.0)
        })
        .map(|r| format!("{} {}", r.scenario.letter(), r.name()))
        .collect();
    let more_429: Vec<_> = rows
        .iter()
        .filter(|r| r.outcomes[who].rejected > r.outcomes[NAIVE].rejected)
        .map(|r| format!("{} {}", r.scenario.letter(), r.name()))
        .collect();
    let verdict = |misses: &[String]| {
        if misses.is_empty() {
            "met".to_string()
        } else {
            format!("NOT met: {}", misses.join("; "))
        }
    };
    println!("{name}:");
    println!(
        "  (a), (b) within 1.1x of the naive client: {}",
        verdict(&short)
    );
    println!(
        "  0 x 429 whenever headers are sent:        {}",
        verdict(&with_429)
    );
    println!(
        "  (c) at >= 95 % of the quota's pace:       {}",
        verdict(&slow)
    );
    println!(
        "  never more 429s than the naive client:    {}",
        verdict(&more_429)
    );
    println!(
        "  at most one 429 per 60-s window:          {}",
        verdict(&per_window)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "quota {LIMIT}/min; simulated time (tokio paused clock), {} ms latency per answer",
            LATENCY.as_millis()
        );
        println!("cells: wall time, requests sent, 429s received");
        println!(
            "quota use: requests passed / requests the model lets through within the wall time;"
        );
        println!("pace: 540 s (the least time 600 requests need at 60/min) / wall time");
        let mut rows = Vec::new();
        for scenario in [
            Scenario::Reads30,
            Scenario::Mixed68,
            Scenario::Concurrent600,
        ] {
            println!();
            println!("{}", scenario.title());
            let mut header = format!("{:<22}", "server");
            for (name, _) in &CONTENDERS {
                header.push_str(&format!(" | {name:^19}"));
            }
            if matches!(scenario, Scenario::Concurrent600) {
                header.push_str(" | adaptive: quota use, pace");
            } else {
                header.push_str(" | adaptive / naive");
            }
            header.push_str(" | adaptive learnt");
            println!("{header}");
            for model in [Window::Fixed, Window::Rolling, Window::TokenBucket] {
                for headers in [true, false] {
                    let mut outcomes = Vec::new();
                    for (_, who) in CONTENDERS {
                        outcomes.push(measure(model, headers, scenario, who).await);
                    }
                    let row = Row {
                        scenario,
                        model,
                        headers,
                        outcomes,
                    };
                    let mut line = format!("{:<22}", row.name());
                    for o in &row.outcomes {
                        line.push_str(&format!(" | {}", cell(o)));
                    }
                    if matches!(scenario, Scenario::Concurrent600) {
                        let quota = Quota::per_minute(LIMIT).with_model(model);
                        line.push_str(&format!(
                            " | {:>5.1} % {:>5.1} %",
                            quota_use(quota, &row.outcomes[ADAPTIVE]),
                            row.pace(ADAPTIVE)
                        ));
                    } else {
                        line.push_str(&format!(" | {:>16.2}x", row.ratio(ADAPTIVE)));
                    }
                    line.push_str(&format!(" | {}", learnt(&row.outcomes[ADAPTIVE])));
                    println!("{line}");
                    rows.push(row);
                }
            }
        }
        println!();
        println!("goals of issue 17 (every server model allows the bursts of (a) and (b)):");
        goals(&rows, ADAPTIVE);
        goals(&rows, ADAPTIVE_B60);
        println!(
            "why: without rate-limit headers `adaptive` learns its burst (AIMD: it starts with\n\
             a window of the configured rate, 60, halves it on each 429 and gives one back per\n\
             clean minute) and, from one probe, how the server counts: once a window's worth\n\
             is out and more requests wait, one goes beyond it, alone on the wire and no\n\
             sooner than a bucket of 60/min allows. A fixed or rolling window refuses it with\n\
             a long Retry-After: that is the run's one 429, and the client never probes again\n\
             (never more than 60 within a minute of its own answers). A token bucket lets it\n\
             through, having refilled, and the client keeps probing one at a time at the\n\
             bucket's rate: (b) follows the refill instead of waiting a window, without the\n\
             naive client's 429s. `even` keeps the configured burst (1)."
        );
    });
}
