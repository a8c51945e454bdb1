//! Normalised values: building flat [`Fields`] from either side (`Out`) and reading them back
//! with errors that name the field (`Reader`, `Member`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use keycrm_api::types;
use keycrm_api::{Decimal, Timestamp};
use serde_json::Value;

use super::mapping::{MappingError, shape};
use crate::field::{FieldPath, Group as KeyedGroup};
use crate::model::{EntityKind, Fields};

// Normalisation

/// The canonical text of a decimal: normalised, no trailing zeros (`2.50` -> `2.5`,
/// `100.00` -> `100`, `-0` -> `0`).
pub fn decimal_text(value: Decimal) -> String {
    let d = value.value().normalize();
    if d.is_zero() {
        "0".to_string()
    } else {
        d.to_string()
    }
}

/// The canonical field value of a decimal: a JSON string of [`decimal_text`].
pub fn decimal_value(value: Decimal) -> Value {
    Value::String(decimal_text(value))
}

/// A phone as digits with a leading `+` (`+38 (067) 123-45-67` -> `+380671234567`). A
/// leading international `00` is read as `+`; no country code is guessed. `None` when the
/// text holds no digit.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let t = raw.trim();
    let mut digits: String = t.chars().filter(char::is_ascii_digit).collect();
    if !t.starts_with('+') && digits.starts_with("00") {
        digits.drain(..2);
    }
    if digits.is_empty() {
        None
    } else {
        Some(format!("+{digits}"))
    }
}

/// An e-mail address trimmed and in lower case; `None` when blank.
pub fn normalize_email(raw: &str) -> Option<String> {
    let t = raw.trim();
    (!t.is_empty()).then(|| t.to_lowercase())
}

pub(crate) fn clean(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|s| !s.is_empty())
}

/// Builds normalised fields.
#[derive(Default)]
pub(crate) struct Out(pub(crate) Fields);

impl Out {
    pub(crate) fn text(&mut self, key: impl Into<String>, value: Option<&str>) {
        if let Some(v) = clean(value) {
            self.0.insert(key.into(), Value::String(v.to_string()));
        }
    }

    /// A phone in E.164, national numbers read in `region`.
    pub(crate) fn phone(
        &mut self,
        key: impl Into<String>,
        value: Option<&str>,
        region: &crate::phone::PhoneRegion,
    ) {
        if let Some(v) = value.and_then(|p| region.normalize(p)) {
            self.0.insert(key.into(), Value::String(v));
        }
    }

    pub(crate) fn email(&mut self, key: impl Into<String>, value: Option<&str>) {
        if let Some(v) = value.and_then(normalize_email) {
            self.0.insert(key.into(), Value::String(v));
        }
    }

    pub(crate) fn id(&mut self, key: impl Into<String>, value: Option<i64>) {
        if let Some(v) = value {
            self.0.insert(key.into(), Value::from(v));
        }
    }

    pub(crate) fn dec(&mut self, key: impl Into<String>, value: Option<Decimal>) {
        if let Some(v) = value {
            self.0.insert(key.into(), decimal_value(v));
        }
    }

    pub(crate) fn time(&mut self, key: impl Into<String>, value: Option<Timestamp>) {
        if let Some(v) = value {
            self.0.insert(key.into(), Value::String(v.to_string()));
        }
    }

    /// `list.0`, `list.1`, ... for the distinct normalised values.
    pub(crate) fn list(&mut self, list: &'static str, values: impl IntoIterator<Item = String>) {
        let mut seen = BTreeSet::new();
        for v in values {
            if seen.insert(v.clone()) {
                let n = seen.len() - 1;
                self.0
                    .insert(FieldPath::item(list, n).into(), Value::String(v));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Reading fields

pub(crate) fn invalid(
    kind: EntityKind,
    field: &str,
    value: &Value,
    expected: &'static str,
) -> MappingError {
    MappingError::InvalidField {
        kind,
        field: field.to_string(),
        value: shape(value).to_string(),
        expected,
    }
}

pub(crate) fn missing(kind: EntityKind, field: &str) -> MappingError {
    MappingError::MissingField {
        kind,
        field: field.to_string(),
    }
}

pub(crate) fn body_error(
    body: &'static str,
) -> impl Fn(types::error::ConversionError) -> MappingError {
    move |e| MappingError::Body {
        body,
        reason: crate::model::redact::message(&e.to_string()),
    }
}

pub(crate) fn as_text(
    kind: EntityKind,
    field: &str,
    v: Option<&Value>,
) -> Result<Option<String>, MappingError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(clean(Some(s)).map(str::to_string)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(invalid(kind, field, other, "text")),
    }
}

pub(crate) fn as_i64(
    kind: EntityKind,
    field: &str,
    v: Option<&Value>,
) -> Result<Option<i64>, MappingError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| invalid(kind, field, &Value::Number(n.clone()), "a whole number")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| invalid(kind, field, &Value::String(s.clone()), "a whole number")),
        Some(other) => Err(invalid(kind, field, other, "a whole number")),
    }
}

pub(crate) fn as_dec(
    kind: EntityKind,
    field: &str,
    v: Option<&Value>,
) -> Result<Option<Decimal>, MappingError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse::<Decimal>()
            .map(Some)
            .map_err(|_| invalid(kind, field, &Value::String(s.clone()), "a decimal")),
        Some(n @ Value::Number(_)) => serde_json::from_value::<Decimal>(n.clone())
            .map(Some)
            .map_err(|_| invalid(kind, field, n, "a decimal")),
        Some(other) => Err(invalid(kind, field, other, "a decimal")),
    }
}

