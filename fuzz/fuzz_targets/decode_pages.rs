//! Decodes arbitrary bytes as every kind of KeyCRM list page, the way the client reads a
//! response body (`keycrm_api::decode`), and checks three properties:
//!
//! 1. nothing panics (no slicing, overflow or recursion failure on hostile input);
//! 2. a page that decodes serialises, and what it serialises decodes again (what the SDK
//!    writes back, for example the extras it keeps, is always readable);
//! 3. a decode error never shows a string value of the input (customer data): only the
//!    JSON path and the kind of problem.
#![no_main]

use keycrm_api::{Page, types};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let values = string_values(data);
    check::<Page<types::Order>>(data, &values);
    check::<Page<types::Buyer>>(data, &values);
    check::<Page<types::Product>>(data, &values);
    check::<Page<types::Offer>>(data, &values);
    check::<Page<types::OfferStock>>(data, &values);
    check::<Page<types::Company>>(data, &values);
    check::<Page<types::PipelineCard>>(data, &values);
    check::<Page<types::Call>>(data, &values);
    check::<types::Order>(data, &values);
    check::<types::PipelineCardGetResponse>(data, &values);
});

fn check<T: DeserializeOwned + Serialize>(data: &[u8], values: &[String]) {
    match keycrm_api::decode::<T>(data) {
        Ok(decoded) => {
            let written = serde_json::to_vec(&decoded).expect("a decoded value serialises");
            if let Err(e) = keycrm_api::decode::<T>(&written) {
                panic!("what was written does not read back: {e}");
            }
        }
        Err(e) => {
            let shown = format!("{e} {e:?}");
            for value in values {
                assert!(
                    !shown.contains(value.as_str()),
                    "a value of the input is in the error: {shown}"
                );
            }
        }
    }
}

/// String values of the input that look like data (8+ characters with a letter and a digit)
/// and are not also used as a key (keys may appear in the JSON path).
fn string_values(data: &[u8]) -> Vec<String> {
    let Ok(root) = serde_json::from_slice::<Value>(data) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut stack = vec![&root];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => values.push(s.clone()),
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                keys.extend(map.keys().cloned());
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    values.retain(|s| {
        s.chars().count() >= 8
            && s.chars().any(|c| c.is_alphabetic())
            && s.chars().any(|c| c.is_ascii_digit())
            && !keys.iter().any(|k| k.contains(s.as_str()))
    });
    values
}
