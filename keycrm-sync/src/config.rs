//! The engine's configuration: what an operator sets, loadable from a TOML file and from
//! environment variables, validated with errors that name the setting.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::model::EntityKind;
use crate::phone::PhoneRegion;
use crate::plan::{Side, SourceOfTruth};

/// A secret string (API key, webhook token) whose `Debug`, `Display` and `Serialize` never
/// show it: it serialises as `"[redacted]"` (`""` when empty), so a configuration written to
/// a log, a status page or a file does not leak it. Read it with [`Secret::expose`]; serialise
/// it in clear only where that is the point, with
/// `#[serde(serialize_with = "Secret::serialize_exposed")]`.
///
/// It deserialises from a string only; any other value is refused with an error that does not
/// quote it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

/// What a non-empty [`Secret`] shows instead of its value.
const REDACTED: &str = "[redacted]";

/// The error of a secret given as something else than a string; it never quotes the value.
const SECRET_TYPE_ERROR: &str = "a secret must be a quoted string (the value given is not shown)";

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// Serialises the secret in clear, for
    /// `#[serde(serialize_with = "Secret::serialize_exposed")]` on a field whose reader must
    /// get the value (the default `Serialize` redacts it).
    ///
    /// ```
    /// use keycrm_sync::config::Secret;
    ///
    /// #[derive(serde::Serialize)]
    /// struct Credentials {
    ///     #[serde(serialize_with = "Secret::serialize_exposed")]
    ///     api_key: Secret,
    ///     shown: Secret,
    /// }
    /// let c = Credentials { api_key: Secret::new("k-1"), shown: Secret::new("k-2") };
    /// assert_eq!(
    ///     serde_json::to_string(&c).unwrap(),
    ///     r#"{"api_key":"k-1","shown":"[redacted]"}"#
    /// );
    /// ```
    pub fn serialize_exposed<S: Serializer>(
        secret: &Secret,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&secret.0)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.is_empty() { "" } else { REDACTED })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_string(SecretVisitor)
    }
}

/// Accepts strings; refuses everything else without quoting it (serde's own "invalid type"
/// errors quote numbers and booleans).
struct SecretVisitor;

