//! Stock deliveries: returning levels, redeliveries, forged levels and the zeroing guard.

use super::*;

fn product(i: usize) -> CanonicalProduct {
    CanonicalProduct {
        local_id: format!("P-{i}"),
        sku: Some(format!("TEA-{i}")),
        name: format!("Чай {i}"),
        price: Some(dec("100")),
        ..CanonicalProduct::default()
    }
}

fn offer(i: usize) -> CanonicalOffer {
    CanonicalOffer {
        local_id: format!("V-{i}"),
        sku: format!("TEA-{i}"),
        product_sku: Some(format!("TEA-{i}")),
        price: Some(dec("100")),
        ..CanonicalOffer::default()
    }
}

/// `n` offers `TEA-1..=n` with stock 14 in `main`, synced; returns their KeyCRM offer ids.
async fn synced_catalogue(rig: &Rig<impl Store>, n: usize) -> Vec<i64> {
    for i in 1..=n {
        rig.host.put_product(product(i));
        rig.host.put_offer(offer(i));
        rig.host.put_stock(CanonicalStock {
            sku: format!("TEA-{i}"),
            warehouse: "main".into(),
            quantity: Decimal::from(14),
        });
    }
    let report = rig.engine.run_once().await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    let offers: Vec<types::Offer> = rig
        .engine
        .client()
        .offer_list()
        .send()
        .await
        .unwrap()
        .into_inner()
        .data;
    (1..=n)
        .map(|i| {
            offers
                .iter()
                .find(|o| o.sku.as_deref() == Some(&format!("TEA-{i}")))
                .and_then(|o| o.id)
                .unwrap()
        })
        .collect()
}

fn level(rig: &Rig<impl Store>, sku: &str) -> Decimal {
    rig.host.stock(&format!("main/{sku}")).unwrap().quantity
}

#[tokio::test]
async fn a_returning_stock_level_is_applied_and_a_redelivery_is_not() {
    let rig = rig().await;
    let ids = synced_catalogue(&rig, 1).await;
    let receiver = rig.engine.webhook_receiver();
    let body = |q: u32| {
        serde_json::to_vec(
            &json!([{"offer_id": ids[0], "sku": "TEA-1", "in_stock": q, "in_reserve": 0}]),
        )
        .unwrap()
    };
    let q = query();
    for (quantity, duplicate) in [
        (118, false),
        (118, true),
        (117, false),
        (118, false),
        (118, true),
    ] {
        let accepted = receiver
            .receive(json_request(&body(quantity)).query(&q))
            .await
            .unwrap();
        assert_eq!(accepted.duplicate(), duplicate, "{quantity}");
        rig.engine.apply_inbox().await.unwrap();
        assert_eq!(level(&rig, "TEA-1"), Decimal::from(quantity));
    }
    let processed = rig.engine.store().counts().await.unwrap();
    assert_eq!(processed.inbox_failed, 0);
}

#[tokio::test]
async fn a_forged_stock_webhook_does_not_set_the_host_stock() {
    let rig = rig().await;
    let ids = synced_catalogue(&rig, 1).await;
    assert_eq!(level(&rig, "TEA-1"), Decimal::from(14));
    let receiver = rig.engine.webhook_receiver();
    let q = query();
    rig.mock.clear_log();
    // An offer id KeyCRM does not have, and a real offer id under another offer's SKU.
    for forged in [
        json!([{"offer_id": 424242, "sku": "TEA-1", "in_stock": 0}]),
        json!([{"offer_id": ids[0] + 1000, "sku": "TEA-1", "in_stock": 0}]),
    ] {
        let body = serde_json::to_vec(&forged).unwrap();
        receiver
            .receive(json_request(&body).query(&q))
            .await
            .unwrap();
        let report = rig.engine.apply_inbox().await.unwrap();
        assert_eq!(report.failed, 0, "{report:?}");
        assert_eq!(level(&rig, "TEA-1"), Decimal::from(14), "{forged}");
    }
    assert_eq!(
        rig.mock.count("offer_stock_list"),
        2,
        "each unmatched offer was read again from KeyCRM: {:?}",
        rig.mock.requests()
    );
    // A row whose SKU the offer id does not carry is read again too, and KeyCRM's level wins.
    rig.mock.crm().set_stock(ids[0], 1, 9);
    let body =
        serde_json::to_vec(&json!([{"offer_id": ids[0], "sku": "CUP-9", "in_stock": 0}])).unwrap();
    receiver
        .receive(json_request(&body).query(&q))
        .await
        .unwrap();
    rig.engine.apply_inbox().await.unwrap();
    assert_eq!(level(&rig, "TEA-1"), Decimal::from(9));
    assert!(rig.host.stock("main/CUP-9").is_none());
}

