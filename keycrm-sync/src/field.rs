//! [`FieldPath`]: the typed name of one canonical field.
//!
//! The planner compares records as flat [`Fields`] maps keyed by dotted
//! names (`status_id`, `shipping.city`, `lines.SKU-1.quantity`, `phone.0`); that stays, since
//! flat maps make three-way merges per field simple. Code that builds or reads those keys
//! goes through a `FieldPath` instead of writing or splitting the strings by hand: a path
//! renders to its flat key ([`FieldPath::key`], `Display`) and parses back from one
//! ([`FieldPath::parse`]).
//!
//! Three shapes exist:
//!
//! * a plain field, possibly nested under fixed names: `status_id`, `shipping.city`;
//! * a member of a keyed group: `<group>.<key>.<field>`, where the group is `lines` (keyed by
//!   SKU) or `payments` (keyed by reference or position). A key may contain dots
//!   (`lines.A.B.quantity` is line `A.B`): the field is the part after the last dot;
//! * an item of a list: `<list>.<n>` (`phone.0`, `email.1`).

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

use crate::model::Fields;

/// A keyed group of an order's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// Order lines, keyed by SKU (a line without one by its name, else `#<position>`).
    Lines,
    /// Payments, keyed by reference (unique, not all digits) or by 0-based position.
    Payments,
}

impl Group {
    /// Every group.
    pub const ALL: [Group; 2] = [Group::Lines, Group::Payments];

    /// The group's prefix in a flat key (`lines`, `payments`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Group::Lines => "lines",
            Group::Payments => "payments",
        }
    }
}

/// The name of one canonical field (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FieldPath {
    /// A plain field (`status_id`, `shipping.city`, `buyer.phone`).
    Plain(Cow<'static, str>),
    /// A member field of a keyed group (`lines.<sku>.quantity`, `payments.<key>.status`).
    Member {
        /// The group.
        group: Group,
        /// The member's key (a SKU, a payment reference or position); may contain dots.
        key: String,
        /// The member's field (`quantity`, `price`, `name`, `amount`, `status`, ...).
        field: Cow<'static, str>,
    },
    /// An item of a list (`phone.0`, `email.1`).
    Item {
        /// The list's name.
        list: Cow<'static, str>,
        /// The item's 0-based position.
        index: usize,
    },
}

impl FieldPath {
    /// A plain field known at compile time (`status_id`, `shipping.city`).
    pub const fn plain(name: &'static str) -> Self {
        FieldPath::Plain(Cow::Borrowed(name))
    }

    /// A member field of a keyed group.
    pub fn member(group: Group, key: impl Into<String>, field: &'static str) -> Self {
        FieldPath::Member {
            group,
            key: key.into(),
            field: Cow::Borrowed(field),
        }
    }

    /// A field of the order line with this SKU (`lines.<sku>.<field>`).
    pub fn line(sku: impl Into<String>, field: &'static str) -> Self {
        Self::member(Group::Lines, sku, field)
    }

    /// The quantity of the order line with this SKU (`lines.<sku>.quantity`).
    pub fn line_quantity(sku: impl Into<String>) -> Self {
        Self::line(sku, LINE_QUANTITY)
    }

    /// The unit price of the order line with this SKU (`lines.<sku>.price`).
    pub fn line_price(sku: impl Into<String>) -> Self {
        Self::line(sku, LINE_PRICE)
    }

    /// The name of the order line with this SKU (`lines.<sku>.name`).
    pub fn line_name(sku: impl Into<String>) -> Self {
        Self::line(sku, LINE_NAME)
    }

    /// A field of the payment with this key (`payments.<key>.<field>`).
    pub fn payment(key: impl Into<String>, field: &'static str) -> Self {
        Self::member(Group::Payments, key, field)
    }

    /// An item of a list (`phone.0`).
    pub const fn item(list: &'static str, index: usize) -> Self {
        FieldPath::Item {
            list: Cow::Borrowed(list),
            index,
        }
    }

    /// Parses a flat key: `<group>.<key>.<field>` for the groups (the field is the part after
    /// the last dot), `<list>.<n>` for a name followed by a number, a plain field otherwise.
    pub fn parse(flat: &str) -> Self {
        for group in Group::ALL {
            if let Some((key, field)) = flat
                .strip_prefix(group.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|rest| rest.rsplit_once('.'))
            {
                return FieldPath::Member {
                    group,
                    key: key.to_string(),
                    field: Cow::Owned(field.to_string()),
                };
            }
        }
        if let Some((list, n)) = flat.rsplit_once('.')
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && let Ok(index) = n.parse()
        {
            return FieldPath::Item {
                list: Cow::Owned(list.to_string()),
                index,
            };
        }
        FieldPath::Plain(Cow::Owned(flat.to_string()))
    }