impl<'de> de::Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quoted string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
        Err(E::custom(SECRET_TYPE_ERROR))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
        Err(E::custom(SECRET_TYPE_ERROR))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Secret, E> {
        Err(E::custom(SECRET_TYPE_ERROR))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
        Err(E::custom(SECRET_TYPE_ERROR))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Secret, E> {
        Err(E::custom(SECRET_TYPE_ERROR))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
        Err(E::custom(SECRET_TYPE_ERROR))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        Err(E::custom(SECRET_TYPE_ERROR))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Secret, E> {
        Err(E::custom(SECRET_TYPE_ERROR))
    }

    fn visit_none<E: de::Error>(self) -> Result<Secret, E> {
        Err(E::custom(SECRET_TYPE_ERROR))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Err(de::Error::custom(SECRET_TYPE_ERROR))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Err(de::Error::custom(SECRET_TYPE_ERROR))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_empty() {
            "Secret(<empty>)"
        } else {
            "Secret([redacted])"
        })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A bad setting: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sync setting `{setting}`: {reason}")]
pub struct ConfigError {
    /// The setting's name as written in TOML (`sync_interval_secs`) or the environment.
    pub setting: String,
    /// What is wrong and what is expected.
    pub reason: String,
}

impl ConfigError {
    fn new(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}

/// Everything an operator configures. Field names are the TOML keys; the environment
/// variables are `KEYCRM_` plus the key in upper case (`KEYCRM_SYNC_INTERVAL_SECS`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// KeyCRM API base URL.
    pub base_url: String,
    /// KeyCRM API key (required).
    pub api_key: Secret,
    /// Token expected in the webhook URL (`?token=...`); empty disables webhook intake.
    pub webhook_secret: Secret,
    /// KeyCRM requests per minute (the account's quota).
    pub requests_per_minute: u32,
    /// Records per batch (order import: at most 50; product import: at most 100).
    pub batch_size: u32,
    /// Attempts before an outbox item is dead-lettered.
    pub retry_attempts: u32,
    /// Seconds between background runs.
    pub sync_interval_secs: u64,
    /// Seconds between full passes of the catalogue (products and offers; default 3600, an
    /// hour). KeyCRM's `GET /products` filters only by `product_id`, `category_id` and
    /// `is_archived`, and `GET /offers` by `id`, `product_id`, `sku` and `is_archived`: neither
    /// offers `updated_between` (orders and buyers do, and are read incrementally every run),
    /// so the catalogue can only be reconciled by reading it whole, on this schedule. A run
    /// reads a kind in full when this long has passed since the start of its last full pass
    /// (kept in the store, so a restart does not read it early; a pass that failed does not
    /// count), on its first run, and on [`full_resync`](crate::SyncEngine::full_resync).
    pub catalogue_pass_interval_secs: u64,
    /// Seconds between full passes of stock levels (default 86400, a day). `GET /offers/stocks`
    /// filters only by `offers_id`, `offers_sku` and `details`, no `updated_between`: levels
    /// are reconciled by reading them whole on this schedule (as the catalogue, see
    /// [`SyncConfig::catalogue_pass_interval_secs`]); between passes, KeyCRM's stock webhooks
    /// bring its changes.
    pub stock_pass_interval_secs: u64,
    /// Records processed concurrently (requests still share the one quota).
    pub max_concurrency: u32,
    /// Whether webhooks are applied as they arrive (else only on the next run).
    pub realtime: bool,
    /// Overlap of reconciliation windows, in seconds (`updated_between` from cursor - overlap).
    /// The cursor is the newest KeyCRM `updated_at` a pass read, so the overlap only covers
    /// KeyCRM's commit lag and clock skew: a few seconds (default 2). A larger one makes
    /// every run read again what the engine itself wrote in that span.
    pub overlap_secs: u64,
    /// Days to keep conflict/audit logs and processed, ignored and failed webhooks.
    pub retention_days: u32,
    /// Refuse a stock push that would zero more than this share (0..=1) of the pushed SKUs.
    pub max_zeroed_share: f64,
    /// Plan and log every write without sending it.
    pub dry_run: bool,
    /// KeyCRM order source id used for orders created by the host.
    pub source_id: Option<i64>,
    /// Host order status name -> KeyCRM status id.
    pub status_ids: BTreeMap<String, i64>,
    /// Host payment method name -> KeyCRM payment method id.
    pub payment_method_ids: BTreeMap<String, i64>,
    /// Host warehouse code -> KeyCRM warehouse id.
    pub warehouse_ids: BTreeMap<String, i64>,
    /// Per kind, the side whose values win when records that already exist on both sides are
    /// linked for the first time (no base yet) and differ; such a first link is audited once
    /// and is not a conflict. Kinds not listed keep the built-in default
    /// ([`SyncConfig::source_of_truth`]): the host for the catalogue, prices and stock, KeyCRM
    /// for orders (their status above all) and buyers.
    ///
    /// ```toml
    /// [first_contact.offer]
    /// default = "remote"          # KeyCRM's prices win on first contact
    /// [first_contact.order]
    /// default = "remote"
    /// fields = { manager_comment = "local" }
    /// ```
    pub first_contact: BTreeMap<EntityKind, SourceOfTruth>,
    /// The home country national phone numbers are read in, for matching buyers
    /// (default: Ukraine, `+380`).
    ///
    /// ```toml
    /// [phone_region]
    /// country_code = "48"
    /// trunk_prefix = ""
    /// national_digits = 9
    /// ```
    pub phone_region: PhoneRegion,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            base_url: keycrm_api::DEFAULT_BASE_URL.to_string(),
            api_key: Secret::default(),
            webhook_secret: Secret::default(),
            requests_per_minute: 60,
            batch_size: 50,
            retry_attempts: 5,
            sync_interval_secs: 300,
            catalogue_pass_interval_secs: 3600,
            stock_pass_interval_secs: 86_400,
            max_concurrency: 4,
            realtime: true,
            overlap_secs: 2,
            retention_days: 90,
            max_zeroed_share: 0.5,
            dry_run: false,
            source_id: None,
            status_ids: BTreeMap::new(),
            payment_method_ids: BTreeMap::new(),
            warehouse_ids: BTreeMap::new(),
            first_contact: BTreeMap::new(),
            phone_region: PhoneRegion::default(),
        }
    }
}

/// The scalar settings that environment variables may set.
const ENV_KEYS: &[&str] = &[
    "base_url",
    "api_key",
    "webhook_secret",
    "requests_per_minute",
    "batch_size",
    "retry_attempts",
    "sync_interval_secs",
    "catalogue_pass_interval_secs",
    "stock_pass_interval_secs",
    "max_concurrency",
    "realtime",
    "overlap_secs",
    "retention_days",
    "max_zeroed_share",
    "dry_run",
    "source_id",
];

