//! The outbox: coalescing, due order, revisions, dead letters, concurrent writers.

use super::*;
use crate::store::*;

/// Conformance check `outbox_coalesces_per_record` (see the [module docs](super)).
pub async fn outbox_coalesces_per_record(s: &impl Store) {
    let id = s
        .enqueue(EntityKind::Order, "o-1", json!({"v": 1}), t(0))
        .await
        .unwrap();
    // Fail it once so attempts and next_attempt_at move away from their defaults.
    assert!(
        s.fail_outbox(id, 1, "HTTP 503", t(100), false)
            .await
            .unwrap()
    );
    let again = s
        .enqueue(EntityKind::Order, "o-1", json!({"v": 2}), t(5))
        .await
        .unwrap();
    assert_eq!(again, id);

    let due = s.due_outbox(t(5), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let item = &due[0];
    assert_eq!(item.id, id);
    assert_eq!(item.kind, EntityKind::Order);
    assert_eq!(item.local_id, "o-1");
    assert_eq!(item.payload, json!({"v": 2}));
    assert_eq!(item.revision, 2);
    assert_eq!(item.attempts, 0);
    assert_eq!(item.created_at, t(0));
    assert_eq!(item.next_attempt_at, t(5));
    assert_eq!(item.last_error.as_deref(), Some("HTTP 503"));
    assert!(!item.dead);

    // Another record, or the same local id of another kind, gets its own item.
    let other = s
        .enqueue(EntityKind::Order, "o-2", json!(3), t(6))
        .await
        .unwrap();
    let other_kind = s
        .enqueue(EntityKind::Buyer, "o-1", json!(4), t(6))
        .await
        .unwrap();
    assert!(other != id && other_kind != id && other != other_kind);
    assert_eq!(s.due_outbox(t(6), 10).await.unwrap().len(), 3);

    // A dead letter is not coalesced into: a new change gets a new item.
    assert!(
        s.fail_outbox(other, 1, "HTTP 400", t(6), true)
            .await
            .unwrap()
    );
    let fresh = s
        .enqueue(EntityKind::Order, "o-2", json!(5), t(7))
        .await
        .unwrap();
    assert_ne!(fresh, other);
    let dead = s.dead_letters(None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload, json!(3));
    let due = s.due_outbox(t(7), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|i| i.id).collect::<Vec<_>>(),
        [id, other_kind, fresh]
    );
}

/// Conformance check `outbox_due_order_and_filter` (see the [module docs](super)).
pub async fn outbox_due_order_and_filter(s: &impl Store) {
    let a = s
        .enqueue(EntityKind::Stock, "s-a", json!("a"), t(30))
        .await
        .unwrap();
    let b = s
        .enqueue(EntityKind::Offer, "s-b", json!("b"), t(10))
        .await
        .unwrap();
    let c = s
        .enqueue(EntityKind::Order, "s-c", json!("c"), t(20))
        .await
        .unwrap();
    let d = s
        .enqueue(EntityKind::Order, "s-d", json!("d"), t(20))
        .await
        .unwrap();

    assert_eq!(s.due_outbox(t(9), 10).await.unwrap(), vec![]);
    let ids = |v: Vec<OutboxItem>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
    // Oldest first; equal times in insertion order.
    assert_eq!(ids(s.due_outbox(t(30), 10).await.unwrap()), [b, c, d, a]);
    assert_eq!(ids(s.due_outbox(t(25), 10).await.unwrap()), [b, c, d]);
    assert_eq!(ids(s.due_outbox(t(30), 2).await.unwrap()), [b, c]);
    assert_eq!(ids(s.due_outbox(t(30), 0).await.unwrap()), []);

    // A failed item waits for its next attempt time, then comes back in age order.
    assert!(s.fail_outbox(b, 1, "timeout", t(60), false).await.unwrap());
    assert_eq!(ids(s.due_outbox(t(59), 10).await.unwrap()), [c, d, a]);
    let due = s.due_outbox(t(60), 10).await.unwrap();
    assert_eq!(due[0].id, b);
    assert_eq!(due[0].attempts, 1);
    assert_eq!(due[0].next_attempt_at, t(60));
    assert_eq!(due.len(), 4);

    // Sub-second precision is kept to the microsecond.
    let fine = t(100) + Duration::microseconds(250);
    let e = s
        .enqueue(EntityKind::Buyer, "s-e", json!(null), fine)
        .await
        .unwrap();
    assert!(!ids(s.due_outbox(t(100), 10).await.unwrap()).contains(&e));
    let due = s.due_outbox(fine, 10).await.unwrap();
    assert_eq!(due.last().unwrap().id, e);
    assert_eq!(due.last().unwrap().created_at, fine);
    assert_eq!(due.last().unwrap().payload, Value::Null);
}

