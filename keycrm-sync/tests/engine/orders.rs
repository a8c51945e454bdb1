//! Orders: the host's orders reach KeyCRM and KeyCRM's changes come back; both sides converge
//! field by field, and an initial export goes out in imports.

use keycrm_sync::canonical::{CanonicalPayment, PaymentStatus};
use keycrm_sync::model::EntityKind;
use keycrm_sync::store::{Store, SyncState};

use crate::support::{
    assert_orders_agree, dec, order, orders_by_uuid, remote_id, remote_order, rig, seed, settle,
    writes,
};

#[tokio::test]
async fn host_orders_reach_keycrm_and_a_second_run_writes_nothing() {
    let rig = rig().await;
    for n in 1..=3 {
        rig.host.put_order(order(n));
    }
    let first = rig.engine.run_once().await.unwrap();
    assert_eq!(first.failed, 0, "{first:?}");
    assert_eq!(first.pushed, 3, "{first:?}");
    assert_eq!(
        rig.mock.count("order_import"),
        1,
        "three new orders go out in one import"
    );
    let uuids: Vec<String> = rig
        .mock
        .crm()
        .order_ids()
        .into_iter()
        .filter_map(|id| rig.mock.crm().order(id))
        .filter_map(|o| o["source_uuid"].as_str().map(str::to_string))
        .collect();
    assert_eq!(uuids.len(), 3);

    rig.mock.clear_log();
    let second = rig.engine.run_once().await.unwrap();
    assert_eq!(
        writes(&rig.mock),
        0,
        "nothing changed: {:?}",
        rig.mock.requests()
    );
    assert_eq!(second.pushed, 0);
    assert_eq!(second.failed, 0);
}

#[tokio::test]
async fn a_status_changed_in_the_crm_comes_back_to_the_host() {
    let rig = rig().await;
    rig.host.put_order(order(1));
    rig.engine.run_once().await.unwrap();
    let remote_id = rig.mock.crm().order_ids()[0];
    rig.mock.crm().set_order_status(remote_id, 4);
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(
        rig.host.order("WMS-1").unwrap().status.as_deref(),
        Some("shipped"),
        "{report:?}"
    );
    rig.mock.clear_log();
    rig.engine.run_once().await.unwrap();
    assert_eq!(
        writes(&rig.mock),
        0,
        "the applied change is not echoed back"
    );
}

#[tokio::test]
async fn a_local_status_change_is_pushed() {
    let rig = rig().await;
    rig.host.put_order(order(1));
    rig.engine.run_once().await.unwrap();
    rig.host
        .edit_order("WMS-1", |o| o.status = Some("packing".into()));
    rig.engine.run_once().await.unwrap();
    let remote_id = rig.mock.crm().order_ids()[0];
    assert_eq!(rig.mock.crm().order(remote_id).unwrap()["status_id"], 3);
}

#[tokio::test]
async fn orders_converge_both_ways() {
    let rig = rig().await;
    // Orders a manager took in KeyCRM before the engine started.
    let seeded = rig.mock.seed(seed(3, 3, 3));
    for n in 1..=3 {
        rig.host.put_order(order(n));
    }
    let first = rig.engine.run_once().await.unwrap();
    assert_eq!(first.failed, 0, "{first:?}");
    for id in &seeded.orders {
        assert!(
            rig.host.order(&format!("crm-{id}")).is_some(),
            "KeyCRM order {id} reached the host"
        );
    }
    let store = rig.engine.store();
    let two = remote_id(store, EntityKind::Order, "WMS-2").await;
    let crm_one = seeded.orders[0];

    // Both sides change: a new local order, a local status, comment and tracking number; in
    // KeyCRM a status, a payment and a comment.
    rig.host.put_order(order(4));
    assert!(rig.host.edit_order("WMS-1", |o| {
        o.status = Some("approved".into());
        o.comment = Some("Пакувати обережно".into());
        o.shipping.tracking_code = Some("20450000000001".into());
    }));
    rig.mock.crm().set_order_status(two, 4);
    rig.mock.crm().add_order_payment(two, dec("299.80"), "paid");
    rig.mock.crm().edit_order(
        crm_one,
        serde_json::json!({"manager_comment": "Дзвонити після 18:00"}),
    );
    settle(&rig.engine, 6).await;

    let one = remote_id(store, EntityKind::Order, "WMS-1").await;
    let remote_one = remote_order(&rig.mock, one);
    assert_eq!(remote_one["status_id"], serde_json::json!(2));
    assert_eq!(
        remote_one["manager_comment"],
        serde_json::json!("Пакувати обережно")
    );
    assert_eq!(
        remote_one["shipping.tracking_code"],
        serde_json::json!("20450000000001")
    );
    let host_two = rig.host.order("WMS-2").unwrap();
    assert_eq!(host_two.status.as_deref(), Some("shipped"));
    assert_eq!(
        host_two.payments,
        vec![CanonicalPayment {
            method: "cod".into(),
            amount: dec("299.8"),
            status: PaymentStatus::Paid,
            reference: None,
        }]
    );
    assert_eq!(
        rig.host
            .order(&format!("crm-{crm_one}"))
            .unwrap()
            .comment
            .as_deref(),
        Some("Дзвонити після 18:00")
    );
    let uuids = orders_by_uuid(&rig.mock);
    for n in 1..=4 {
        assert_eq!(
            uuids[&format!("WMS-{n}")].len(),
            1,
            "WMS-{n} once in KeyCRM"
        );
    }
    assert_orders_agree(&rig.mock, &rig.host, store).await;

    rig.mock.clear_log();
    let quiet = rig.engine.run_once().await.unwrap();
    assert_eq!(
        writes(&rig.mock),
        0,
        "nothing changed: {:?}",
        rig.mock.requests()
    );
    assert_eq!(
        (quiet.pushed, quiet.applied, quiet.failed),
        (0, 0, 0),
        "{quiet:?}"
    );
}

#[tokio::test]
async fn an_initial_export_of_500_orders_uses_ten_imports() {
    let rig = rig().await;
    for n in 1..=500 {
        rig.host.put_order(order(n));
    }
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.pushed, 500, "{report:?}");
    assert!(rig.mock.count("order_import") <= 10);
    assert_eq!(rig.mock.count("order_import"), 10, "50 orders per import");
    assert_eq!(rig.mock.count("order_create"), 0);
    assert_eq!(
        writes(&rig.mock),
        10,
        "the imports are the only writes: {:?}",
        rig.mock.requests()
    );
    // Reads: 10 look-ups by source_uuid before importing, 10 read-back pages after, and the
    // first pull of the (empty) order list.
    let reads = rig.mock.count("order_list");
    assert!(reads <= 21, "{reads} order list pages");
    let uuids = orders_by_uuid(&rig.mock);
    assert_eq!(uuids.len(), 500);
    for n in 1..=500 {
        assert_eq!(uuids[&format!("WMS-{n}")].len(), 1, "WMS-{n}");
    }
    let synced = rig
        .engine
        .store()
        .list_mappings(EntityKind::Order, Some(SyncState::Synced))
        .await
        .unwrap();
    assert_eq!(synced.len(), 500);

    rig.mock.clear_log();
    rig.engine.run_once().await.unwrap();
    assert_eq!(writes(&rig.mock), 0, "{:?}", rig.mock.requests());
}