#[tokio::test]
async fn a_webhook_that_would_zero_a_warehouse_is_held_for_review() {
    let rig = rig().await;
    let ids = synced_catalogue(&rig, 12).await;
    let mut events = Box::pin(rig.engine.subscribe());
    let rows: Vec<serde_json::Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"offer_id": id, "sku": format!("TEA-{}", i + 1), "in_stock": 0}))
        .collect();
    let body = serde_json::to_vec(&rows).unwrap();
    let accepted = rig
        .engine
        .webhook_receiver()
        .receive(json_request(&body).query(&query()))
        .await
        .unwrap();
    rig.engine.apply_inbox().await.unwrap();
    for i in 1..=12 {
        assert_eq!(level(&rig, &format!("TEA-{i}")), Decimal::from(14), "held");
    }
    let event = events.next().await.unwrap();
    match event {
        SyncEvent::Held { kind, reason, .. } => {
            assert_eq!(kind, EntityKind::Stock);
            assert!(reason.contains("would zero 12 of 12"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.engine.store().counts().await.unwrap().inbox_failed, 1);
    // An operator releases it after review.
    assert!(
        rig.engine
            .release_webhook(accepted.id.unwrap())
            .await
            .unwrap()
    );
    rig.engine.apply_inbox().await.unwrap();
    for i in 1..=12 {
        assert_eq!(level(&rig, &format!("TEA-{i}")), Decimal::ZERO, "released");
    }
}

#[tokio::test]
async fn a_pass_that_would_zero_a_warehouse_is_held_for_review() {
    let rig = rig().await;
    let ids = synced_catalogue(&rig, 12).await;
    for id in &ids {
        rig.mock.crm().set_stock(*id, 1, 0);
    }
    let mut events = Box::pin(rig.engine.subscribe());
    rig.engine.full_resync().await.unwrap();
    for i in 1..=12 {
        assert_eq!(level(&rig, &format!("TEA-{i}")), Decimal::from(14), "held");
    }
    let mut held = false;
    while let Some(Some(event)) = futures::FutureExt::now_or_never(events.next()) {
        if let SyncEvent::Held { reason, .. } = event {
            assert!(reason.contains("would zero 12 of 12"), "{reason}");
            held = true;
        }
    }
    assert!(held, "an alert was published");
    let audit = rig.engine.store().list_audit(20).await.unwrap();
    assert!(audit.iter().any(|a| a.action == "held"), "{audit:?}");
}

#[tokio::test(start_paused = true)]
async fn deliveries_that_arrive_during_a_commit_share_the_next_one() {
    let store = MemoryStore::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let receiver = WebhookReceiver::new(settings(), {
        let store = store.clone();
        let gate = gate.clone();
        move |items: Vec<NewInboxItem>| {
            let store = store.clone();
            let gate = gate.clone();
            Box::pin(async move {
                // A slow disk: the commit waits until the test opens the gate.
                gate.acquire().await.expect("open").forget();
                store.inbox_insert_batch(&items, chrono::Utc::now()).await
            })
        }
    });
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let body = status_body(i, 4, "2026-01-29 18:53:35");
                receiver
                    .receive(json_request(&body).query(&query()))
                    .await
                    .map(|a| a.duplicate())
            })
        })
        .collect();
    // Every sender is waiting for its answer (the paused clock moves only when all are idle).
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(stored(&store).await, 0, "no answer before the commit");
    gate.add_permits(1000);
    for task in tasks {
        assert_eq!(task.await.unwrap(), Ok(false));
    }
    let stats = receiver.stats();
    assert_eq!(stats.stored, 50);
    assert!(stats.groups <= 2, "{stats:?}");
    assert_eq!(stored(&store).await, 50);
}