impl SyncConfig {
    /// Reads a TOML file, then validates.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("file", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_toml_str(&text)
    }

    /// Parses TOML text, then validates.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: SyncConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Defaults overridden by `KEYCRM_*` environment variables, then validated.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::default().with_env(|name| std::env::var(name).ok())
    }

    /// Overrides settings from a variable lookup (`KEYCRM_<KEY>`), then validates. The
    /// lookup is a parameter so that tests need not touch the process environment.
    pub fn with_env(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        for key in ENV_KEYS {
            let name = format!("KEYCRM_{}", key.to_ascii_uppercase());
            let Some(raw) = lookup(&name) else { continue };
            let raw = raw.trim().to_string();
            let bad =
                |expected: &str| ConfigError::new(name.clone(), format!("expected {expected}"));
            match *key {
                "base_url" => self.base_url = raw,
                "api_key" => self.api_key = Secret::new(raw),
                "webhook_secret" => self.webhook_secret = Secret::new(raw),
                "requests_per_minute" => {
                    self.requests_per_minute = raw.parse().map_err(|_| bad("a whole number"))?
                }
                "batch_size" => self.batch_size = raw.parse().map_err(|_| bad("a whole number"))?,
                "retry_attempts" => {
                    self.retry_attempts = raw.parse().map_err(|_| bad("a whole number"))?
                }
                "sync_interval_secs" => {
                    self.sync_interval_secs = raw.parse().map_err(|_| bad("seconds"))?
                }
                "catalogue_pass_interval_secs" => {
                    self.catalogue_pass_interval_secs = raw.parse().map_err(|_| bad("seconds"))?
                }
                "stock_pass_interval_secs" => {
                    self.stock_pass_interval_secs = raw.parse().map_err(|_| bad("seconds"))?
                }
                "max_concurrency" => {
                    self.max_concurrency = raw.parse().map_err(|_| bad("a whole number"))?
                }
                "realtime" => {
                    self.realtime = parse_bool(&raw).ok_or_else(|| bad("true or false"))?
                }
                "overlap_secs" => self.overlap_secs = raw.parse().map_err(|_| bad("seconds"))?,
                "retention_days" => self.retention_days = raw.parse().map_err(|_| bad("days"))?,
                "max_zeroed_share" => {
                    self.max_zeroed_share =
                        raw.parse().map_err(|_| bad("a share between 0 and 1"))?
                }
                "dry_run" => self.dry_run = parse_bool(&raw).ok_or_else(|| bad("true or false"))?,
                "source_id" => {
                    self.source_id = Some(raw.parse().map_err(|_| bad("a KeyCRM source id"))?)
                }
                _ => unreachable!("every ENV_KEYS entry is handled"),
            }
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.api_key.is_empty() {
            return Err(ConfigError::new(
                "api_key",
                "required: the KeyCRM API key (KEYCRM_API_KEY)",
            ));
        }
        let url = self.base_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::new("base_url", "must be an http(s) URL"));
        }
        if self.requests_per_minute == 0 {
            return Err(ConfigError::new(
                "requests_per_minute",
                "must be at least 1",
            ));
        }
        if !(1..=50).contains(&self.batch_size) {
            return Err(ConfigError::new(
                "batch_size",
                "must be 1..=50 (KeyCRM imports at most 50 orders per call)",
            ));
        }
        if self.retry_attempts == 0 {
            return Err(ConfigError::new("retry_attempts", "must be at least 1"));
        }
        if self.sync_interval_secs == 0 {
            return Err(ConfigError::new(
                "sync_interval_secs",
                "must be at least 1 second",
            ));
        }
        if self.catalogue_pass_interval_secs == 0 {
            return Err(ConfigError::new(
                "catalogue_pass_interval_secs",
                "must be at least 1 second",
            ));
        }
        if self.stock_pass_interval_secs == 0 {
            return Err(ConfigError::new(
                "stock_pass_interval_secs",
                "must be at least 1 second",
            ));
        }
        if self.max_concurrency == 0 {
            return Err(ConfigError::new("max_concurrency", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.max_zeroed_share) {
            return Err(ConfigError::new(
                "max_zeroed_share",
                "must be between 0 and 1",
            ));
        }
        if self.retention_days == 0 {
            return Err(ConfigError::new("retention_days", "must be at least 1 day"));
        }
        Ok(())
    }

    /// A KeyCRM client builder set from this configuration: base URL, API key and quota.
    /// Add your own settings (timeouts, application name) before `build()`.
    pub fn client_builder(&self) -> keycrm_api::ClientBuilder {
        keycrm_api::Client::builder()
            .api_key(self.api_key.expose())
            .base_url(self.base_url.clone())
            .requests_per_minute(self.requests_per_minute)
    }

    /// The source of truth of `kind` on first contact (see [`SyncConfig::first_contact`]): the
    /// configured one, else the host for products, offers (prices) and stock, and KeyCRM for
    /// orders (status included) and buyers.
    pub fn source_of_truth(&self, kind: EntityKind) -> SourceOfTruth {
        if let Some(source) = self.first_contact.get(&kind) {
            return source.clone();
        }
        match kind {
            EntityKind::Product | EntityKind::Offer | EntityKind::Stock => {
                SourceOfTruth::new(Side::Local)
            }
            EntityKind::Order => SourceOfTruth::new(Side::Remote)
                .with_field(crate::canonical::ORDER_STATUS_FIELD, Side::Remote),
            EntityKind::Buyer => SourceOfTruth::new(Side::Remote),
        }
    }

    /// The background run interval.
    pub fn sync_interval(&self) -> Duration {
        Duration::from_secs(self.sync_interval_secs)
    }

    /// The reconciliation overlap.
    pub fn overlap(&self) -> Duration {
        Duration::from_secs(self.overlap_secs)
    }

    /// The time between full passes of the catalogue
    /// ([`SyncConfig::catalogue_pass_interval_secs`]).
    pub fn catalogue_pass_interval(&self) -> Duration {
        Duration::from_secs(self.catalogue_pass_interval_secs)
    }

    /// The time between full passes of stock levels
    /// ([`SyncConfig::stock_pass_interval_secs`]).
    pub fn stock_pass_interval(&self) -> Duration {
        Duration::from_secs(self.stock_pass_interval_secs)
    }

    /// The time between scheduled full passes of `kind`: the catalogue's for products and
    /// offers, the stock's for stock; `None` for orders and buyers, which KeyCRM lets the
    /// engine read incrementally (`updated_between`) on every run.
    pub fn full_pass_interval(&self, kind: EntityKind) -> Option<Duration> {
        match kind {
            EntityKind::Product | EntityKind::Offer => Some(self.catalogue_pass_interval()),
            EntityKind::Stock => Some(self.stock_pass_interval()),
            EntityKind::Order | EntityKind::Buyer => None,
        }
    }
}

