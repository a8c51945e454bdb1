//! Adaptive pacing against each window model of the simulator's quota, on tokio's paused
//! clock; and a quota shared by separate clients.
//!
//! The server is the simulator's [`QuotaServer`]: it runs inside the test's runtime and
//! counts the quota on its paused clock, so a minute of quota takes no real time.

use std::sync::Arc;
use std::time::Duration;

use keycrm_api::clock::TokioClock;
use keycrm_api::mock::{Arrival, Quota, QuotaServer, Window};
use keycrm_api::quota::InProcessQuota;
use keycrm_api::{Client, PacingMode, RateLimitBudget};
use tokio::time::Instant;

const KEY: &str = "sk-test-quota";
const MODELS: [Window; 3] = [Window::Fixed, Window::Rolling, Window::TokenBucket];

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

/// A default client against `model`: 30 reads by one task, which must take under a
/// second, then 170 more by eight tasks, without a 429. Returns the server, the client and
/// the time it all took.
async fn small_then_large(model: Window, headers: bool) -> (QuotaServer, Client, Duration) {
    let server = QuotaServer::start(quota(model, headers)).await;
    let client = server.client(KEY).build().unwrap();
    let start = Instant::now();
    run(&client, 1, 30).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{model:?}, headers {headers}: 30 reads go at once, took {:?}",
        start.elapsed()
    );
    run(&client, 8, 170).await;
    let elapsed = start.elapsed();
    assert_eq!(server.rejected(), 0, "{model:?}: {:?}", server.arrivals());
    (server, client, elapsed)
}

