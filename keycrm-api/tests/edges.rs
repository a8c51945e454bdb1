//! The runtime at the edges: transport failures, the 429 gate under concurrency, waits a
//! server controls, per-call deadlines, body limits and hostile `Retry-After` values.
//!
//! Waits run on a `VirtualClock` or on tokio's paused clock. Where the server's own notion
//! of time matters (the gate scenario), the server is a small HTTP/1.1 loop on loopback
//! inside the test's runtime, so that it reads the same paused clock as the client.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use keycrm_api::clock::{Clock, TokioClock, VirtualClock};
use keycrm_api::{Client, Error, PacingMode, WaitPhase};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "sk-test-edges-very-secret";

fn statuses_page() -> serde_json::Value {
    json!({"current_page": 1, "last_page": 1, "data": [{"id": 1, "name": "new"}]})
}

// ---------------------------------------------------------------------------------------
// A small loopback HTTP/1.1 server

/// What the loopback server does with one request.
enum Reply {
    /// A complete answer (the connection stays open for the next request).
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A chunked body that never ends; counts the bytes it managed to write.
    Endless {
        status: u16,
        written: Arc<AtomicU64>,
    },
    /// Declares `Content-Length: length`, sends a few bytes, then keeps the connection open.
    Declared { status: u16, length: u64 },
    /// Declares a body, sends part of it, then closes the connection.
    Truncated,
    /// Closes the connection without answering.
    Close,
    /// Never answers.
    Silent,
}

impl Reply {
    fn json(status: u16, body: serde_json::Value) -> Self {
        Reply::Full {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Reply::Full { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }
}

type Handler = Arc<dyn Fn(&str, &str) -> Reply + Send + Sync>;

/// Starts the server on the current runtime; the handler gets method and path.
async fn serve(handler: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler: Handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(connection(stream, handler.clone()));
        }
    });
    addr
}

async fn connection(mut stream: TcpStream, handler: Handler) {
    let mut buffer = Vec::new();
    loop {
        // Read one request head (and its body, if any).
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
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let body_len = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        while buffer.len() < head_end + body_len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..head_end + body_len);
        let mut words = head.split_whitespace();
        let method = words.next().unwrap_or("").to_string();
        let target = words.next().unwrap_or("").to_string();
        let path = target.split('?').next().unwrap_or("").to_string();

        match handler(&method, &path) {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                for (name, value) in headers {
                    out.push_str(&format!("{name}: {value}\r\n"));
                }
                out.push_str("\r\n");
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&body);
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::Endless { status, written } => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     transfer-encoding: chunked\r\n\r\n"
                );
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut chunk = b"4000\r\n".to_vec();
                chunk.extend(std::iter::repeat_n(b'[', 0x4000));
                chunk.extend_from_slice(b"\r\n");
                while stream.write_all(&chunk).await.is_ok() {
                    written.fetch_add(0x4000, Ordering::Relaxed);
                }
                return;
            }
            Reply::Declared { status, length } => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {length}\r\n\r\n{{\"data\": ["
                );
                let _ = stream.write_all(head.as_bytes()).await;
                std::future::pending::<()>().await;
            }
            Reply::Truncated => {
                let head = "HTTP/1.1 200 X\r\ncontent-type: application/json\r\n\
                            content-length: 100\r\n\r\n{\"data\": [";
                let _ = stream.write_all(head.as_bytes()).await;
                return;
            }
            Reply::Close => return,
            Reply::Silent => std::future::pending::<()>().await,
        }
    }
}

/// `keycrm_api::Error` from whatever error type `send()` returns.
fn into_error<E>(e: E) -> Error
where
    Error: From<E>,
{
    Error::from(e)
}

/// The error of a call that must fail, as `keycrm_api::Error`.
fn failed<T, E>(result: Result<T, E>) -> Error
where
    Error: From<E>,
{
    match result {
        Ok(_) => panic!("the call was expected to fail"),
        Err(e) => into_error(e),
    }
}

fn loopback_client(addr: SocketAddr) -> keycrm_api::ClientBuilder {
    Client::builder()
        .api_key(KEY)
        .base_url(format!("http://{addr}"))
        .requests_per_minute(0)
}

// ---------------------------------------------------------------------------------------
// Transport failures

