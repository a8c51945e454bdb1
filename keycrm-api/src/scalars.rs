//! KeyCRM's scalar formats: UTC timestamps, calendar dates and decimal amounts.
//!
//! The generator maps the description's `Timestamp`, `Date` and `Decimal` schemas onto these
//! types, so every generated model reads what the live service actually sends.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The format KeyCRM accepts for date-times it is sent: `YYYY-MM-DD HH:MM:SS` (UTC).
const WIRE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// An error parsing a [`Timestamp`], [`Date`] or [`Decimal`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid {kind}: expected {expected}")]
pub struct ParseError {
    kind: &'static str,
    expected: &'static str,
    input: String,
}

impl ParseError {
    fn new(kind: &'static str, expected: &'static str, input: &str) -> Self {
        // Keep the message short even for a large bogus input.
        let input: String = input.chars().take(64).collect();
        Self {
            kind,
            expected,
            input,
        }
    }
}

/// A point in time in UTC, as KeyCRM reports it.
///
/// Parses `YYYY-MM-DD HH:MM:SS` (the documented form), ISO-8601 / RFC 3339 with or without
/// fractional seconds (`2023-03-14T07:05:10.000000Z`, `2023-03-14T09:05:10+02:00`), and a bare
/// `YYYY-MM-DD` (midnight UTC). Serialises as `YYYY-MM-DD HH:MM:SS`, the form KeyCRM accepts.
///
/// ```
/// use keycrm_api::Timestamp;
/// let a: Timestamp = "2023-03-14T07:05:10.000000Z".parse().unwrap();
/// let b: Timestamp = "2023-03-14 07:05:10".parse().unwrap();
/// assert_eq!(a, b);
/// assert_eq!(a.to_string(), "2023-03-14 07:05:10");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Wraps a `chrono` UTC date-time.
    pub const fn from_datetime(value: DateTime<Utc>) -> Self {
        Self(value)
    }

    /// The current time.
    pub fn now() -> Self {
        Self(Utc::now())
    }

    /// The wrapped `chrono` value.
    pub const fn as_datetime(&self) -> &DateTime<Utc> {
        &self.0
    }

    /// Unwraps into the `chrono` value.
    pub const fn into_datetime(self) -> DateTime<Utc> {
        self.0
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(value: DateTime<Utc>) -> Self {
        Self(value)
    }
}

impl From<Timestamp> for DateTime<Utc> {
    fn from(value: Timestamp) -> Self {
        value.0
    }
}

impl FromStr for Timestamp {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, WIRE_FORMAT) {
            return Ok(Self(dt.and_utc()));
        }
        if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
            return Ok(Self(dt.with_timezone(&Utc)));
        }
        // ISO-8601 without an offset (`2023-03-14T07:05:10.000000`): UTC by KeyCRM's convention.
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f") {
            return Ok(Self(dt.and_utc()));
        }
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f") {
            return Ok(Self(dt.and_utc()));
        }
        if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
            return Ok(Self(d.and_time(NaiveTime::MIN).and_utc()));
        }
        Err(ParseError::new(
            "timestamp",
            "`YYYY-MM-DD HH:MM:SS` or ISO-8601 such as `2023-03-14T07:05:10.000000Z`",
            s,
        ))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format(WIRE_FORMAT))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor::<Self>::new("a KeyCRM timestamp string"))
    }
}

/// A calendar date (`YYYY-MM-DD`), for birthdays and shipping dates.
///
/// Also reads a date-time and keeps its date part, since some accounts send one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(NaiveDate);

impl Date {
    /// Builds a date from year, month and day; `None` when it does not exist.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Self> {
        NaiveDate::from_ymd_opt(year, month, day).map(Self)
    }

    /// The wrapped `chrono` value.
    pub const fn as_naive(&self) -> &NaiveDate {
        &self.0
    }
}

impl From<NaiveDate> for Date {
    fn from(value: NaiveDate) -> Self {
        Self(value)
    }
}