/// Conformance check `outbox_complete_checks_revision` (see the [module docs](super)).
pub async fn outbox_complete_checks_revision(s: &impl Store) {
    let id = s
        .enqueue(EntityKind::Order, "o-1", json!(1), t(0))
        .await
        .unwrap();
    let sent = s.due_outbox(t(0), 1).await.unwrap().remove(0);
    assert_eq!(sent.revision, 1);
    // A newer change arrives while the request is in flight.
    assert_eq!(
        s.enqueue(EntityKind::Order, "o-1", json!(2), t(1))
            .await
            .unwrap(),
        id
    );
    assert!(!s.complete_outbox(id, sent.revision).await.unwrap());
    assert!(
        !s.fail_outbox(id, sent.revision, "late failure", t(99), true)
            .await
            .unwrap()
    );
    let due = s.due_outbox(t(1), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].payload.clone(), due[0].revision, due[0].attempts),
        (json!(2), 2, 0)
    );
    assert!(!due[0].dead);

    assert!(s.complete_outbox(id, 2).await.unwrap());
    assert_eq!(s.due_outbox(t(1000), 10).await.unwrap(), vec![]);
    assert!(!s.complete_outbox(id, 2).await.unwrap());
    assert!(!s.complete_outbox(OutboxId(9_999), 1).await.unwrap());

    // Ids are never reused after removal.
    let next = s
        .enqueue(EntityKind::Order, "o-1", json!(3), t(2))
        .await
        .unwrap();
    assert!(next > id, "{next} after {id}");
}

/// Conformance check `outbox_dead_letters_and_retry` (see the [module docs](super)).
pub async fn outbox_dead_letters_and_retry(s: &impl Store) {
    let a = s
        .enqueue(EntityKind::Order, "o-a", json!("a"), t(0))
        .await
        .unwrap();
    let b = s
        .enqueue(EntityKind::Buyer, "b-b", json!("b"), t(1))
        .await
        .unwrap();
    assert!(s.fail_outbox(a, 1, "HTTP 500", t(10), false).await.unwrap());
    assert!(
        s.fail_outbox(a, 1, "HTTP 422: invalid", t(20), true)
            .await
            .unwrap()
    );
    assert!(s.fail_outbox(b, 1, "HTTP 400", t(20), true).await.unwrap());
    // A dead item takes no more failures and is never due.
    assert!(!s.fail_outbox(a, 1, "again", t(30), false).await.unwrap());
    assert!(!s.complete_outbox(a, 1).await.unwrap());
    assert_eq!(s.due_outbox(t(1_000), 10).await.unwrap(), vec![]);

    let dead = s.dead_letters(None).await.unwrap();
    assert_eq!(dead.iter().map(|i| i.id).collect::<Vec<_>>(), [a, b]);
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 422: invalid"));
    assert!(dead[0].dead);
    assert_eq!(
        s.dead_letters(Some(EntityKind::Buyer)).await.unwrap().len(),
        1
    );
    assert_eq!(
        s.dead_letters(Some(EntityKind::Buyer)).await.unwrap()[0].id,
        b
    );
    assert_eq!(
        s.dead_letters(Some(EntityKind::Stock)).await.unwrap(),
        vec![]
    );

    // Retry with no newer change: the item is live again, due now, attempts reset.
    assert_eq!(s.retry_dead_letter(a, t(50)).await.unwrap(), Some(a));
    let due = s.due_outbox(t(50), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (
            due[0].id,
            due[0].attempts,
            due[0].next_attempt_at,
            due[0].dead
        ),
        (a, 0, t(50), false)
    );
    assert_eq!(due[0].payload, json!("a"));
    assert_eq!(s.due_outbox(t(49), 10).await.unwrap(), vec![]);
    // Not a dead letter (any more): nothing to retry or discard.
    assert_eq!(s.retry_dead_letter(a, t(51)).await.unwrap(), None);
    assert!(!s.discard_dead_letter(a).await.unwrap());
    assert_eq!(
        s.retry_dead_letter(OutboxId(9_999), t(51)).await.unwrap(),
        None
    );

    // Retry when a newer change is queued: the newer item carries it, the dead letter goes.
    let newer = s
        .enqueue(EntityKind::Buyer, "b-b", json!("b2"), t(60))
        .await
        .unwrap();
    assert_ne!(newer, b);
    assert_eq!(s.retry_dead_letter(b, t(61)).await.unwrap(), Some(newer));
    assert_eq!(s.dead_letters(None).await.unwrap(), vec![]);
    let due = s.due_outbox(t(61), 10).await.unwrap();
    assert_eq!(
        due.iter()
            .map(|i| (i.id, i.payload.clone()))
            .collect::<Vec<_>>(),
        [(a, json!("a")), (newer, json!("b2"))]
    );

    // Discard drops a dead letter for good.
    assert!(
        s.fail_outbox(newer, 1, "HTTP 400", t(70), true)
            .await
            .unwrap()
    );
    assert!(s.discard_dead_letter(newer).await.unwrap());
    assert!(!s.discard_dead_letter(newer).await.unwrap());
    assert_eq!(s.dead_letters(None).await.unwrap(), vec![]);
    assert_eq!(s.due_outbox(t(1_000), 10).await.unwrap().len(), 1);
}

/// Conformance check `concurrent_tasks_coalesce` (see the [module docs](super)).
pub async fn concurrent_tasks_coalesce(s: &(impl Store + Clone)) {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.enqueue(EntityKind::Stock, &format!("sku-{}", i % 4), json!(i), t(i))
                .await
                .unwrap()
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    let due = s.due_outbox(t(100), 100).await.unwrap();
    assert_eq!(due.len(), 4);
    assert_eq!(due.iter().map(|i| i.revision).sum::<i64>(), 20);
}
