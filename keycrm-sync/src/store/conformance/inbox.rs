//! The inbox: deduplication, status tracking and grouped intake.

use super::*;
use crate::store::*;

/// Conformance check `inbox_dedupes_and_tracks_status` (see the [module docs](super)).
pub async fn inbox_dedupes_and_tracks_status(s: &impl Store) {
    let body = json!({"event": "order.change_order_status", "context": {"id": 1, "status_id": 3}});
    let first = s.inbox_insert(
        "order:1:3:2025-01-01T00:00:00Z",
        "order.change_order_status",
        body.clone(),
        t(5),
    );
    let first = first.await.unwrap().expect("first delivery is stored");
    // KeyCRM retries the delivery: the duplicate is recognised and nothing changes.
    let dup = s.inbox_insert(
        "order:1:3:2025-01-01T00:00:00Z",
        "order.change_order_status",
        json!("other"),
        t(6),
    );
    assert_eq!(dup.await.unwrap(), None);

    let second = s
        .inbox_insert("stock:abc", "stock.change", json!([1, 2]), t(2))
        .await
        .unwrap()
        .unwrap();
    let third = s
        .inbox_insert("stock:def", "stock.change", json!([3]), t(9))
        .await
        .unwrap()
        .unwrap();
    assert!(first != second && second != third);

    let pending = s.inbox_pending(10).await.unwrap();
    assert_eq!(
        pending.iter().map(|i| i.id).collect::<Vec<_>>(),
        [second, first, third]
    );
    let item = &pending[1];
    assert_eq!(item.dedupe_key, "order:1:3:2025-01-01T00:00:00Z");
    assert_eq!(item.event, "order.change_order_status");
    assert_eq!(item.payload, body);
    assert_eq!(item.received_at, t(5));
    assert_eq!(
        (item.status, item.processed_at, item.error.clone()),
        (InboxStatus::Pending, None, None)
    );
    assert_eq!(s.inbox_pending(2).await.unwrap().len(), 2);
    assert_eq!(s.inbox_pending(0).await.unwrap(), vec![]);

    assert!(
        s.inbox_mark(first, InboxStatus::Processed, None, t(10))
            .await
            .unwrap()
    );
    assert!(
        s.inbox_mark(second, InboxStatus::Failed, Some("unknown offer"), t(11))
            .await
            .unwrap()
    );
    assert!(
        !s.inbox_mark(InboxId(9_999), InboxStatus::Ignored, None, t(11))
            .await
            .unwrap()
    );
    let pending = s.inbox_pending(10).await.unwrap();
    assert_eq!(pending.iter().map(|i| i.id).collect::<Vec<_>>(), [third]);

    // A processed key still deduplicates.
    assert_eq!(
        s.inbox_insert("order:1:3:2025-01-01T00:00:00Z", "x", json!(1), t(12))
            .await
            .unwrap(),
        None
    );

    // Marking pending puts an item back in the queue, with no processed time.
    assert!(
        s.inbox_mark(second, InboxStatus::Pending, None, t(13))
            .await
            .unwrap()
    );
    let pending = s.inbox_pending(10).await.unwrap();
    assert_eq!(
        pending.iter().map(|i| i.id).collect::<Vec<_>>(),
        [second, third]
    );
    assert_eq!(
        (pending[0].processed_at, pending[0].error.clone()),
        (None, None)
    );

    assert!(
        s.inbox_mark(second, InboxStatus::Failed, Some("unknown offer"), t(14))
            .await
            .unwrap()
    );
    let counts = s.counts().await.unwrap();
    assert_eq!((counts.inbox_backlog, counts.inbox_failed), (1, 1));
}

// ---- inbox: grouped intake (webhook receiver) ----

pub(crate) fn new_item(key: &str, dedupe: InboxDedupe) -> NewInboxItem {
    NewInboxItem {
        dedupe_key: key.into(),
        event: "stock".into(),
        payload: json!([{"offer_id": 1, "in_stock": key.len()}]),
        dedupe,
    }
}

