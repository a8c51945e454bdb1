//! The column encodings both SQL backends share: timestamps as microseconds since the Unix
//! epoch, JSON as text, limits as `i64`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::StoreError;

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

/// A mapping's JSON column (`what` names it in the error; the value is never shown).
pub(crate) fn json_column<T: Serialize>(
    v: Option<&T>,
    what: &str,
) -> Result<Option<String>, StoreError> {
    v.map(serde_json::to_string)
        .transpose()
        .map_err(|_| StoreError::Backend(format!("{what} could not be encoded")))
}
