//! The simulator as a server for other languages: the `keycrm-mock` binary (started as a
//! process, spoken to over real HTTP) and the admin API under `/__mock/` (against a
//! simulator started in-process, so webhook deliveries can be awaited).
#![cfg(feature = "mock")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use keycrm_api::mock::{KeyCrmMock, Quota, SeedConfig};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const BIN: &str = env!("CARGO_BIN_EXE_keycrm-mock");

/// The banner a started binary printed, up to its last line.
struct Started {
    child: Child,
    banner: Vec<String>,
    base_url: String,
}

impl Started {
    fn origin(&self) -> &str {
        self.base_url.trim_end_matches("/v1")
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        // Only when a test failed half-way: the happy paths stop the server themselves.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary and reads its banner (it is printed once the server listens).
fn start_binary(args: &[&str]) -> Started {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the keycrm-mock binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut banner = Vec::new();
    let mut base_url = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("utf-8 banner");
        if let Some(url) = line.strip_prefix("KEYCRM_BASE_URL=") {
            base_url = Some(url.to_string());
        }
        let last = line == "Ctrl-C stops.";
        banner.push(line);
        if last {
            break;
        }
    }
    let base_url = base_url.unwrap_or_else(|| panic!("no base URL in the banner: {banner:?}"));
    Started {
        child,
        banner,
        base_url,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get_json(url: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = http().get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("the simulator answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn send(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = http().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the simulator answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[cfg(unix)]
fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn the_binary_serves_the_seeded_account_and_stops_cleanly_on_sigterm() {
    let mut server = start_binary(&[
        "--port",
        "0",
        "--seed",
        "42",
        "--orders",
        "30",
        "--quota",
        "0",
        "--api-key",
        "test",
    ]);
    let banner = server.banner.join("\n");
    assert!(server.base_url.starts_with("http://127.0.0.1:"));
    assert!(server.base_url.ends_with("/v1"));
    assert!(
        banner.contains("orders       10001..=10030 (30)"),
        "{banner}"
    );
    assert!(banner.contains("order statuses    1 Новий"), "{banner}");
    assert!(
        banner.contains("warehouses        1 Основний склад"),
        "{banner}"
    );
    assert!(banner.contains("payment methods   1 "), "{banner}");
    assert!(banner.contains("sources           1 "), "{banner}");
    // A key given on the command line is not echoed.
    assert!(!banner.contains("test"), "{banner}");

    let (status, page) =
        get_json(&format!("{}/order?limit=5", server.base_url), Some("test")).await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 30);
    assert_eq!(page["data"].as_array().map(Vec::len), Some(5));
    let (status, body) = get_json(&format!("{}/order", server.base_url), Some("wrong")).await;
    assert_eq!(
        (status, body),
        (401, json!({ "message": "Unauthenticated." }))
    );
    let (status, body) = get_json(&format!("{}/__mock/health", server.origin()), None).await;
    assert_eq!((status, body), (200, json!({ "status": "ok" })));

    #[cfg(unix)]
    {
        terminate(&server.child);
        let output = std::mem::replace(
            &mut server.child,
            Command::new("true").spawn().expect("a placeholder process"),
        )
        .wait_with_output()
        .expect("the server exits");
        assert!(output.status.success(), "exit status {:?}", output.status);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("SIGTERM received, stopping"), "{stderr}");
        // The port is free again: nobody answers any more.
        assert!(
            http()
                .get(format!("{}/__mock/health", server.origin()))
                .send()
                .await
                .is_err()
        );
    }
}

#[test]
fn the_binary_refuses_bad_options_and_a_taken_port_clearly() {
    let output = Command::new(BIN)
        .args(["--orders", "many"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--orders: `many` is not a valid number")
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = taken.local_addr().expect("bound").port().to_string();
    let output = Command::new(BIN)
        .args(["--port", &port])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen on 127.0.0.1:"), "{stderr}");

    let output = Command::new(BIN).arg("--help").output().expect("runs");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("--fail-share"));
}

#[tokio::test]
async fn the_binary_takes_faults_leads_and_webhook_receivers_from_the_command_line() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let hook = format!("{}/keycrm?token=s3cret", receiver.uri());
    let server = start_binary(&[
        "--port",
        "0",
        "--orders",
        "3",
        "--quota",
        "0",
        "--no-leads",
        "--fail-share",
        "1",
        "--fail-status",
        "503",
        "--webhook",
        &hook,
    ]);
    let banner = server.banner.join("\n");
    assert!(banner.contains("leads: off"), "{banner}");
    assert!(banner.contains("100.0 % answered 503"), "{banner}");
    assert!(
        banner.contains("order/lead webhooks to: http://127.0.0.1:"),
        "{banner}"
    );
    assert!(
        !banner.contains("s3cret"),
        "the receiver's token stays hidden: {banner}"
    );
    assert!(
        banner.contains(keycrm_api::mock::DEFAULT_API_KEY),
        "{banner}"
    );

    let key = Some(keycrm_api::mock::DEFAULT_API_KEY);
    let (status, _) = get_json(&format!("{}/order", server.base_url), key).await;
    assert_eq!(status, 503);
    let (status, _) = send(
        reqwest::Method::DELETE,
        &format!("{}/__mock/faults", server.origin()),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = get_json(&format!("{}/pipelines", server.base_url), key).await;
    assert_eq!(
        (status, body),
        (400, json!({ "message": "Leads are not enabled" }))
    );

    // The receiver from the command line gets the status change made through the admin API.
    let (status, _) = send(
        reqwest::Method::PUT,
        &format!("{}/__mock/orders/10001/status", server.origin()),
        Some(json!({ "status_id": 6 })),
    )
    .await;
    assert_eq!(status, 200);
    let mut delivered = Vec::new();
    for _ in 0..200 {
        delivered = receiver.received_requests().await.unwrap_or_default();
        if !delivered.is_empty() {
            break;
        }
        // Waiting for another process: there is no clock to pause.
        tokio::task::yield_now().await;
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert_eq!(delivered.len(), 1, "one webhook delivered");
    let payload: Value = serde_json::from_slice(&delivered[0].body).expect("JSON webhook");
    assert_eq!(payload["event"], "order.change_order_status");
    assert_eq!(payload["context"]["id"], 10001);
    assert_eq!(delivered[0].url.query(), Some("token=s3cret"));

    // Ctrl-C (SIGINT) stops it as cleanly as SIGTERM.
    #[cfg(unix)]
    {
        let mut server = server;
        let status = Command::new("kill")
            .args(["-INT", &server.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = server.child.wait().expect("the server exits");
        assert!(exit.success(), "exit status {exit:?}");
        let mut stderr = String::new();
        std::io::Read::read_to_string(
            server.child.stderr.as_mut().expect("piped stderr"),
            &mut stderr,
        )
        .expect("stderr");
        assert!(stderr.contains("SIGINT received, stopping"), "{stderr}");
    }
}

// ---------------------------------------------------------------------------------------
// The admin API against an in-process simulator.

async fn simulator() -> (KeyCrmMock, String) {
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .seed(SeedConfig {
            orders: 10,
            ..SeedConfig::default()
        })
        .start()
        .await;
    let admin = format!("{}/__mock", mock.uri().trim_end_matches("/v1"));
    (mock, admin)
}

async fn admin(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    send(method, url, body).await
}

#[tokio::test]
async fn admin_reset_goes_back_to_the_started_account() {
    let (mock, admin_url) = simulator().await;
    let client = mock
        .client_builder()
        .requests_per_minute(0)
        .build()
        .unwrap();
    client.order_list().send().await.unwrap();
    let (status, _) = admin(
        "POST",
        &format!("{admin_url}/seed"),
        Some(json!({ "orders": 4, "seed": 7 })),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(mock.crm().order_ids().len(), 14);
    mock.faults().fail_next(5, 500);

    let (status, body) = admin("POST", &format!("{admin_url}/reset"), None).await;
    assert_eq!((status, body), (204, Value::Null));
    assert_eq!(mock.crm().order_ids().len(), 10, "the builder's seed only");
    assert_eq!(mock.request_count(), 0, "the log is empty");
    let page = client.order_list().send().await.unwrap().into_inner();
    assert_eq!(page.total, Some(10), "faults are disarmed");
    assert_eq!(mock.seeded().map(|s| s.orders.len()), Some(10));
}

#[tokio::test]
async fn admin_seed_adds_records_and_answers_their_ids() {
    let (mock, admin_url) = simulator().await;
    let (status, ids) = admin(
        "POST",
        &format!("{admin_url}/seed"),
        Some(json!({ "orders": 3, "buyers": 2, "products": 1, "cards": 0, "seed": 9 })),
    )
    .await;
    assert_eq!(status, 201);
    let orders: Vec<i64> = ids["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(orders, vec![10011, 10012, 10013]);
    assert_eq!(ids["buyers"].as_array().map(Vec::len), Some(2));
    assert_eq!(ids["cards"], json!([]));
    assert!(mock.crm().order(10013).is_some());

    // An empty body seeds the defaults; wrong settings are refused without seeding.
    let (status, ids) = admin("POST", &format!("{admin_url}/seed"), None).await;
    assert_eq!(status, 201);
    assert_eq!(ids["orders"].as_array().map(Vec::len), Some(60));
    let before = mock.crm().order_ids().len();
    let (status, body) = admin(
        "POST",
        &format!("{admin_url}/seed"),
        Some(json!({ "orders": -1 })),
    )
    .await;
    assert_eq!(status, 422);
    assert!(body["message"].as_str().unwrap().contains("orders"));
    let (status, _) = admin(
        "POST",
        &format!("{admin_url}/seed"),
        Some(json!({ "ordres": 5 })),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(mock.crm().order_ids().len(), before);
}

#[tokio::test]
async fn admin_order_status_change_is_made_in_the_crm_and_sends_the_webhook() {
    let (mock, admin_url) = simulator().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let (status, receivers) = admin(
        "POST",
        &format!("{admin_url}/webhooks"),
        Some(json!({ "url": format!("{}/hook", receiver.uri()) })),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(receivers["order"].as_array().map(Vec::len), Some(1));
    let (status, _) = admin(
        "POST",
        &format!("{admin_url}/webhooks"),
        Some(json!({ "url": "ftp://nowhere", "kind": "order" })),
    )
    .await;
    assert_eq!(status, 422);
    let order = mock.seeded().unwrap().orders[0];

    let (status, body) = admin(
        "PUT",
        &format!("{admin_url}/orders/{order}/status"),
        Some(json!({ "status_id": 6 })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], order);
    assert_eq!(body["status_id"], 6);
    let deliveries = mock.wait_for_webhooks().await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        deliveries[0].event.as_deref(),
        Some("order.change_order_status")
    );
    assert_eq!(deliveries[0].payload["context"]["status_id"], 6);
    assert!(deliveries[0].delivered);
    let (status, log) = admin("GET", &format!("{admin_url}/webhooks"), None).await;
    assert_eq!(status, 200);
    assert_eq!(log[0]["event"], "order.change_order_status");
    assert_eq!(log[0]["attempts"], json!([200]));
    // A change in the CRM is no API request.
    assert_eq!(mock.request_count(), 0);

    let (status, body) = admin(
        "PUT",
        &format!("{admin_url}/orders/1/status"),
        Some(json!({ "status_id": 2 })),
    )
    .await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().contains("Order"));
    let (status, _) = admin(
        "PUT",
        &format!("{admin_url}/orders/{order}/status"),
        Some(json!({ "status_id": 99 })),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = admin(
        "PUT",
        &format!("{admin_url}/orders/{order}/status"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn admin_request_log_lists_and_forgets_api_requests() {
    let (mock, admin_url) = simulator().await;
    let client = mock
        .client_builder()
        .requests_per_minute(0)
        .build()
        .unwrap();
    client.order_list().limit(2u64).send().await.unwrap();
    client.order_get().order_id(10001).send().await.unwrap();
    // Admin requests themselves are not recorded.
    admin("GET", &format!("{admin_url}/health"), None).await;

    let (status, log) = admin("GET", &format!("{admin_url}/requests"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        log,
        json!([
            { "method": "GET", "path": "/v1/order", "query": "limit=2", "operation": "order_list", "status": 200 },
            { "method": "GET", "path": "/v1/order/10001", "query": null, "operation": "order_get", "status": 200 },
        ])
    );
    let (status, _) = admin("DELETE", &format!("{admin_url}/requests"), None).await;
    assert_eq!(status, 204);
    let (_, log) = admin("GET", &format!("{admin_url}/requests"), None).await;
    assert_eq!(log, json!([]));
}

#[tokio::test]
async fn admin_faults_stock_leads_quota_and_reference() {
    let (mock, admin_url) = simulator().await;
    let client = mock
        .client_builder()
        .requests_per_minute(0)
        .max_retries(0)
        .build()
        .unwrap();

    let (status, _) = admin(
        "PUT",
        &format!("{admin_url}/faults"),
        Some(json!({ "fail_next": { "count": 1, "status": 503 } })),
    )
    .await;
    assert_eq!(status, 200);
    let err = client.order_list().send().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(client.order_list().send().await.is_ok(), "one failure only");
    let (status, _) = admin(
        "PUT",
        &format!("{admin_url}/faults"),
        Some(json!({ "fail_share": { "share": 2.0 } })),
    )
    .await;
    assert_eq!(status, 422, "a share above 1 is refused");

    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    admin(
        "POST",
        &format!("{admin_url}/webhooks"),
        Some(json!({ "url": receiver.uri(), "kind": "stock" })),
    )
    .await;
    let offer = mock.seeded().unwrap().offers[0];
    let (status, body) = admin(
        "PUT",
        &format!("{admin_url}/stock"),
        Some(json!({ "offer_id": offer, "warehouse_id": 2, "quantity": "1234.5" })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["offer_id"], offer);
    let deliveries = mock.wait_for_webhooks().await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].payload[0]["offer_id"], offer);
    let (status, _) = admin(
        "PUT",
        &format!("{admin_url}/stock"),
        Some(json!({ "offer_id": offer, "warehouse_id": 9, "quantity": 1 })),
    )
    .await;
    assert_eq!(status, 404);

    let (status, _) = admin(
        "PUT",
        &format!("{admin_url}/leads"),
        Some(json!({ "enabled": false })),
    )
    .await;
    assert_eq!(status, 200);
    assert!(client.pipeline_list().send().await.is_err());

    let (status, _) = admin(
        "PUT",
        &format!("{admin_url}/quota"),
        Some(json!({ "limit": 1 })),
    )
    .await;
    assert_eq!(status, 200);
    client.order_tag_list().send().await.unwrap();
    let err = client.order_tag_list().send().await.unwrap_err();
    assert!(err.is_retryable(), "the second request is refused: {err}");
    assert_eq!(mock.rate_limited(), 1);

    let (status, reference) = admin("GET", &format!("{admin_url}/reference"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        reference["order_statuses"][3],
        json!({
            "id": 4, "name": "Відправлено", "alias": "shipped", "group_id": 4, "is_closing_order": false
        })
    );
    assert_eq!(reference["warehouses"].as_array().map(Vec::len), Some(2));
    assert_eq!(reference["leads_enabled"], false);
    assert_eq!(reference, mock.reference());
}

#[tokio::test]
async fn admin_answers_unknown_routes_methods_and_bodies_plainly() {
    let (_mock, admin_url) = simulator().await;
    let (status, body) = admin("GET", &format!("{admin_url}/nothing"), None).await;
    assert_eq!(status, 404);
    assert!(body["message"].is_string());
    let (status, body) = admin("GET", &format!("{admin_url}/reset"), None).await;
    assert_eq!(status, 405);
    assert!(body["message"].as_str().unwrap().contains("POST"));
    let url = format!("{admin_url}/orders/10001/status");
    let response = http().put(&url).body("{not json").send().await.unwrap();
    assert_eq!(response.status(), 400);
    let (status, _) = admin("PUT", &url, None).await;
    assert_eq!(status, 400, "a body is required");
}

#[test]
fn the_builder_keeps_the_key_and_receiver_tokens_out_of_debug() {
    let builder = KeyCrmMock::builder()
        .api_key("sk-live-secret")
        .webhook("http://127.0.0.1:9/hook?token=s3cret")
        .stock_webhook("http://127.0.0.1:9/stock/s3cret");
    let shown = format!("{builder:?}");
    assert!(!shown.contains("sk-live-secret"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("webhooks: 1"), "{shown}");
}
