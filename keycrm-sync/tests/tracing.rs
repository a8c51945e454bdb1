//! Tracing of batch pushes: one `keycrm_sync.batch` span per batch write, naming the kind,
//! the records, the requests it took and the outcome; no customer data in any span or event
//! above debug level.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use keycrm_api::Decimal;
use keycrm_sync::canonical::{CanonicalContact, CanonicalOrder, CanonicalStock};
use keycrm_sync::config::SyncConfig;
use keycrm_sync::store::MemoryStore;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

mod support;
use support::{FieldText, config_with, engine_on, line, seed, simulator, skus, unpaced_client};

/// One span or event as recorded: name, level, fields (as text).
#[derive(Clone, Debug)]
struct Seen {
    name: String,
    level: Level,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Capture {
    next: AtomicU64,
    spans: Mutex<BTreeMap<u64, Seen>>,
    events: Mutex<Vec<Seen>>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Capture>);

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = BTreeMap::new();
        attrs.record(&mut FieldText(&mut fields));
        self.0.spans.lock().unwrap().insert(
            id,
            Seen {
                name: attrs.metadata().name().to_string(),
                level: *attrs.metadata().level(),
                fields,
            },
        );
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(seen) = self.0.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut FieldText(&mut seen.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut FieldText(&mut fields));
        self.0.events.lock().unwrap().push(Seen {
            name: event.metadata().name().to_string(),
            level: *event.metadata().level(),
            fields,
        });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn config() -> SyncConfig {
    config_with(&["new"], &[], &["main"])
}

#[tokio::test]
async fn each_batch_push_has_one_span_and_nothing_personal_above_debug() {
    let collector = Collector::default();
    let _guard = tracing::subscriber::set_default(collector.clone());

    let mock = simulator().await;
    mock.seed(seed(12, 0, 0));
    let (host, engine) = engine_on(unpaced_client(&mock), MemoryStore::new(), config());
    engine.run_once().await.unwrap();
    let skus = skus(engine.client(), 12).await;
    for (i, sku) in skus.iter().enumerate() {
        host.put_stock(CanonicalStock {
            sku: sku.clone(),
            warehouse: "main".into(),
            quantity: Decimal::from(7000 + i as i64),
        });
    }
    host.put_stock(CanonicalStock {
        sku: "NO-SUCH-SKU".into(),
        warehouse: "main".into(),
        quantity: Decimal::from(3),
    });
    for n in 1..=3u32 {
        host.put_order(CanonicalOrder {
            local_id: format!("WMS-{n}"),
            number: Some(format!("WMS-{n}")),
            buyer: CanonicalContact {
                name: Some(format!("Secretname Person{n}")),
                phone: Some(format!("+38050999000{n}")),
                email: Some(format!("private{n}@example.com")),
            },
            lines: vec![line("SKU-1".into(), "Tea", 1, "5.00")],
            ..CanonicalOrder::default()
        });
    }
    let report = engine.run_once().await.unwrap();
    assert_eq!(report.pushed, 15, "{report:?}");
    assert_eq!(report.failed, 1, "{report:?}");

    let spans = collector.0.spans.lock().unwrap().clone();
    let batches: Vec<&Seen> = spans
        .values()
        .filter(|s| s.name == "keycrm_sync.batch")
        .collect();
    let stock: Vec<&&Seen> = batches
        .iter()
        .filter(|s| s.fields.get("kind").map(String::as_str) == Some("stock"))
        .collect();
    assert_eq!(
        stock.len(),
        1,
        "one span for the warehouse's batch: {batches:?}"
    );
    let stock = &stock[0].fields;
    assert_eq!(stock["records"], "13");
    assert_eq!(stock["requests"], "2");
    assert_eq!(stock["delivered"], "12");
    assert_eq!(stock["rejected"], "1");
    assert_eq!(stock["outcome"], "partial");
    let orders: Vec<&&Seen> = batches
        .iter()
        .filter(|s| s.fields.get("kind").map(String::as_str) == Some("order"))
        .collect();
    assert_eq!(orders.len(), 1, "{batches:?}");
    assert_eq!(orders[0].fields["records"], "3");
    assert_eq!(orders[0].fields["requests"], "1");
    assert_eq!(orders[0].fields["outcome"], "delivered");

    // Nothing personal in what an info-level log shows (INFO, WARN, ERROR rank below DEBUG).
    let events = collector.0.events.lock().unwrap().clone();
    let loud = spans
        .values()
        .cloned()
        .chain(events)
        .filter(|s| s.level < Level::DEBUG);
    for seen in loud {
        let text = format!("{seen:?}");
        for secret in ["Secretname", "+38050999", "private", "example.com"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}
