//! The client runtime against wiremock: quota pacing, the 429 gate, retries that never
//! duplicate, idempotent order creation, pagination streams, error mapping, tracing, secrets.
//!
//! Waits run on a `VirtualClock` (instant, but recorded), or on tokio's paused clock where
//! a server's own quota is the point (the shared-quota test), except where a real timeout
//! must fire.

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use keycrm_api::clock::{Clock, VirtualClock};
use keycrm_api::mock::{Quota, QuotaServer, Window};
use keycrm_api::{Client, Error, PacingMode, Paginate, types};
use serde_json::{Value, json};
use wiremock::matchers::{any, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "sk-test-4c1d3e5f-very-secret";

fn client(server: &MockServer, clock: &Arc<VirtualClock>) -> Client {
    Client::builder()
        .api_key(KEY)
        .base_url(server.uri())
        .clock(clock.clone())
        .correlation_ids(true)
        .build()
        .expect("valid client")
}

/// Fails the test (on drop) if a request reaches no other mock.
async fn forbid_unexpected(server: &MockServer) {
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .with_priority(u8::MAX)
        .expect(0)
        .named("unexpected request")
        .mount(server)
        .await;
}

fn order(id: i64, uuid: &str) -> Value {
    json!({"id": id, "source_id": 1, "source_uuid": uuid, "status_id": 1,
           "grand_total": "120.00", "created_at": "2024-05-16T17:00:07.000000Z"})
}

fn page(items: Vec<Value>, current: i64, last: i64) -> Value {
    let next = (current < last).then(|| format!("http://x/order?page={}", current + 1));
    json!({"current_page": current, "data": items, "last_page": last, "per_page": 50,
           "next_page_url": next, "total": 0, "from": 1, "to": 1,
           "first_page_url": "http://x/order?page=1", "last_page_url": "http://x/order?page=3",
           "path": "http://x/order", "prev_page_url": null})
}

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

#[tokio::test]
async fn a_429_with_retry_after_waits_then_succeeds_once() {
    let server = MockServer::start().await;
    forbid_unexpected(&server).await;
    Mock::given(method("GET"))
        .and(path("/order/status"))
        .respond_with(Sequence::new(vec![
            ResponseTemplate::new(429).insert_header("Retry-After", "2"),
            ResponseTemplate::new(200).set_body_json(page(
                vec![json!({"id": 1, "name": "new"})],
                1,
                1,
            )),
        ]))
        .expect(2)
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let client = client(&server, &clock);

    let statuses = client
        .order_status_list()
        .send()
        .await
        .expect("succeeds after the wait");
    assert_eq!(statuses.data[0].name.as_deref(), Some("new"));
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_secs(2)],
        "waited exactly Retry-After"
    );
    let stats = client.stats();
    assert_eq!(
        (stats.requests, stats.retries, stats.rate_limited),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn a_429_closes_the_gate_for_other_tasks_too() {
    let server = MockServer::start().await;
    forbid_unexpected(&server).await;
    Mock::given(method("GET"))
        .and(path("/order/tag"))
        .respond_with(Sequence::new(vec![
            ResponseTemplate::new(429).insert_header("Retry-After", "5"),
            ResponseTemplate::new(200).set_body_json(page(vec![], 1, 1)),
        ]))
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let client = client(&server, &clock);
    // Close the gate from one clone, then send from another clone: it waits for the gate.
    let other = client.clone();
    client.order_tag_list().send().await.expect("retried");
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(5)]);
    assert_eq!(clock.now(), Duration::from_secs(5));
    other.order_tag_list().send().await.expect("ok");
    assert_eq!(other.stats().rate_limited, 1, "clones share counters");
}