fn assert_one_clear_line(err: &Error, operation: &str, attempts: &str) {
    let shown = err.to_string();
    assert!(!shown.contains('\n'), "one line: {shown}");
    assert!(
        shown.contains(&format!("`{operation}`")),
        "operation: {shown}"
    );
    assert!(shown.contains(attempts), "attempts: {shown}");
    let debug = format!("{err:?}");
    for text in [&shown, &debug] {
        assert!(!text.contains("599"), "no invented status: {text}");
        assert!(!text.contains("Response {"), "no dumped response: {text}");
        assert!(!text.contains("no.url.provided"), "{text}");
        assert!(!text.contains("127.0.0.1"), "no URL: {text}");
        assert!(!text.contains(KEY), "{text}");
    }
    assert_eq!(
        err.status(),
        None,
        "no HTTP status for a failure without an answer"
    );
    assert_eq!(err.operation(), Some(operation));
}

#[tokio::test]
async fn a_refused_connection_is_one_line_naming_operation_and_attempts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let clock = Arc::new(VirtualClock::new());
    let client = Client::builder()
        .api_key(KEY)
        .base_url(format!("http://127.0.0.1:{port}"))
        .clock(clock.clone())
        .max_retries(2)
        .build()
        .unwrap();
    let raw = client.order_list().send().await.unwrap_err();
    for text in [format!("{raw}"), format!("{raw:?}")] {
        assert!(
            !text.contains("599") && !text.contains("Response {"),
            "{text}"
        );
        assert!(
            !text.contains("127.0.0.1") && !text.contains("no.url"),
            "{text}"
        );
    }
    let err = into_error(raw);
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_eq!(err.attempts(), 3);
    assert_one_clear_line(&err, "order_list", "3 attempts]");
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert!(err.is_retryable());
    assert_eq!(
        err.to_string(),
        "could not talk to KeyCRM: connecting failed (connection refused) \
         [`order_list`, 3 attempts]"
    );
}

fn assert_send<T: Send>(_: &T) {}

