//! Live events and the run loop: subscribers, cancellation, and webhooks applied in real time.

use std::time::Duration;

use keycrm_sync::model::EntityKind;

use crate::support::{order, rig};

#[tokio::test]
async fn subscribers_see_pushes_and_applied_changes_and_status_counts_them() {
    use futures::{FutureExt, StreamExt};
    let rig = rig().await;
    let mut events = Box::pin(rig.engine.subscribe());
    let mut drain = move || {
        let mut seen = Vec::new();
        while let Some(Some(event)) = events.next().now_or_never() {
            seen.push(event);
        }
        seen
    };
    rig.host.put_order(order(1));
    rig.engine.run_once().await.unwrap();
    let first = drain();
    let remote_id = rig.mock.crm().order_ids()[0];
    assert!(
        first.contains(&keycrm_sync::SyncEvent::Pushed {
            kind: EntityKind::Order,
            local_id: "WMS-1".into(),
            remote_id: Some(remote_id)
        }),
        "{first:?}"
    );
    rig.mock.crm().set_order_status(remote_id, 2);
    rig.engine.run_once().await.unwrap();
    let second = drain();
    let applied = keycrm_sync::SyncEvent::Applied {
        kind: EntityKind::Order,
        local_id: "WMS-1".into(),
        remote_id: Some(remote_id),
    };
    assert!(second.contains(&applied), "{second:?}");
    let json = serde_json::to_value(&applied).unwrap();
    assert_eq!(json["type"], "applied");
    let status = rig.engine.status().await.unwrap();
    assert_eq!(status.per_kind[&EntityKind::Order].synced, 1);
    assert_eq!(status.outbox_depth, 0);
    assert_eq!(status.runs, 2);
    assert!(
        status.keycrm.requests > 0 && status.keycrm.errors == 0,
        "{:?}",
        status.keycrm
    );
    assert_eq!(
        status.last_run.unwrap().applied,
        2,
        "the order and the buyer KeyCRM made for it"
    );
}

#[tokio::test]
async fn run_stops_when_its_token_is_cancelled() {
    let rig = rig().await;
    rig.host.put_order(order(1));
    let token = keycrm_sync::CancellationToken::new();
    let engine = rig.engine.clone();
    let handle = tokio::spawn({
        let token = token.clone();
        async move { engine.run(token).await }
    });
    // The first run happens at once; wait for its push, then stop the loop.
    let mut events = Box::pin(rig.engine.subscribe());
    use futures::StreamExt;
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a run happened");
    assert!(first.is_some());
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the loop stopped")
        .unwrap();
    assert_eq!(rig.mock.crm().order_ids().len(), 1);
}

#[tokio::test]
async fn webhooks_are_deduplicated_and_applied_in_real_time() {
    let rig = rig().await;
    rig.host.put_order(order(1));
    rig.engine.run_once().await.unwrap();
    let remote_id = rig.mock.crm().order_ids()[0];
    rig.mock.crm().set_order_status(remote_id, 4);
    let context = rig.mock.crm().order(remote_id).unwrap();
    let body = serde_json::json!({"event": "order.change_order_status", "context": context});
    assert!(
        rig.engine.ingest_webhook(&body).await.unwrap(),
        "stored and applied"
    );
    // The inbox worker applies it apart from the intake; here the test applies it now.
    rig.engine.apply_inbox().await.unwrap();
    assert_eq!(
        rig.host.order("WMS-1").unwrap().status.as_deref(),
        Some("shipped")
    );
    assert!(
        !rig.engine.ingest_webhook(&body).await.unwrap(),
        "a repeated delivery is a duplicate"
    );
    let status = rig.engine.status().await.unwrap();
    assert_eq!(status.inbox_backlog, 0);
}
