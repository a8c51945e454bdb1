//! Shared set-up for the integration tests: a mock KeyCRM server with a catch-all guard, a
//! client pointed at it, fixture loading and checks every request must pass.

use std::path::PathBuf;
use std::sync::Arc;

use keycrm_api::Client;
use keycrm_api::clock::VirtualClock;
use serde_json::Value;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockBuilder, MockServer, Request, ResponseTemplate};

/// The API key every test client uses.
pub const API_KEY: &str = "test-key-123";

/// Starts a mock server with a lowest-priority catch-all that answers 500 and must never be
/// hit (`expect(0)`, verified when the server drops), and a client pointed at it.
pub async fn setup() -> (MockServer, Client) {
    let (server, client, _clock) = setup_with_clock().await;
    (server, client)
}

/// Like [`setup`], also returning the client's virtual clock (to inspect retry waits).
pub async fn setup_with_clock() -> (MockServer, Client, Arc<VirtualClock>) {
    let server = MockServer::start().await;
    catch_all(&server).await;
    let clock = Arc::new(VirtualClock::new());
    let client = configured(&server.uri(), clock.clone());
    (server, client, clock)
}

/// Mounts the catch-all guard on `server`.
pub async fn catch_all(server: &MockServer) {
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .with_priority(u8::MAX)
        .expect(0)
        .named("catch-all: no request may reach this")
        .mount(server)
        .await;
}

/// A client for `base_url` with the test key, the default retry policy, no quota pacing
/// (tests are not rate-limited) and a virtual clock, so retry waits take no real time.
pub fn client_for(base_url: &str) -> Client {
    configured(base_url, Arc::new(VirtualClock::new()))
}

fn configured(base_url: &str, clock: Arc<VirtualClock>) -> Client {
    Client::builder()
        .api_key(API_KEY)
        .base_url(base_url)
        .requests_per_minute(0)
        .clock(clock)
        .build()
        .expect("the test client builds")
}

/// A mock for `verb path` that only matches when the key and `Accept` header are sent.
pub fn api(verb: &str, route: &str) -> MockBuilder {
    Mock::given(method(verb))
        .and(path(route.to_string()))
        .and(header(
            "authorization",
            format!("Bearer {API_KEY}").as_str(),
        ))
        .and(header("accept", "application/json"))
}

/// A JSON answer with the given status and body.
pub fn json(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body)
}

/// A fixture from `tests/fixtures/` parsed as JSON.
pub fn fixture(name: &str) -> Value {
    let text = fixture_text(name);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {name} is not JSON: {e}"))
}

/// A fixture from `tests/fixtures/` as text (for bodies that must be sent byte for byte).
pub fn fixture_text(name: &str) -> String {
    let file: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", name]
        .iter()
        .collect();
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()))
}

/// All requests the server received, each checked for the key and the `Accept` header.
pub async fn requests(server: &MockServer) -> Vec<Request> {
    let requests = server
        .received_requests()
        .await
        .expect("request recording is on");
    for request in &requests {
        assert_standard_headers(request);
    }
    requests
}

/// The one request the server received (fails when there were more or none).
pub async fn only_request(server: &MockServer) -> Request {
    let mut all = requests(server).await;
    assert_eq!(
        all.len(),
        1,
        "expected exactly one request, got {}",
        all.len()
    );
    all.remove(0)
}

/// Exactly one `Authorization: Bearer test-key-123` and one `Accept: application/json`.
pub fn assert_standard_headers(request: &Request) {
    let values = |name: &str| -> Vec<String> {
        request
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ASCII header").to_string())
            .collect()
    };
    assert_eq!(
        values("authorization"),
        vec![format!("Bearer {API_KEY}")],
        "authorization header of {} {}",
        request.method,
        request.url
    );
    assert_eq!(
        values("accept"),
        vec!["application/json".to_string()],
        "accept header of {} {}",
        request.method,
        request.url
    );
}

/// The decoded query pairs of a request, in the order they were sent.
pub fn query_pairs(request: &Request) -> Vec<(String, String)> {
    request
        .url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Builds an expected list of query pairs from string slices.
pub fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The request body parsed as JSON.
pub fn sent_json(request: &Request) -> Value {
    serde_json::from_slice(&request.body).expect("the request body is JSON")
}

/// A decimal from its text.
pub fn dec(text: &str) -> keycrm_api::Decimal {
    text.parse().expect("a valid decimal literal")
}

/// A timestamp from its text.
pub fn ts(text: &str) -> keycrm_api::Timestamp {
    text.parse().expect("a valid timestamp literal")
}

/// Finishes a generated type builder (`types::X::builder()...`), panicking on a missing field.
pub fn built<T>(builder: impl TryInto<T, Error: std::fmt::Display>) -> T {
    builder
        .try_into()
        .unwrap_or_else(|e| panic!("incomplete test body: {e}"))
}
