//! Error mapping: decode paths, 422 field maps, 401/404/429/5xx, transport failures, the
//! key never showing, and base-URL normalisation.

use std::collections::BTreeMap;
use std::time::Duration;

use keycrm_api::{Error, types};
use serde_json::json;
use wiremock::matchers::query_param;
use wiremock::{MockServer, ResponseTemplate};

use crate::support::*;

#[tokio::test]
async fn a_bad_field_is_a_decode_error_naming_its_path_but_not_its_value() {
    let (server, client) = setup().await;
    api("GET", "/order")
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(fixture_text("orders_page_bad_id.json"), "application/json"),
        )
        .expect(1)
        .mount(&server)
        .await;

    let err = client
        .order_list()
        .send()
        .await
        .expect_err("id is a string");

    match &err {
        Error::Decode {
            path,
            message,
            meta,
        } => {
            assert_eq!(path, "data[1].id");
            assert!(message.contains("expected i64"), "{message}");
            assert_eq!(meta.attempts, 1);
        }
        other => panic!("expected Error::Decode, got {other:?}"),
    }
    let shown = format!("{err} | {err:?} | {err:#?}");
    assert!(shown.contains("data[1].id"), "{shown}");
    for secret in ["Олена", "Коваленко", "Олена-Коваленко-10453", "90247.69"]
    {
        assert!(!shown.contains(secret), "the bad value leaked: {shown}");
    }
    assert_eq!(
        err.to_string(),
        "cannot read KeyCRM's response at `data[1].id`: invalid type: string, expected i64"
    );
    assert_eq!(err.status(), None);
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_422_is_a_validation_error_with_the_field_map() {
    let (server, client) = setup().await;
    api("POST", "/order/import")
        .respond_with(json(
            422,
            json!({
                "message": "The given data was invalid.",
                "errors": {"orders.0.source_id": ["The source id field is required."]}
            }),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let order = built::<types::OrderCreate>(
        types::OrderCreate::builder()
            .source_id(0)
            .buyer(built::<types::OrderBuyerInput>(
                types::OrderBuyerInput::builder()
                    .full_name("Олена Коваленко".to_string())
                    .phone("+380671234567".to_string()),
            )),
    );
    let err = client
        .order_import()
        .body(types::OrderImport {
            orders: vec![order],
        })
        .send()
        .await
        .expect_err("422");

    let request = only_request(&server).await;
    assert_eq!(
        sent_json(&request),
        json!({"orders": [{"source_id": 0, "buyer": {"full_name": "Олена Коваленко", "phone": "+380671234567"}}]})
    );
    match &err {
        Error::Validation {
            message,
            errors,
            meta,
        } => {
            assert_eq!(message, "The given data was invalid.");
            assert_eq!(
                errors,
                &BTreeMap::from([(
                    "orders.0.source_id".to_string(),
                    vec!["The source id field is required.".to_string()]
                )])
            );
            assert_eq!(meta.attempts, 1);
        }
        other => panic!("expected Error::Validation, got {other:?}"),
    }
    assert_eq!(err.status(), Some(422));
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        "KeyCRM rejected the request (422): The given data was invalid. \
         [fields: orders.0.source_id: The source id field is required.]"
    );
    assert!(
        !err.to_string().contains("+380671234567"),
        "no request data in errors"
    );
}

#[tokio::test]
async fn a_401_is_unauthorized_and_a_404_is_not_found() {
    let (server, client) = setup().await;
    api("GET", "/order")
        .respond_with(json(401, json!({"message": "Unauthenticated."})))
        .expect(1)
        .mount(&server)
        .await;
    api("GET", "/order/999999")
        .respond_with(json(
            404,
            json!({"message": "No query results for model [App\\Models\\Order] 999999"}),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let unauthorized = client.order_list().send().await.expect_err("401");
    match &unauthorized {
        Error::Unauthorized { message, .. } => {
            assert_eq!(message.as_deref(), Some("Unauthenticated."));
        }
        other => panic!("expected Error::Unauthorized, got {other:?}"),
    }
    assert_eq!(unauthorized.status(), Some(401));
    assert!(unauthorized.to_string().contains("401"));
    assert!(
        unauthorized.to_string().contains("KEYCRM_API_KEY"),
        "says what to check"
    );

    let not_found = client
        .order_get()
        .order_id(999_999)
        .send()
        .await
        .expect_err("404");
    match &not_found {
        Error::NotFound { message, .. } => assert_eq!(
            message.as_deref(),
            Some("No query results for model [App\\Models\\Order] 999999")
        ),
        other => panic!("expected Error::NotFound, got {other:?}"),
    }
    assert_eq!(not_found.status(), Some(404));
    assert!(!not_found.is_retryable());

    let paths: Vec<String> = requests(&server)
        .await
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    assert_eq!(paths, vec!["/order", "/order/999999"]);
}

#[tokio::test]
async fn an_error_status_with_an_empty_or_html_body_keeps_its_meaning() {
    let (server, client) = setup().await;
    api("GET", "/order")
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    api("GET", "/order/5")
        .respond_with(ResponseTemplate::new(404).set_body_raw(
            "<html><body><h1>404 Not Found</h1></body></html>",
            "text/html",
        ))
        .expect(1)
        .mount(&server)
        .await;

    let unauthorized = client.order_list().send().await.expect_err("401");
    assert!(
        matches!(unauthorized, Error::Unauthorized { message: None, .. }),
        "{unauthorized:?}"
    );
    let not_found = client
        .order_get()
        .order_id(5)
        .send()
        .await
        .expect_err("404");
    assert!(
        matches!(not_found, Error::NotFound { message: None, .. }),
        "{not_found:?}"
    );
    assert!(!not_found.to_string().contains("html"), "no body in errors");
}

#[tokio::test]
async fn a_429_and_a_503_are_retried_then_reported_with_the_wait() {
    let (server, client, clock) = setup_with_clock().await;
    api("GET", "/buyer")
        .respond_with(
            json(429, json!({"message": "Too Many Attempts."})).insert_header("Retry-After", "7"),
        )
        .expect(4)
        .mount(&server)
        .await;
    api("GET", "/users")
        .respond_with(
            ResponseTemplate::new(503).set_body_string("<html>Service Unavailable</html>"),
        )
        .expect(4)
        .mount(&server)
        .await;

    let limited = client.buyer_list().send().await.expect_err("429");
    match &limited {
        Error::RateLimited { retry_after, meta } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(7)));
            assert_eq!(meta.attempts, 4, "one try and three retries");
        }
        other => panic!("expected Error::RateLimited, got {other:?}"),
    }
    assert!(limited.is_retryable());
    assert_eq!(limited.status(), Some(429));
    assert!(limited.to_string().contains("retry after 7 s"), "{limited}");
    let waited: Duration = clock.sleeps().iter().sum();
    assert!(
        waited >= Duration::from_secs(21),
        "each retry waited out Retry-After: {:?}",
        clock.sleeps()
    );

    let failed = client.user_list().send().await.expect_err("503");
    assert!(
        matches!(failed, Error::Server { status: 503, .. }),
        "{failed:?}"
    );
    assert_eq!(failed.attempts(), 4, "a GET is retried on 5xx");
    assert!(failed.is_retryable());
    assert!(
        !failed.to_string().contains("Service Unavailable"),
        "no body in errors"
    );
    assert_eq!(requests(&server).await.len(), 8);
}

