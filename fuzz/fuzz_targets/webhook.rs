//! The webhook parser on arbitrary bytes: it never panics, never recurses past its depth
//! limit, and whatever it accepts has a dedupe key and a KeyCRM form that parses again.
//!
//! ```sh
//! cd fuzz && cargo +nightly fuzz run webhook corpus/webhook -- -max_total_time=60
//! ```

#![no_main]

use keycrm_sync::webhook::{ParseLimits, WebhookEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = ParseLimits {
        max_bytes: 64 * 1024,
        max_depth: 32,
    };
    if let Ok(event) = WebhookEvent::parse_with(data, limits) {
        let key = event.dedupe();
        assert!(!key.key.is_empty());
        if let Some(stream) = &key.stream {
            assert!(key.key.starts_with(stream.as_str()));
        }
        let again = WebhookEvent::from_value(event.to_json());
        if let Ok(again) = again {
            assert_eq!(again.name(), event.name());
        }
        let _ = format!("{event:?}");
    }
});
