//! Mappings, grouped writes and shared clones.

use super::*;
use crate::store::*;

/// Conformance check `mappings_round_trip` (see the [module docs](super)).
pub async fn mappings_round_trip(s: &impl Store) {
    assert_eq!(s.get_mapping(EntityKind::Order, "o-1").await.unwrap(), None);
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 501)
            .await
            .unwrap(),
        None
    );

    let m = full_mapping(EntityKind::Order, "o-1", Some(501));
    s.put_mapping(&m).await.unwrap();
    assert_eq!(
        s.get_mapping(EntityKind::Order, "o-1").await.unwrap(),
        Some(m.clone())
    );
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 501)
            .await
            .unwrap(),
        Some(m.clone())
    );
    // Kinds are separate namespaces.
    assert_eq!(s.get_mapping(EntityKind::Buyer, "o-1").await.unwrap(), None);
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Buyer, 501)
            .await
            .unwrap(),
        None
    );

    // Upsert by (kind, local_id): the row is replaced, including a new remote id.
    let mut changed = m.clone();
    changed.remote_id = Some(502);
    changed.state = SyncState::Error;
    changed.error = Some("HTTP 422".into());
    changed.base = None;
    changed.content_hash = None;
    changed.remote_updated_at = None;
    s.put_mapping(&changed).await.unwrap();
    assert_eq!(
        s.get_mapping(EntityKind::Order, "o-1").await.unwrap(),
        Some(changed.clone())
    );
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 501)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 502)
            .await
            .unwrap(),
        Some(changed.clone())
    );

    let pending = Mapping::new(EntityKind::Order, "o-0");
    s.put_mapping(&pending).await.unwrap();
    s.put_mapping(&full_mapping(EntityKind::Order, "o-2", Some(503)))
        .await
        .unwrap();
    s.put_mapping(&full_mapping(EntityKind::Buyer, "b-1", Some(501)))
        .await
        .unwrap();

    let all = s.list_mappings(EntityKind::Order, None).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|m| m.local_id.as_str()).collect();
    assert_eq!(ids, ["o-0", "o-1", "o-2"]);
    assert_eq!(all[0], pending);
    let synced = s
        .list_mappings(EntityKind::Order, Some(SyncState::Synced))
        .await
        .unwrap();
    assert_eq!(
        synced
            .iter()
            .map(|m| m.local_id.as_str())
            .collect::<Vec<_>>(),
        ["o-2"]
    );
    let errors = s
        .list_mappings(EntityKind::Order, Some(SyncState::Error))
        .await
        .unwrap();
    assert_eq!(errors, vec![changed]);
    assert_eq!(
        s.list_mappings(EntityKind::Order, Some(SyncState::Pending))
            .await
            .unwrap(),
        vec![pending]
    );
    assert_eq!(
        s.list_mappings(EntityKind::Stock, None).await.unwrap(),
        vec![]
    );

    assert!(s.delete_mapping(EntityKind::Order, "o-1").await.unwrap());
    assert!(!s.delete_mapping(EntityKind::Order, "o-1").await.unwrap());
    assert_eq!(s.get_mapping(EntityKind::Order, "o-1").await.unwrap(), None);
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 502)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.list_mappings(EntityKind::Order, None)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// Conformance check `mapping_in_flight_note_round_trips` (see the [module docs](super)): a
/// note of a write in flight is stored with its mapping, listed and read back by either key,
/// written in a batch, and cleared by the next write without one.
pub async fn mapping_in_flight_note_round_trips(s: &impl Store) {
    let mut m = full_mapping(EntityKind::Order, "o-9", Some(909));
    let mut noted = snapshot().fields;
    noted.insert("comment".into(), json!("sent, not yet booked"));
    noted.insert("lines.SKU-1.quantity".into(), json!(3));
    m.in_flight = Some(noted.clone());
    s.put_mapping(&m).await.unwrap();
    let read = s.get_mapping(EntityKind::Order, "o-9").await.unwrap();
    assert_eq!(read.as_ref().and_then(|r| r.in_flight.clone()), Some(noted));
    assert_eq!(read, Some(m.clone()));
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 909)
            .await
            .unwrap(),
        Some(m.clone())
    );
    assert_eq!(
        s.list_mappings(EntityKind::Order, None).await.unwrap(),
        vec![m.clone()]
    );

    // The bookkeeping after the write clears it.
    let mut cleared = m.clone();
    cleared.in_flight = None;
    s.put_mapping(&cleared).await.unwrap();
    assert_eq!(
        s.get_mapping(EntityKind::Order, "o-9").await.unwrap(),
        Some(cleared.clone())
    );

    // The same through a write batch, noted and cleared again.
    for written in [&m, &cleared] {
        let mut batch = WriteBatch::new();
        batch.put_mapping(written.clone());
        s.write_batch(batch).await.unwrap();
        assert_eq!(
            s.get_mapping(EntityKind::Order, "o-9")
                .await
                .unwrap()
                .as_ref(),
            Some(written)
        );
    }
}

