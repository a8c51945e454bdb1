//! The engine's tracing: one span per run and per reconciliation pass with its figures,
//! debug events for record decisions, and no customer data above debug level.
//!
//! One test in its own binary: it installs a subscriber for its thread.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use keycrm_api::Paginate;
use keycrm_api::mock::{KeyCrmMock, Quota, SeedConfig};
use keycrm_sync::config::{Secret, SyncConfig};
use keycrm_sync::store::MemoryStore;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

mod support;
use support::{FieldText, config_with, engine_on, unpaced_client};

/// One span or event as text: its name or message and every field.
#[derive(Clone, Debug)]
struct Seen {
    level: Level,
    name: String,
    fields: BTreeMap<String, String>,
}

impl Seen {
    fn text(&self) -> String {
        format!("{} {:?}", self.name, self.fields)
    }
}

/// Captures every span (with the fields recorded later) and event.
#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<BTreeMap<u64, Seen>>>,
    events: Arc<Mutex<Vec<Seen>>>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut FieldText(&mut fields));
        self.spans.lock().unwrap().insert(
            id.into_u64(),
            Seen {
                level: *attrs.metadata().level(),
                name: attrs.metadata().name().to_string(),
                fields,
            },
        );
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        if let Some(span) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut FieldText(&mut span.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut FieldText(&mut fields));
        self.events.lock().unwrap().push(Seen {
            level: *event.metadata().level(),
            name: event.metadata().target().to_string(),
            fields,
        });
    }
}

#[tokio::test]
async fn runs_and_passes_have_spans_and_nothing_personal_is_logged_above_debug() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .start()
        .await;
    mock.seed(SeedConfig {
        buyers: 12,
        products: 4,
        orders: 15,
        cards: 0,
        calls: 0,
        transactions: 0,
        ..SeedConfig::default()
    });
    let client = unpaced_client(&mock);
    // Customer data the account holds: names, phones, e-mails of buyers.
    let buyers: Vec<_> = client
        .buyer_list()
        .items()
        .map(|b| b.unwrap())
        .collect()
        .await;
    let mut personal: Vec<String> = Vec::new();
    for b in &buyers {
        personal.extend(b.full_name.clone());
        for contacts in [&b.phone, &b.email] {
            match contacts.as_ref().map(|v| serde_json::to_value(v).unwrap()) {
                Some(serde_json::Value::String(s)) => personal.push(s),
                Some(serde_json::Value::Array(items)) => {
                    personal.extend(items.iter().filter_map(|v| v.as_str().map(str::to_string)))
                }
                _ => {}
            }
        }
    }
    personal.retain(|p| p.trim().len() >= 5);
    assert!(personal.len() >= 12, "{personal:?}");

    // Only some statuses are mapped: orders in the others fail, with their errors logged.
    let config = config_with(&["new"], &[], &["main"]);
    let (_host, engine) = engine_on(client, MemoryStore::new(), config);
    let report = engine.run_once().await.unwrap();
    assert!(report.pulled > 0, "{report:?}");

    let spans: Vec<Seen> = capture.spans.lock().unwrap().values().cloned().collect();
    let events = capture.events.lock().unwrap().clone();

    // One run span, with its figures.
    let runs: Vec<&Seen> = spans
        .iter()
        .filter(|s| s.name == "keycrm_sync.run")
        .collect();
    assert_eq!(runs.len(), 1, "{spans:?}");
    for field in ["records", "requests", "outcome"] {
        assert!(runs[0].fields.contains_key(field), "run {field}: {runs:?}");
    }
    // One span per pass, with kind, records, requests and outcome.
    let passes: Vec<&Seen> = spans
        .iter()
        .filter(|s| s.name == "keycrm_sync.pass")
        .collect();
    let kinds: std::collections::BTreeSet<&str> = passes
        .iter()
        .filter_map(|s| s.fields.get("kind").map(String::as_str))
        .collect();
    for kind in ["order", "buyer", "product", "offer", "stock"] {
        assert!(kinds.contains(kind), "no {kind} pass: {passes:?}");
    }
    for pass in &passes {
        for field in ["records", "requests", "outcome"] {
            assert!(pass.fields.contains_key(field), "{field}: {pass:?}");
        }
    }
    let orders = passes
        .iter()
        .find(|s| s.fields.get("kind").map(String::as_str) == Some("order"))
        .unwrap();
    assert_eq!(orders.fields["records"], "15", "{orders:?}");
    // Debug events for each record decision.
    let decisions = events
        .iter()
        .filter(|e| e.level == Level::DEBUG && e.fields.contains_key("decision"))
        .count();
    assert!(
        decisions as u64 >= report.pulled - 1,
        "{decisions} decisions"
    );

    // Nothing personal at info, warn or error level.
    let loud = spans
        .iter()
        .chain(events.iter())
        .filter(|s| s.level <= Level::INFO);
    let mut checked = 0;
    for seen in loud {
        checked += 1;
        let text = seen.text();
        for p in &personal {
            assert!(!text.contains(p.as_str()), "{p:?} logged: {text}");
        }
    }
    assert!(checked > 5);

    // A run that fails on KeyCRM answers echoing customer data: the warnings name the status
    // and the fields; the messages themselves go to debug level only.
    let email = "olena.petrenko@example.com";
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/order/status"))
        .respond_with(
            wiremock::ResponseTemplate::new(400)
                .set_body_json(serde_json::json!({"message": format!("No statuses for {email}")})),
        )
        .mount(&server)
        .await;
    wiremock::Mock::given(wiremock::matchers::path("/buyer"))
        .respond_with(
            wiremock::ResponseTemplate::new(422).set_body_json(serde_json::json!({
                "message": format!("The e-mail \"{email}\" is invalid."),
                "errors": {"filter.buyer_email": [format!("The e-mail {email} is invalid.")]},
            })),
        )
        .mount(&server)
        .await;
    wiremock::Mock::given(wiremock::matchers::path("/order"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"current_page": 1, "data": [], "last_page": 1})),
        )
        .mount(&server)
        .await;
    let config = SyncConfig {
        api_key: Secret::new("test"),
        ..SyncConfig::default()
    };
    let client = keycrm_api::Client::builder()
        .api_key("test")
        .base_url(server.uri())
        .requests_per_minute(0)
        .build()
        .unwrap();
    let (_host, engine) = engine_on(client, MemoryStore::new(), config);
    capture.events.lock().unwrap().clear();
    let stop = tokio_util::sync::CancellationToken::new();
    stop.cancel();
    engine.run(stop).await;
    let events = capture.events.lock().unwrap().clone();
    let warnings: Vec<String> = events
        .iter()
        .filter(|e| e.level == Level::WARN)
        .map(Seen::text)
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("buyer_email") && w.contains("422")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("order statuses")),
        "{warnings:?}"
    );
    for w in &warnings {
        assert!(!w.contains(email), "{w}");
    }
    assert!(
        events
            .iter()
            .any(|e| e.level == Level::DEBUG && e.text().contains(email)),
        "the details stay available at debug level"
    );
}