pub(crate) fn as_time(
    kind: EntityKind,
    field: &str,
    v: Option<&Value>,
) -> Result<Option<Timestamp>, MappingError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse::<Timestamp>()
            .map(Some)
            .map_err(|_| invalid(kind, field, &Value::String(s.clone()), "a UTC time")),
        Some(other) => Err(invalid(kind, field, other, "a UTC time")),
    }
}

/// Typed reads of one record's fields, with errors that name the field.
pub(crate) struct Reader<'a> {
    pub(crate) kind: EntityKind,
    fields: &'a Fields,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(kind: EntityKind, fields: &'a Fields) -> Self {
        Self { kind, fields }
    }

    fn get(&self, path: &FieldPath) -> (String, Option<&'a Value>) {
        let key = path.key().into_owned();
        let value = self.fields.get(&key);
        (key, value)
    }

    pub(crate) fn text(&self, path: &FieldPath) -> Result<Option<String>, MappingError> {
        let (key, value) = self.get(path);
        as_text(self.kind, &key, value)
    }

    /// [`Reader::text`], failing with [`MappingError::MissingField`] when absent.
    pub(crate) fn required_text(&self, path: &FieldPath) -> Result<String, MappingError> {
        self.text(path)?
            .ok_or_else(|| missing(self.kind, &path.key()))
    }

    pub(crate) fn id(&self, path: &FieldPath) -> Result<Option<i64>, MappingError> {
        let (key, value) = self.get(path);
        as_i64(self.kind, &key, value)
    }

    pub(crate) fn dec(&self, path: &FieldPath) -> Result<Option<Decimal>, MappingError> {
        let (key, value) = self.get(path);
        as_dec(self.kind, &key, value)
    }

    pub(crate) fn time(&self, path: &FieldPath) -> Result<Option<Timestamp>, MappingError> {
        let (key, value) = self.get(path);
        as_time(self.kind, &key, value)
    }

    /// Whether the field is present (even as `null`, which means "removed").
    pub(crate) fn has(&self, path: &FieldPath) -> bool {
        self.fields.contains_key(path.key().as_ref())
    }

    /// The values of `list.0`, `list.1`, ... in index order.
    pub(crate) fn list(&self, list: &str) -> Result<Vec<String>, MappingError> {
        let prefix = format!("{list}.");
        let mut items: Vec<(u64, String)> = Vec::new();
        let from = (Bound::Included(prefix.as_str()), Bound::Unbounded);
        for (k, v) in self.fields.range::<str, _>(from) {
            let Some(rest) = k.strip_prefix(&prefix) else {
                break;
            };
            let Ok(n) = rest.parse::<u64>() else { continue };
            if let Some(s) = as_text(self.kind, k, Some(v))? {
                items.push((n, s));
            }
        }
        items.sort();
        Ok(items.into_iter().map(|(_, s)| s).collect())
    }

    /// The members of `group`: member key -> field -> value, `null` values left out.
    pub(crate) fn groups(&self, group: KeyedGroup) -> Groups<'a> {
        groups(self.fields, group)
    }
}

pub(crate) type Groups<'a> = BTreeMap<&'a str, BTreeMap<&'a str, &'a Value>>;

/// The members of `group` in `fields` (see [`FieldPath::Member`]): member key -> field ->
/// value, `null` values left out.
pub(crate) fn groups(fields: &Fields, group: KeyedGroup) -> Groups<'_> {
    let prefix = format!("{}.", group.as_str());
    let mut out: Groups<'_> = BTreeMap::new();
    let from = (Bound::Included(prefix.as_str()), Bound::Unbounded);
    for (k, v) in fields.range::<str, _>(from) {
        if !k.starts_with(&prefix) {
            break;
        }
        // Borrowed from `k`: the member key and field are its middle and its last part.
        let Some((key, field)) = member_parts(k, group) else {
            continue;
        };
        if !v.is_null() {
            out.entry(key).or_default().insert(field, v);
        }
    }
    out
}

/// The member key and field of a flat key of `group`, borrowed from it (the parsing of
/// [`FieldPath::parse`], without copying).
pub(crate) fn member_parts(flat: &str, group: KeyedGroup) -> Option<(&str, &str)> {
    flat.strip_prefix(group.as_str())?
        .strip_prefix('.')?
        .rsplit_once('.')
}

/// A group member's fields, read with the member's full path in errors.
pub(crate) struct Member<'a> {
    pub(crate) kind: EntityKind,
    pub(crate) group: KeyedGroup,
    pub(crate) key: &'a str,
    pub(crate) fields: &'a BTreeMap<&'a str, &'a Value>,
}

impl Member<'_> {
    pub(crate) fn name(&self, field: &'static str) -> String {
        FieldPath::member(self.group, self.key, field).to_string()
    }

    pub(crate) fn text(&self, field: &'static str) -> Result<Option<String>, MappingError> {
        as_text(
            self.kind,
            &self.name(field),
            self.fields.get(field).copied(),
        )
    }

    pub(crate) fn id(&self, field: &'static str) -> Result<Option<i64>, MappingError> {
        as_i64(
            self.kind,
            &self.name(field),
            self.fields.get(field).copied(),
        )
    }

    pub(crate) fn dec(&self, field: &'static str) -> Result<Option<Decimal>, MappingError> {
        as_dec(
            self.kind,
            &self.name(field),
            self.fields.get(field).copied(),
        )
    }

    pub(crate) fn required<T>(
        &self,
        field: &'static str,
        value: Option<T>,
    ) -> Result<T, MappingError> {
        value.ok_or_else(|| missing(self.kind, &self.name(field)))
    }
}

pub(crate) fn chunks<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::with_capacity(items.len().div_ceil(size));
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        out.push(items.by_ref().take(size).collect());
    }
    out
}
