//! The engine's vocabulary: entity kinds, ids, canonical records and their fields.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The kinds of records the engine keeps in agreement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// Orders, with lines, payments, shipping/tracking and status.
    Order,
    /// Buyers (the host's customers).
    Buyer,
    /// Products (catalogue items).
    Product,
    /// Offers (variants: SKU and price).
    Offer,
    /// Stock levels of an offer in one warehouse.
    Stock,
}

impl EntityKind {
    /// Every kind, in the order the engine syncs them (buyers and catalogue before orders).
    pub const ALL: [EntityKind; 5] = [
        EntityKind::Buyer,
        EntityKind::Product,
        EntityKind::Offer,
        EntityKind::Stock,
        EntityKind::Order,
    ];

    /// The stable name used in storage and events (`order`, `buyer`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Order => "order",
            EntityKind::Buyer => "buyer",
            EntityKind::Product => "product",
            EntityKind::Offer => "offer",
            EntityKind::Stock => "stock",
        }
    }

    /// Parses [`EntityKind::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        EntityKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record's flat canonical fields: dotted names (`status_id`, `shipping.tracking_code`,
/// `lines.SKU-1.quantity`) to JSON values. Flat maps make three-way merges per field simple.
pub type Fields = BTreeMap<String, serde_json::Value>;

/// One side's view of a record at a point in time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The record's canonical fields.
    pub fields: Fields,
    /// When this side last changed the record (UTC), if known.
    pub updated_at: Option<DateTime<Utc>>,
}

impl Snapshot {
    /// A snapshot of `fields` changed at `updated_at`.
    pub fn new(fields: Fields, updated_at: Option<DateTime<Utc>>) -> Self {
        Self { fields, updated_at }
    }

    /// The content hash of the fields (see [`content_hash`]).
    pub fn hash(&self) -> String {
        content_hash(&self.fields)
    }
}

/// A stable SHA-256 hex digest of canonical fields (keys sorted, values as compact JSON).
/// Equal hashes mean nothing changed, so nothing is sent.
pub fn content_hash(fields: &Fields) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in fields {
        hasher.update(key.as_bytes());
        hasher.update([0u8]);
        hasher.update(serde_json::to_vec(value).expect("JSON values serialise"));
        hasher.update([0xffu8]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Bounds on foreign text (KeyCRM's messages, decoder and builder messages) before it flows
/// into errors, events, logs and the audit log.
pub(crate) mod redact {
    /// The most characters of a foreign message kept anywhere.
    pub(crate) const MAX_MESSAGE_CHARS: usize = 512;

    /// `text` cut to [`MAX_MESSAGE_CHARS`] characters (an ellipsis marks the cut), with
    /// control characters (line breaks included) made spaces.
    pub(crate) fn bounded(text: &str) -> String {
        let mut out = String::with_capacity(text.len().min(MAX_MESSAGE_CHARS + 4));
        for (n, c) in text.chars().enumerate() {
            if n == MAX_MESSAGE_CHARS {
                out.push('…');
                break;
            }
            out.push(if c.is_control() { ' ' } else { c });
        }
        out
    }

    /// A foreign message without the values it quotes (`"..."` and `` `...` `` become `…`),
    /// bounded by [`bounded`]: decoder and builder messages quote the offending value.
    pub(crate) fn message(text: &str) -> String {
        without_quotes(text, &['"', '`'])
    }

    /// [`message`] for text whose backticks name fields, not values (the engine's own errors
    /// around KeyCRM's text): only `"..."` becomes `…`.
    pub(crate) fn unquoted(text: &str) -> String {
        without_quotes(text, &['"'])
    }

    fn without_quotes(text: &str, quotes: &[char]) -> String {
        let mut out = String::with_capacity(text.len().min(4 * MAX_MESSAGE_CHARS));
        let mut quote: Option<char> = None;
        for c in text.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if quotes.contains(&c) => {
                    quote = Some(c);
                    out.push('…');
                }
                None => out.push(c),
            }
            if out.len() > 4 * MAX_MESSAGE_CHARS {
                break;
            }
        }
        bounded(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hash_is_stable_and_sensitive() {
        let mut a = Fields::new();
        a.insert("status_id".into(), json!(3));
        a.insert("note".into(), json!("x"));
        let mut b = Fields::new();
        b.insert("note".into(), json!("x"));
        b.insert("status_id".into(), json!(3));
        assert_eq!(content_hash(&a), content_hash(&b));
        b.insert("status_id".into(), json!(4));
        assert_ne!(content_hash(&a), content_hash(&b));
        assert_eq!(content_hash(&a).len(), 64);
    }

    #[test]
    fn foreign_text_is_bounded_and_loses_its_quoted_values() {
        let long = "x".repeat(10_000);
        let cut = redact::bounded(&long);
        assert_eq!(cut.chars().count(), redact::MAX_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(redact::bounded("a\nb"), "a b");
        assert_eq!(
            redact::message("invalid type: string \"+380501234567\", expected `u64`"),
            "invalid type: string …, expected …"
        );
        assert!(redact::message(&long).chars().count() <= redact::MAX_MESSAGE_CHARS + 1);
        assert_eq!(
            redact::unquoted("field `email`: \"a@b.c\" is taken"),
            "field `email`: … is taken"
        );
    }

    #[test]
    fn kinds_round_trip_their_names() {
        for k in EntityKind::ALL {
            assert_eq!(EntityKind::parse(k.as_str()), Some(k));
        }
    }
}
