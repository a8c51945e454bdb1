//! The request context handlers see, their answers, and the Laravel conventions shared by
//! every endpoint: pages, `include`, `sort`, `filter[...]` and error bodies.

use std::cmp::Ordering;
use std::fmt::Display;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::wire::{self, Time};

/// A successful answer of a handler.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    /// `None` for an empty body (204).
    pub body: Option<Value>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
        }
    }

    pub fn ok(body: Value) -> Self {
        Self::json(200, body)
    }

    pub fn created(body: Value) -> Self {
        Self::json(201, body)
    }

    pub fn accepted(body: Value) -> Self {
        Self::json(202, body)
    }

    /// `{"status": true}` with the given code.
    pub fn status_true(status: u16) -> Self {
        Self::json(status, json!({ "status": true }))
    }

    pub fn no_content() -> Self {
        Self {
            status: 204,
            body: None,
        }
    }
}

/// An error answer of a handler, with the body Laravel would send.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: u16,
    pub body: Value,
}

impl ApiError {
    /// Any status with `{"message": ...}`.
    pub fn message(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "message": message.into() }),
        }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::message(400, message)
    }

    /// 404 for a record that does not exist, in Laravel's `findOrFail` wording.
    pub fn not_found(model: &str, id: impl Display) -> Self {
        Self::message(
            404,
            format!("No query results for model [App\\Models\\{model}] {id}"),
        )
    }

    /// 422 with Laravel's validation body: the first message (plus a count of the others)
    /// and every field's messages.
    pub fn validation(errors: &[(String, String)]) -> Self {
        let mut map = serde_json::Map::new();
        for (field, message) in errors {
            let entry = map
                .entry(field.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = entry {
                list.push(Value::String(message.clone()));
            }
        }
        let first = errors
            .first()
            .map_or("The given data was invalid.", |(_, m)| m.as_str());
        let message = match errors.len() {
            0 | 1 => first.to_string(),
            2 => format!("{first} (and 1 more error)"),
            n => format!("{first} (and {} more errors)", n - 1),
        };
        Self {
            status: 422,
            body: json!({ "message": message, "errors": map }),
        }
    }
}

/// What a handler returns.
pub(crate) type Handled = Result<Reply, ApiError>;

/// One request as the handlers see it.
pub(crate) struct Ctx<'a> {
    /// The path parameters in order (`/order/{orderId}/payment/{paymentId}`).
    pub params: Vec<&'a str>,
    /// Decoded query pairs in the order they were sent.
    pub query: Vec<(String, String)>,
    pub body: &'a [u8],
    /// The request's `Content-Type`, if any.
    pub content_type: Option<&'a str>,
    /// The request URL without its query string (`http://127.0.0.1:4321/v1/order`).
    pub url: String,
    /// The simulator's address (`http://127.0.0.1:4321`), for file URLs.
    pub origin: &'a str,
}