/// The settings that hold a [`Secret`].
const SECRET_SETTINGS: &[&str] = &["api_key", "webhook_secret"];

/// A TOML error as a [`ConfigError`] that names the setting (found from the error's position
/// in `text`) and never quotes the value of a secret.
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let setting = e
        .span()
        .and_then(|span| setting_at(text, span.start))
        .unwrap_or_else(|| "toml".to_string());
    let secret =
        SECRET_SETTINGS.contains(&setting.as_str()) || e.message().contains(SECRET_TYPE_ERROR);
    let reason = if secret {
        SECRET_TYPE_ERROR.to_string()
    } else {
        e.message().trim().to_string()
    };
    ConfigError::new(setting, reason)
}

/// The dotted name of the setting written on the line that holds byte `offset` of `text`
/// (`batch_size`, or `status_ids.shipped` inside a `[status_ids]` table).
fn setting_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset.min(text.len()))?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let key = line.split('=').next()?.trim();
    let key = key.trim_matches(|c| c == '"' || c == '\'');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(table) if !table.is_empty() => format!("{table}.{key}"),
        _ => key.to_string(),
    })
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_sets_everything_and_validates() {
        let config = SyncConfig::from_toml_str(
            r#"
            api_key = "k-123"
            webhook_secret = "w-456"
            batch_size = 25
            sync_interval_secs = 60
            realtime = false
            source_id = 3
            [status_ids]
            shipped = 4
            [warehouse_ids]
            main = 1
            "#,
        )
        .unwrap();
        assert_eq!(config.batch_size, 25);
        assert_eq!(config.sync_interval(), Duration::from_secs(60));
        assert!(!config.realtime);
        assert_eq!(config.status_ids["shipped"], 4);
        assert_eq!(config.warehouse_ids["main"], 1);
        assert_eq!(config.requests_per_minute, 60, "defaults fill the rest");
        let client = config.client_builder().build().unwrap();
        assert_eq!(
            keycrm_api::ClientInfo::baseurl(&client),
            keycrm_api::DEFAULT_BASE_URL
        );
        assert!(!format!("{client:?}").contains("k-123"));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("k-123") && !shown.contains("w-456"),
            "{shown}"
        );
    }

    #[test]
    fn first_contact_defaults_and_overrides() {
        let config = SyncConfig::from_toml_str("api_key = \"k\"\n").unwrap();
        assert_eq!(
            config.source_of_truth(EntityKind::Offer).side_for("price"),
            Side::Local
        );
        assert_eq!(
            config
                .source_of_truth(EntityKind::Stock)
                .side_for("quantity"),
            Side::Local
        );
        assert_eq!(
            config
                .source_of_truth(EntityKind::Order)
                .side_for("status_id"),
            Side::Remote
        );
        let config = SyncConfig::from_toml_str(
            r#"
            api_key = "k"
            [first_contact.offer]
            default = "remote"
            [first_contact.order]
            default = "remote"
            fields = { manager_comment = "local" }
            "#,
        )
        .unwrap();
        assert_eq!(
            config.source_of_truth(EntityKind::Offer).side_for("price"),
            Side::Remote
        );
        let order = config.source_of_truth(EntityKind::Order);
        assert_eq!(order.side_for("manager_comment"), Side::Local);
        assert_eq!(order.side_for("status_id"), Side::Remote);
        assert_eq!(
            config
                .source_of_truth(EntityKind::Stock)
                .side_for("quantity"),
            Side::Local,
            "kinds not listed keep their default"
        );
        assert!(
            SyncConfig::from_toml_str(
                "api_key = \"k\"\n[first_contact.offer]\ndefault = \"crm\"\n",
            )
            .is_err()
        );
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = SyncConfig::from_toml_str("api_key = \"k\"\nbatch_size = 500\n").unwrap_err();
        assert_eq!(err.setting, "batch_size");
        let err = SyncConfig::from_toml_str("api_key = \"k\"\nbatch_sise = 5\n").unwrap_err();
        assert!(err.reason.contains("batch_sise"), "{err}");
        let err = SyncConfig::from_toml_str("batch_size = 5\n").unwrap_err();
        assert_eq!(err.setting, "api_key");
        let err =
            SyncConfig::from_toml_str("api_key = \"k\"\nmax_zeroed_share = 2.0\n").unwrap_err();
        assert_eq!(err.setting, "max_zeroed_share");
    }

    #[test]
    fn full_pass_schedule_defaults_loads_and_refuses_zero() {
        let config = SyncConfig::from_toml_str("api_key = \"k\"\n").unwrap();
        assert_eq!(config.catalogue_pass_interval(), Duration::from_secs(3600));
        assert_eq!(config.stock_pass_interval(), Duration::from_secs(86_400));
        assert_eq!(
            config.full_pass_interval(EntityKind::Product),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            config.full_pass_interval(EntityKind::Offer),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            config.full_pass_interval(EntityKind::Stock),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(config.full_pass_interval(EntityKind::Order), None);
        assert_eq!(config.full_pass_interval(EntityKind::Buyer), None);

        let config = SyncConfig::from_toml_str(
            "api_key = \"k\"\ncatalogue_pass_interval_secs = 600\nstock_pass_interval_secs = 7200\n",
        )
        .unwrap();
        assert_eq!(config.catalogue_pass_interval_secs, 600);
        assert_eq!(config.stock_pass_interval_secs, 7200);

        for setting in ["catalogue_pass_interval_secs", "stock_pass_interval_secs"] {
            let err = SyncConfig::from_toml_str(&format!("api_key = \"k\"\n{setting} = 0\n"))
                .unwrap_err();
            assert_eq!(err.setting, setting);
            assert_eq!(err.reason, "must be at least 1 second");
            let err = SyncConfig::from_toml_str(&format!("api_key = \"k\"\n{setting} = -1\n"))
                .unwrap_err();
            assert_eq!(
                err.setting, setting,
                "a negative interval is refused by its type"
            );
        }
        let zero = SyncConfig {
            api_key: Secret::new("k"),
            stock_pass_interval_secs: 0,
            ..SyncConfig::default()
        };
        assert_eq!(
            zero.validate().unwrap_err().setting,
            "stock_pass_interval_secs"
        );
    }

    #[test]
    fn secrets_serialise_redacted_unless_exposed() {
        let config = SyncConfig {
            api_key: Secret::new("k-123"),
            webhook_secret: Secret::new("w-456"),
            ..SyncConfig::default()
        };
        let json = serde_json::to_value(&config).unwrap();
        let text = json.to_string();
        assert!(!text.contains("k-123") && !text.contains("w-456"), "{text}");
        assert_eq!(json["api_key"], "[redacted]");
        assert_eq!(json["webhook_secret"], "[redacted]");
        assert_eq!(serde_json::to_value(Secret::default()).unwrap(), "");

        #[derive(Serialize)]
        struct Exposed<'a> {
            #[serde(serialize_with = "Secret::serialize_exposed")]
            api_key: &'a Secret,
        }
        let exposed = serde_json::to_value(Exposed {
            api_key: &config.api_key,
        })
        .unwrap();
        assert_eq!(exposed["api_key"], "k-123");
        assert_eq!(config.api_key.expose(), "k-123");
        // Reading a string back still works.
        let back: Secret = serde_json::from_value(serde_json::json!("k-9")).unwrap();
        assert_eq!(back.expose(), "k-9");
    }

    #[test]
    fn a_secret_of_the_wrong_type_names_the_setting_not_the_value() {
        for (text, setting, value) in [
            ("api_key = 12345\n", "api_key", "12345"),
            (
                "api_key = \"k\"\nwebhook_secret = 987654321\n",
                "webhook_secret",
                "987654321",
            ),
            ("api_key = 31415.92653\n", "api_key", "31415"),
            ("api_key = [\"abc-secret\"]\n", "api_key", "abc-secret"),
            ("api_key = true\n", "api_key", "true"),
        ] {
            let err = SyncConfig::from_toml_str(text).unwrap_err();
            assert_eq!(err.setting, setting, "{text}");
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(value), "{shown}");
            assert!(shown.contains("quoted string"), "{shown}");
        }
        // Other settings are named by their line, inside tables too.
        let err =
            SyncConfig::from_toml_str("api_key = \"k\"\nbatch_size = \"lots\"\n").unwrap_err();
        assert_eq!(err.setting, "batch_size");
        let err = SyncConfig::from_toml_str("api_key = \"k\"\n[status_ids]\nshipped = \"four\"\n")
            .unwrap_err();
        assert_eq!(err.setting, "status_ids.shipped");
    }

    #[test]
    fn environment_overrides_with_typed_errors() {
        let env = |name: &str| match name {
            "KEYCRM_API_KEY" => Some("env-key".to_string()),
            "KEYCRM_SYNC_INTERVAL_SECS" => Some("30".to_string()),
            "KEYCRM_REALTIME" => Some("off".to_string()),
            "KEYCRM_CATALOGUE_PASS_INTERVAL_SECS" => Some("1800".to_string()),
            "KEYCRM_STOCK_PASS_INTERVAL_SECS" => Some("43200".to_string()),
            _ => None,
        };
        let config = SyncConfig::default().with_env(env).unwrap();
        assert_eq!(config.api_key.expose(), "env-key");
        assert_eq!(config.sync_interval_secs, 30);
        assert_eq!(config.catalogue_pass_interval_secs, 1800);
        assert_eq!(config.stock_pass_interval_secs, 43_200);
        assert!(!config.realtime);
        let bad = |name: &str| match name {
            "KEYCRM_API_KEY" => Some("k".to_string()),
            "KEYCRM_BATCH_SIZE" => Some("lots".to_string()),
            _ => None,
        };
        let err = SyncConfig::default().with_env(bad).unwrap_err();
        assert_eq!(err.setting, "KEYCRM_BATCH_SIZE");
        assert_eq!(err.reason, "expected a whole number");
        let zero = |name: &str| match name {
            "KEYCRM_API_KEY" => Some("k".to_string()),
            "KEYCRM_CATALOGUE_PASS_INTERVAL_SECS" => Some("0".to_string()),
            _ => None,
        };
        let err = SyncConfig::default().with_env(zero).unwrap_err();
        assert_eq!(err.setting, "catalogue_pass_interval_secs");
    }
}