#[test]
fn the_futures_of_a_call_are_send() {
    let client = Client::builder().api_key(KEY).build().unwrap();
    assert_send(&client.order_list().send());
    assert_send(&client.storage_upload("a.txt", b"x".to_vec()));
    let body = keycrm_api::types::OrderCreate::builder()
        .source_id(1)
        .source_uuid(Some("u".to_string()))
        .buyer(keycrm_api::types::OrderBuyerInput::builder().full_name(Some("B".to_string())))
        .try_into()
        .unwrap();
    assert_send(&client.order_create_idempotent(body));
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_a_transport_error() {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let addr = serve(move |_, _| {
        counter.fetch_add(1, Ordering::Relaxed);
        Reply::Close
    })
    .await;
    let client = loopback_client(addr)
        .clock(Arc::new(VirtualClock::new()))
        .max_retries(1)
        .build()
        .unwrap();
    let err = failed(client.order_status_list().send().await);
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_one_clear_line(&err, "order_status_list", "2 attempts]");
    assert_eq!(seen.load(Ordering::Relaxed), 2, "a GET is retried once");
}

#[tokio::test]
async fn a_timeout_is_one_line_naming_operation_and_attempts() {
    let addr = serve(|_, _| Reply::Silent).await;
    let client = loopback_client(addr)
        .clock(Arc::new(VirtualClock::new()))
        .timeout(Duration::from_millis(200))
        .max_retries(0)
        .build()
        .unwrap();
    let err = failed(client.order_status_list().send().await);
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_one_clear_line(&err, "order_status_list", "1 attempt]");
    assert!(err.to_string().contains("timed out"), "{err}");
}

// ---------------------------------------------------------------------------------------
// The 429 gate holds everyone

/// How the scripted server says when to come back.
#[derive(Clone, Copy)]
enum RetryForm {
    Seconds,
    HttpDate,
}

/// Eight tasks wait: in [`PacingMode::Even`] for paced slots (60/min: 0 s, 1.01 s, ...
/// 7.07 s); in [`PacingMode::Adaptive`] without rate-limit headers, probing a burst, for
/// the answer to the request on the wire. The first request gets a 429 asking for 7 s.
/// The server answers 429 to anything that arrives before its gate opens, so every early
/// request shows up as another 429.
async fn eight_tasks_and_one_429(form: RetryForm, mode: PacingMode) {
    let clock = TokioClock::new();
    let start = tokio::time::Instant::now();
    struct Script {
        gate: Option<Duration>,
        date: Option<String>,
        arrivals: Vec<Duration>,
        rejected: usize,
    }
    let script = Arc::new(Mutex::new(Script {
        gate: None,
        date: None,
        arrivals: Vec::new(),
        rejected: 0,
    }));
    let state = script.clone();
    let addr = serve(move |_, _| {
        let now = start.elapsed();
        let mut s = state.lock().unwrap();
        s.arrivals.push(now);
        if s.gate.is_some_and(|gate| now >= gate) {
            return Reply::json(200, statuses_page());
        }
        s.rejected += 1;
        let header = match form {
            RetryForm::Seconds => {
                let gate = *s.gate.get_or_insert(now + Duration::from_secs(7));
                let left = gate - now;
                (left.as_secs() + u64::from(left.subsec_nanos() > 0)).to_string()
            }
            RetryForm::HttpDate => {
                if s.date.is_none() {
                    // A date on the client's own wall clock, more than 7 s ahead.
                    let wall = clock.wall_time();
                    let secs = wall
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(secs + 8);
                    s.gate = Some(now + date.duration_since(wall).unwrap());
                    s.date = Some(
                        chrono::DateTime::<chrono::Utc>::from(date)
                            .format("%a, %d %b %Y %H:%M:%S GMT")
                            .to_string(),
                    );
                }
                s.date.clone().unwrap()
            }
        };
        Reply::json(429, json!({"message": "Too Many Attempts."}))
            .with_header("retry-after", &header)
    })
    .await;

    let client = Client::builder()
        .api_key(KEY)
        .base_url(format!("http://{addr}"))
        .clock(Arc::new(clock))
        .requests_per_minute(60)
        .pacing(mode)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.order_status_list().send().await.map(|_| ())
        }));
    }
    for task in tasks {
        task.await
            .unwrap()
            .expect("every task gets through after the gate");
    }
    let s = script.lock().unwrap();
    let gate = s.gate.unwrap();
    assert!(gate >= Duration::from_secs(7), "{gate:?}");
    assert_eq!(s.rejected, 1, "exactly one 429 in total: {:?}", s.arrivals);
    assert_eq!(s.arrivals.len(), 9, "eight requests and one retry");
    assert_eq!(s.arrivals[0], Duration::ZERO);
    assert!(
        s.arrivals[1..].iter().all(|t| *t >= gate),
        "no request before the gate opens at {gate:?}: {:?}",
        s.arrivals
    );
    if mode == PacingMode::Even {
        for pair in s.arrivals[1..].windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(1010),
                "pacing resumes after the gate: {:?}",
                s.arrivals
            );
        }
    }
    let stats = client.stats();
    assert_eq!((stats.requests, stats.rate_limited), (9, 1));
    if mode == PacingMode::Adaptive {
        assert_eq!(stats.burst, 30, "the 429 halved the burst of 60");
    }
}

#[tokio::test(start_paused = true)]
async fn the_429_gate_holds_tasks_already_waiting_for_a_slot_seconds() {
    eight_tasks_and_one_429(RetryForm::Seconds, PacingMode::Even).await;
}

#[tokio::test(start_paused = true)]
async fn the_429_gate_holds_tasks_already_waiting_for_a_slot_http_date() {
    eight_tasks_and_one_429(RetryForm::HttpDate, PacingMode::Even).await;
}

#[tokio::test(start_paused = true)]
async fn the_429_gate_holds_tasks_waiting_while_adaptive_probes_seconds() {
    eight_tasks_and_one_429(RetryForm::Seconds, PacingMode::Adaptive).await;
}

#[tokio::test(start_paused = true)]
async fn the_429_gate_holds_tasks_waiting_while_adaptive_probes_http_date() {
    eight_tasks_and_one_429(RetryForm::HttpDate, PacingMode::Adaptive).await;
}

// ---------------------------------------------------------------------------------------
// Waits a server controls

/// Answers with the given responses in order, then repeats the last one.
struct Sequence(Mutex<VecDeque<ResponseTemplate>>);

impl Sequence {
    fn new(items: Vec<ResponseTemplate>) -> Self {
        Self(Mutex::new(items.into()))
    }
}

impl Respond for Sequence {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut q = self.0.lock().unwrap();
        if q.len() > 1 {
            q.pop_front().unwrap()
        } else {
            q.front().unwrap().clone()
        }
    }
}