#[tokio::test]
async fn a_503_twice_then_200_takes_three_requests() {
    let server = MockServer::start().await;
    forbid_unexpected(&server).await;
    Mock::given(method("GET"))
        .and(path("/order/42"))
        .respond_with(Sequence::new(vec![
            ResponseTemplate::new(503),
            ResponseTemplate::new(503),
            ResponseTemplate::new(200).set_body_json(order(42, "WMS-42")),
        ]))
        .expect(3)
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    // Pacing off, so that every recorded wait is a backoff.
    let client = Client::builder()
        .api_key(KEY)
        .base_url(server.uri())
        .clock(clock.clone())
        .requests_per_minute(0)
        .build()
        .unwrap();
    let order = client
        .order_get()
        .order_id(42)
        .send()
        .await
        .expect("third time lucky");
    assert_eq!(order.id, Some(42));
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 2, "two backoffs: {sleeps:?}");
    assert!(sleeps[0] >= Duration::from_millis(250) && sleeps[0] <= Duration::from_millis(500));
    assert!(sleeps[1] >= Duration::from_millis(500) && sleeps[1] <= Duration::from_millis(1000));
}

#[tokio::test]
async fn server_errors_after_all_retries_say_so() {
    let server = MockServer::start().await;
    forbid_unexpected(&server).await;
    Mock::given(method("GET"))
        .and(path("/order/7"))
        .respond_with(ResponseTemplate::new(502))
        .expect(4)
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let err = client(&server, &clock)
        .order_get()
        .order_id(7)
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Server { status: 502, .. }), "{err:?}");
    assert_eq!(err.attempts(), 4);
    assert!(err.is_retryable());
    assert_eq!(err.correlation_id().map(str::len), Some(16));
}

#[tokio::test]
async fn a_post_is_never_retried_on_5xx() {
    let server = MockServer::start().await;
    forbid_unexpected(&server).await;
    Mock::given(method("POST"))
        .and(path("/order/9/payment"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let body = types::PaymentCreate::builder()
        .amount(100)
        .payment_method_id(2);
    let err = client(&server, &clock)
        .order_payment_create()
        .order_id(9)
        .body(body)
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Server { status: 500, .. }));
    assert_eq!(err.attempts(), 1);
}

fn create_body(uuid: &str) -> types::OrderCreate {
    types::OrderCreate::builder()
        .source_id(1)
        .source_uuid(Some(uuid.to_string()))
        .buyer(types::OrderBuyerInput::builder().full_name(Some("Олена Коваленко".to_string())))
        .try_into()
        .expect("valid order")
}

#[tokio::test]
async fn order_create_times_out_without_a_second_post_and_the_idempotent_path_finds_it() {
    let server = MockServer::start().await;
    forbid_unexpected(&server).await;
    // The service creates the order but answers too late: the lost-response case.
    Mock::given(method("POST"))
        .and(path("/order"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(order(501, "WMS-501"))
                .set_delay(Duration::from_secs(3)),
        )
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/order"))
        .and(query_param("filter[source_uuid]", "WMS-501"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            vec![order(501, "WMS-501")],
            1,
            1,
        )))
        .expect(1)
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let client = Client::builder()
        .api_key(KEY)
        .base_url(server.uri())
        .clock(clock.clone())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();

    // Plain create: one POST, a timeout, no resend.
    let err = client
        .order_create()
        .body(create_body("WMS-501"))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(err.attempts(), 1);
    assert_eq!(count(&server, "POST", "/order").await, 1);

    // Idempotent create: one POST, a timeout, a look-up that finds the order, no second POST.
    let found = client
        .order_create_idempotent(create_body("WMS-501"))
        .await
        .expect("found by source_uuid");
    assert_eq!(found.id, Some(501));
    assert_eq!(
        count(&server, "POST", "/order").await,
        2,
        "one POST per create call, never a resend"
    );
}

#[tokio::test]
async fn order_create_idempotent_needs_a_source_uuid_and_returns_validation_errors() {
    let server = MockServer::start().await;
    forbid_unexpected(&server).await;
    Mock::given(method("POST"))
        .and(path("/order"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "message": "The given data was invalid.",
            "errors": {"source_id": ["The selected source id is invalid."]}})))
        .expect(1)
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let client = client(&server, &clock);
    let mut no_uuid = create_body("x");
    no_uuid.source_uuid = None;
    let err = client.order_create_idempotent(no_uuid).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }));
    let err = client
        .order_create_idempotent(create_body("WMS-9"))
        .await
        .unwrap_err();
    match err {
        Error::Validation { errors, .. } => {
            assert_eq!(
                errors["source_id"],
                vec!["The selected source id is invalid.".to_string()]
            );
        }
        other => panic!("expected validation, got {other:?}"),
    }
}

