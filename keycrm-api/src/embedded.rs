//! Hand-written types for embedded values whose JSON shape varies between accounts.

use serde::{Deserialize, Deserializer, Serialize};

use crate::types;

/// The payment method embedded in a payment (`payments[].payment_method` of an order with
/// `include=payments`).
///
/// The vendor documents the method object (`{"id": 2, "name": "Card", "alias": "card"}`); live
/// accounts send the method's name as a plain string (`"Apple Pay"`). Both read into this one
/// record: a string becomes `name`, an integer becomes `id`, an object keeps every field
/// (unknown ones in `extra`). Serialises as an object.
///
/// ```
/// use keycrm_api::PaymentMethodRef;
/// let a: PaymentMethodRef = serde_json::from_str(r#""Apple Pay""#).unwrap();
/// let b: PaymentMethodRef =
///     serde_json::from_str(r#"{"id": 4, "name": "Apple Pay", "alias": "apple_pay"}"#).unwrap();
/// assert_eq!(a.name, b.name);
/// assert_eq!((a.id, b.id), (None, Some(4)));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PaymentMethodRef {
    /// The method's id, when the service sent the object form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// The method's display name (`Apple Pay`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The method's system name (`apple_pay`), when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Whether the method is in use, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
    /// Every other field of the object form.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl From<types::PaymentMethod> for PaymentMethodRef {
    fn from(m: types::PaymentMethod) -> Self {
        Self {
            id: m.id,
            name: m.name,
            alias: m.alias,
            is_active: m.is_active,
            extra: m.extra,
        }
    }
}

impl<'de> Deserialize<'de> for PaymentMethodRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a payment method name, id or object")]
        enum Wire {
            Name(String),
            Id(i64),
            Record(types::PaymentMethod),
        }
        Ok(match Wire::deserialize(deserializer)? {
            Wire::Name(name) => Self {
                name: Some(name),
                ..Self::default()
            },
            Wire::Id(id) => Self {
                id: Some(id),
                ..Self::default()
            },
            Wire::Record(record) => record.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_keeps_what_it_carries() {
        let name: PaymentMethodRef = serde_json::from_str(r#""Готівка""#).unwrap();
        assert_eq!(name.name.as_deref(), Some("Готівка"));
        assert_eq!(name.id, None);
        let id: PaymentMethodRef = serde_json::from_str("3").unwrap();
        assert_eq!(id.id, Some(3));
        let full: PaymentMethodRef = serde_json::from_str(
            r#"{"id": 2, "name": "Card", "alias": "card", "is_active": 1, "position": 4}"#,
        )
        .unwrap();
        assert_eq!(
            (
                full.id,
                full.name.as_deref(),
                full.alias.as_deref(),
                full.is_active
            ),
            (Some(2), Some("Card"), Some("card"), Some(true))
        );
        assert_eq!(full.extra.get("position"), Some(&serde_json::json!(4)));
        let back = serde_json::to_value(&full).unwrap();
        assert_eq!(back["position"], 4);
        assert_eq!(back["alias"], "card");
        assert!(serde_json::from_str::<PaymentMethodRef>("[1]").is_err());
    }
}
