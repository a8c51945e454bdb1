//! Who may call what: the admin token on management routes, JSON errors for unknown routes,
//! a prefix mount, the webhook route's own token, and the HTTP classification of engine errors.

use super::*;

#[tokio::test]
async fn management_routes_refuse_missing_and_wrong_tokens_with_json_401() {
    let rig = rig().await;
    for (method, path) in MANAGEMENT {
        let response = rig
            .http
            .request(method.parse().unwrap(), rig.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"keycrm-sync\""
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "missing_token", "{method} {path}");
        assert!(body["message"].as_str().unwrap().contains("Bearer"));

        let (status, body) = rig.call(method, path, Some("wrong")).await;
        assert_eq!(status, 401, "{method} {path}");
        assert_eq!(body["error"], "invalid_token");
        assert!(!body.to_string().contains(TOKEN), "never echoes the token");
        // Another scheme is no bearer token.
        let response = rig
            .http
            .request(method.parse().unwrap(), rig.url(path))
            .header("Authorization", format!("Basic {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
    }
    // Streams take the token as a query parameter too (browsers cannot send headers there).
    let response = rig
        .http
        .get(rig.url("/events?access_token=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = rig
        .http
        .get(rig.url(&format!("/events?access_token={TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The public routes need nothing.
    let (status, body) = rig.call("GET", "/healthz", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = rig.call("GET", "/readyz", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["ready"], true);
    let response = rig.http.get(rig.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("sessionStorage") && html.contains("EventSource"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
}

#[tokio::test]
async fn an_empty_admin_token_refuses_everything_and_public_metrics_is_an_option() {
    let rig = rig_with(
        |mut o| {
            o.admin_token = Secret::new("");
            o.public_metrics = true;
            o
        },
        "",
    )
    .await;
    let (status, body) = rig.call("GET", "/sync/status", Some("")).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "missing_token");
    let (status, body) = rig.call("GET", "/sync/status", Some("x")).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("invalid_token"))
    );
    let response = rig.http.get(rig.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let rig = rig().await;
    let (status, body) = rig.admin("GET", "/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    let (status, body) = rig.admin("PUT", "/sync/status").await;
    assert_eq!(status, 405);
    assert_eq!(body["error"], "method_not_allowed");
}

#[tokio::test]
async fn the_router_mounts_under_a_prefix() {
    let rig = rig_with(|o| o, "/ops/keycrm").await;
    assert!(rig.base.ends_with("/ops/keycrm"));
    let (status, _) = rig.call("GET", "/healthz", None).await;
    assert_eq!(status, 200);
    let (status, body) = rig.admin("GET", "/sync/status").await;
    assert_eq!(status, 200, "{body}");
    let (status, page) = rig.call("GET", "", None).await;
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("KeyCRM sync"));
}

#[tokio::test]
async fn the_webhook_route_answers_as_the_receiver_without_the_admin_token() {
    let rig = rig_with(
        |mut o| {
            o.webhook = Some(keycrm_sync::webhook::ReceiverSettings {
                token: Secret::new("hook-token"),
                limits: keycrm_sync::webhook::ParseLimits {
                    max_bytes: 2048,
                    ..Default::default()
                },
                ..Default::default()
            });
            o
        },
        "",
    )
    .await;
    let body = json!({
        "event": keycrm_sync::webhook::ORDER_STATUS_EVENT,
        "context": {"id": 10001, "status_id": 2, "updated_at": "2026-11-30 02:00:00"}
    })
    .to_string();
    let post = |query: &str, content_type: &str, body: String| {
        rig.http
            .post(rig.url(&format!("/webhooks/keycrm{query}")))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases = [
        ("", "application/json", body.clone(), 401, "unauthorized"),
        (
            "?token=wrong",
            "application/json",
            body.clone(),
            401,
            "unauthorized",
        ),
        (
            "?token=hook-token",
            "text/plain",
            body.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "?token=hook-token",
            "application/json",
            "{".to_string(),
            400,
            "invalid_webhook",
        ),
        (
            "?token=hook-token",
            "application/json",
            "x".repeat(4096),
            413,
            "payload_too_large",
        ),
    ];
    for (query, content_type, payload, status, code) in cases {
        let response = post(query, content_type, payload).await.unwrap();
        assert_eq!(response.status(), status, "{query} {content_type}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], code, "{answer}");
        assert!(!answer.to_string().contains("hook-token"));
    }
    assert_eq!(
        rig.engine.status().await.unwrap().inbox_backlog,
        0,
        "nothing stored"
    );
    let response = post("?token=hook-token", "application/json", body.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "stored");
    let response = post("?token=hook-token", "application/json", body)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "duplicate"
    );
    // Durable before the answer; applied later by the inbox worker or a run.
    assert_eq!(rig.engine.status().await.unwrap().inbox_backlog, 1);
    let metrics = rig.admin("GET", "/metrics").await.1;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("keycrm_sync_inbox_backlog 1")
    );
}

#[test]
fn sync_errors_have_an_http_classification() {
    let not_found = SyncError::NotFound {
        kind: keycrm_sync::model::EntityKind::Order,
        local_id: "x".into(),
    };
    let e = HttpError::from_sync(&not_found);
    assert_eq!((e.status, e.error), (404, "not_found"));
    assert_eq!(e.body()["error"], "not_found");
    let e = HttpError::from_sync(&SyncError::MassZeroing {
        zeroed: 9,
        total: 10,
        limit: 50.0,
    });
    assert_eq!((e.status, e.error), (409, "mass_zeroing"));
    let e = HttpError::from_sync(&SyncError::Config("x".into()));
    assert_eq!(e.status, 500);
    let e = HttpError::from_sync(&SyncError::Store(keycrm_sync::store::StoreError::Backend(
        "db down".into(),
    )));
    assert_eq!((e.status, e.error), (503, "store_unavailable"));
    let e = HttpError::from_sync(&SyncError::Host(keycrm_sync::host::HostError("h".into())));
    assert_eq!((e.status, e.error), (500, "host_error"));
}
