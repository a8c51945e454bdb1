//! Sync actions and what they leave: run reports, full-resync jobs, status, conflicts and dead
//! letters.

use super::*;

#[tokio::test]
async fn sync_routes_answer_the_run_report_or_404() {
    let rig = rig().await;
    rig.host.put_order(order(1));
    let (status, report) = rig.admin("POST", "/sync/orders/WMS-1").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["pushed"], 1);
    assert!(report["requests"].as_u64().unwrap() >= 1);
    for path in [
        "/sync/orders/WMS-404",
        "/sync/buyers/nobody",
        "/sync/products/none",
        "/sync/offers/none",
        "/sync/widgets/1",
    ] {
        let (status, body) = rig.admin("POST", path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"], "not_found", "{path}");
    }
    // A KeyCRM outage is a 503 the caller may retry.
    rig.mock.faults().fail_next(100, 503);
    rig.host
        .edit_order("WMS-1", |o| o.status = Some("approved".into()));
    let (status, body) = rig.admin("POST", "/sync/orders/WMS-1").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "keycrm_unavailable");
}

#[tokio::test]
async fn full_resync_is_a_background_job_with_202_409_and_progress() {
    let rig = rig().await;
    for n in 1..=3 {
        rig.host.put_order(order(n));
    }
    let mut events = sse(&rig, None).await;
    // Slow KeyCRM, so that the job is still running when asked again.
    rig.mock.faults().set_latency(Duration::from_millis(150));
    let response = rig
        .http
        .post(rig.url("/sync/full-resync"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let job: Value = response.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("jobs/{id}"));
    assert_eq!(job["state"], "running");
    let (status, body) = rig.admin("POST", "/sync/full-resync").await;
    assert_eq!(status, 409);
    assert_eq!(body["error"], "job_running");
    let (status, running) = rig.admin("GET", &format!("/sync/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(running["id"], id);
    let (_, live) = rig.admin("GET", "/sync/status").await;
    assert_eq!(live["job"], id);
    // Progress on the event stream: started, the records, done.
    let started = events.next_of("job").await;
    assert_eq!(started.data["state"], "running");
    assert!(started.id.is_some());
    let mut records = 0;
    let done = loop {
        let frame = events.next().await.unwrap();
        match frame.data["type"].as_str().unwrap() {
            "applied" | "pushed" | "failed" => records += 1,
            "job" if frame.data["state"] != "running" => break frame,
            _ => {}
        }
    };
    assert_eq!(done.data["state"], "succeeded", "{:?}", done.data);
    assert!(records >= 3, "three orders (and their buyers) pushed");
    assert_eq!(done.data["processed"], records);
    let (status, finished) = rig.admin("GET", &format!("/sync/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(finished["state"], "succeeded");
    assert_eq!(finished["processed"], records);
    assert_eq!(finished["report"]["pushed"], 3);
    assert!(finished["finished_at"].is_string());
    // Another may start now.
    rig.mock.faults().clear();
    let (status, again) = rig.admin("POST", "/sync/full-resync").await;
    assert_eq!(status, 202);
    assert_ne!(again["id"], id);
    let (status, body) = rig.admin("GET", "/sync/jobs/job-999").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn status_conflicts_and_dead_letters_with_retry_and_discard() {
    let rig = rig().await;
    // A status the configuration does not map: dead-lettered on its only attempt.
    rig.host.put_order(CanonicalOrder {
        status: Some("lost-in-space".into()),
        ..order(7)
    });
    rig.engine.run_once().await.unwrap();
    let (status, body) = rig.admin("GET", "/sync/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["dead_letters"], 1);
    assert_eq!(body["per_kind"]["order"]["dead_lettered"], 1);
    assert!(body["quota"]["requests"].as_u64().unwrap() >= 1);
    assert_eq!(body["alerts"], json!([]));
    assert!(body["last_event_id"].as_u64().unwrap() >= 1);
    let (status, dead) = rig.admin("GET", "/sync/dead-letters").await;
    assert_eq!(status, 200);
    let dead = dead.as_array().unwrap().clone();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["local_id"], "WMS-7");
    assert_eq!(dead[0]["kind"], "order");
    assert!(dead[0].get("payload").is_none(), "no customer data");
    assert!(!dead[0].to_string().contains("Покупець"));
    let id = dead[0]["id"].as_i64().unwrap();

    let (status, body) = rig
        .admin("POST", &format!("/sync/dead-letters/{id}/retry"))
        .await;
    assert_eq!(status, 200);
    assert!(body["queued"].is_i64());
    let (_, dead) = rig.admin("GET", "/sync/dead-letters").await;
    assert_eq!(dead, json!([]));
    let (status, body) = rig
        .admin("POST", &format!("/sync/dead-letters/{id}/retry"))
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );

    rig.engine.run_once().await.unwrap();
    let (_, dead) = rig.admin("GET", "/sync/dead-letters").await;
    let id = dead[0]["id"].as_i64().unwrap();
    let (status, body) = rig
        .admin("DELETE", &format!("/sync/dead-letters/{id}"))
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = rig
        .admin("DELETE", &format!("/sync/dead-letters/{id}"))
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
    let (status, _) = rig.admin("DELETE", "/sync/dead-letters/not-a-number").await;
    assert_eq!(status, 404);

    let (status, conflicts) = rig.admin("GET", "/sync/conflicts").await;
    assert_eq!(status, 200);
    assert!(conflicts.is_array());
}

#[tokio::test]
async fn conflicts_list_both_values_and_the_winner() {
    let rig = rig().await;
    rig.host.put_order(order(3));
    rig.engine.run_once().await.unwrap();
    let remote = rig
        .engine
        .store()
        .get_mapping(keycrm_sync::model::EntityKind::Order, "WMS-3")
        .await
        .unwrap()
        .unwrap()
        .remote_id
        .unwrap();
    // Both sides change the manager comment.
    rig.mock
        .crm()
        .edit_order(remote, json!({"manager_comment": "from KeyCRM"}));
    rig.host
        .edit_order("WMS-3", |o| o.comment = Some("from the warehouse".into()));
    rig.engine.run_once().await.unwrap();
    let (status, conflicts) = rig.admin("GET", "/sync/conflicts").await;
    assert_eq!(status, 200);
    let list = conflicts.as_array().unwrap();
    let c = list
        .iter()
        .find(|c| c["local_id"] == "WMS-3")
        .unwrap_or_else(|| panic!("{conflicts}"));
    assert!(c["local"].is_string() && c["remote"].is_string(), "{c}");
    assert!(c["winner"].is_string());
}
