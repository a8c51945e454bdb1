//! An order update whose bookkeeping was lost (the engine stopped between `PUT /order/{id}`
//! and writing the new base), and a host edit stamped in the same second as KeyCRM's copy of
//! that write. Whole-second stamps tie, and newest-wins gives ties to KeyCRM; the mapping's
//! note of the write in flight tells the engine's own echo from a KeyCRM change, so the host's
//! edit wins without a conflict. A KeyCRM value other than the noted one is a KeyCRM change and
//! meets the normal conflict rules. (`tests/crash.rs` proves the same with SIGKILLs.)

use keycrm_sync::canonical;
use keycrm_sync::model::{EntityKind, Fields};
use keycrm_sync::store::Store;
use serde_json::json;

mod support;
use support::{Rig, remote_id, remote_order, rig};

const COMMENT: &str = "manager_comment";

/// A synced order `WMS-1` with a comment; returns its KeyCRM id.
async fn synced(rig: &Rig) -> i64 {
    rig.host.put_order(canonical::CanonicalOrder {
        comment: Some("original".into()),
        ..support::order(1)
    });
    support::settle(&rig.engine, 5).await;
    remote_id(rig.engine.store(), EntityKind::Order, "WMS-1").await
}

/// The state a stop right after the engine's `PUT` leaves: the mapping notes `noted` as the
/// comment in flight (its base still the old one), and KeyCRM holds `remote` (the write that
/// landed, or a KeyCRM edit made instead). Then the host edits the comment to `local`, stamped
/// with KeyCRM's `updated_at` (the same second).
async fn stopped_after_put(rig: &Rig, id: i64, noted: &str, remote: &str, local: &str) {
    let store = rig.engine.store();
    let mut mapping = store
        .get_mapping(EntityKind::Order, "WMS-1")
        .await
        .unwrap()
        .unwrap();
    let mut note = mapping.base.clone().unwrap().fields;
    note.insert(COMMENT.into(), json!(noted));
    mapping.in_flight = Some(note);
    store.put_mapping(&mapping).await.unwrap();

    let mut change = Fields::new();
    change.insert(COMMENT.into(), json!(remote));
    rig.engine
        .client()
        .order_update()
        .order_id(id)
        .body(canonical::order_update_body(&change).unwrap())
        .send()
        .await
        .unwrap();
    let stamped = rig
        .engine
        .client()
        .order_get()
        .order_id(id)
        .send()
        .await
        .unwrap()
        .into_inner()
        .updated_at;
    assert!(stamped.is_some(), "KeyCRM stamps its orders");
    assert!(rig.host.edit_order("WMS-1", |o| {
        o.comment = Some(local.into());
        o.updated_at = stamped;
    }));
}

#[tokio::test]
async fn a_host_edit_in_the_second_of_an_unbooked_write_wins_over_its_echo() {
    let rig = rig().await;
    let id = synced(&rig).await;
    stopped_after_put(
        &rig,
        id,
        "sent before the stop",
        "sent before the stop",
        "host edit",
    )
    .await;

    support::settle(&rig.engine, 5).await;

    assert_eq!(
        remote_order(&rig.mock, id).get(COMMENT),
        Some(&json!("host edit")),
        "the host's edit reached KeyCRM"
    );
    assert_eq!(
        rig.host.order("WMS-1").unwrap().comment.as_deref(),
        Some("host edit"),
        "and the host kept it"
    );
    let store = rig.engine.store();
    let conflicts = store
        .list_conflicts(Some(EntityKind::Order), 10)
        .await
        .unwrap();
    assert!(
        conflicts.is_empty(),
        "KeyCRM's echo is no conflict: {conflicts:?}"
    );
    let mapping = store
        .get_mapping(EntityKind::Order, "WMS-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mapping.in_flight, None, "the bookkeeping cleared the note");
    assert_eq!(
        mapping.base.unwrap().fields.get(COMMENT),
        Some(&json!("host edit"))
    );
}

#[tokio::test]
async fn a_keycrm_value_other_than_the_noted_one_meets_the_conflict_rules() {
    let rig = rig().await;
    let id = synced(&rig).await;
    stopped_after_put(&rig, id, "sent before the stop", "KeyCRM edit", "host edit").await;

    support::settle(&rig.engine, 5).await;

    // Both sides changed the comment from the base, stamped in the same second: newest-wins
    // gives the tie to KeyCRM, and the host's value is logged.
    assert_eq!(
        remote_order(&rig.mock, id).get(COMMENT),
        Some(&json!("KeyCRM edit"))
    );
    assert_eq!(
        rig.host.order("WMS-1").unwrap().comment.as_deref(),
        Some("KeyCRM edit")
    );
    let conflicts = rig
        .engine
        .store()
        .list_conflicts(Some(EntityKind::Order), 10)
        .await
        .unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let conflict = &conflicts[0];
    assert_eq!(conflict.field, COMMENT);
    assert_eq!(conflict.base, Some(json!("original")));
    assert_eq!(conflict.local, Some(json!("host edit")));
    assert_eq!(conflict.remote, Some(json!("KeyCRM edit")));
    assert_eq!(conflict.winner, "remote");
}