async fn count(server: &MockServer, m: &str, p: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == m && r.url.path() == p)
        .count()
}

#[tokio::test]
async fn status_codes_map_to_typed_errors() {
    let server = MockServer::start().await;
    forbid_unexpected(&server).await;
    Mock::given(method("PUT"))
        .and(path("/order/1"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "message": "The given data was invalid.",
            "errors": {"status_id": ["The selected status id is invalid."], "products.0.quantity": ["Must be positive."]}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/buyer/5"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Unauthenticated."})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/buyer/6"))
        .respond_with(ResponseTemplate::new(404).set_body_string("<html>Not Found</html>"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/pipelines"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(json!({"message": "Leads are not enabled"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/users"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"message": "Bad filter"})))
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let client = client(&server, &clock);

    let update = types::OrderUpdate::builder().status_id(Some(99));
    let err = client
        .order_update()
        .order_id(1)
        .body(update)
        .send()
        .await
        .unwrap_err();
    match &err {
        Error::Validation {
            message, errors, ..
        } => {
            assert_eq!(message, "The given data was invalid.");
            assert_eq!(errors.len(), 2);
            assert_eq!(
                errors["products.0.quantity"],
                vec!["Must be positive.".to_string()]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("status_id"));
    assert!(!err.is_retryable());

    let err = client.buyer_get().buyer_id(5).send().await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    // A non-JSON 404 body (a proxy page) still maps to NotFound.
    let err = client.buyer_get().buyer_id(6).send().await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let err = client.pipeline_list().send().await.unwrap_err();
    match &err {
        Error::Api {
            status: 400,
            message: Some(m),
            ..
        } => assert_eq!(m, "Leads are not enabled"),
        other => panic!("{other:?}"),
    }
    // 400 is not declared on user_list: the message still comes through.
    let err = client.user_list().send().await.unwrap_err();
    match &err {
        Error::Api {
            status: 400,
            message: Some(m),
            ..
        } => assert_eq!(m, "Bad filter"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn pagination_streams_every_item_in_order_with_one_request_per_page() {
    let server = MockServer::start().await;
    forbid_unexpected(&server).await;
    for p in 1..=3i64 {
        let items = (1..=50)
            .map(|i| order((p - 1) * 50 + i, "u"))
            .take(if p == 3 { 20 } else { 50 })
            .collect();
        Mock::given(method("GET"))
            .and(path("/order"))
            .and(query_param("page", p.to_string()))
            .and(query_param("limit", "50"))
            .and(query_param("filter[status_id]", "1,2"))
            .and(query_param("include", "buyer"))
            .and(header("authorization", format!("Bearer {KEY}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(page(items, p, 3)))
            .expect(1)
            .mount(&server)
            .await;
    }
    let clock = Arc::new(VirtualClock::new());
    let client = client(&server, &clock);
    let ids: Vec<i64> = client
        .order_list()
        .filter_status_id("1,2")
        .include("buyer")
        .items()
        .map_ok(|o| o.id.unwrap())
        .try_collect()
        .await
        .expect("three pages");
    assert_eq!(ids, (1..=120).collect::<Vec<_>>());
    assert_eq!(client.stats().requests, 3);
}

#[tokio::test]
async fn pagination_respects_a_limit_and_stops_on_an_empty_page() {
    let server = MockServer::start().await;
    forbid_unexpected(&server).await;
    Mock::given(method("GET"))
        .and(path("/buyer"))
        .and(query_param("limit", "2"))
        .and(query_param("page", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "current_page": 1, "data": [{"id": 1}, {"id": 2}], "next_page_url": "http://x?page=2", "last_page": 9})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/buyer"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "current_page": 2, "data": [], "next_page_url": "http://x?page=3", "last_page": 9})))
        .expect(1)
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let buyers = client(&server, &clock)
        .buyer_list()
        .limit(NonZeroU64::new(2).unwrap())
        .collect_all()
        .await
        .unwrap();
    assert_eq!(
        buyers.iter().map(|b| b.id.unwrap()).collect::<Vec<_>>(),
        vec![1, 2]
    );
}

#[tokio::test]
async fn a_page_that_does_not_advance_is_an_error_not_a_loop() {
    let server = MockServer::start().await;
    forbid_unexpected(&server).await;
    // The service ignores `page` and always answers page 1 claiming more pages follow.
    Mock::given(method("GET"))
        .and(path("/products"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "current_page": 1, "data": [{"id": 1}], "next_page_url": "http://x?page=2", "last_page": 5})))
        .expect(2)
        .mount(&server)
        .await;
    // Same, without current_page: the repeated content gives it away.
    Mock::given(method("GET"))
        .and(path("/offers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [{"id": 7}, {"id": 8}], "next_page_url": "http://x?page=2"})))
        .expect(2)
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let client = client(&server, &clock);
    let err = client.product_list().collect_all().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::PageNotAdvancing {
                requested: 2,
                received: Some(1)
            }
        ),
        "{err:?}"
    );
    let err = client.offer_list().collect_all().await.unwrap_err();
    assert!(
        matches!(err, Error::PageNotAdvancing { requested: 2, .. }),
        "{err:?}"
    );
}

/// The server enforces its own quota (at most 40 requests in any sliding window of 2 s,
/// 429 beyond, no rate-limit headers) on tokio's paused clock, which the client shares: 80
/// requests evenly paced ([`PacingMode::Even`]) at 1,200/min take about 4 s of that clock
/// and no real time. (Adaptive pacing would probe a burst of 1,200 and learn from a 429.)
#[tokio::test(start_paused = true)]
async fn eight_tasks_on_clones_share_the_quota_and_never_see_a_429() {
    let server = QuotaServer::start(
        Quota::new(40, Duration::from_secs(2))
            .with_model(Window::Rolling)
            .headers(false),
    )
    .await;
    let client = server
        .client(KEY)
        .requests_per_minute(1200)
        .pacing(PacingMode::Even)
        .max_retries(0)
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                c.order_source_list()
                    .send()
                    .await
                    .expect("never rate limited");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(server.rejected(), 0);
    assert_eq!(server.arrivals().len(), 80);
    let stats = client.stats();
    assert_eq!((stats.requests, stats.rate_limited), (80, 0));
    assert!(stats.waits >= 70, "paced, not burst: {stats:?}");
    assert!(
        elapsed >= Duration::from_millis(3900),
        "no initial burst: {elapsed:?}"
    );
}

#[tokio::test]
async fn the_key_never_appears_in_errors_or_debug_output() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Unauthenticated."})),
        )
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let client = client(&server, &clock);
    let builder = Client::builder().api_key(KEY).base_url(server.uri());
    let err = client.order_list().send().await.unwrap_err();
    let raw = client.order_list().send().await.unwrap_err();
    for text in [
        format!("{client:?}"),
        format!("{builder:?}"),
        format!("{err}"),
        format!("{err:?}"),
        format!("{raw:?}"),
        format!("{:?}", client.order_list()),
    ] {
        assert!(!text.contains(KEY), "leaked in: {text}");
        assert!(!text.contains("very-secret"), "leaked in: {text}");
    }
    // The key is sent, though.
    let sent = server.received_requests().await.unwrap();
    assert_eq!(
        sent[0].headers.get("authorization").unwrap(),
        format!("Bearer {KEY}").as_str()
    );
}

#[tokio::test]
async fn transport_failures_are_retried_for_gets_and_typed() {
    // Nothing listens on this port once the listener is dropped.
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
        .requests_per_minute(0)
        .max_retries(2)
        .build()
        .unwrap();
    let err = client.user_list().send().await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_eq!(err.attempts(), 3);
    assert_eq!(clock.sleeps().len(), 2);
    assert!(
        !err.to_string().contains("127.0.0.1"),
        "no URL in the message: {err}"
    );
}

#[tokio::test]
async fn a_post_whose_connection_was_refused_is_retried() {
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
        .requests_per_minute(0)
        .max_retries(2)
        .build()
        .unwrap();
    let err = client
        .order_create()
        .body(create_body("WMS-1"))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_eq!(err.attempts(), 3, "nothing was sent, so resending is safe");
}