/// Conformance check `mapping_remote_id_is_unique_per_kind` (see the [module docs](super)).
pub async fn mapping_remote_id_is_unique_per_kind(s: &impl Store) {
    let a = full_mapping(EntityKind::Product, "p-a", Some(9));
    s.put_mapping(&a).await.unwrap();
    // Re-putting the same record with its own remote id is fine.
    s.put_mapping(&a).await.unwrap();

    let b = full_mapping(EntityKind::Product, "p-b", Some(9));
    let err = s.put_mapping(&b).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::DuplicateRemoteId {
                kind: EntityKind::Product,
                remote_id: 9
            }
        ),
        "got {err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains('9') && !msg.contains("p-a") && !msg.contains("p-b"),
        "{msg}"
    );
    assert_eq!(
        s.get_mapping(EntityKind::Product, "p-b").await.unwrap(),
        None
    );
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Product, 9)
            .await
            .unwrap(),
        Some(a)
    );

    // The same remote id in another kind, and any number of unmapped records, are fine.
    s.put_mapping(&full_mapping(EntityKind::Offer, "p-b", Some(9)))
        .await
        .unwrap();
    s.put_mapping(&Mapping::new(EntityKind::Product, "p-c"))
        .await
        .unwrap();
    s.put_mapping(&Mapping::new(EntityKind::Product, "p-d"))
        .await
        .unwrap();
    assert_eq!(
        s.list_mappings(EntityKind::Product, None)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Offer, 9)
            .await
            .unwrap()
            .unwrap()
            .local_id,
        "p-b"
    );
}

/// Conformance check `write_batch_applies_everything_in_order` (see the [module docs](super)).
pub async fn write_batch_applies_everything_in_order(s: &impl Store) {
    // An empty batch does nothing.
    s.write_batch(WriteBatch::new()).await.unwrap();
    assert_eq!(s.counts().await.unwrap(), StoreCounts::empty());

    let m1 = full_mapping(EntityKind::Order, "o-1", Some(501));
    let m2 = full_mapping(EntityKind::Order, "o-2", Some(502));
    let mut moved = m1.clone();
    moved.state = SyncState::Pending;
    let mut batch = WriteBatch::new();
    batch
        .put_mapping(m1.clone())
        .put_mapping(m2.clone())
        .put_mapping(moved.clone())
        .enqueue(EntityKind::Order, "o-1", json!(1), t(1))
        .enqueue(EntityKind::Order, "o-1", json!(2), t(2))
        .set_cursor(EntityKind::Order, "remote", "c1", t(3))
        .set_cursor(EntityKind::Order, "remote", "c2", t(4))
        .log_conflict(conflict(t(5), EntityKind::Order, "o-1", "status_id"))
        .log_audit(audit(t(6), "o-1", "applied"))
        .delete_mapping(EntityKind::Order, "o-2");
    assert_eq!(batch.len(), 10);
    s.write_batch(batch).await.unwrap();

    assert_eq!(
        s.get_mapping(EntityKind::Order, "o-1").await.unwrap(),
        Some(moved)
    );
    assert_eq!(s.get_mapping(EntityKind::Order, "o-2").await.unwrap(), None);
    let due = s.due_outbox(t(10), 10).await.unwrap();
    assert_eq!(due.len(), 1, "enqueue coalesces inside a batch too");
    assert_eq!((due[0].payload.clone(), due[0].revision), (json!(2), 2));
    assert_eq!(
        s.get_cursor(EntityKind::Order, "remote")
            .await
            .unwrap()
            .as_deref(),
        Some("c2")
    );
    assert_eq!(
        s.list_conflicts(None, 10).await.unwrap(),
        vec![conflict(t(5), EntityKind::Order, "o-1", "status_id")]
    );
    assert_eq!(
        s.list_audit(10).await.unwrap(),
        vec![audit(t(6), "o-1", "applied")]
    );

    // Completing: only the revision that was sent; a newer payload stays due.
    let o9 = s
        .enqueue(EntityKind::Offer, "x", json!(1), t(1))
        .await
        .unwrap();
    let mut batch = WriteBatch::new();
    batch
        .complete_outbox(due[0].id, 1)
        .complete_outbox(o9, 1)
        .log_audit(audit(t(7), "x", "pushed"));
    s.write_batch(batch).await.unwrap();
    let due = s.due_outbox(t(10), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|i| i.local_id.as_str()).collect::<Vec<_>>(),
        ["o-1"],
        "revision 2 of o-1 stays; x is done"
    );

    // A remote id may move to another record within one batch (freed first, then taken).
    let mut freed = full_mapping(EntityKind::Order, "o-1", None);
    freed.state = SyncState::Error;
    let taker = full_mapping(EntityKind::Order, "o-3", Some(501));
    let mut batch = WriteBatch::new();
    batch.put_mapping(freed).put_mapping(taker.clone());
    s.write_batch(batch).await.unwrap();
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 501)
            .await
            .unwrap(),
        Some(taker)
    );
}