impl From<Date> for NaiveDate {
    fn from(value: Date) -> Self {
        value.0
    }
}

impl FromStr for Date {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
            return Ok(Self(d));
        }
        t.parse::<Timestamp>()
            .map(|ts| Self(ts.0.date_naive()))
            .map_err(|_| ParseError::new("date", "`YYYY-MM-DD`", s))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor::<Self>::new("a `YYYY-MM-DD` date string"))
    }
}

/// An exact decimal amount: money, prices, quantities, percentages, stock levels.
///
/// Reads a JSON number (`124.5`) or a numeric string (`"2.00"`); serialises as a JSON number.
/// Numbers are carried through `f64` on the way out, which is exact for the amounts KeyCRM
/// stores (up to 15 significant digits).
///
/// ```
/// use keycrm_api::Decimal;
/// let a: Decimal = serde_json::from_str("\"90247.69\"").unwrap();
/// let b: Decimal = serde_json::from_str("90247.69").unwrap();
/// assert_eq!(a, b);
/// assert_eq!(serde_json::to_string(&a).unwrap(), "90247.69");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal(rust_decimal::Decimal);

impl Decimal {
    /// Zero.
    pub const ZERO: Self = Self(rust_decimal::Decimal::ZERO);

    /// Wraps a `rust_decimal` value.
    pub const fn new(value: rust_decimal::Decimal) -> Self {
        Self(value)
    }

    /// The wrapped `rust_decimal` value.
    pub const fn value(&self) -> rust_decimal::Decimal {
        self.0
    }

    fn from_f64(value: f64) -> Option<Self> {
        if !value.is_finite() {
            return None;
        }
        // `f64`'s Display prints the shortest text that reads back to the same number,
        // so `90247.69` stays `90247.69` instead of its binary approximation.
        let text = value.to_string();
        rust_decimal::Decimal::from_str_exact(&text)
            .or_else(|_| rust_decimal::Decimal::from_scientific(&text))
            .ok()
            .map(|d| Self(d.normalize()))
    }
}

impl From<rust_decimal::Decimal> for Decimal {
    fn from(value: rust_decimal::Decimal) -> Self {
        Self(value)
    }
}

impl From<Decimal> for rust_decimal::Decimal {
    fn from(value: Decimal) -> Self {
        value.0
    }
}

macro_rules! decimal_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Decimal {
            fn from(value: $t) -> Self {
                Self(value.into())
            }
        }
    )*};
}

decimal_from_int!(i32, i64, u32, u64);

impl FromStr for Decimal {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        rust_decimal::Decimal::from_str_exact(t)
            .or_else(|_| rust_decimal::Decimal::from_scientific(t))
            .map(Self)
            .map_err(|_| ParseError::new("decimal", "a number such as `124.5`", s))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let d = self.0.normalize();
        if d.scale() == 0
            && let Ok(i) = i64::try_from(d)
        {
            return serializer.serialize_i64(i);
        }
        let f: f64 = d.to_string().parse().map_err(serde::ser::Error::custom)?;
        serializer.serialize_f64(f)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DecimalVisitor;

