//! Reading request bodies the way Laravel's validator does: every problem is collected under
//! its field path (`orders.3.buyer.full_name`) with Laravel's English messages, and the
//! request is refused with 422 when there is any.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::http::ApiError;
use super::wire::{self, Time};

/// Collects validation errors while values are read from a body.
#[derive(Debug, Default)]
pub(crate) struct Check {
    errors: Vec<(String, String)>,
}

/// `prefix.key`, or `key` at the top level.
pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Laravel's display form of a field path: underscores become spaces.
fn label(path: &str) -> String {
    path.replace('_', " ")
}

/// Whether Laravel's `required` rule fails for this value.
fn blank(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

impl Check {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error for `path`.
    pub fn fail(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push((path.to_string(), message.into()));
    }

    pub fn required(&mut self, path: &str) {
        self.fail(path, format!("The {} field is required.", label(path)));
    }

    pub fn invalid(&mut self, path: &str) {
        self.fail(path, format!("The selected {} is invalid.", label(path)));
    }

    pub fn too_many(&mut self, path: &str, max: usize) {
        self.fail(
            path,
            format!(
                "The {} field must not have more than {max} items.",
                label(path)
            ),
        );
    }

    /// Whether no error was recorded yet.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok` when nothing failed, else the 422 answer.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(&self.errors))
        }
    }

    /// Whether `obj[key]` is present and not blank.
    pub fn present(obj: &Value, key: &str) -> bool {
        !blank(obj.get(key))
    }

    /// A string field; numbers are accepted and turned into text (PHP is loose here).
    pub fn str(&mut self, obj: &Value, prefix: &str, key: &str) -> Option<String> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => {
                let path = join(prefix, key);
                self.fail(
                    &path,
                    format!("The {} field must be a string.", label(&path)),
                );
                None
            }
        }
    }

    /// A required, non-empty string field.
    pub fn req_str(&mut self, obj: &Value, prefix: &str, key: &str) -> Option<String> {
        if blank(obj.get(key)) {
            self.required(&join(prefix, key));
            return None;
        }
        self.str(obj, prefix, key)
    }

    /// An integer field (numeric strings are accepted).
    pub fn int(&mut self, obj: &Value, prefix: &str, key: &str) -> Option<i64> {
        let value = obj.get(key)?;
        let parsed = match value {
            Value::Null => return None,
            Value::Number(n) => n.as_i64(),
            Value::String(s) if s.trim().is_empty() => return None,
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        if parsed.is_none() {
            let path = join(prefix, key);
            self.fail(
                &path,
                format!("The {} field must be an integer.", label(&path)),
            );
        }
        parsed
    }

    /// An integer field that must name an existing record.
    pub fn int_in(
        &mut self,
        obj: &Value,
        prefix: &str,
        key: &str,
        exists: impl Fn(i64) -> bool,
    ) -> Option<i64> {
        let id = self.int(obj, prefix, key)?;
        if exists(id) {
            Some(id)
        } else {
            self.invalid(&join(prefix, key));
            None
        }
    }

    /// A number field (JSON number or numeric string).
    pub fn dec(&mut self, obj: &Value, prefix: &str, key: &str) -> Option<Decimal> {
        let value = obj.get(key)?;
        if value.is_null() {
            return None;
        }
        let parsed = wire::parse_decimal(value);
        if parsed.is_none() {
            let path = join(prefix, key);
            self.fail(
                &path,
                format!("The {} field must be a number.", label(&path)),
            );
        }
        parsed
    }

    /// A required number field.
    pub fn req_dec(&mut self, obj: &Value, prefix: &str, key: &str) -> Option<Decimal> {
        if blank(obj.get(key)) {
            self.required(&join(prefix, key));
            return None;
        }
        self.dec(obj, prefix, key)
    }

    /// A number field that must not be negative.
    pub fn dec_min0(&mut self, obj: &Value, prefix: &str, key: &str) -> Option<Decimal> {
        let d = self.dec(obj, prefix, key)?;
        if d.is_sign_negative() && !d.is_zero() {
            let path = join(prefix, key);
            self.fail(
                &path,
                format!("The {} field must be at least 0.", label(&path)),
            );
            return None;
        }
        Some(d)
    }

    /// A boolean field (`true`/`false`, `0`/`1`, `"0"`/`"1"`).
    pub fn bool(&mut self, obj: &Value, prefix: &str, key: &str) -> Option<bool> {
        let parsed = match obj.get(key)? {
            Value::Null => return None,
            Value::Bool(b) => Some(*b),
            Value::Number(n) => match n.as_i64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            Value::String(s) => match s.as_str() {
                "0" | "false" => Some(false),
                "1" | "true" => Some(true),
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            let path = join(prefix, key);
            self.fail(
                &path,
                format!("The {} field must be true or false.", label(&path)),
            );
        }
        parsed
    }

    /// A date-time field in `YYYY-MM-DD HH:MM:SS` (ISO-8601 is accepted too).
    pub fn time(&mut self, obj: &Value, prefix: &str, key: &str) -> Option<Time> {
        let text = self.str(obj, prefix, key)?;
        let parsed = wire::parse_time(&text);
        if parsed.is_none() {
            let path = join(prefix, key);
            self.fail(
                &path,
                format!(
                    "The {} field must match the format Y-m-d H:i:s.",
                    label(&path)
                ),
            );
        }
        parsed
    }

    /// A date field in `YYYY-MM-DD`.
    pub fn date(&mut self, obj: &Value, prefix: &str, key: &str) -> Option<NaiveDate> {
        let text = self.str(obj, prefix, key)?;
        let parsed = wire::parse_date(&text);
        if parsed.is_none() {
            let path = join(prefix, key);
            self.fail(
                &path,
                format!("The {} field must match the format Y-m-d.", label(&path)),
            );
        }
        parsed
    }

    /// An object field.
    pub fn object<'v>(&mut self, obj: &'v Value, prefix: &str, key: &str) -> Option<&'v Value> {
        match obj.get(key)? {
            Value::Null => None,
            v @ Value::Object(_) => Some(v),
            _ => {
                let path = join(prefix, key);
                self.fail(
                    &path,
                    format!("The {} field must be an array.", label(&path)),
                );
                None
            }
        }
    }

    /// A list field, at most `max` long when a maximum is given.
    pub fn array<'v>(
        &mut self,
        obj: &'v Value,
        prefix: &str,
        key: &str,
        max: Option<usize>,
    ) -> Option<&'v Vec<Value>> {
        match obj.get(key)? {
            Value::Null => None,
            Value::Array(list) => {
                if let Some(max) = max
                    && list.len() > max
                {
                    self.too_many(&join(prefix, key), max);
                }
                Some(list)
            }
            _ => {
                let path = join(prefix, key);
                self.fail(
                    &path,
                    format!("The {} field must be an array.", label(&path)),
                );
                None
            }
        }
    }

    /// A required, non-empty list field.
    pub fn req_array<'v>(
        &mut self,
        obj: &'v Value,
        prefix: &str,
        key: &str,
        max: Option<usize>,
    ) -> Option<&'v Vec<Value>> {
        if blank(obj.get(key)) {
            self.required(&join(prefix, key));
            return None;
        }
        self.array(obj, prefix, key, max)
    }

    /// A list of strings.
    pub fn strings(&mut self, obj: &Value, prefix: &str, key: &str) -> Option<Vec<String>> {
        let list = self.array(obj, prefix, key, None)?;
        let mut out = Vec::new();
        for (i, item) in list.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                Value::Number(n) => out.push(n.to_string()),
                Value::Null => {}
                _ => {
                    let path = format!("{}.{i}", join(prefix, key));
                    self.fail(
                        &path,
                        format!("The {} field must be a string.", label(&path)),
                    );
                }
            }
        }
        Some(out)
    }

    /// A string field restricted to `allowed` values.
    pub fn one_of(
        &mut self,
        obj: &Value,
        prefix: &str,
        key: &str,
        allowed: &[&str],
    ) -> Option<String> {
        let value = self.str(obj, prefix, key)?;
        if allowed.contains(&value.as_str()) {
            Some(value)
        } else {
            self.invalid(&join(prefix, key));
            None
        }
    }

    /// `custom_fields: [{uuid, value}]`, each `uuid` checked with `known`.
    pub fn custom_fields(
        &mut self,
        obj: &Value,
        prefix: &str,
        known: impl Fn(&str) -> bool,
    ) -> Option<Vec<(String, Value)>> {
        let list = self.array(obj, prefix, "custom_fields", None)?;
        let base = join(prefix, "custom_fields");
        let mut out = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let p = format!("{base}.{i}");
            let Some(uuid) = self.req_str(item, &p, "uuid") else {
                continue;
            };
            if !known(&uuid) {
                self.invalid(&join(&p, "uuid"));
                continue;
            }
            out.push((uuid, item.get("value").cloned().unwrap_or(Value::Null)));
        }
        Some(out)
    }

    /// Copies the string fields `keys` of `obj` (when present) into a map.
    pub fn string_map(&mut self, obj: &Value, prefix: &str, keys: &[&str]) -> Map<String, Value> {
        let mut out = Map::new();
        for key in keys {
            if obj.get(*key).is_some() {
                let v = self.str(obj, prefix, key);
                out.insert((*key).to_string(), v.map_or(Value::Null, Value::String));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collects_laravel_messages_by_path() {
        let body = json!({"orders": [{"buyer": {}}], "limit": "x"});
        let mut c = Check::new();
        c.req_array(&body, "", "orders", Some(50)).unwrap();
        c.required("orders.0.source_id");
        c.int(&body, "", "limit");
        let err = c.finish().unwrap_err();
        assert_eq!(err.status, 422);
        assert_eq!(
            err.body["errors"]["orders.0.source_id"][0],
            "The orders.0.source id field is required."
        );
        assert_eq!(
            err.body["message"],
            "The orders.0.source id field is required. (and 1 more error)"
        );
    }
}