impl Ctx<'_> {
    /// Path parameter `i` as an id; anything else is answered like an unknown record.
    pub fn id(&self, i: usize, model: &str) -> Result<i64, ApiError> {
        let raw = self.params.get(i).copied().unwrap_or_default();
        raw.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| ApiError::not_found(model, raw))
    }

    /// The last value of a query parameter (PHP keeps the last of repeated keys).
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `filter[key]`, trimmed; `None` when absent or empty.
    pub fn filter(&self, key: &str) -> Option<&str> {
        self.query(&format!("filter[{key}]"))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    /// `filter[key]` as a comma-separated list.
    pub fn filter_list(&self, key: &str) -> Option<Vec<String>> {
        self.filter(key).map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
    }

    /// `filter[key]` as a list of ids; values that are not ids match nothing.
    pub fn filter_ids(&self, key: &str) -> Option<Vec<i64>> {
        self.filter_list(key)
            .map(|list| list.iter().filter_map(|v| v.parse().ok()).collect())
    }

    /// `filter[key]` as a boolean (`true`/`1`, `false`/`0`).
    pub fn filter_bool(&self, key: &str) -> Option<bool> {
        match self.filter(key)?.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        }
    }

    /// `filter[key]` as a `"from, to"` range. Each bound is `YYYY-MM-DD HH:MM:SS` or
    /// `YYYY-MM-DD`; a bare date as the upper bound means the end of that day.
    pub fn filter_range(&self, key: &str) -> Result<Option<Range>, ApiError> {
        let Some(raw) = self.filter(key) else {
            return Ok(None);
        };
        let invalid = || {
            ApiError::validation(&[(
                format!("filter.{key}"),
                format!(
                    "The filter.{} must be two dates `from, to` (YYYY-MM-DD or YYYY-MM-DD HH:MM:SS).",
                    key.replace('_', " ")
                ),
            )])
        };
        let (from, to) = raw.split_once(',').ok_or_else(invalid)?;
        let from = wire::parse_time(from).ok_or_else(invalid)?;
        let to_text = to.trim();
        let mut to = wire::parse_time(to_text).ok_or_else(invalid)?;
        if wire::parse_date(to_text).is_some() {
            to += chrono::Duration::days(1) - chrono::Duration::seconds(1);
        }
        Ok(Some(Range { from, to }))
    }

    /// The relations asked for with `include`, checked against `allowed` the way
    /// spatie/laravel-query-builder does (400 naming the allowed ones).
    pub fn includes(&self, allowed: &[&str]) -> Result<Includes, ApiError> {
        let requested: Vec<String> = self
            .query("include")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let unknown: Vec<&str> = requested
            .iter()
            .map(String::as_str)
            .filter(|r| !allowed.contains(r))
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Requested include(s) `{}` are not allowed. Allowed include(s) are `{}`.",
                unknown.join(", "),
                allowed.join(", ")
            )));
        }
        Ok(Includes(requested))
    }

    /// The `sort` parameter (`id`, `-updated_at`, several comma-separated), checked against
    /// `allowed`; `id` ascending when absent.
    pub fn sorts(&self, allowed: &[&str]) -> Result<Vec<(String, bool)>, ApiError> {
        let raw = self.query("sort").map(str::trim).unwrap_or_default();
        if raw.is_empty() {
            return Ok(vec![("id".to_string(), false)]);
        }
        let mut sorts = Vec::new();
        let mut unknown = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, desc) = match part.strip_prefix('-') {
                Some(f) => (f, true),
                None => (part, false),
            };
            if allowed.contains(&field) {
                sorts.push((field.to_string(), desc));
            } else {
                unknown.push(field);
            }
        }
        if !unknown.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Requested sort(s) `{}` is not allowed. Allowed sort(s) are `{}`.",
                unknown.join(", "),
                allowed.join(", ")
            )));
        }
        Ok(sorts)
    }

    /// `limit` (1..=50, default 15) and `page` (from 1, default 1); other values are
    /// refused with 422.
    pub fn paging(&self) -> Result<(usize, usize), ApiError> {
        let mut errors = Vec::new();
        let limit = match self.query("limit").map(str::trim) {
            None | Some("") => 15,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (1..=50).contains(&n) => n as usize,
                Ok(_) => {
                    errors.push((
                        "limit".to_string(),
                        "The limit field must be between 1 and 50.".to_string(),
                    ));
                    15
                }
                Err(_) => {
                    errors.push((
                        "limit".to_string(),
                        "The limit field must be an integer.".to_string(),
                    ));
                    15
                }
            },
        };
        let page = match self.query("page").map(str::trim) {
            None | Some("") => 1,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 1 => n as usize,
                Ok(_) => {
                    errors.push((
                        "page".to_string(),
                        "The page field must be at least 1.".to_string(),
                    ));
                    1
                }
                Err(_) => {
                    errors.push((
                        "page".to_string(),
                        "The page field must be an integer.".to_string(),
                    ));
                    1
                }
            },
        };
        if errors.is_empty() {
            Ok((limit, page))
        } else {
            Err(ApiError::validation(&errors))
        }
    }

    /// The JSON body; anything that is not a JSON object reads as `{}` (Laravel then
    /// reports the missing fields).
    pub fn json(&self) -> Value {
        match serde_json::from_slice::<Value>(self.body) {
            Ok(v @ Value::Object(_)) => v,
            _ => Value::Object(serde_json::Map::new()),
        }
    }

    /// The URL of page `page` of this list: the original query with `page` set, encoded the
    /// way Laravel's `Arr::query` does (RFC 3986).
    fn page_url(&self, page: usize) -> String {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.query {
            if let Some(existing) = pairs.iter_mut().find(|(key, _)| key == k) {
                existing.1 = v.clone();
            } else {
                pairs.push((k.clone(), v.clone()));
            }
        }
        match pairs.iter_mut().find(|(k, _)| k == "page") {
            Some(p) => p.1 = page.to_string(),
            None => pairs.push(("page".to_string(), page.to_string())),
        }
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        format!("{}?{}", self.url, query.join("&"))
    }
}

/// An inclusive time range from a `*_between` filter. Record times are compared at the
/// second, as the service's MySQL columns store them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Range {
    pub from: Time,
    pub to: Time,
}