pub(crate) fn latest(since: DateTime<Utc>) -> InboxDedupe {
    InboxDedupe::Latest {
        stream: "stock:a:".into(),
        since,
    }
}

/// Conformance check `inbox_batch_dedupes_by_rule` (see the [module docs](super)).
pub async fn inbox_batch_dedupes_by_rule(s: &impl Store) {
    // One call, several items: ids in input order, a duplicate inside the same group.
    let ids = s
        .inbox_insert_batch(
            &[
                new_item("order:1:2", InboxDedupe::Stored),
                new_item("order:1:3", InboxDedupe::Stored),
                new_item("order:1:2", InboxDedupe::Stored),
            ],
            t(0),
        )
        .await
        .unwrap();
    assert!(
        ids[0].is_some() && ids[1].is_some() && ids[2].is_none(),
        "{ids:?}"
    );
    assert!(ids[0] < ids[1]);
    assert_eq!(s.inbox_pending(10).await.unwrap().len(), 2);
    // `Stored` keys stay duplicates for as long as the row is kept.
    let again = s
        .inbox_insert_batch(&[new_item("order:1:2", InboxDedupe::Stored)], t(9_000))
        .await
        .unwrap();
    assert_eq!(again, vec![None]);

    // `Latest`: 118 -> 118 (redelivery) -> 117 -> 118 (the level came back) -> 118 (redelivery).
    let k118 = "stock:a:118";
    let k117 = "stock:a:117";
    let first = s
        .inbox_insert_batch(&[new_item(k118, latest(t(0)))], t(10))
        .await
        .unwrap();
    assert!(first[0].is_some());
    let redelivered = s
        .inbox_insert_batch(&[new_item(k118, latest(t(5)))], t(20))
        .await
        .unwrap();
    assert_eq!(redelivered, vec![None], "a redelivery within the window");
    let down = s
        .inbox_insert_batch(&[new_item(k117, latest(t(15)))], t(30))
        .await
        .unwrap();
    assert!(down[0].is_some());
    let back = s
        .inbox_insert_batch(&[new_item(k118, latest(t(25)))], t(40))
        .await
        .unwrap();
    assert!(back[0].is_some(), "a level that returns is new");
    assert!(back[0] > down[0]);
    let again = s
        .inbox_insert_batch(&[new_item(k118, latest(t(35)))], t(50))
        .await
        .unwrap();
    assert_eq!(again, vec![None]);
    // Outside the window the same last body is stored again.
    let late = s
        .inbox_insert_batch(&[new_item(k118, latest(t(45)))], t(90))
        .await
        .unwrap();
    assert!(late[0].is_some(), "received at 40, window from 45");
    // Every delivery is kept; the earlier rows under retired keys.
    let pending = s.inbox_pending(100).await.unwrap();
    let stock: Vec<&InboxItem> = pending
        .iter()
        .filter(|i| i.dedupe_key.starts_with("stock:"))
        .collect();
    assert_eq!(stock.len(), 4, "{stock:?}");
    assert_eq!(stock.iter().filter(|i| i.dedupe_key == k118).count(), 1);
    assert_eq!(stock.last().unwrap().dedupe_key, k118);
    assert!(stock[0].dedupe_key.starts_with("stock:a:118#"), "{stock:?}");
    // Another stream is independent of this one.
    let other = s
        .inbox_insert_batch(
            &[NewInboxItem {
                dedupe: InboxDedupe::Latest {
                    stream: "stock:b:".into(),
                    since: t(0),
                },
                ..new_item("stock:b:118", latest(t(0)))
            }],
            t(100),
        )
        .await
        .unwrap();
    assert!(other[0].is_some());
    let counts = s.counts().await.unwrap();
    assert_eq!(counts.inbox_backlog, 7);
}
