//! A create whose answer (or bookkeeping) was lost: the record exists in KeyCRM, the engine
//! does not know its id. When it meets the record again (a look-up before re-creating, or a
//! pull), it links it against the body it sent, noted as the base before sending, so a local
//! edit made in between is a local change and reaches KeyCRM, not lost to KeyCRM's older copy.
//! (`tests/crash.rs` proves the same for orders with SIGKILLs.)

use std::time::Duration;

use keycrm_api::mock::KeyCrmMock;
use keycrm_api::{Decimal, Paginate};
use keycrm_sync::SyncEngine;
use keycrm_sync::canonical::{
    CanonicalBuyer, CanonicalLine, CanonicalOrder, CanonicalProduct, Mappings,
};
use keycrm_sync::config::SyncConfig;
use keycrm_sync::host::MemoryHost;
use keycrm_sync::model::EntityKind;
use keycrm_sync::store::MemoryStore;

mod support;
use support::{Skew, assert_linked, config_with, contact, impatient_client, lossy_simulator};

fn config() -> SyncConfig {
    config_with(&["new"], &[], &["main"])
}

struct Rig {
    mock: KeyCrmMock,
    host: MemoryHost,
    engine: SyncEngine<MemoryStore, MemoryHost>,
    skew: Skew,
}

/// A rig whose simulator answers a lost create after two seconds, on an impatient client
/// and an outbox clock the test moves.
async fn rig() -> Rig {
    let mock = lossy_simulator(Duration::from_secs(2)).await;
    let host = MemoryHost::new(Mappings::from_config(&config()));
    let skew = Skew::default();
    let engine = SyncEngine::builder()
        .client(impatient_client(&mock))
        .store(MemoryStore::new())
        .host(host.clone())
        .config(config())
        .outbox_clock(skew.clock())
        .build()
        .unwrap();
    Rig {
        mock,
        host,
        engine,
        skew,
    }
}

impl Rig {
    /// Past every backoff the engine uses.
    fn pass_backoff(&self) {
        self.skew.pass_backoff();
    }
}

#[tokio::test]
async fn a_product_whose_import_answer_was_lost_gets_the_edit_made_since() {
    let rig = rig().await;
    for n in 1..=3 {
        rig.host.put_product(CanonicalProduct {
            local_id: format!("P-{n}"),
            sku: Some(format!("PS-{n}")),
            name: format!("Product {n}"),
            price: Some(Decimal::from(10)),
            ..CanonicalProduct::default()
        });
    }
    rig.mock.faults().lose_next_creates(1);
    let first = rig.engine.run_once().await.unwrap();
    assert_eq!(first.failed, 3, "the import's answer was lost: {first:?}");
    // KeyCRM has the products; the host renames one before the engine learns their ids.
    rig.host.put_product(CanonicalProduct {
        local_id: "P-2".into(),
        sku: Some("PS-2".into()),
        name: "Renamed while the answer was lost".into(),
        price: Some(Decimal::from(10)),
        ..CanonicalProduct::default()
    });
    for _ in 0..3 {
        rig.pass_backoff();
        rig.engine.run_once().await.unwrap();
    }
    let products = rig
        .engine
        .client()
        .product_list()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(products.len(), 3, "created once each");
    let renamed = products
        .iter()
        .find(|p| p.sku.as_deref() == Some("PS-2"))
        .unwrap();
    assert_eq!(
        renamed.name.as_deref(),
        Some("Renamed while the answer was lost"),
        "the host's edit reached KeyCRM"
    );
    assert_eq!(
        rig.host.product("P-2").unwrap().name,
        "Renamed while the answer was lost",
        "and the host kept it"
    );
    for n in 1..=3 {
        assert_linked(rig.engine.store(), EntityKind::Product, &format!("P-{n}")).await;
    }
}

#[tokio::test]
async fn a_buyer_whose_create_answer_was_lost_keeps_the_edit_made_since() {
    let rig = rig().await;
    rig.host.put_buyer(CanonicalBuyer {
        local_id: "B-1".into(),
        name: "Olena".into(),
        phones: vec!["+380501112233".into()],
        note: Some("first".into()),
        ..CanonicalBuyer::default()
    });
    rig.mock.faults().lose_next_creates(1);
    let first = rig.engine.run_once().await.unwrap();
    assert_eq!(first.failed, 1, "the create's answer was lost: {first:?}");
    rig.host
        .edit_buyer("B-1", |b| b.note = Some("edited meanwhile".into()));
    // Let the held-back answer go, so the buyer shows up in KeyCRM's change feed.
    tokio::time::sleep(Duration::from_millis(10)).await;
    for _ in 0..3 {
        rig.pass_backoff();
        rig.engine.run_once().await.unwrap();
    }
    let buyers = rig
        .engine
        .client()
        .buyer_list()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(buyers.len(), 1, "created once");
    assert_eq!(
        rig.host.buyer("B-1").unwrap().note.as_deref(),
        Some("edited meanwhile"),
        "the pull that met the created buyer did not overwrite the host's edit"
    );
    let remote = &buyers[0];
    assert_eq!(remote.note.as_deref(), Some("edited meanwhile"));
}

/// The same for orders, deterministically: the import's answer is lost, the host edits an
/// order (without stamping it newer, so only the base noted before sending can tell the edit
/// from KeyCRM's copy), and the edit wins. `tests/crash.rs` proves convergence under SIGKILLs.
#[tokio::test]
async fn an_order_whose_import_answer_was_lost_keeps_the_edit_made_since() {
    let rig = rig().await;
    for n in 1..=3 {
        rig.host.put_order(CanonicalOrder {
            local_id: format!("O-{n}"),
            number: Some(format!("WMS-{n}")),
            status: Some("new".into()),
            buyer: contact("Buyer", n),
            lines: vec![CanonicalLine {
                sku: format!("OS-{n}"),
                name: "Tea".into(),
                quantity: Decimal::from(1),
                price: Decimal::from(100),
            }],
            comment: Some(format!("original {n}")),
            ..CanonicalOrder::default()
        });
    }
    rig.mock.faults().lose_next_creates(1);
    let first = rig.engine.run_once().await.unwrap();
    assert!(first.failed > 0, "the import's answer was lost: {first:?}");
    assert!(rig.host.edit_order("O-2", |o| {
        o.comment = Some("edited while the answer was lost".into());
    }));
    // Let the held-back answer go, so the orders show up in KeyCRM's change feed.
    tokio::time::sleep(Duration::from_millis(10)).await;
    for _ in 0..3 {
        rig.pass_backoff();
        rig.engine.run_once().await.unwrap();
    }
    let orders = rig
        .engine
        .client()
        .order_list()
        .collect_all()
        .await
        .unwrap();
    assert_eq!(orders.len(), 3, "created once each");
    let edited = orders
        .iter()
        .find(|o| o.source_uuid.as_deref() == Some("WMS-2"))
        .unwrap();
    assert_eq!(
        edited.manager_comment.as_deref(),
        Some("edited while the answer was lost"),
        "the host's edit reached KeyCRM"
    );
    assert_eq!(
        rig.host.order("O-2").unwrap().comment.as_deref(),
        Some("edited while the answer was lost"),
        "and the host kept it"
    );
}
