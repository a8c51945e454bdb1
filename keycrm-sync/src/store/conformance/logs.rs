//! Cursors, the conflict and audit logs, retention, personal data and counts.

use super::*;
use crate::store::*;

/// Conformance check `cursors_per_kind_and_name` (see the [module docs](super)).
pub async fn cursors_per_kind_and_name(s: &impl Store) {
    assert_eq!(
        s.get_cursor(EntityKind::Order, "updated").await.unwrap(),
        None
    );
    s.set_cursor(EntityKind::Order, "updated", "2025-01-01 00:00:00", t(1))
        .await
        .unwrap();
    s.set_cursor(EntityKind::Order, "created", "2024-12-31 00:00:00", t(1))
        .await
        .unwrap();
    s.set_cursor(EntityKind::Buyer, "updated", "b", t(1))
        .await
        .unwrap();
    assert_eq!(
        s.get_cursor(EntityKind::Order, "updated")
            .await
            .unwrap()
            .as_deref(),
        Some("2025-01-01 00:00:00")
    );
    assert_eq!(
        s.get_cursor(EntityKind::Order, "created")
            .await
            .unwrap()
            .as_deref(),
        Some("2024-12-31 00:00:00")
    );
    assert_eq!(
        s.get_cursor(EntityKind::Buyer, "updated")
            .await
            .unwrap()
            .as_deref(),
        Some("b")
    );
    assert_eq!(
        s.get_cursor(EntityKind::Buyer, "created").await.unwrap(),
        None
    );

    s.set_cursor(EntityKind::Order, "updated", "2025-01-02 00:00:00", t(2))
        .await
        .unwrap();
    assert_eq!(
        s.get_cursor(EntityKind::Order, "updated")
            .await
            .unwrap()
            .as_deref(),
        Some("2025-01-02 00:00:00")
    );
    assert_eq!(
        s.get_cursor(EntityKind::Buyer, "updated")
            .await
            .unwrap()
            .as_deref(),
        Some("b")
    );
}

/// Conformance check `conflict_log_newest_first` (see the [module docs](super)).
pub async fn conflict_log_newest_first(s: &impl Store) {
    let mut first = conflict(t(10), EntityKind::Order, "o-1", "status_id");
    // JSON null and an absent value are different things and must stay so.
    first.base = Some(Value::Null);
    first.remote = None;
    first.remote_id = None;
    first.remote_updated_at = Some(t(9) + Duration::microseconds(1));
    let second = conflict(t(30), EntityKind::Buyer, "b-1", "email");
    let third = conflict(t(20), EntityKind::Order, "o-2", "shipping.tracking_code");
    let tie = conflict(t(30), EntityKind::Order, "o-3", "note");
    for c in [&first, &second, &third, &tie] {
        s.log_conflict(c).await.unwrap();
    }

    let all = s.list_conflicts(None, 10).await.unwrap();
    assert_eq!(
        all,
        vec![tie.clone(), second.clone(), third.clone(), first.clone()]
    );
    assert_eq!(all[3].base, Some(Value::Null));
    assert_eq!(all[3].remote, None);
    assert_eq!(
        s.list_conflicts(None, 2).await.unwrap(),
        vec![tie.clone(), second]
    );
    assert_eq!(
        s.list_conflicts(Some(EntityKind::Order), 10).await.unwrap(),
        vec![tie, third, first.clone()]
    );
    assert_eq!(
        s.list_conflicts(Some(EntityKind::Order), 10).await.unwrap()[2],
        first
    );
    assert_eq!(
        s.list_conflicts(Some(EntityKind::Stock), 10).await.unwrap(),
        vec![]
    );
}

/// Conformance check `audit_log_newest_first` (see the [module docs](super)).
pub async fn audit_log_newest_first(s: &impl Store) {
    let a = audit(t(1), "o-1", "pushed");
    let b = audit(t(3), "o-2", "applied");
    let c = audit(t(2), "o-3", "tombstoned");
    let d = audit(t(3), "o-4", "echo");
    for e in [&a, &b, &c, &d] {
        s.log_audit(e).await.unwrap();
    }
    assert_eq!(
        s.list_audit(10).await.unwrap(),
        vec![d.clone(), b.clone(), c, a]
    );
    assert_eq!(s.list_audit(2).await.unwrap(), vec![d, b]);
    assert_eq!(s.list_audit(0).await.unwrap(), vec![]);
}

