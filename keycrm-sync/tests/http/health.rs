//! Health and metrics: Prometheus text, and readiness when KeyCRM is silent with work pending.

use super::*;

#[tokio::test]
async fn metrics_are_prometheus_text_with_requests_latency_and_queues() {
    let rig = rig().await;
    rig.host.put_order(order(1));
    rig.engine.run_once().await.unwrap();
    let response = rig
        .http
        .get(rig.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    for needle in [
        "keycrm_requests_total{",
        "status=\"200\"",
        "keycrm_request_duration_seconds_bucket",
        "keycrm_rate_limited_total 0",
        "keycrm_quota_waits_total",
        "keycrm_sync_outbox_depth 0",
        "keycrm_sync_inbox_backlog 0",
        "keycrm_sync_inbox_oldest_age_seconds",
        "keycrm_sync_dead_letters 0",
        "keycrm_sync_runs_total{outcome=\"ok\"} 1",
        "keycrm_sync_run_duration_seconds_count 1",
        "keycrm_sync_last_success_timestamp_seconds{kind=\"order\"}",
        "keycrm_sync_alerts_firing{alert=\"sync_errors\"} 0",
        "keycrm_sync_records{kind=\"order\",state=\"synced\"} 1",
        "keycrm_sync_conflicts_total",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(!text.contains("Покупець"), "no customer data in metrics");
}

#[tokio::test]
async fn readyz_is_503_when_keycrm_is_silent_with_work_pending() {
    let clock = Arc::new(VirtualClock::new());
    let rig = rig_with(
        {
            let clock = clock.clone();
            move |mut o| {
                o.clock = clock;
                o.alert_interval = None;
                o
            }
        },
        "",
    )
    .await;
    rig.mock.faults().fail_next(1000, 503);
    rig.host.put_order(order(1));
    let _ = rig.engine.run_once().await;
    clock.advance(Duration::from_secs(100));
    let (status, body) = rig.call("GET", "/readyz", None).await;
    assert_eq!(status, 200, "{body}");
    clock.advance(Duration::from_secs(60));
    let (status, body) = rig.call("GET", "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["error"], "not_ready");
    assert_eq!(body["store"], true);
    assert!(body["pending"].as_u64().unwrap() >= 1);
    // KeyCRM answers again: ready.
    rig.mock.faults().clear();
    let _ = rig
        .service
        .engine()
        .client()
        .order_status_list()
        .send()
        .await;
    let (status, _) = rig.call("GET", "/readyz", None).await;
    assert_eq!(status, 200);
}
