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
use keycrm_api::{Client, PacingMode, QuotaModel, RateLimitBudget};
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

/// Whether a default client's probe beyond the window meets a 429 from `model` (without
/// headers, a fixed or rolling window refuses it; a token bucket of the rate does not).
fn probe_refused(model: Window, headers: bool) -> usize {
    usize::from(!headers && model != Window::TokenBucket)
}

/// A default client against `model`: 30 reads by one task, which must take under a
/// second, then 170 more by eight tasks, without a 429 but for a refused probe (see
/// [`probe_refused`]). Returns the server, the client and the time it all took.
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
    assert_eq!(
        server.rejected(),
        probe_refused(model, headers),
        "{model:?}: {:?}",
        server.arrivals()
    );
    (server, client, elapsed)
}

#[tokio::test(start_paused = true)]
async fn with_headers_a_small_job_runs_at_once_and_a_large_one_never_sees_a_429() {
    for model in MODELS {
        let (_server, client, elapsed) = small_then_large(model, true).await;
        let stats = client.stats();
        assert_eq!((stats.requests, stats.rate_limited), (200, 0), "{model:?}");
        assert_eq!(stats.mode, PacingMode::Adaptive);
        assert_eq!(
            stats.quota_model,
            QuotaModel::Unknown,
            "no probing with a budget"
        );
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
        let stats = client.stats();
        let refused = probe_refused(model, false);
        assert_eq!(
            (
                stats.requests,
                stats.rate_limited,
                stats.budget,
                stats.burst
            ),
            (200 + refused as u64, refused as u64, None, 60),
            "{model:?}"
        );
        if model == Window::TokenBucket {
            // Beyond the first window, probes one by one in a bucket of the rate: every one
            // passes, and 200 requests take 60 at once plus 140 at 1.01 s. From 60.6 s on
            // the log of the answers (all at once, no latency) allows each as the bucket
            // does: 59 went as probes.
            assert_eq!(
                stats.quota_model,
                QuotaModel::Lenient { passed: 59 },
                "{stats:?}"
            );
            assert!(
                (Duration::from_millis(141_400)..Duration::from_millis(141_500)).contains(&elapsed),
                "200 requests took {elapsed:?}"
            );
        } else {
            // The probe, the 61st, is the one 429 of the whole run; its gate held everyone
            // and the window it showed was kept ever after.
            assert_eq!(stats.quota_model, QuotaModel::Window, "{model:?}");
            let refused = gates_held(&arrivals, Duration::from_secs(58));
            assert_eq!(refused, vec![arrivals[60].at], "{model:?}");
            assert!(
                busiest(&passed(&arrivals), Duration::from_secs(60)) <= 60,
                "{model:?}: never more than the rate within a minute"
            );
            // Three windows beyond the first, each spent at once.
            assert!(
                elapsed < Duration::from_secs(3 * 61 + 5),
                "{model:?}: 200 requests took {elapsed:?}"
            );
        }
    }
}

/// The arrivals the quota let through.
fn passed(arrivals: &[Arrival]) -> Vec<Arrival> {
    arrivals.iter().filter(|a| a.allowed).copied().collect()
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
        // A burst larger than the window: only the log of our own answers keeps it in, but
        // for the one probe beyond it that learns the model.
        let client = server.client(KEY).burst(200).build().unwrap();
        run(&client, 8, 130).await;
        let arrivals = server.arrivals();
        if model == Window::TokenBucket {
            assert_eq!(server.rejected(), 0, "{model:?}: {arrivals:?}");
        } else {
            // Exactly one 429 over the whole run: the probe, the 61st request. Every
            // request after it passes, and no window holds more than the rate.
            assert_eq!(server.rejected(), 1, "{model:?}: {arrivals:?}");
            assert!(!arrivals[60].allowed, "{model:?}: {arrivals:?}");
            assert!(arrivals[61..].iter().all(|a| a.allowed), "{model:?}");
            assert!(
                busiest(&passed(&arrivals), Duration::from_secs(60)) <= 60,
                "{model:?}"
            );
            assert_eq!(client.stats().quota_model, QuotaModel::Window);
        }
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
        assert_eq!(client.stats().quota_model, QuotaModel::Unknown);
    }
}

/// Each answer of the latency servers below takes this long (as in the
/// `quota_wall_time` bench).
const LATENCY: Duration = Duration::from_millis(20);