async fn scripted(route: &str, answers: Vec<ResponseTemplate>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(route))
        .respond_with(Sequence::new(answers))
        .mount(&server)
        .await;
    server
}

fn too_many(retry_after: &str) -> ResponseTemplate {
    ResponseTemplate::new(429)
        .set_body_json(json!({"message": "Too Many Attempts."}))
        .insert_header("Retry-After", retry_after)
}

fn ok_statuses() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(statuses_page())
}

fn virtual_client(server: &MockServer, clock: &Arc<VirtualClock>) -> keycrm_api::ClientBuilder {
    Client::builder()
        .api_key(KEY)
        .base_url(server.uri())
        .clock(clock.clone())
        .requests_per_minute(0)
}

#[tokio::test]
async fn a_retry_after_beyond_max_retry_wait_fails_fast_with_the_wait() {
    let server = scripted("/order/status", vec![too_many("121"), ok_statuses()]).await;
    let clock = Arc::new(VirtualClock::new());
    let client = virtual_client(&server, &clock).build().unwrap();
    let err = failed(client.order_status_list().send().await);
    match &err {
        Error::RateLimited { retry_after, meta } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(121)));
            assert_eq!(meta.attempts, 1);
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(
        clock.sleeps().is_empty(),
        "nothing waited: {:?}",
        clock.sleeps()
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);

    // Within the ceiling the client waits it out.
    let server = scripted("/order/status", vec![too_many("120"), ok_statuses()]).await;
    let clock = Arc::new(VirtualClock::new());
    let client = virtual_client(&server, &clock).build().unwrap();
    client
        .order_status_list()
        .send()
        .await
        .expect("waited 120 s");
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(120)]);
}

#[tokio::test]
async fn max_retry_wait_is_configurable_and_applies_to_http_dates() {
    let server = scripted("/order/status", vec![too_many("11"), ok_statuses()]).await;
    let clock = Arc::new(VirtualClock::new());
    let client = virtual_client(&server, &clock)
        .max_retry_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let err = failed(client.order_status_list().send().await);
    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(11)),
        "{err:?}"
    );
    assert!(err.to_string().contains("retry after 11 s"), "{err}");

    let date = chrono::Utc::now() + chrono::Duration::seconds(300);
    let date = date.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let server = scripted("/order/status", vec![too_many(&date), ok_statuses()]).await;
    let clock = Arc::new(VirtualClock::new());
    let client = virtual_client(&server, &clock).build().unwrap();
    let err = failed(client.order_status_list().send().await);
    match err {
        Error::RateLimited {
            retry_after: Some(wait),
            ..
        } => assert!(
            (Duration::from_secs(290)..=Duration::from_secs(300)).contains(&wait),
            "{wait:?}"
        ),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(clock.sleeps().is_empty());
}

#[tokio::test]
async fn huge_retry_after_values_neither_panic_nor_break_later_requests() {
    for value in [
        "18446744073709551615",
        "99999999999999999999999999999",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        let server = scripted("/order/status", vec![too_many(value), ok_statuses()]).await;
        let clock = Arc::new(VirtualClock::new());
        let client = virtual_client(&server, &clock)
            .requests_per_minute(60)
            .build()
            .unwrap();
        let err = failed(client.order_status_list().send().await);
        match err {
            Error::RateLimited {
                retry_after: Some(wait),
                ..
            } => assert!(
                wait > Duration::from_secs(100 * 365 * 86_400),
                "{value}: {wait:?}"
            ),
            other => panic!("{value}: expected RateLimited, got {other:?}"),
        }
        // Every clone keeps working: the gate stays closed no longer than max_retry_wait.
        let other = client.clone();
        other
            .order_status_list()
            .send()
            .await
            .unwrap_or_else(|e| panic!("{value}: a later request fails: {e:?}"));
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(120)], "{value}");
        client
            .order_status_list()
            .send()
            .await
            .expect("and the next");
    }
}

#[tokio::test]
async fn a_5xx_retry_after_is_capped_by_max_backoff() {
    for value in ["3600", "18446744073709551615"] {
        let server = scripted(
            "/order/status",
            vec![
                ResponseTemplate::new(503).insert_header("Retry-After", value),
                ok_statuses(),
            ],
        )
        .await;
        let clock = Arc::new(VirtualClock::new());
        let client = virtual_client(&server, &clock)
            .backoff(Duration::from_millis(500), Duration::from_secs(20))
            .build()
            .unwrap();
        client.order_status_list().send().await.expect("retried");
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(20)], "{value}");
    }
}