        impl Visitor<'_> for DecimalVisitor {
            type Value = Decimal;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a numeric string")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
                Ok(Decimal(v.into()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
                Ok(Decimal(v.into()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
                Decimal::from_f64(v)
                    .ok_or_else(|| E::custom(format!("{v} is out of range for a decimal")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(DecimalVisitor)
    }
}

/// Reads a string through the type's `FromStr`.
struct FromStrVisitor<T> {
    expecting: &'static str,
    marker: std::marker::PhantomData<T>,
}

impl<T> FromStrVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            marker: std::marker::PhantomData,
        }
    }
}

impl<T> Visitor<'_> for FromStrVisitor<T>
where
    T: FromStr<Err = ParseError>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

/// Tolerant readers for the generated models' plain scalars, one rule per JSON type.
///
/// `cargo xtask codegen` puts `#[serde(deserialize_with = ...)]` with one of these on every
/// optional `String`, `bool` and `i64` field of a generated model (see `openapi/README.md`,
/// "Code generation rules"): the live service is not consistent about JSON types (the
/// vendor's own examples send `source_uuid: 123` and `is_final: "false"`), and one such value
/// must not fail a whole page. Serialisation is unchanged. Error messages never echo the value.
pub(crate) mod lenient {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{self, Unexpected, Visitor};

    /// Reads a string; a JSON number becomes its decimal text (`123` -> `"123"`).
    pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(Lenient(Kind::String))
            .map(|v| v.map(Value::into_string))
    }

    /// Reads a boolean; also `"true"`/`"false"`, `"1"`/`"0"` and the numbers `1`/`0`. An empty
    /// string reads as absent.
    pub(crate) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        d.deserialize_any(Lenient(Kind::Bool))
            .map(|v| v.map(Value::into_bool))
    }

    #[derive(Clone, Copy)]
    enum Kind {
        String,
        Bool,
    }

    enum Value {
        String(String),
        Bool(bool),
    }

    impl Value {
        fn into_string(self) -> String {
            match self {
                Value::String(s) => s,
                Value::Bool(b) => b.to_string(),
            }
        }

        fn into_bool(self) -> bool {
            matches!(self, Value::Bool(true))
        }
    }

    struct Lenient(Kind);

    impl Lenient {
        fn int<E: de::Error>(&self, v: i128) -> Result<Option<Value>, E> {
            match self.0 {
                Kind::String => Ok(Some(Value::String(v.to_string()))),
                Kind::Bool => match v {
                    0 => Ok(Some(Value::Bool(false))),
                    1 => Ok(Some(Value::Bool(true))),
                    _ => Err(E::invalid_value(
                        Unexpected::Other("an integer other than 0 or 1"),
                        self,
                    )),
                },
            }
        }
    }

