//! The engine: a delivery is stored once and applied once, apart from the request, by the inbox
//! worker.

use super::*;

async fn pushed_order(rig: &Rig<impl Store>) -> i64 {
    rig.host.put_order(order(1));
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    rig.mock.crm().order_ids()[0]
}

fn context_body(rig: &Rig<impl Store>, id: i64) -> Vec<u8> {
    let context = rig.mock.crm().order(id).unwrap();
    serde_json::to_vec(&json!({"event": "order.change_order_status", "context": context})).unwrap()
}

#[tokio::test]
async fn a_valid_event_is_stored_once_and_applied_once() {
    let rig = rig_on(SqliteStore::open_in_memory().unwrap(), config()).await;
    let id = pushed_order(&rig).await;
    rig.mock.crm().set_order_status(id, 4);
    let body = context_body(&rig, id);
    let receiver = rig.engine.webhook_receiver();
    let q = query();
    let first = receiver
        .receive(json_request(&body).query(&q))
        .await
        .unwrap();
    assert!(!first.duplicate());
    let second = receiver
        .receive(json_request(&body).query(&q))
        .await
        .unwrap();
    assert!(second.duplicate(), "a redelivery is a duplicate");
    assert_eq!(rig.engine.status().await.unwrap().inbox_backlog, 1);
    rig.mock.clear_log();
    let report = rig.engine.apply_inbox().await.unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(
        rig.host.order("WMS-1").unwrap().status.as_deref(),
        Some("shipped")
    );
    assert_eq!(rig.mock.count("order_get"), 1, "{:?}", rig.mock.requests());
    rig.mock.clear_log();
    let again = rig.engine.apply_inbox().await.unwrap();
    assert_eq!((again.applied, again.pulled), (0, 0));
    assert_eq!(rig.mock.request_count(), 0, "applied once");
    assert_eq!(rig.engine.status().await.unwrap().inbox_backlog, 0);
}

#[tokio::test]
async fn an_older_status_never_overwrites_a_newer_one() {
    let rig = rig().await;
    let id = pushed_order(&rig).await;
    rig.mock.crm().set_order_status(id, 2);
    let older = context_body(&rig, id);
    rig.mock.crm().set_order_status(id, 4);
    let newer = context_body(&rig, id);
    let receiver = rig.engine.webhook_receiver();
    let q = query();
    // Delivered out of order: the newer first.
    assert!(
        !receiver
            .receive(json_request(&newer).query(&q))
            .await
            .unwrap()
            .duplicate()
    );
    assert!(
        !receiver
            .receive(json_request(&older).query(&q))
            .await
            .unwrap()
            .duplicate()
    );
    rig.engine.apply_inbox().await.unwrap();
    assert_eq!(
        rig.host.order("WMS-1").unwrap().status.as_deref(),
        Some("shipped")
    );
}

#[tokio::test]
async fn intake_during_a_blocked_sync_pass_is_answered_before_the_pass_ends() {
    let rig = rig().await;
    let id = pushed_order(&rig).await;
    rig.mock.crm().set_order_status(id, 4);
    let body = context_body(&rig, id);
    let receiver = rig.engine.webhook_receiver();
    rig.blocking.armed.store(true, Ordering::SeqCst);
    let entered = rig.blocking.entered.notified();
    let engine = rig.engine.clone();
    let pass = tokio::spawn(async move { engine.run_once().await });
    entered.await;
    let accepted = receiver
        .receive(json_request(&body).query(&query()))
        .await
        .unwrap();
    assert!(!accepted.duplicate());
    assert!(
        !pass.is_finished(),
        "answered while the pass is still blocked"
    );
    assert_eq!(
        rig.engine.store().inbox_pending(10).await.unwrap().len(),
        1,
        "durable before the answer"
    );
    rig.blocking.release.add_permits(1);
    let report = pass.await.unwrap().unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(
        rig.host.order("WMS-1").unwrap().status.as_deref(),
        Some("shipped"),
        "the run applied what arrived during it"
    );
}

#[tokio::test]
async fn the_worker_wakes_on_each_insert_and_uses_the_engine_client() {
    let rig = rig().await;
    let id = pushed_order(&rig).await;
    let shutdown = keycrm_sync::CancellationToken::new();
    let worker = tokio::spawn({
        let engine = rig.engine.clone();
        let shutdown = shutdown.clone();
        async move { engine.run_inbox_worker(shutdown).await }
    });
    let mut events = Box::pin(rig.engine.subscribe());
    let receiver = rig.engine.webhook_receiver();
    let requests_before = rig.engine.client().stats().requests;
    for status in [2, 4] {
        rig.mock.crm().set_order_status(id, status);
        let body = context_body(&rig, id);
        receiver
            .receive(json_request(&body).query(&query()))
            .await
            .unwrap();
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the worker applied the delivery")
            .unwrap();
        assert!(
            matches!(
                event,
                SyncEvent::Applied {
                    kind: EntityKind::Order,
                    ..
                }
            ),
            "{event:?}"
        );
    }
    assert_eq!(
        rig.host.order("WMS-1").unwrap().status.as_deref(),
        Some("shipped")
    );
    assert!(
        rig.engine.client().stats().requests >= requests_before + 2,
        "the worker's reads go through the engine's client and its quota"
    );
    shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn ingest_webhook_is_the_same_store_step_and_refuses_malformed_bodies() {
    let rig = rig().await;
    for body in [
        json!({"context": {"id": 1}}),
        json!({"event": "order.change_order_status", "context": "1"}),
        json!([{"in_stock": 0}]),
        json!([{"sku": "", "in_stock": 5}]),
    ] {
        let err = rig.engine.ingest_webhook(&body).await.unwrap_err();
        assert!(err.to_string().contains("invalid webhook"), "{err}");
    }
    assert_eq!(
        stored(rig.engine.store()).await,
        0,
        "nothing collapsed into a shared key"
    );
    rig.engine.run_once().await.unwrap();
    assert!(
        rig.host.stock("main/").is_none(),
        "never a record keyed `main/`"
    );
}
