//! Buyers: matched by phone before creating, and converging both ways.

use futures::TryStreamExt;
use keycrm_api::Paginate;
use keycrm_api::types;
use keycrm_sync::canonical::{self, CanonicalBuyer};
use keycrm_sync::model::EntityKind;

use keycrm_sync::config::SyncConfig;
use keycrm_sync::phone::PhoneRegion;

use crate::support::{config, remote_buyer, remote_id, rig, rig_with, settle, writes};

#[tokio::test]
async fn buyers_are_matched_by_phone_before_creating() {
    let rig = rig().await;
    rig.host.put_buyer(CanonicalBuyer {
        local_id: "C-1".into(),
        name: "Олена Коваленко".into(),
        phones: vec!["+380501112233".into()],
        ..CanonicalBuyer::default()
    });
    rig.engine.run_once().await.unwrap();
    assert_eq!(rig.mock.count("buyer_create"), 1);
    rig.mock.clear_log();
    rig.host.edit_buyer("C-1", |b| b.note = Some("VIP".into()));
    rig.engine.run_once().await.unwrap();
    assert_eq!(rig.mock.count("buyer_update"), 1);
    assert_eq!(rig.mock.count("buyer_create"), 0);
}

#[tokio::test]
async fn buyers_converge_both_ways() {
    let rig = rig().await;
    rig.host.put_buyer(CanonicalBuyer {
        local_id: "C-1".into(),
        name: "Олена Коваленко".into(),
        phones: vec!["+38 (050) 111-22-33".into()],
        emails: vec!["Olena@Example.com".into()],
        ..CanonicalBuyer::default()
    });
    rig.host.put_buyer(CanonicalBuyer {
        local_id: "C-2".into(),
        name: "Тарас Шевчук".into(),
        phones: vec!["+380672223344".into()],
        ..CanonicalBuyer::default()
    });
    let first = rig.engine.run_once().await.unwrap();
    assert_eq!(first.failed, 0, "{first:?}");
    assert_eq!(rig.mock.count("buyer_create"), 2);
    let store = rig.engine.store();
    let c1 = remote_id(store, EntityKind::Buyer, "C-1").await;
    let c2 = remote_id(store, EntityKind::Buyer, "C-2").await;

    assert!(rig.host.edit_buyer("C-1", |b| {
        b.note = Some("VIP".into());
        b.emails.push("olena.work@example.com".into());
    }));
    rig.mock.crm().edit_buyer(
        c2,
        serde_json::json!({"note": "Оптовий клієнт", "email": ["taras@example.com"]}),
    );
    settle(&rig.engine, 6).await;

    let client = rig.engine.client();
    let remote_c1 = remote_buyer(client, c1).await;
    assert_eq!(remote_c1["note"], serde_json::json!("VIP"));
    assert_eq!(
        remote_c1["email.1"],
        serde_json::json!("olena.work@example.com")
    );
    let host_c2 = rig.host.buyer("C-2").unwrap();
    assert_eq!(host_c2.note.as_deref(), Some("Оптовий клієнт"));
    assert_eq!(host_c2.emails, vec!["taras@example.com".to_string()]);
    assert_eq!(host_c2.phones, vec!["+380672223344".to_string()]);

    let remote_all: Vec<types::Buyer> = client.buyer_list().items().try_collect().await.unwrap();
    assert_eq!(remote_all.len(), rig.host.buyers().len());
    for buyer in rig.host.buyers() {
        let id = remote_id(store, EntityKind::Buyer, &buyer.local_id).await;
        assert_eq!(
            canonical::buyer_fields_from_local(&buyer),
            remote_buyer(client, id).await,
            "buyer {}",
            buyer.local_id
        );
    }

    rig.mock.clear_log();
    rig.engine.run_once().await.unwrap();
    assert_eq!(
        writes(&rig.mock),
        0,
        "nothing changed: {:?}",
        rig.mock.requests()
    );
}

#[tokio::test]
async fn buyers_phones_are_sent_in_the_configured_region() {
    let config = SyncConfig {
        phone_region: PhoneRegion {
            country_code: "48".into(),
            trunk_prefix: String::new(),
            national_digits: 9,
        },
        ..config()
    };
    let rig = rig_with(keycrm_api::mock::KeyCrmMock::builder(), config, |b| b).await;
    rig.host.put_buyer(CanonicalBuyer {
        local_id: "C-1".into(),
        name: "Anna Nowak".into(),
        phones: vec!["501 234 567".into()],
        ..CanonicalBuyer::default()
    });
    let first = rig.engine.run_once().await.unwrap();
    assert_eq!(first.failed, 0, "{first:?}");
    assert_eq!(rig.mock.count("buyer_create"), 1);
    let id = remote_id(rig.engine.store(), EntityKind::Buyer, "C-1").await;
    let created = rig
        .engine
        .client()
        .buyer_get()
        .buyer_id(id)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serde_json::to_value(&created.phone).unwrap(),
        serde_json::json!(["+48501234567"])
    );

    rig.mock.clear_log();
    rig.engine.run_once().await.unwrap();
    assert_eq!(
        writes(&rig.mock),
        0,
        "nothing changed: {:?}",
        rig.mock.requests()
    );
}
