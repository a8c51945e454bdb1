//! Helpers for filter values: KeyCRM's `*_between` ranges are `"from, to"` in UTC.

use chrono::{FixedOffset, NaiveDate, NaiveTime, TimeZone};

use crate::Timestamp;

/// A `filter[*_between]` value for a UTC range: `"2024-05-01 00:00:00, 2024-05-31 23:59:59"`.
pub fn between(from: Timestamp, to: Timestamp) -> String {
    format!("{from}, {to}")
}

/// A `filter[*_between]` value covering whole local days `first..=last` in a fixed UTC
/// offset, converted to UTC as KeyCRM expects. Kyiv is UTC+2 in winter and UTC+3 in summer.
///
/// ```
/// use chrono::{FixedOffset, NaiveDate};
/// let kyiv_summer = FixedOffset::east_opt(3 * 3600).unwrap();
/// let day = NaiveDate::from_ymd_opt(2024, 6, 1).unwrap();
/// assert_eq!(
///     keycrm_api::filter::local_days(day, day, kyiv_summer),
///     "2024-05-31 21:00:00, 2024-06-01 20:59:59"
/// );
/// ```
pub fn local_days(first: NaiveDate, last: NaiveDate, offset: FixedOffset) -> String {
    let start = offset
        .from_local_datetime(&first.and_time(NaiveTime::MIN))
        .single()
        .expect("a fixed offset maps every local time");
    let end_time = NaiveTime::from_hms_opt(23, 59, 59).expect("a valid time");
    let end = offset
        .from_local_datetime(&last.and_time(end_time))
        .single()
        .expect("a fixed offset maps every local time");
    between(
        Timestamp::from_datetime(start.with_timezone(&chrono::Utc)),
        Timestamp::from_datetime(end.with_timezone(&chrono::Utc)),
    )
}

/// A `filter[*_between]` value for one local day in a fixed UTC offset.
pub fn local_day(day: NaiveDate, offset: FixedOffset) -> String {
    local_days(day, day, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kyiv_winter_day_in_utc() {
        let kyiv_winter = FixedOffset::east_opt(2 * 3600).unwrap();
        let day = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
        assert_eq!(
            local_day(day, kyiv_winter),
            "2024-01-14 22:00:00, 2024-01-15 21:59:59"
        );
        let last = NaiveDate::from_ymd_opt(2024, 1, 31).unwrap();
        assert_eq!(
            local_days(day, last, kyiv_winter),
            "2024-01-14 22:00:00, 2024-01-31 21:59:59"
        );
    }

    #[test]
    fn utc_range_formats_both_ends() {
        let a: Timestamp = "2024-05-01T00:00:00Z".parse().unwrap();
        let b: Timestamp = "2024-05-31 23:59:59".parse().unwrap();
        assert_eq!(between(a, b), "2024-05-01 00:00:00, 2024-05-31 23:59:59");
    }
}
