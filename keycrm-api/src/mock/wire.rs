//! How the live service writes times and numbers, so that answers look like KeyCRM's.
//!
//! Laravel serialises model timestamps as ISO-8601 with microseconds and `Z`
//! (`2024-05-16T16:58:41.000000Z`), while columns the models do not cast (`last_synced_at`,
//! `closed_at`, payment dates) come out as `YYYY-MM-DD HH:MM:SS`. Decimal columns that are
//! not cast arrive as strings with their column scale (`"45000.00"`); computed values and
//! cast columns are JSON numbers.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SubsecRound, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;

/// A point in time in the simulator (UTC, microsecond precision).
pub(crate) type Time = DateTime<Utc>;

/// `2024-05-16T16:58:41.123456Z`.
pub(crate) fn iso(t: Time) -> Value {
    Value::String(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

/// [`iso`] or `null`.
pub(crate) fn iso_opt(t: Option<Time>) -> Value {
    t.map_or(Value::Null, iso)
}

/// `2024-05-16 16:58:41`.
pub(crate) fn sql(t: Time) -> Value {
    Value::String(t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// [`sql`] or `null`.
pub(crate) fn sql_opt(t: Option<Time>) -> Value {
    t.map_or(Value::Null, sql)
}

/// `2024-05-16`.
pub(crate) fn date_opt(d: Option<NaiveDate>) -> Value {
    d.map_or(Value::Null, |d| {
        Value::String(d.format("%Y-%m-%d").to_string())
    })
}

/// A decimal as a JSON number (an integer when it has no fraction).
pub(crate) fn num(d: Decimal) -> Value {
    let d = d.normalize();
    if d.scale() == 0
        && let Some(i) = d.to_i64()
    {
        return Value::from(i);
    }
    d.to_f64()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// [`num`] or `null`.
pub(crate) fn num_opt(d: Option<Decimal>) -> Value {
    d.map_or(Value::Null, num)
}

/// A decimal as a string with `scale` places, the way an uncast MySQL decimal column arrives.
pub(crate) fn text(d: Decimal, scale: u32) -> Value {
    Value::String(format!("{:.*}", scale as usize, d.round_dp(scale)))
}

/// [`text`] or `null`.
pub(crate) fn text_opt(d: Option<Decimal>, scale: u32) -> Value {
    d.map_or(Value::Null, |d| text(d, scale))
}

/// An optional string as JSON.
pub(crate) fn s(value: &Option<String>) -> Value {
    value.clone().map_or(Value::Null, Value::String)
}

/// An optional id as JSON.
pub(crate) fn id_opt(value: Option<i64>) -> Value {
    value.map_or(Value::Null, Value::from)
}

/// The current time on `clock` (its [`wall_time`](crate::clock::Clock::wall_time); the
/// system's time without one), truncated to microseconds.
pub(crate) fn now(clock: Option<&dyn crate::clock::Clock>) -> Time {
    let Some(clock) = clock else {
        return Utc::now().trunc_subsecs(6);
    };
    from_system(clock.wall_time()).trunc_subsecs(6)
}

/// A system time as a simulator time; one outside chrono's range (a virtual clock moved by
/// centuries) is clamped to it.
fn from_system(t: std::time::SystemTime) -> Time {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs())
            .ok()
            .and_then(|secs| DateTime::from_timestamp(secs, after.subsec_nanos()))
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
        Err(before) => {
            let before = before.duration();
            i64::try_from(before.as_secs())
                .ok()
                .and_then(|secs| {
                    DateTime::from_timestamp(0, 0)?.checked_sub_signed(
                        chrono::Duration::seconds(secs)
                            + chrono::Duration::nanoseconds(i64::from(before.subsec_nanos())),
                    )
                })
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        }
    }
}

/// Parses a time KeyCRM accepts in bodies and filters: `YYYY-MM-DD HH:MM:SS`, ISO-8601, or
/// a bare date (midnight UTC).
pub(crate) fn parse_time(text: &str) -> Option<Time> {
    let t = text.trim();
    if let Ok(dt) = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S") {
        return Some(dt.and_utc());
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.with_timezone(&Utc).trunc_subsecs(6));
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(dt.and_utc().trunc_subsecs(6));
    }
    parse_date(t).map(|d| d.and_time(NaiveTime::MIN).and_utc())
}

/// Parses `YYYY-MM-DD`.
pub(crate) fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()
}

/// Parses a decimal from a JSON number or a numeric string.
pub(crate) fn parse_decimal(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(n) => {
            let t = n.to_string();
            t.parse::<Decimal>()
                .ok()
                .or_else(|| Decimal::from_scientific(&t).ok())
        }
        Value::String(t) => t.trim().parse::<Decimal>().ok(),
        _ => None,
    }
}

/// Only the digits of a phone number, for matching `+380 67 123-45-67` with `380671234567`.
pub(crate) fn phone_digits(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_the_live_service() {
        let t = parse_time("2024-05-16 16:58:41").unwrap();
        assert_eq!(iso(t), "2024-05-16T16:58:41.000000Z");
        assert_eq!(sql(t), "2024-05-16 16:58:41");
        assert_eq!(
            parse_time("2024-05-16T16:58:41.000000Z"),
            Some(t),
            "ISO is read back"
        );
        let d: Decimal = "45000".parse().unwrap();
        assert_eq!(text(d, 2), "45000.00");
        assert_eq!(num(d), 45000);
        assert_eq!(num("12.50".parse().unwrap()), 12.5);
        assert_eq!(
            parse_decimal(&Value::from(1.5)),
            Some("1.5".parse().unwrap())
        );
        assert_eq!(
            parse_decimal(&Value::from("2.00")),
            Some("2".parse().unwrap())
        );
        assert_eq!(phone_digits("+380 (67) 123-45-67"), "380671234567");
    }

    #[test]
    fn now_follows_the_given_clock() {
        use crate::clock::{Clock, VirtualClock};
        use std::time::{Duration, UNIX_EPOCH};

        let clock = VirtualClock::new();
        let before = now(Some(&clock));
        clock.advance(Duration::from_secs(3600));
        assert_eq!(now(Some(&clock)) - before, chrono::Duration::hours(1));
        assert_eq!(
            from_system(UNIX_EPOCH + Duration::from_micros(1_715_878_721_123_456)),
            parse_time("2024-05-16T16:58:41.123456Z").unwrap()
        );
        assert_eq!(
            from_system(UNIX_EPOCH - Duration::from_secs(86_400)),
            parse_time("1969-12-31 00:00:00").unwrap()
        );
        // Far outside chrono's range: clamped, no panic.
        assert_eq!(
            from_system(UNIX_EPOCH + Duration::from_secs(u64::MAX / 4)),
            DateTime::<Utc>::MAX_UTC
        );
        let _ = clock.wall_time();
    }
}