/// Conformance check `write_batch_is_all_or_nothing` (see the [module docs](super)).
pub async fn write_batch_is_all_or_nothing(s: &impl Store) {
    s.put_mapping(&full_mapping(EntityKind::Order, "o-1", Some(501)))
        .await
        .unwrap();
    let before = s.counts().await.unwrap();

    // The failing write comes last: the writes before it are rolled back.
    let mut batch = WriteBatch::new();
    batch
        .log_audit(audit(t(1), "o-2", "applied"))
        .enqueue(EntityKind::Order, "o-2", json!(1), t(1))
        .set_cursor(EntityKind::Order, "remote", "c1", t(1))
        .log_conflict(conflict(t(1), EntityKind::Order, "o-2", "f"))
        .put_mapping(full_mapping(EntityKind::Order, "o-3", Some(503)))
        .delete_mapping(EntityKind::Buyer, "b-0")
        .put_mapping(full_mapping(EntityKind::Order, "o-2", Some(501)));
    let err = s.write_batch(batch).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::DuplicateRemoteId {
                kind: EntityKind::Order,
                remote_id: 501
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.counts().await.unwrap(), before);
    assert_eq!(s.list_audit(10).await.unwrap(), vec![]);
    assert_eq!(s.list_conflicts(None, 10).await.unwrap(), vec![]);
    assert_eq!(
        s.get_cursor(EntityKind::Order, "remote").await.unwrap(),
        None
    );
    assert_eq!(s.get_mapping(EntityKind::Order, "o-3").await.unwrap(), None);
    assert_eq!(
        s.get_mapping_by_remote(EntityKind::Order, 501)
            .await
            .unwrap()
            .map(|m| m.local_id),
        Some("o-1".to_string())
    );

    // Two records of one batch claiming one remote id fail the same way.
    let mut batch = WriteBatch::new();
    batch
        .put_mapping(full_mapping(EntityKind::Buyer, "b-1", Some(7)))
        .put_mapping(full_mapping(EntityKind::Buyer, "b-2", Some(7)));
    assert!(matches!(
        s.write_batch(batch).await.unwrap_err(),
        StoreError::DuplicateRemoteId { remote_id: 7, .. }
    ));
    assert_eq!(
        s.list_mappings(EntityKind::Buyer, None).await.unwrap(),
        vec![]
    );
}

/// Conformance check `clones_share_state` (see the [module docs](super)).
pub async fn clones_share_state<S: Store + Clone>(s: &S) {
    let other = s.clone();
    other
        .set_cursor(EntityKind::Offer, "updated", "v", t(0))
        .await
        .unwrap();
    let id = other
        .enqueue(EntityKind::Offer, "x", json!(1), t(0))
        .await
        .unwrap();
    assert_eq!(
        s.get_cursor(EntityKind::Offer, "updated")
            .await
            .unwrap()
            .as_deref(),
        Some("v")
    );
    assert_eq!(s.due_outbox(t(0), 10).await.unwrap()[0].id, id);
    drop(other);
    assert_eq!(s.counts().await.unwrap().outbox_depth, 1);
}