/// Conformance check `purge_keeps_pending_and_live_rows` (see the [module docs](super)).
pub async fn purge_keeps_pending_and_live_rows(s: &impl Store) {
    assert_eq!(DEFAULT_RETENTION, Duration::days(90));
    let now = t(200 * 86_400);
    let mark = now - DEFAULT_RETENTION;
    let old = mark - Duration::seconds(1);
    let recent = mark + Duration::seconds(1);

    let processed_old = s
        .inbox_insert("k1", "e", json!(1), old)
        .await
        .unwrap()
        .unwrap();
    let ignored_old = s
        .inbox_insert("k2", "e", json!(2), old)
        .await
        .unwrap()
        .unwrap();
    let failed_old = s
        .inbox_insert("k3", "e", json!(3), old)
        .await
        .unwrap()
        .unwrap();
    let pending_old = s
        .inbox_insert("k4", "e", json!(4), old)
        .await
        .unwrap()
        .unwrap();
    let processed_recent = s
        .inbox_insert("k5", "e", json!(5), old)
        .await
        .unwrap()
        .unwrap();
    let failed_recent = s
        .inbox_insert("k6", "e", json!(6), old)
        .await
        .unwrap()
        .unwrap();
    s.inbox_mark(processed_old, InboxStatus::Processed, None, old)
        .await
        .unwrap();
    s.inbox_mark(ignored_old, InboxStatus::Ignored, None, old)
        .await
        .unwrap();
    s.inbox_mark(failed_old, InboxStatus::Failed, Some("boom"), old)
        .await
        .unwrap();
    s.inbox_mark(processed_recent, InboxStatus::Processed, None, recent)
        .await
        .unwrap();
    s.inbox_mark(failed_recent, InboxStatus::Failed, Some("boom"), recent)
        .await
        .unwrap();

    s.log_conflict(&conflict(old, EntityKind::Order, "o-1", "f"))
        .await
        .unwrap();
    s.log_conflict(&conflict(mark, EntityKind::Order, "o-2", "f"))
        .await
        .unwrap();
    s.log_audit(&audit(old, "o-1", "pushed")).await.unwrap();
    s.log_audit(&audit(old, "o-2", "pushed")).await.unwrap();
    s.log_audit(&audit(recent, "o-3", "pushed")).await.unwrap();

    let item = s
        .enqueue(EntityKind::Order, "o-1", json!(1), old)
        .await
        .unwrap();
    let dead = s
        .enqueue(EntityKind::Order, "o-2", json!(2), old)
        .await
        .unwrap();
    s.fail_outbox(dead, 1, "HTTP 400", old, true).await.unwrap();
    let mut m = full_mapping(EntityKind::Order, "o-1", Some(1));
    m.last_sync_at = Some(old);
    s.put_mapping(&m).await.unwrap();
    s.set_cursor(EntityKind::Order, "updated", "x", old)
        .await
        .unwrap();

    let report = s.purge(mark).await.unwrap();
    assert_eq!(
        report,
        PurgeReport {
            inbox: 3,
            conflicts: 1,
            audit: 2
        }
    );

    assert_eq!(
        s.inbox_pending(10)
            .await
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect::<Vec<_>>(),
        [pending_old]
    );
    // The kept rows still deduplicate; a purged key is accepted again.
    assert_eq!(
        s.inbox_insert("k6", "e", json!(0), now).await.unwrap(),
        None
    );
    assert_eq!(
        s.inbox_insert("k4", "e", json!(0), now).await.unwrap(),
        None
    );
    assert_eq!(
        s.inbox_insert("k5", "e", json!(0), now).await.unwrap(),
        None
    );
    assert!(
        s.inbox_insert("k1", "e", json!(0), now)
            .await
            .unwrap()
            .is_some()
    );
    // A failed row is customer data too (a whole webhook body): gone after the period.
    assert!(
        s.inbox_insert("k3", "e", json!(0), now)
            .await
            .unwrap()
            .is_some()
    );
    let conflicts = s.list_conflicts(None, 10).await.unwrap();
    assert_eq!(
        conflicts
            .iter()
            .map(|c| c.local_id.as_str())
            .collect::<Vec<_>>(),
        ["o-2"]
    );
    assert_eq!(
        s.list_audit(10)
            .await
            .unwrap()
            .iter()
            .map(|a| a.local_id.as_str())
            .collect::<Vec<_>>(),
        ["o-3"]
    );
    assert_eq!(
        s.due_outbox(now, 10)
            .await
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect::<Vec<_>>(),
        [item]
    );
    assert_eq!(
        s.dead_letters(None)
            .await
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect::<Vec<_>>(),
        [dead]
    );
    assert_eq!(
        s.get_mapping(EntityKind::Order, "o-1").await.unwrap(),
        Some(m)
    );
    assert_eq!(
        s.get_cursor(EntityKind::Order, "updated")
            .await
            .unwrap()
            .as_deref(),
        Some("x")
    );

    // Purging again removes nothing more.
    assert_eq!(s.purge(mark).await.unwrap(), PurgeReport::default());
    let counts = s.counts().await.unwrap();
    assert_eq!((counts.inbox_backlog, counts.inbox_failed), (3, 1));
}