impl Range {
    pub fn contains(&self, t: Time) -> bool {
        use chrono::SubsecRound;
        let t = t.trunc_subsecs(0);
        self.from <= t && t <= self.to
    }

    pub fn contains_opt(&self, t: Option<Time>) -> bool {
        t.is_some_and(|t| self.contains(t))
    }
}

/// The relations a request asked for.
#[derive(Debug, Default)]
pub(crate) struct Includes(Vec<String>);

impl Includes {
    /// Every relation of `names`.
    pub fn all(names: &[&str]) -> Self {
        Self(names.iter().map(|n| (*n).to_string()).collect())
    }

    /// Whether `name` (or, for `custom_fields`, its camel-case alias) was asked for.
    pub fn has(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|i| i == name || (name == "custom_fields" && i == "customFields"))
    }

    /// Whether `name` or any nested include below it (`name.x`) was asked for.
    pub fn has_any(&self, name: &str) -> bool {
        self.has(name)
            || self.0.iter().any(|i| {
                i.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
    }
}

/// A comparable value of a sortable field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SortKey {
    Null,
    Int(i64),
    Dec(Decimal),
    Time(Time),
    Text(String),
}

impl From<i64> for SortKey {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<Time> for SortKey {
    fn from(v: Time) -> Self {
        Self::Time(v)
    }
}

impl From<Option<Time>> for SortKey {
    fn from(v: Option<Time>) -> Self {
        v.map_or(Self::Null, Self::Time)
    }
}

/// Sorts `items` by the requested fields (stable, so equal keys keep id order).
pub(crate) fn sort_items<T>(
    items: &mut [&T],
    sorts: &[(String, bool)],
    key: impl Fn(&T, &str) -> SortKey,
) {
    items.sort_by(|a, b| {
        for (field, desc) in sorts {
            let ord = key(a, field).cmp(&key(b, field));
            let ord = if *desc { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
}

/// A Laravel length-aware page of `items` (already filtered and sorted), rendering only the
/// items on the requested page.
pub(crate) fn page<T>(ctx: &Ctx<'_>, items: &[T], mut render: impl FnMut(&T) -> Value) -> Handled {
    let (limit, page) = ctx.paging()?;
    let total = items.len();
    let last_page = total.div_ceil(limit).max(1);
    let start = (page - 1).saturating_mul(limit).min(total);
    let end = (start + limit).min(total);
    let data: Vec<Value> = items[start..end].iter().map(&mut render).collect();
    let (from, to) = if data.is_empty() {
        (Value::Null, Value::Null)
    } else {
        (Value::from(start + 1), Value::from(end))
    };
    let next = if page < last_page {
        Value::String(ctx.page_url(page + 1))
    } else {
        Value::Null
    };
    let prev = if page > 1 {
        Value::String(ctx.page_url(page - 1))
    } else {
        Value::Null
    };
    Ok(Reply::ok(json!({
        "current_page": page,
        "data": data,
        "first_page_url": ctx.page_url(1),
        "from": from,
        "last_page": last_page,
        "last_page_url": ctx.page_url(last_page),
        "next_page_url": next,
        "path": ctx.url,
        "per_page": limit,
        "prev_page_url": prev,
        "to": to,
        "total": total,
    })))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(query: &[(&str, &str)]) -> Ctx<'static> {
        Ctx {
            params: Vec::new(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: b"",
            content_type: None,
            url: "http://127.0.0.1:1/v1/order".into(),
            origin: "http://127.0.0.1:1",
        }
    }

    #[test]
    fn page_urls_keep_the_query_and_set_the_page() {
        let c = ctx(&[("filter[status_id]", "1,2"), ("limit", "2")]);
        let items: Vec<i64> = (1..=5).collect();
        let body = page(&c, &items, |i| json!(i)).unwrap().body.unwrap();
        assert_eq!(body["last_page"], 3);
        assert_eq!(body["from"], 1);
        assert_eq!(body["to"], 2);
        assert_eq!(
            body["next_page_url"],
            "http://127.0.0.1:1/v1/order?filter%5Bstatus_id%5D=1%2C2&limit=2&page=2"
        );
        assert_eq!(body["prev_page_url"], Value::Null);
    }

    #[test]
    fn laravel_validation_message_counts_the_rest() {
        let e = ApiError::validation(&[
            ("a".into(), "A.".into()),
            ("b".into(), "B.".into()),
            ("b".into(), "B2.".into()),
        ]);
        assert_eq!(e.body["message"], "A. (and 2 more errors)");
        assert_eq!(e.body["errors"]["b"], json!(["B.", "B2."]));
    }
}