#[tokio::test]
async fn the_api_key_never_appears_in_any_error() {
    let (server, client) = setup().await;
    let answers = [
        (
            "/order/1",
            json(401, json!({"message": "Unauthenticated."})),
        ),
        ("/order/2", json(404, json!({"message": "Not found"}))),
        (
            "/order/3",
            json(
                400,
                json!({"message": "Requested include(s) `sellers` are not allowed."}),
            ),
        ),
        ("/order/4", json(500, json!({"message": "Server Error"}))),
        ("/order/5", json(200, json!({"id": "not-a-number"}))),
        (
            "/order/6",
            json(429, json!({"message": "Too Many Attempts."})),
        ),
    ];
    for (route, answer) in answers {
        // 5xx and 429 are retried three times.
        let calls = if route.ends_with('4') || route.ends_with('6') {
            4
        } else {
            1
        };
        api("GET", route)
            .respond_with(answer)
            .expect(calls)
            .mount(&server)
            .await;
    }

    let mut errors = Vec::new();
    for id in 1..=6 {
        let result = client.order_get().order_id(id).send().await;
        errors.push(result.expect_err("an error answer"));
    }
    // 422 from a write.
    api("PUT", "/buyer/2217")
        .respond_with(json(
            422,
            json!({"message": "The given data was invalid.", "errors": {"full_name": ["The full name field is required."]}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    errors.push(
        client
            .buyer_update()
            .buyer_id(2217)
            .body(types::BuyerUpdate::builder().full_name(""))
            .send()
            .await
            .expect_err("422"),
    );
    // A connection failure: a port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let offline = client_for(&format!("http://{closed}"));
    errors.push(
        offline
            .order_list()
            .filter_buyer_phone("+380671234567")
            .send()
            .await
            .expect_err("connection refused"),
    );
    // Refused before sending.
    errors.push(
        client
            .storage_upload("big.bin", vec![0_u8; keycrm_api::MAX_UPLOAD_BYTES + 1])
            .await
            .expect_err("too large"),
    );

    let kinds: Vec<&str> = errors
        .iter()
        .map(|e| match e {
            Error::Unauthorized { .. } => "unauthorized",
            Error::NotFound { .. } => "not_found",
            Error::Api { .. } => "api",
            Error::Server { .. } => "server",
            Error::Decode { .. } => "decode",
            Error::RateLimited { .. } => "rate_limited",
            Error::Validation { .. } => "validation",
            Error::Transport { .. } => "transport",
            Error::PayloadTooLarge { .. } => "too_large",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "unauthorized",
            "not_found",
            "api",
            "server",
            "decode",
            "rate_limited",
            "validation",
            "transport",
            "too_large"
        ]
    );

    for err in &errors {
        let mut shown = format!("{err}\n{err:?}\n{err:#?}");
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            shown.push_str(&format!("\n{cause}\n{cause:?}"));
            source = cause.source();
        }
        assert!(!shown.contains(API_KEY), "the key leaked: {shown}");
        assert!(!shown.contains("Bearer"), "the auth header leaked: {shown}");
        assert!(
            !shown.contains("+380671234567"),
            "a filter value leaked: {shown}"
        );
    }
    assert!(!format!("{client:?}").contains(API_KEY));
    assert_eq!(
        requests(&server).await.len(),
        13,
        "six gets (two retried thrice) and one put"
    );
}

#[tokio::test]
async fn a_base_url_with_a_trailing_slash_still_hits_the_route() {
    let server = MockServer::start().await;
    catch_all(&server).await;
    api("GET", "/order")
        .and(query_param("limit", "1"))
        .respond_with(json(
            200,
            json!({"current_page": 1, "data": [], "total": 0}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    api("GET", "/v1/order/status")
        .respond_with(json(200, json!({"data": [{"id": 1, "name": "Новий"}]})))
        .expect(1)
        .mount(&server)
        .await;

    // The plain default configuration, as a user would write it.
    let client = keycrm_api::Client::builder()
        .api_key(API_KEY)
        .base_url(format!("{}/", server.uri()))
        .build()
        .expect("builds");
    let page = client
        .order_list()
        .limit(1u64)
        .send()
        .await
        .expect("/order")
        .into_inner();
    assert_eq!(page.total, Some(0));
    assert!(page.data.is_empty());
    assert!(!page.has_next());

    let prefixed = client_for(&format!("{}/v1//", server.uri()));
    let statuses = prefixed
        .order_status_list()
        .send()
        .await
        .expect("/v1/order/status")
        .into_inner();
    assert_eq!(statuses.data[0].name.as_deref(), Some("Новий"));
    assert_eq!(statuses.total, None, "missing envelope fields are None");

    let paths: Vec<String> = requests(&server)
        .await
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    assert_eq!(paths, vec!["/order", "/v1/order/status"], "never `//order`");
}