    /// The flat key this path is stored under in [`Fields`].
    pub fn key(&self) -> Cow<'_, str> {
        match self {
            FieldPath::Plain(name) => Cow::Borrowed(name),
            other => Cow::Owned(other.to_string()),
        }
    }

    /// The value of this field in `fields`, if present.
    pub fn get<'f>(&self, fields: &'f Fields) -> Option<&'f Value> {
        fields.get(self.key().as_ref())
    }

    /// The group, key and field of a member path.
    pub fn as_member(&self) -> Option<(Group, &str, &str)> {
        match self {
            FieldPath::Member { group, key, field } => Some((*group, key, field)),
            _ => None,
        }
    }

    /// The key and field of a member of `group`.
    pub fn member_of(&self, group: Group) -> Option<(&str, &str)> {
        self.as_member()
            .filter(|(g, _, _)| *g == group)
            .map(|(_, key, field)| (key, field))
    }

    /// Whether the path is `prefix` itself or lies below it at a dot boundary (`shipping`
    /// holds `shipping.city`, not `shipping_method`).
    pub fn is_under(&self, prefix: &str) -> bool {
        self.key() == prefix || self.is_below(prefix)
    }

    /// Whether the path lies strictly below `prefix` at a dot boundary (`buyer.phone` is
    /// below `buyer`; `buyer` itself is not).
    pub fn is_below(&self, prefix: &str) -> bool {
        self.key()
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
    }
}

/// The flat key itself, then each of its dotted prefixes, longest first (`shipping.city`,
/// `shipping`): the keys a per-field setting of a dotted name may be given under.
pub fn prefixes(flat: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(flat);
    std::iter::from_fn(move || {
        let current = next?;
        next = current.rfind('.').map(|i| &current[..i]);
        Some(current)
    })
}

/// An order line's quantity field.
pub const LINE_QUANTITY: &str = "quantity";
/// An order line's unit price field.
pub const LINE_PRICE: &str = "price";
/// An order line's name field.
pub const LINE_NAME: &str = "name";

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldPath::Plain(name) => f.write_str(name),
            FieldPath::Member { group, key, field } => {
                write!(f, "{}.{key}.{field}", group.as_str())
            }
            FieldPath::Item { list, index } => write!(f, "{list}.{index}"),
        }
    }
}

impl From<FieldPath> for String {
    fn from(path: FieldPath) -> String {
        path.key().into_owned()
    }
}

impl From<&FieldPath> for String {
    fn from(path: &FieldPath) -> String {
        path.key().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_and_parse_back() {
        let cases = [
            (FieldPath::plain("status_id"), "status_id"),
            (FieldPath::plain("shipping.city"), "shipping.city"),
            (FieldPath::line_quantity("SKU-1"), "lines.SKU-1.quantity"),
            (FieldPath::line_price("A.B"), "lines.A.B.price"),
            (FieldPath::payment("0", "status"), "payments.0.status"),
            (
                FieldPath::payment("ref.7", "amount"),
                "payments.ref.7.amount",
            ),
            (FieldPath::item("phone", 1), "phone.1"),
        ];
        for (path, flat) in cases {
            assert_eq!(path.key(), flat);
            assert_eq!(path.to_string(), flat);
            assert_eq!(FieldPath::parse(flat).key(), flat);
            assert_eq!(FieldPath::parse(flat).as_member(), path.as_member());
        }
    }

    #[test]
    fn members_split_at_the_last_dot() {
        let path = FieldPath::parse("lines.A.B.quantity");
        assert_eq!(path.member_of(Group::Lines), Some(("A.B", "quantity")));
        assert_eq!(path.member_of(Group::Payments), None);
        // A group name without a member and field is a plain field.
        assert_eq!(
            FieldPath::parse("lines.X"),
            FieldPath::Plain(Cow::Borrowed("lines.X"))
        );
        assert_eq!(FieldPath::parse("linesX.a.b").as_member(), None);
    }

    #[test]
    fn under_a_prefix_only_at_dot_boundaries() {
        let city = FieldPath::plain("shipping.city");
        assert!(city.is_under("shipping"));
        assert!(city.is_under("shipping.city"));
        assert!(!FieldPath::plain("shipping_method").is_under("shipping"));
        assert!(FieldPath::line_quantity("S").is_under("lines"));
        assert!(FieldPath::plain("buyer.phone").is_below("buyer"));
        assert!(!FieldPath::plain("buyer").is_below("buyer"));
    }

    #[test]
    fn prefixes_go_from_longest_to_shortest() {
        assert_eq!(
            prefixes("lines.A.quantity").collect::<Vec<_>>(),
            ["lines.A.quantity", "lines.A", "lines"]
        );
        assert_eq!(prefixes("note").collect::<Vec<_>>(), ["note"]);
    }
}
