//! Phone numbers in E.164 (`+380671234567`): the one form used to match buyers in KeyCRM
//! (`filter[buyer_phone]`), to read imported buyers back, and in the canonical model.
//!
//! A number written with its country code (`+38 (067) 123-45-67`, `00380…`, `380…`) keeps it;
//! a national number (`067 123 45 67`, `67 123 45 67`) takes the configured home country's
//! code ([`PhoneRegion`], Ukraine by default). Anything else is kept as `+` and its digits,
//! without guessing a country.

use serde::{Deserialize, Serialize};

/// The home country national numbers are read in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhoneRegion {
    /// The country calling code, digits only (`380` for Ukraine).
    pub country_code: String,
    /// The national trunk prefix dialled before a national number (`0` in Ukraine).
    pub trunk_prefix: String,
    /// Digits of a national significant number (9 in Ukraine: `67 123 45 67`).
    pub national_digits: usize,
}

impl Default for PhoneRegion {
    /// Ukraine: `+380`, trunk prefix `0`, 9 national digits.
    fn default() -> Self {
        Self {
            country_code: "380".into(),
            trunk_prefix: "0".into(),
            national_digits: 9,
        }
    }
}

impl PhoneRegion {
    /// The number in E.164 (`+` and digits); `None` when the text holds no digit.
    ///
    /// ```
    /// use keycrm_sync::phone::PhoneRegion;
    /// let ua = PhoneRegion::default();
    /// assert_eq!(ua.normalize("067 123-45-67").as_deref(), Some("+380671234567"));
    /// assert_eq!(ua.normalize("+1 555 0100").as_deref(), Some("+15550100"));
    /// ```
    pub fn normalize(&self, raw: &str) -> Option<String> {
        let t = raw.trim();
        let mut digits: String = t.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return None;
        }
        if t.starts_with('+') {
            return Some(format!("+{digits}"));
        }
        if let Some(rest) = digits.strip_prefix("00") {
            return Some(format!("+{rest}"));
        }
        let cc = self.country_code.as_str();
        let n = self.national_digits;
        let trunk = self.trunk_prefix.as_str();
        if n > 0 {
            if digits.len() == cc.len() + n && digits.starts_with(cc) {
                // Already international, only the `+` missing.
            } else if !trunk.is_empty()
                && digits.len() == trunk.len() + n
                && digits.starts_with(trunk)
            {
                digits = format!("{cc}{}", &digits[trunk.len()..]);
            } else if digits.len() == n {
                digits = format!("{cc}{digits}");
            } else if let Some(rest) = self.partial_code(&digits) {
                // `80 67 123 45 67`: the country code's tail written with the trunk prefix.
                digits = format!("{cc}{rest}");
            }
        }
        Some(format!("+{digits}"))
    }

    /// For a number that starts with the end of the country code followed by the trunk
    /// prefix (Ukrainians write `8 0XX …` or `80XX …`), the national number.
    fn partial_code<'a>(&self, digits: &'a str) -> Option<&'a str> {
        let cc = self.country_code.as_str();
        let n = self.national_digits;
        (1..cc.len()).find_map(|cut| {
            let tail = &cc[cut..];
            (digits.len() == tail.len() + n && digits.starts_with(tail))
                .then(|| &digits[tail.len()..])
                .filter(|_| {
                    !self.trunk_prefix.is_empty() && tail.ends_with(self.trunk_prefix.as_str())
                })
        })
    }
}

/// The number in E.164 read with Ukraine as the home country ([`PhoneRegion::default`]).
pub fn normalize(raw: &str) -> Option<String> {
    PhoneRegion::default().normalize(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ukrainian_numbers_in_every_usual_spelling_become_one() {
        let ua = PhoneRegion::default();
        for raw in [
            "+38 (067) 123-45-67",
            "+380671234567",
            "380671234567",
            "00380671234567",
            "067 123 45 67",
            "(067)1234567",
            "67 123 45 67",
            "80671234567",
        ] {
            assert_eq!(ua.normalize(raw).as_deref(), Some("+380671234567"), "{raw}");
        }
    }

    #[test]
    fn foreign_and_odd_numbers_keep_their_digits() {
        let ua = PhoneRegion::default();
        assert_eq!(ua.normalize("+1 555 0100").as_deref(), Some("+15550100"));
        assert_eq!(
            ua.normalize("0048 601 234 567").as_deref(),
            Some("+48601234567")
        );
        assert_eq!(ua.normalize("12345").as_deref(), Some("+12345"));
        assert_eq!(ua.normalize("n/a"), None);
        assert_eq!(ua.normalize(""), None);
    }

    #[test]
    fn another_home_country_is_configurable() {
        let pl = PhoneRegion {
            country_code: "48".into(),
            trunk_prefix: String::new(),
            national_digits: 9,
        };
        assert_eq!(pl.normalize("601 234 567").as_deref(), Some("+48601234567"));
        assert_eq!(pl.normalize("48601234567").as_deref(), Some("+48601234567"));
        // A Ukrainian national number is not guessed under another home country.
        assert_eq!(pl.normalize("0671234567").as_deref(), Some("+0671234567"));
        assert_eq!(normalize("0671234567").as_deref(), Some("+380671234567"));
    }
}