#[tokio::test(start_paused = true)]
async fn without_headers_one_probe_learns_each_model_and_a_run_sees_at_most_one_429() {
    for model in MODELS {
        let server = QuotaServer::start_with_latency(quota(model, false), LATENCY).await;
        let client = server.client(KEY).build().unwrap();
        let start = Instant::now();
        run(&client, 8, 250).await;
        let elapsed = start.elapsed();
        let arrivals = server.arrivals();
        let stats = client.stats();
        if model == Window::TokenBucket {
            // The probes pass: a bucket of the rate, that started full, refuses none.
            assert_eq!(server.rejected(), 0, "{arrivals:?}");
            // Answers come 20 ms after the requests: the log never catches up with the
            // bucket, so all 190 beyond the first window went as probes.
            assert_eq!(
                stats.quota_model,
                QuotaModel::Lenient { passed: 190 },
                "{stats:?}"
            );
            // 60 in 1.2 s, then one per 1.01 s.
            assert!(
                elapsed < Duration::from_millis(1_200 + 190 * 1_010 + 100),
                "{elapsed:?}"
            );
        } else {
            // The 61st is the probe; the window refuses it, for the whole run only it.
            assert_eq!(server.rejected(), 1, "{model:?}: {arrivals:?}");
            assert!(!arrivals[60].allowed);
            let refused = gates_held(&arrivals, Duration::from_secs(58));
            assert_eq!(refused.len(), 1);
            assert_eq!(stats.quota_model, QuotaModel::Window, "{model:?}");
            assert_eq!(
                stats.burst, 60,
                "{model:?}: the probe's 429 spared the burst"
            );
            assert!(
                busiest(&passed(&arrivals), Duration::from_secs(60)) <= 60,
                "{model:?}"
            );
            assert!(
                elapsed < Duration::from_secs(5 * 61),
                "{model:?}: {elapsed:?}"
            );
        }
        assert_eq!(
            (stats.requests, stats.rate_limited),
            (250 + server.rejected() as u64, server.rejected() as u64)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn without_headers_a_bucket_that_refuses_the_probe_is_learnt_and_refuses_nothing_more() {
    let server = QuotaServer::start(quota(Window::TokenBucket, false)).await;
    let client = server.client(KEY).build().unwrap();
    run(&client, 1, 60).await;
    // A second later someone else takes the token that came back: the probe, due at
    // 1.01 s, finds the bucket empty and is told to come back in a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.spend_elsewhere(1);
    run(&client, 8, 100).await;
    let arrivals = server.arrivals();
    let refused = gates_held(&arrivals, Duration::from_secs(1));
    assert_eq!(refused, vec![Duration::from_millis(1010)], "{arrivals:?}");
    let stats = client.stats();
    assert_eq!(
        stats.quota_model,
        QuotaModel::TokenBucket {
            refill: Duration::from_millis(1010)
        }
    );
    assert_eq!(
        (stats.requests, stats.rate_limited, stats.burst),
        (161, 1, 60)
    );
    // After the gate, the eight tasks go at the bucket's rate (1 % slower): none refused.
    let after = &arrivals[61..];
    assert_eq!(after.len(), 100);
    assert_eq!(after[0].at, Duration::from_millis(2010));
    for pair in after.windows(2) {
        assert!(pair[1].allowed, "{arrivals:?}");
        assert_eq!(pair[1].at - pair[0].at, Duration::from_millis(1010));
    }
}

/// What one contender did: wall time, requests sent, 429s received.
#[derive(Debug)]
struct Outcome {
    wall: Duration,
    requests: u64,
    rejected: u64,
}

/// 68 reads by one task, our default client or a naive one (no pacing; on a 429 it sleeps
/// `Retry-After` and sends again), against a fresh `quota` answering in `LATENCY`.
async fn sixty_eight(quota: Quota, naive: bool) -> Outcome {
    let server = QuotaServer::start_with_latency(quota, LATENCY).await;
    let start = Instant::now();
    let requests = if naive {
        let http = reqwest::Client::new();
        let mut sent = 0;
        for _ in 0..68 {
            loop {
                sent += 1;
                let response = http
                    .get(format!("{}/order/status", server.uri()))
                    .bearer_auth(KEY)
                    .send()
                    .await
                    .unwrap();
                let wait = (response.status() == 429).then(|| {
                    let header = &response.headers()["retry-after"];
                    header.to_str().unwrap().parse().unwrap()
                });
                response.bytes().await.unwrap();
                match wait {
                    None => break,
                    Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
                }
            }
        }
        sent
    } else {
        let client = server.client(KEY).build().unwrap();
        run(&client, 1, 68).await;
        assert_eq!(client.stats().rate_limited as usize, server.rejected());
        client.stats().requests
    };
    Outcome {
        wall: start.elapsed(),
        requests,
        rejected: server.rejected() as u64,
    }
}

#[tokio::test(start_paused = true)]
async fn sixty_eight_reads_take_at_most_a_tenth_longer_than_a_naive_client_and_fewer_429s() {
    for model in MODELS {
        for headers in [true, false] {
            let q = quota(model, headers);
            let ours = sixty_eight(q, false).await;
            let naive = sixty_eight(q, true).await;
            let row = format!("{model:?} headers {headers}: ours {ours:?}, naive {naive:?}");
            assert!(
                ours.wall.as_secs_f64() <= 1.1 * naive.wall.as_secs_f64(),
                "{row}"
            );
            assert!(ours.rejected <= naive.rejected, "{row}");
            assert_eq!(ours.rejected, probe_refused(model, headers) as u64, "{row}");
            assert_eq!(ours.requests, 68 + ours.rejected, "{row}");
            if model == Window::TokenBucket && !headers {
                // The case the probe is for: the bucket refills, and the client follows.
                assert!(ours.wall < Duration::from_secs(10), "{row}");
                assert!(naive.rejected > 0, "{row}");
            }
        }
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