// ---------------------------------------------------------------------------------------
// The per-call deadline

fn deadline_error(err: Error) -> (Duration, WaitPhase, u32, String) {
    let text = err.to_string();
    match err {
        Error::DeadlineExceeded {
            deadline,
            phase,
            meta,
        } => (deadline, phase, meta.attempts, text),
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
}

#[tokio::test]
async fn the_deadline_covers_pacing_and_can_be_overridden_per_call() {
    let server = scripted("/order/status", vec![ok_statuses()]).await;
    let clock = Arc::new(VirtualClock::new());
    let client = virtual_client(&server, &clock)
        .requests_per_minute(1)
        .deadline(Duration::from_secs(10))
        .build()
        .unwrap();
    client
        .order_status_list()
        .send()
        .await
        .expect("the first slot is free");
    let err = failed(client.order_status_list().send().await);
    assert!(err.is_retryable());
    let (deadline, phase, attempts, text) = deadline_error(err);
    assert_eq!(
        (deadline, phase, attempts),
        (Duration::from_secs(10), WaitPhase::Pacing, 0)
    );
    assert!(text.contains("10 s deadline"), "{text}");
    assert!(text.contains("`order_status_list`, nothing sent"), "{text}");
    assert!(text.contains("paced quota slot"), "{text}");
    assert!(clock.sleeps().is_empty(), "failed at once, nothing slept");

    let patient = client.with_deadline(Duration::from_secs(120));
    assert_eq!(patient.deadline(), Duration::from_secs(120));
    assert_eq!(client.deadline(), Duration::from_secs(10));
    patient
        .order_status_list()
        .send()
        .await
        .expect("a longer deadline waits for the slot");
    assert_eq!(clock.sleeps(), vec![Duration::from_millis(60_600)]);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    assert_eq!(patient.stats(), client.stats(), "clones share the counters");
}

#[tokio::test]
async fn the_deadline_covers_the_rate_limit_gate() {
    let server = scripted("/order/status", vec![too_many("60"), ok_statuses()]).await;
    let clock = Arc::new(VirtualClock::new());
    let client = virtual_client(&server, &clock)
        .deadline(Duration::from_secs(30))
        .build()
        .unwrap();
    let err = failed(client.order_status_list().send().await);
    let (_, phase, attempts, text) = deadline_error(err);
    assert_eq!((phase, attempts), (WaitPhase::RateLimitGate, 1));
    assert!(text.contains("rate-limit gate"), "{text}");
    assert!(clock.sleeps().is_empty());
}

#[tokio::test]
async fn the_deadline_covers_backoff_between_retries() {
    let server = scripted("/order/status", vec![ResponseTemplate::new(503)]).await;
    let clock = Arc::new(VirtualClock::new());
    let client = virtual_client(&server, &clock)
        .backoff(Duration::from_secs(10), Duration::from_secs(60))
        .deadline(Duration::from_secs(15))
        .build()
        .unwrap();
    let err = failed(client.order_status_list().send().await);
    let (_, phase, attempts, _) = deadline_error(err);
    assert_eq!(phase, WaitPhase::Backoff);
    assert!((2..=3).contains(&attempts), "{attempts}");
    assert!(clock.now() <= Duration::from_secs(15), "{:?}", clock.now());
}

#[tokio::test]
async fn the_deadline_bounds_an_attempt_on_the_wire() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/order/status"))
        .respond_with(ok_statuses().set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let client = virtual_client(&server, &clock)
        .deadline(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = failed(client.order_status_list().send().await);
    assert!(started.elapsed() < Duration::from_secs(3));
    let (_, phase, attempts, text) = deadline_error(err);
    assert_eq!((phase, attempts), (WaitPhase::Request, 1));
    assert!(text.contains("waiting for KeyCRM to answer"), "{text}");
}

// ---------------------------------------------------------------------------------------
// Body limits

fn too_large(err: Error) -> (u16, u64) {
    match err {
        Error::ResponseTooLarge { status, limit, .. } => (status, limit),
        other => panic!("expected ResponseTooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn an_endless_success_body_stops_at_the_limit() {
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let addr = serve(move |_, _| Reply::Endless {
        status: 200,
        written: counter.clone(),
    })
    .await;
    let client = loopback_client(addr)
        .max_response_bytes(1 << 20)
        .max_retries(0)
        .build()
        .unwrap();
    let err = failed(client.order_status_list().send().await);
    assert!(
        err.to_string()
            .contains("exceeds the limit of 1048576 bytes"),
        "{err}"
    );
    assert_eq!(too_large(err), (200, 1 << 20));

    // The default limit is 32 MiB.
    let client = loopback_client(addr).max_retries(0).build().unwrap();
    let err = failed(client.order_status_list().send().await);
    assert_eq!(
        too_large(err),
        (200, keycrm_api::DEFAULT_MAX_RESPONSE_BYTES)
    );
    // Reading stopped: what the server got out is the limit plus what the sockets buffer.
    tokio::task::yield_now().await;
    let sent = written.load(Ordering::Relaxed);
    assert!(sent < (32 << 20) + (1 << 20) + (64 << 20), "{sent}");
}

#[tokio::test]
async fn a_huge_content_length_is_refused_before_reading() {
    let addr = serve(|_, _| Reply::Declared {
        status: 200,
        length: 1 << 40,
    })
    .await;
    let client = loopback_client(addr)
        .timeout(Duration::from_secs(5))
        .max_retries(0)
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = failed(client.order_list().send().await);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "refused at once"
    );
    assert_eq!(too_large(err), (200, 32 << 20));
}

#[tokio::test]
async fn an_endless_error_body_stops_at_the_error_limit() {
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let addr = serve(move |_, _| Reply::Endless {
        status: 500,
        written: counter.clone(),
    })
    .await;
    let client = loopback_client(addr).build().unwrap();
    let body = keycrm_api::types::PaymentCreate::builder()
        .amount(100)
        .payment_method_id(2);
    let err = failed(
        client
            .order_payment_create()
            .order_id(9)
            .body(body)
            .send()
            .await,
    );
    assert_eq!(too_large(err), (500, 64 * 1024));

    let client = loopback_client(addr)
        .max_error_body_bytes(1024)
        .max_retries(0)
        .build()
        .unwrap();
    let err = failed(client.order_status_list().send().await);
    assert_eq!(too_large(err), (500, 1024));
}

#[tokio::test]
async fn a_body_exactly_at_the_limit_is_read() {
    let body = statuses_page().to_string();
    let len = body.len() as u64;
    let addr = serve(move |_, _| Reply::json(200, statuses_page())).await;
    let client = loopback_client(addr)
        .max_response_bytes(len)
        .build()
        .unwrap();
    let page = client
        .order_status_list()
        .send()
        .await
        .expect("within the limit");
    assert_eq!(page.data[0].name.as_deref(), Some("new"));
    let client = loopback_client(addr)
        .max_response_bytes(len - 1)
        .max_retries(0)
        .build()
        .unwrap();
    let err = failed(client.order_status_list().send().await);
    assert_eq!(too_large(err), (200, len - 1));
}

#[tokio::test]
async fn a_body_that_breaks_off_is_fetched_again_by_a_get_only() {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let addr = serve(move |method, _| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        if (method == "GET" && n == 0) || method == "POST" {
            Reply::Truncated
        } else {
            Reply::json(200, statuses_page())
        }
    })
    .await;
    let client = loopback_client(addr)
        .clock(Arc::new(VirtualClock::new()))
        .build()
        .unwrap();
    let page = client
        .order_status_list()
        .send()
        .await
        .expect("the second read works");
    assert_eq!(page.data.len(), 1);
    assert_eq!(client.stats().requests, 2);

    let body = keycrm_api::types::PaymentCreate::builder()
        .amount(100)
        .payment_method_id(2);
    let err = failed(
        client
            .order_payment_create()
            .order_id(9)
            .body(body)
            .send()
            .await,
    );
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_one_clear_line(&err, "order_payment_create", "1 attempt]");
    assert!(
        err.to_string().contains("reading the answer failed"),
        "{err}"
    );
}

#[tokio::test]
async fn the_deadline_bounds_reading_a_body_that_stalls() {
    let addr = serve(|_, _| Reply::Declared {
        status: 200,
        length: 100,
    })
    .await;
    let client = loopback_client(addr)
        .clock(Arc::new(VirtualClock::new()))
        .deadline(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = failed(client.order_status_list().send().await);
    let (_, phase, attempts, _) = deadline_error(err);
    assert_eq!((phase, attempts), (WaitPhase::Request, 1));
}