/// Conformance check `purge_drops_failed_inbox_rows_after_retention` (see the [module docs](super)).
pub async fn purge_drops_failed_inbox_rows_after_retention(s: &impl Store) {
    let now = t(200 * 86_400);
    let mark = now - DEFAULT_RETENTION;
    let body = json!({"context": {"buyer": {"phone": "+380501112233"}}});
    let old = s
        .inbox_insert(
            "failed-old",
            "order.change_order_status",
            body.clone(),
            t(0),
        )
        .await
        .unwrap()
        .unwrap();
    s.inbox_mark(old, InboxStatus::Failed, Some("HTTP 500"), t(1))
        .await
        .unwrap();
    let fresh = s
        .inbox_insert("failed-fresh", "order.change_order_status", body, now)
        .await
        .unwrap()
        .unwrap();
    s.inbox_mark(fresh, InboxStatus::Failed, Some("HTTP 500"), now)
        .await
        .unwrap();
    assert_eq!(s.counts().await.unwrap().inbox_failed, 2);
    let report = s.purge(mark).await.unwrap();
    assert_eq!(report.inbox, 1);
    assert_eq!(s.counts().await.unwrap().inbox_failed, 1);
    // The purged row's key is free again; the recent one still deduplicates.
    assert!(
        s.inbox_insert("failed-old", "e", json!(0), now)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        s.inbox_insert("failed-fresh", "e", json!(0), now)
            .await
            .unwrap(),
        None
    );
}

pub(crate) fn personal_conflict(
    kind: EntityKind,
    local_id: &str,
    field: &str,
    value: &str,
) -> ConflictRecord {
    ConflictRecord {
        at: t(5),
        kind,
        local_id: local_id.into(),
        remote_id: Some(9),
        field: field.into(),
        base: Some(json!(format!("{value}-base"))),
        local: Some(json!(value)),
        remote: Some(json!(format!("{value}-remote"))),
        winner: "remote".into(),
        reason: "both changed; NewestWins".into(),
        local_updated_at: Some(t(3)),
        remote_updated_at: Some(t(4)),
    }
}

/// Conformance check `conflict_of` (see the [module docs](super)).
pub async fn conflict_of(
    s: &impl Store,
    kind: EntityKind,
    local_id: &str,
    field: &str,
) -> ConflictRecord {
    s.list_conflicts(Some(kind), 100)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.local_id == local_id && c.field == field)
        .unwrap()
}

pub(crate) fn blank(c: &ConflictRecord) -> ConflictRecord {
    ConflictRecord {
        base: None,
        local: None,
        remote: None,
        ..c.clone()
    }
}

/// Conformance check `tombstoned_records_lose_personal_conflict_values` (see the [module docs](super)).
pub async fn tombstoned_records_lose_personal_conflict_values(s: &impl Store) {
    let phone = personal_conflict(EntityKind::Order, "o-1", "buyer.phone", "+380501112233");
    let city = personal_conflict(EntityKind::Order, "o-1", "shipping.city", "Київ");
    let status = personal_conflict(EntityKind::Order, "o-1", "status_id", "3");
    let other = personal_conflict(EntityKind::Order, "o-2", "buyer.phone", "+380509998877");
    let buyer = personal_conflict(EntityKind::Buyer, "b-1", "full_name", "Олена Коваль");
    let offer = personal_conflict(EntityKind::Offer, "b-1", "price", "10");
    for c in [&phone, &city, &status, &other, &buyer, &offer] {
        s.log_conflict(c).await.unwrap();
    }

    assert_eq!(
        s.forget_personal_conflicts(EntityKind::Order, "o-1")
            .await
            .unwrap(),
        2
    );
    // Values gone, the rest of the entry (field, winner, reason, times) kept.
    assert_eq!(
        conflict_of(s, EntityKind::Order, "o-1", "buyer.phone").await,
        blank(&phone)
    );
    assert_eq!(
        conflict_of(s, EntityKind::Order, "o-1", "shipping.city").await,
        blank(&city)
    );
    // Not personal, or another record: untouched.
    assert_eq!(
        conflict_of(s, EntityKind::Order, "o-1", "status_id").await,
        status
    );
    assert_eq!(
        conflict_of(s, EntityKind::Order, "o-2", "buyer.phone").await,
        other
    );
    // Once is enough.
    assert_eq!(
        s.forget_personal_conflicts(EntityKind::Order, "o-1")
            .await
            .unwrap(),
        0
    );

    // Every field of a buyer is personal; through a batch like the engine's tombstones.
    let mut batch = WriteBatch::new();
    batch
        .delete_mapping(EntityKind::Buyer, "b-1")
        .forget_personal_conflicts(EntityKind::Buyer, "b-1");
    s.write_batch(batch).await.unwrap();
    assert_eq!(
        conflict_of(s, EntityKind::Buyer, "b-1", "full_name").await,
        blank(&buyer)
    );
    assert_eq!(
        conflict_of(s, EntityKind::Offer, "b-1", "price").await,
        offer
    );
    assert_eq!(s.list_conflicts(None, 100).await.unwrap().len(), 6);
}