#[tokio::test(start_paused = true)]
async fn with_headers_a_small_job_runs_at_once_and_a_large_one_never_sees_a_429() {
    for model in MODELS {
        let (_server, client, elapsed) = small_then_large(model, true).await;
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
        let client = server.client(KEY).burst(20).build().unwrap();
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
async fn without_headers_a_small_job_runs_at_once_and_no_window_is_exceeded() {
    for model in MODELS {
        // The 30 reads go in the optimistic burst (a window of the configured rate).
        let (server, client, elapsed) = small_then_large(model, false).await;
        let arrivals = server.arrivals();
        assert!(
            busiest(&arrivals, Duration::from_secs(60)) <= 60,
            "{model:?}: never more than the rate within a minute"
        );
        let stats = client.stats();
        assert_eq!(
            (
                stats.requests,
                stats.rate_limited,
                stats.budget,
                stats.burst
            ),
            (200, 0, None, 60),
            "{model:?}"
        );
        // Three windows beyond the first, each spent at once.
        assert!(
            elapsed < Duration::from_secs(3 * 61 + 5),
            "{model:?}: 200 requests took {elapsed:?}"
        );
    }
}

/// The arrivals refused with 429, and a check that after each one nobody arrived before
/// `gate` had passed (requests answered together with it, on the wire, excepted).
fn gates_held(arrivals: &[Arrival], gate: Duration) -> Vec<Duration> {
    let refused: Vec<_> = arrivals
        .iter()
        .filter(|a| !a.allowed)
        .map(|a| a.at)
        .collect();
    for &r in &refused {
        assert!(
            arrivals.iter().all(|a| a.at <= r || a.at >= r + gate),
            "nobody within {gate:?} after the 429 at {r:?}: {arrivals:?}"
        );
    }
    refused
}

#[tokio::test(start_paused = true)]
async fn without_headers_a_probed_burst_costs_at_most_one_429_per_window() {
    for model in MODELS {
        let server = QuotaServer::start(quota(model, false)).await;
        // Another process on the key spent 40 of the window: the burst of 60 is too much.
        server.spend_elsewhere(40);
        let client = server.client(KEY).build().unwrap();
        let start = Instant::now();
        run(&client, 8, 150).await;
        let elapsed = start.elapsed();
        let arrivals = server.arrivals();
        // Retry-After is at least a second; each 429's gate held all eight tasks.
        let refused = gates_held(&arrivals, Duration::from_secs(1));
        assert_eq!(refused.len(), 1, "{model:?}: {arrivals:?}");
        let windows = elapsed.as_secs().div_ceil(60).max(1) as usize;
        assert!(refused.len() <= windows, "{model:?}");
        let stats = client.stats();
        assert_eq!((stats.requests, stats.rate_limited), (151, 1), "{model:?}");
        assert!(
            (30..60).contains(&stats.burst),
            "{model:?}: the 429 halved the burst, each clean minute gave one back: {stats:?}"
        );
        assert!(
            busiest(&arrivals, Duration::from_secs(60)) <= 60,
            "{model:?}: never more than the rate within a minute"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn without_headers_a_server_counting_less_sees_at_most_one_429_per_window() {
    for model in MODELS {
        // The server counts 20 per 20 s, a third of the window: even pacing at 60/min
        // is right, the optimistic burst is not.
        let server = QuotaServer::start(
            Quota::new(20, Duration::from_secs(20))
                .with_model(model)
                .headers(false),
        )
        .await;
        let client = server.client(KEY).build().unwrap();
        let start = Instant::now();
        run(&client, 8, 120).await;
        let elapsed = start.elapsed();
        let arrivals = server.arrivals();
        let refused = gates_held(&arrivals, Duration::from_secs(1));
        assert!(!refused.is_empty(), "{model:?}: the burst was too much");
        for pair in refused.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_secs(60),
                "{model:?}: at most one 429 per window: {refused:?}"
            );
        }
        let stats = client.stats();
        assert_eq!(stats.rate_limited as usize, refused.len(), "{model:?}");
        assert!(
            elapsed < Duration::from_secs(150),
            "{model:?}: paced near the rate after the 429, took {elapsed:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn without_headers_the_even_rate_never_sends_a_window_too_many() {
    for model in MODELS {
        let server = QuotaServer::start(quota(model, false)).await;
        // A burst larger than the window: only the log of our own answers keeps it in.
        let client = server.client(KEY).burst(200).build().unwrap();
        run(&client, 8, 130).await;
        assert_eq!(server.rejected(), 0, "{model:?}: {:?}", server.arrivals());
        let even = QuotaServer::start(quota(model, false)).await;
        let client = even
            .client(KEY)
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
    let client = server.client(KEY).pacing(PacingMode::Even).build().unwrap();
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
        let client = server.client(KEY).build().unwrap();
        run(&client, 1, 1).await;
        let known = client.stats().budget.expect("the budget is known");
        assert_eq!((known.limit, known.remaining), (60, 59), "{model:?}");
        // Another process spends the rest of the window behind our back.
        server.spend_elsewhere(59);
        run(&client, 8, 24).await;
        let arrivals = server.arrivals();
        let refused: Vec<_> = arrivals.iter().filter(|a| !a.allowed).collect();
        assert!(!refused.is_empty(), "{model:?}");
        let first_refusal = refused[0].at;
        let gate = first_refusal + Duration::from_secs(1);
        // Requests already on the wire when the 429 came back may be refused too; after
        // that, nobody arrives before the gate opens, and every later request passes.
        let after: Vec<_> = arrivals.iter().filter(|a| a.at > first_refusal).collect();
        assert!(
            after.iter().all(|a| a.at >= gate && a.allowed),
            "{model:?}: {arrivals:?}"
        );
        assert!(refused.len() <= 8, "{model:?}: one per task at most");
        assert!(refused.iter().all(|a| a.at == first_refusal));
    }
}

/// Two separate clients (not clones) of one key, each with `tasks` tasks, `per_client`
/// calls each; every call must succeed.
async fn two_clients(a: &Client, b: &Client, tasks: usize, per_client: usize) {
    let (first, second) = tokio::join!(calls(a, tasks, per_client), calls(b, tasks, per_client));
    assert_eq!((first, second), (per_client, per_client));
}

/// The most requests within any span of `window` among `arrivals`.
fn busiest(arrivals: &[Arrival], window: Duration) -> usize {
    arrivals
        .iter()
        .enumerate()
        .map(|(i, first)| {
            arrivals[i..]
                .iter()
                .take_while(|a| a.at < first.at + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Two separate clients of `server`'s key (a web process and a worker, say) on one
/// in-process shared quota, on the paused clock.
fn sharing_clients(server: &QuotaServer) -> (Client, Client) {
    let shared = Arc::new(InProcessQuota::new(Arc::new(TokioClock::new())));
    let build = |quota: Arc<InProcessQuota>| server.client(KEY).shared_quota(quota).build();
    (build(shared.clone()).unwrap(), build(shared).unwrap())
}

#[tokio::test(start_paused = true)]
async fn separate_clients_sharing_a_quota_never_exceed_its_rate_together() {
    for headers in [false, true] {
        let model = Window::Rolling;
        let server = QuotaServer::start(quota(model, headers)).await;
        let (web, worker) = sharing_clients(&server);
        let start = Instant::now();
        two_clients(&web, &worker, 4, 75).await;
        let arrivals = server.arrivals();
        assert_eq!(server.rejected(), 0, "headers {headers}: {arrivals:?}");
        assert_eq!(arrivals.len(), 150);
        assert!(
            busiest(&arrivals, Duration::from_secs(60)) <= 60,
            "headers {headers}: at most 60 in any minute, together"
        );
        for pair in arrivals.windows(2) {
            assert!(
                pair[1].at - pair[0].at >= Duration::from_millis(1010),
                "evenly spaced at the shared rate: {arrivals:?}"
            );
        }
        assert!(start.elapsed() >= Duration::from_millis(149 * 1010));
        for client in [&web, &worker] {
            let stats = client.stats();
            assert!(stats.shared_quota, "{stats:?}");
            assert_eq!((stats.requests, stats.rate_limited), (75, 0));
            assert!(stats.shared_waits > 0 && stats.shared_waited > Duration::ZERO);
            assert!(stats.waited >= stats.shared_waited, "{stats:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn without_the_shared_quota_the_same_clients_see_429s() {
    let server = QuotaServer::start(quota(Window::Rolling, false)).await;
    let web = server.client(KEY).max_retries(10).build().unwrap();
    let worker = server.client(KEY).max_retries(10).build().unwrap();
    two_clients(&web, &worker, 4, 75).await;
    assert!(server.rejected() > 0, "each paces alone: twice the rate");
    assert!(!web.stats().shared_quota);
}

#[tokio::test(start_paused = true)]
async fn a_429_seen_by_one_client_holds_the_other() {
    for model in MODELS {
        let server = QuotaServer::start(quota(model, false)).await;
        // Another process, not on the shared quota, spent the whole window.
        server.spend_elsewhere(60);
        let (web, worker) = sharing_clients(&server);
        // Eight tasks book their shared slots; only the first leaves at once and sees the
        // 429. The others, asleep for their slots (on both clients), book again after the
        // shared gate.
        two_clients(&web, &worker, 4, 8).await;
        let arrivals = server.arrivals();
        assert_eq!(server.rejected(), 1, "{model:?}: {arrivals:?}");
        assert_eq!(arrivals[0].at, Duration::ZERO);
        assert!(!arrivals[0].allowed);
        let gate = match model {
            Window::TokenBucket => Duration::from_secs(1),
            _ => Duration::from_secs(60),
        };
        assert!(
            arrivals[1..].iter().all(|a| a.allowed && a.at >= gate),
            "{model:?}: nobody before the gate opens at {gate:?}: {arrivals:?}"
        );
        let limited = web.stats().rate_limited + worker.stats().rate_limited;
        assert_eq!(limited, 1, "{model:?}");
        let held = if web.stats().rate_limited == 1 {
            worker.stats()
        } else {
            web.stats()
        };
        assert!(held.shared_waited >= gate, "{model:?}: {held:?}");
    }
}
