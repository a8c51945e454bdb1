//! The column encodings both SQL backends share: timestamps as microseconds since the Unix
//! epoch, JSON as text, limits as `i64`.

use chrono::{DateTime, Utc};
use serde_json::Value;

pub(crate) fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn ts_opt(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ts)
}

pub(crate) fn json(v: &Value) -> String {
    v.to_string()
}

pub(crate) fn json_opt(v: Option<&Value>) -> Option<String> {
    v.map(json)
}

pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