/// Conformance check `counts_summarise_the_store` (see the [module docs](super)).
pub async fn counts_summarise_the_store(s: &impl Store) {
    let empty = s.counts().await.unwrap();
    assert_eq!(empty, StoreCounts::empty());
    assert_eq!(empty.per_kind.len(), EntityKind::ALL.len());
    assert!(empty.per_kind.values().all(|k| *k == KindCounts::default()));

    s.put_mapping(&full_mapping(EntityKind::Order, "o-1", Some(1)))
        .await
        .unwrap();
    s.put_mapping(&full_mapping(EntityKind::Order, "o-2", Some(2)))
        .await
        .unwrap();
    s.put_mapping(&Mapping::new(EntityKind::Order, "o-3"))
        .await
        .unwrap();
    let mut err = Mapping::new(EntityKind::Buyer, "b-1");
    err.state = SyncState::Error;
    err.error = Some("HTTP 422".into());
    s.put_mapping(&err).await.unwrap();

    s.enqueue(EntityKind::Order, "o-3", json!(1), t(0))
        .await
        .unwrap();
    s.enqueue(EntityKind::Order, "o-3", json!(2), t(1))
        .await
        .unwrap(); // coalesced
    s.enqueue(EntityKind::Order, "o-4", json!(1), t(0))
        .await
        .unwrap();
    let dead = s
        .enqueue(EntityKind::Buyer, "b-1", json!(1), t(0))
        .await
        .unwrap();
    s.fail_outbox(dead, 1, "HTTP 422", t(0), true)
        .await
        .unwrap();
    s.enqueue(EntityKind::Stock, "s-1", json!(1), t(0))
        .await
        .unwrap();

    let a = s
        .inbox_insert("a", "e", json!(1), t(0))
        .await
        .unwrap()
        .unwrap();
    s.inbox_insert("b", "e", json!(1), t(0))
        .await
        .unwrap()
        .unwrap();
    s.inbox_insert("b", "e", json!(1), t(0)).await.unwrap(); // duplicate
    let c = s
        .inbox_insert("c", "e", json!(1), t(0))
        .await
        .unwrap()
        .unwrap();
    let d = s
        .inbox_insert("d", "e", json!(1), t(0))
        .await
        .unwrap()
        .unwrap();
    s.inbox_mark(a, InboxStatus::Processed, None, t(1))
        .await
        .unwrap();
    s.inbox_mark(c, InboxStatus::Failed, Some("x"), t(1))
        .await
        .unwrap();
    s.inbox_mark(d, InboxStatus::Ignored, None, t(1))
        .await
        .unwrap();

    let counts = s.counts().await.unwrap();
    let order = KindCounts {
        synced: 2,
        pending: 1,
        error: 0,
        dead_lettered: 0,
        outbox: 2,
    };
    let buyer = KindCounts {
        synced: 0,
        pending: 0,
        error: 1,
        dead_lettered: 1,
        outbox: 0,
    };
    let stock = KindCounts {
        outbox: 1,
        ..KindCounts::default()
    };
    assert_eq!(counts.per_kind[&EntityKind::Order], order);
    assert_eq!(counts.per_kind[&EntityKind::Buyer], buyer);
    assert_eq!(counts.per_kind[&EntityKind::Stock], stock);
    assert_eq!(counts.per_kind[&EntityKind::Product], KindCounts::default());
    assert_eq!(counts.per_kind[&EntityKind::Offer], KindCounts::default());
    assert_eq!(counts.outbox_depth, 3);
    assert_eq!(counts.dead_letters, 1);
    assert_eq!(counts.inbox_backlog, 1);
    assert_eq!(counts.inbox_failed, 1);
}
