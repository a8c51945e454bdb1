//! Guards: dry runs, the mass-zeroing guard and dead letters.

use std::sync::atomic::Ordering;

use keycrm_api::Decimal;
use keycrm_api::mock::KeyCrmMock;
use keycrm_sync::canonical::{CanonicalBuyer, CanonicalOrder, CanonicalStock};
use keycrm_sync::config::SyncConfig;
use keycrm_sync::model::EntityKind;
use keycrm_sync::store::Store;

use crate::support::{Skew, config, order, rig, rig_with, seed, skus, writes};

#[tokio::test]
async fn dry_run_plans_but_writes_nothing_and_keeps_the_outbox() {
    let rig = rig_with(
        KeyCrmMock::builder(),
        SyncConfig {
            dry_run: true,
            ..config()
        },
        |b| b,
    )
    .await;
    rig.host.put_order(order(1));
    rig.host.put_buyer(CanonicalBuyer {
        local_id: "C-1".into(),
        name: "Олена".into(),
        phones: vec!["+380501112233".into()],
        ..CanonicalBuyer::default()
    });
    rig.mock.clear_log();
    rig.engine.run_once().await.unwrap();
    assert_eq!(writes(&rig.mock), 0, "{:?}", rig.mock.requests());
    let status = rig.engine.status().await.unwrap();
    assert_eq!(status.outbox_depth, 2, "still pending for a real run");
    let audit = rig.engine.store().list_audit(10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "dry-run" && a.detail.contains("create order WMS-1")),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|a| a.action == "dry-run" && a.detail == "create buyer"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn the_mass_zeroing_guard_refuses_and_reports() {
    let rig = rig().await;
    rig.mock.seed(seed(20, 0, 0));
    let skus = skus(rig.engine.client(), 12).await;
    rig.engine.run_once().await.unwrap();
    for sku in &skus {
        rig.host.put_stock(CanonicalStock {
            sku: sku.clone(),
            warehouse: "main".into(),
            quantity: Decimal::ZERO,
        });
    }
    let mut events = Box::pin(rig.engine.subscribe());
    rig.mock.clear_log();
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(rig.mock.count("offer_stock_update"), 0, "nothing written");
    assert_eq!(report.failed, 12, "{report:?}");
    let status = rig.engine.status().await.unwrap();
    assert_eq!(status.per_kind[&EntityKind::Stock].error, 12);
    use futures::StreamExt;
    let event = events.next().await.unwrap();
    match event {
        keycrm_sync::SyncEvent::Failed {
            kind, error, dead, ..
        } => {
            assert_eq!(kind, EntityKind::Stock);
            assert!(error.contains("would zero 12 of 12 SKUs"), "{error}");
            assert!(!dead);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_record_that_keeps_failing_is_dead_lettered_after_the_configured_attempts() {
    let skew = Skew::default();
    let rig = rig_with(
        KeyCrmMock::builder(),
        SyncConfig {
            retry_attempts: 3,
            ..config()
        },
        |b| b.outbox_clock(skew.clock()),
    )
    .await;
    // A status the configuration does not map: the order can never be sent.
    rig.host.put_order(CanonicalOrder {
        status: Some("lost-in-space".into()),
        ..order(1)
    });
    for _ in 0..4 {
        rig.engine.run_once().await.unwrap();
        skew.0.fetch_add(7200, Ordering::Relaxed);
    }
    let dead = rig
        .engine
        .store()
        .dead_letters(Some(EntityKind::Order))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("status_ids"),
        "{:?}",
        dead[0].last_error
    );
    let status = rig.engine.status().await.unwrap();
    assert_eq!(status.dead_letters, 1);
    assert_eq!(writes(&rig.mock), 0);
}
