//! Conflicts: both sides changed a field between two runs; the policy decides, the log records it.

use chrono::{DateTime, Utc};
use keycrm_api::Timestamp;
use keycrm_api::mock::KeyCrmMock;
use keycrm_sync::model::EntityKind;
use keycrm_sync::plan::{Policy, Resolution, Side};
use keycrm_sync::store::{ConflictRecord, Store};

use crate::support::{Rig, config, order, remote_id, remote_order, rig, rig_with, settle};

/// An order both sides change between two runs: the host writes "local" into its comment,
/// a manager "remote" in KeyCRM. `local_time` is the host's `updated_at` for the edit.
async fn comment_conflict(policy: Option<Policy>, local_time: Option<Timestamp>) -> (Rig, i64) {
    let rig = rig_with(KeyCrmMock::builder(), config(), |b| match policy {
        Some(p) => b.policy(EntityKind::Order, p),
        None => b,
    })
    .await;
    rig.host.put_order(order(1));
    rig.engine.run_once().await.unwrap();
    let id = remote_id(rig.engine.store(), EntityKind::Order, "WMS-1").await;
    assert!(rig.host.edit_order("WMS-1", |o| {
        o.comment = Some("local".into());
        o.updated_at = local_time;
    }));
    rig.mock
        .crm()
        .edit_order(id, serde_json::json!({"manager_comment": "remote"}));
    settle(&rig.engine, 5).await;
    (rig, id)
}

/// The order conflicts logged (ten at most).
async fn order_conflicts(rig: &Rig) -> Vec<ConflictRecord> {
    rig.engine
        .store()
        .list_conflicts(Some(EntityKind::Order), 10)
        .await
        .unwrap()
}

/// Asserts both sides hold `value` and the conflict log holds one entry for the comment.
async fn assert_comment_resolved(rig: &Rig, id: i64, value: &str, winner: &str, reason: &str) {
    assert_eq!(
        rig.host.order("WMS-1").unwrap().comment.as_deref(),
        Some(value)
    );
    assert_eq!(
        remote_order(&rig.mock, id)["manager_comment"],
        serde_json::json!(value)
    );
    let conflicts = order_conflicts(rig).await;
    let logged: Vec<_> = conflicts
        .iter()
        .filter(|c| c.field == "manager_comment")
        .collect();
    assert_eq!(logged.len(), 1, "{conflicts:?}");
    let c = logged[0];
    assert_eq!(c.local_id, "WMS-1");
    assert_eq!(c.remote_id, Some(id));
    assert_eq!(c.base, None);
    assert_eq!(c.local, Some(serde_json::json!("local")));
    assert_eq!(c.remote, Some(serde_json::json!("remote")));
    assert_eq!(c.winner, winner);
    assert_eq!(c.reason, reason);
    assert_eq!(
        conflicts.len(),
        1,
        "no other field conflicted: {conflicts:?}"
    );
}

#[tokio::test]
async fn conflict_remote_wins() {
    let (rig, id) = comment_conflict(Some(Policy::new(Resolution::RemoteWins)), None).await;
    assert_comment_resolved(&rig, id, "remote", "remote", "both changed; RemoteWins").await;
}

#[tokio::test]
async fn conflict_local_wins() {
    let (rig, id) = comment_conflict(Some(Policy::new(Resolution::LocalWins)), None).await;
    assert_comment_resolved(&rig, id, "local", "local", "both changed; LocalWins").await;
}

#[tokio::test]
async fn conflict_newest_wins_by_utc_time() {
    // Whole seconds: the store keeps microseconds, KeyCRM seconds.
    let later =
        Timestamp::from(DateTime::from_timestamp(Utc::now().timestamp() + 3600, 0).unwrap());
    let (rig, id) = comment_conflict(Some(Policy::new(Resolution::NewestWins)), Some(later)).await;
    assert_comment_resolved(&rig, id, "local", "local", "both changed; NewestWins").await;
    let c = &rig
        .engine
        .store()
        .list_conflicts(Some(EntityKind::Order), 1)
        .await
        .unwrap()[0];
    assert_eq!(c.local_updated_at, Some(later.into_datetime()));
    assert!(c.remote_updated_at.unwrap() < later.into_datetime());

    let earlier =
        Timestamp::from(DateTime::from_timestamp(Utc::now().timestamp() - 86_400, 0).unwrap());
    let (rig, id) = comment_conflict(None, Some(earlier)).await;
    assert_comment_resolved(&rig, id, "remote", "remote", "both changed; NewestWins").await;
}

#[tokio::test]
async fn conflict_goes_to_the_field_owner() {
    let policy = Policy::new(Resolution::RemoteWins).with_owner("manager_comment", Side::Local);
    let (rig, id) = comment_conflict(Some(policy), None).await;
    assert_comment_resolved(&rig, id, "local", "local", "field owned by local").await;
}

#[tokio::test]
async fn an_order_status_never_moves_backwards_by_default() {
    let rig = rig().await;
    rig.host.put_order(order(1));
    rig.engine.run_once().await.unwrap();
    let id = remote_id(rig.engine.store(), EntityKind::Order, "WMS-1").await;
    rig.host
        .edit_order("WMS-1", |o| o.status = Some("approved".into()));
    rig.engine.run_once().await.unwrap();
    assert_eq!(
        remote_order(&rig.mock, id)["status_id"],
        serde_json::json!(2)
    );

    // The manager ships the order while the host moves it back to "new", later (by the
    // clocks): newest-wins alone would take the host's status.
    rig.mock.crm().set_order_status(id, 4);
    let later = Timestamp::from(Utc::now() + chrono::Duration::hours(1));
    rig.host.edit_order("WMS-1", |o| {
        o.status = Some("new".into());
        o.updated_at = Some(later);
    });
    settle(&rig.engine, 5).await;
    assert_eq!(
        rig.host.order("WMS-1").unwrap().status.as_deref(),
        Some("shipped")
    );
    assert_eq!(
        remote_order(&rig.mock, id)["status_id"],
        serde_json::json!(4)
    );
    let conflicts = order_conflicts(&rig).await;
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let c = &conflicts[0];
    assert_eq!(c.field, "status_id");
    assert_eq!(c.base, Some(serde_json::json!(2)));
    assert_eq!(c.local, Some(serde_json::json!(1)));
    assert_eq!(c.remote, Some(serde_json::json!(4)));
    assert_eq!(c.winner, "remote");
    assert_eq!(c.reason, "status may not move backwards (Local refused)");
}