    impl<'de> Visitor<'de> for Lenient {
        type Value = Option<Value>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self.0 {
                Kind::String => "a string or a number",
                Kind::Bool => "a boolean, \"true\"/\"false\" or 1/0",
            })
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            match self.0 {
                Kind::Bool => Ok(Some(Value::Bool(v))),
                _ => Err(E::invalid_type(Unexpected::Bool(v), &self)),
            }
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.int(v.into())
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.int(v.into())
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            match self.0 {
                Kind::String if v.is_finite() => Ok(Some(Value::String(v.to_string()))),
                Kind::Bool if v == 0.0 || v == 1.0 => self.int(v as i128),
                _ => Err(E::invalid_type(Unexpected::Other("a number"), &self)),
            }
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let t = v.trim();
            match self.0 {
                Kind::String => Ok(Some(Value::String(v.to_string()))),
                Kind::Bool => match t.to_ascii_lowercase().as_str() {
                    "" => Ok(None),
                    "true" | "1" => Ok(Some(Value::Bool(true))),
                    "false" | "0" => Ok(Some(Value::Bool(false))),
                    _ => Err(E::invalid_value(Unexpected::Other("other text"), &self)),
                },
            }
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            match self.0 {
                Kind::String => Ok(Some(Value::String(v))),
                _ => self.visit_str(&v),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Row {
        #[serde(default, deserialize_with = "lenient::string")]
        s: Option<String>,
        #[serde(default, deserialize_with = "lenient::boolean")]
        b: Option<bool>,
    }

    fn row(json: &str) -> Result<Row, serde_json::Error> {
        serde_json::from_str(json)
    }

    fn expect(s: Option<&str>, b: Option<bool>) -> Row {
        Row {
            s: s.map(str::to_string),
            b,
        }
    }

    #[test]
    fn lenient_scalars_read_every_live_form() {
        assert_eq!(row(r#"{}"#).unwrap(), expect(None, None));
        assert_eq!(row(r#"{"s":null,"b":null}"#).unwrap(), expect(None, None));
        assert_eq!(
            row(r#"{"s":"RZ-1","b":true}"#).unwrap(),
            expect(Some("RZ-1"), Some(true))
        );
        assert_eq!(
            row(r#"{"s":123,"b":"false"}"#).unwrap(),
            expect(Some("123"), Some(false))
        );
        assert_eq!(
            row(r#"{"s":12.5,"b":1}"#).unwrap(),
            expect(Some("12.5"), Some(true))
        );
        assert_eq!(
            row(r#"{"s":-7,"b":"0"}"#).unwrap(),
            expect(Some("-7"), Some(false))
        );
        assert_eq!(row(r#"{"s":"","b":""}"#).unwrap(), expect(Some(""), None));
        assert_eq!(row(r#"{"b":"TRUE"}"#).unwrap(), expect(None, Some(true)));
        assert_eq!(row(r#"{"b":0.0}"#).unwrap(), expect(None, Some(false)));
    }

    #[test]
    fn lenient_scalars_refuse_nonsense_without_echoing_it() {
        for bad in [
            r#"{"b":"maybe-secret"}"#,
            r#"{"b":2}"#,
            r#"{"b":0.5}"#,
            r#"{"b":[]}"#,
            r#"{"s":true}"#,
            r#"{"s":{"secret":1}}"#,
            r#"{"s":["secret"]}"#,
        ] {
            let err = row(bad).expect_err(bad).to_string();
            assert!(!err.contains("secret"), "{bad}: {err}");
        }
    }

    #[test]
    fn timestamps_in_every_live_format_agree() {
        let expected: Timestamp = "2023-03-14 07:05:10".parse().unwrap();
        for input in [
            "2023-03-14T07:05:10.000000Z",
            "2023-03-14T07:05:10Z",
            "2023-03-14T09:05:10+02:00",
            "2023-03-14T07:05:10.000000",
            " 2023-03-14 07:05:10 ",
        ] {
            assert_eq!(input.parse::<Timestamp>().unwrap(), expected, "{input}");
        }
        assert_eq!(
            serde_json::to_string(&expected).unwrap(),
            "\"2023-03-14 07:05:10\""
        );
        let midnight: Timestamp = "2023-03-14".parse().unwrap();
        assert_eq!(midnight.to_string(), "2023-03-14 00:00:00");
    }

    #[test]
    fn bad_timestamps_are_typed_errors() {
        let err = "14.03.2023".parse::<Timestamp>().unwrap_err();
        assert!(err.to_string().contains("14.03.2023"), "{err}");
        assert!(serde_json::from_str::<Timestamp>("12").is_err());
    }

    #[test]
    fn dates_round_trip_and_tolerate_a_time() {
        let d: Date = serde_json::from_str("\"2020-05-16\"").unwrap();
        assert_eq!(d, Date::from_ymd(2020, 5, 16).unwrap());
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"2020-05-16\"");
        let d2: Date = "2020-05-16 17:00:07".parse().unwrap();
        assert_eq!(d, d2);
        assert!("2020-13-01".parse::<Date>().is_err());
    }

    #[test]
    fn decimals_from_numbers_and_strings() {
        let cases = [
            ("124.5", "124.5"),
            ("\"2.00\"", "2.00"),
            ("98", "98"),
            ("0.001", "0.001"),
            ("1e2", "100"),
        ];
        for (json, text) in cases {
            let d: Decimal = serde_json::from_str(json).unwrap();
            assert_eq!(d, text.parse::<Decimal>().unwrap(), "{json}");
        }
        let d: Decimal = serde_json::from_str("\"90247.69\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "90247.69");
        assert_eq!(serde_json::to_string(&Decimal::from(7)).unwrap(), "7");
        assert_eq!(
            serde_json::to_string(&"2.50".parse::<Decimal>().unwrap()).unwrap(),
            "2.5"
        );
        assert!(serde_json::from_str::<Decimal>("\"abc\"").is_err());
        assert!(serde_json::from_str::<Decimal>("true").is_err());
    }
}
