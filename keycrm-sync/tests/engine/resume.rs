//! Interruption: an engine stopped between runs resumes from its SQLite file.

use std::time::Duration;

use keycrm_sync::SyncEngine;
use keycrm_sync::host::MemoryHost;
use keycrm_sync::model::EntityKind;
use keycrm_sync::store::{SqliteStore, Store, SyncState};

use crate::support::{
    Skew, TempDb, assert_orders_agree, config, lossy_simulator, mappings, numbered_order,
    orders_by_uuid, remote_id, remote_order,
};

#[tokio::test]
async fn an_interrupted_engine_resumes_from_its_sqlite_file() {
    let db = TempDb::new("interrupted");
    let mock = lossy_simulator(Duration::from_millis(600)).await;
    let host = MemoryHost::new(mappings());
    let skew = Skew::default();
    // A short timeout while runs are being cut, so that a lost response costs little; a
    // generous one for the final convergence, so that a loaded machine cannot fail it.
    let engine = |timeout: Duration| {
        SyncEngine::builder()
            .client(
                mock.client_builder()
                    .requests_per_minute(0)
                    .timeout(timeout)
                    .build()
                    .unwrap(),
            )
            .store(SqliteStore::open(&db.0).unwrap())
            .host(host.clone())
            .config(config())
            .outbox_clock(skew.clock())
            .build()
            .unwrap()
    };
    for n in 1..=120 {
        host.put_order(numbered_order(n));
    }
    mock.faults().set_latency(Duration::from_millis(3));
    mock.faults().lose_next_creates(2);
    // Each engine is dropped after `d`, wherever it is: in a request, between the import and
    // the mapping, halfway through the updates. The host keeps changing in between.
    let mut cuts = 0;
    for (round, d) in [40u64, 70, 95, 120, 150, 180, 220, 280, 350]
        .into_iter()
        .enumerate()
    {
        let e = engine(Duration::from_millis(250));
        if tokio::time::timeout(Duration::from_millis(d), e.run_once())
            .await
            .is_err()
        {
            cuts += 1;
        }
        drop(e);
        let n = (round * 13 % 120 + 1) as u32;
        assert!(host.edit_order(&format!("ord-{n}"), |o| {
            o.comment = Some(format!("правка {round}"));
            o.status = Some("approved".into());
        }));
        host.put_order(numbered_order(121 + round as u32));
        if round % 3 == 0 {
            mock.faults().lose_next_creates(1);
        }
        skew.pass_backoff();
    }
    assert!(cuts >= 3, "only {cuts} runs were cut short");
    mock.faults().clear();
    let e = engine(Duration::from_secs(10));
    let mut quiet = false;
    for _ in 0..8 {
        skew.pass_backoff();
        let report = e.run_once().await.unwrap();
        let status = e.status().await.unwrap();
        if report.failed == 0 && status.outbox_depth == 0 && report.pushed == 0 {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "{:?}", e.status().await.unwrap());
    let uuids = orders_by_uuid(&mock);
    assert_eq!(host.orders().len(), 120 + 9);
    for order in host.orders() {
        let number = order.number.clone().unwrap();
        assert_eq!(
            uuids.get(&number).map(Vec::len),
            Some(1),
            "{number} exactly once in KeyCRM"
        );
    }
    assert_eq!(
        uuids.len(),
        host.orders().len(),
        "no order KeyCRM alone has"
    );
    assert_orders_agree(&mock, &host, e.store()).await;
    for round in 0..9usize {
        let n = round * 13 % 120 + 1;
        let id = remote_id(e.store(), EntityKind::Order, &format!("ord-{n}")).await;
        let remote = remote_order(&mock, id);
        assert_eq!(remote["status_id"], serde_json::json!(2), "ord-{n}");
        assert_eq!(
            remote["manager_comment"],
            serde_json::json!(format!("правка {round}")),
            "ord-{n}"
        );
    }
    let mappings = e
        .store()
        .list_mappings(EntityKind::Order, None)
        .await
        .unwrap();
    assert_eq!(mappings.len(), 129);
    assert!(
        mappings.iter().all(|m| m.state == SyncState::Synced),
        "{:?}",
        mappings
            .iter()
            .filter(|m| m.state != SyncState::Synced)
            .collect::<Vec<_>>()
    );
    let status = e.status().await.unwrap();
    assert_eq!((status.outbox_depth, status.dead_letters), (0, 0));
}
