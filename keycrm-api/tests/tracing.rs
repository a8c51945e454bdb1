//! Tracing: one span per request with its facts and no secrets. A binary of its own, since
//! tracing caches per-callsite interest process-wide and parallel tests would race on it.

use std::sync::Arc;

use keycrm_api::Client;
use keycrm_api::clock::VirtualClock;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-test-4c1d3e5f-very-secret";

fn client(server: &MockServer, clock: &Arc<VirtualClock>) -> Client {
    Client::builder()
        .api_key(KEY)
        .base_url(server.uri())
        .clock(clock.clone())
        .correlation_ids(true)
        .build()
        .expect("valid client")
}

fn order(id: i64, uuid: &str) -> serde_json::Value {
    json!({"id": id, "source_id": 1, "source_uuid": uuid})
}

mod tracing_capture {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    /// Records every span's name and fields as text.
    #[derive(Clone, Default)]
    pub struct Capture(pub Arc<Mutex<Vec<String>>>);

    struct Text<'a>(&'a mut String);

    impl Visit for Text<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!(" {}={:?}", field.name(), value));
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let mut text = span.metadata().name().to_string();
            span.record(&mut Text(&mut text));
            let mut all = self.0.lock().unwrap();
            all.push(text);
            Id::from_u64(all.len() as u64)
        }
        fn record(&self, id: &Id, values: &Record<'_>) {
            let mut all = self.0.lock().unwrap();
            let entry = &mut all[id.into_u64() as usize - 1];
            values.record(&mut Text(entry));
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut text = String::from("event");
            event.record(&mut Text(&mut text));
            self.0.lock().unwrap().push(text);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

#[tokio::test]
async fn one_span_per_request_with_its_facts_and_no_secrets() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/order/77"))
        .respond_with(ResponseTemplate::new(200).set_body_json(order(77, "WMS-77")))
        .mount(&server)
        .await;
    let capture = tracing_capture::Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let clock = Arc::new(VirtualClock::new());
    client(&server, &clock)
        .order_get()
        .order_id(77)
        .send()
        .await
        .unwrap();
    let spans: Vec<String> = capture
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.starts_with("keycrm.request"))
        .cloned()
        .collect();
    assert_eq!(spans.len(), 1, "{spans:?}");
    let span = &spans[0];
    for expected in [
        "operation=\"order_get\"",
        "method=GET",
        "path=/order/{id}",
        "attempt=1",
        "status=200",
        "elapsed_ms=",
        "correlation_id=\"",
    ] {
        assert!(span.contains(expected), "{expected} missing in {span}");
    }
    let everything = capture.0.lock().unwrap().join("\n");
    assert!(
        !everything.contains(KEY) && !everything.contains("WMS-77"),
        "{everything}"
    );
}
