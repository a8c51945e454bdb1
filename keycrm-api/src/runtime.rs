//! The hand-written side of the client: configuration, the API key, and the hooks every
//! generated request goes through.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use progenitor_client::{ClientHooks, ClientInfo, OperationInfo};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};

use crate::Client;
use crate::error::{Error, Result};

/// The production base URL of the KeyCRM Open API.
pub const DEFAULT_BASE_URL: &str = "https://openapi.keycrm.app/v1";

/// Environment variable read by [`Client::from_env`] for the API key.
pub const ENV_API_KEY: &str = "KEYCRM_API_KEY";

/// Environment variable read by [`Client::from_env`] for an alternative base URL.
pub const ENV_BASE_URL: &str = "KEYCRM_BASE_URL";

/// A KeyCRM API key. Its `Debug` and `Display` never show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Wraps a key; surrounding white space is removed.
    pub fn new(key: impl AsRef<str>) -> Self {
        Self(Arc::from(key.as_ref().trim()))
    }

    /// The key itself, for the rare caller that must pass it on.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn header(&self) -> Result<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0)).map_err(|_| {
            Error::config("the API key contains characters that cannot be sent in a header")
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<&str> for ApiKey {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for ApiKey {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

/// State shared by a [`Client`] and all its clones (the generator's "inner type").
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

struct Shared {
    auth: HeaderValue,
    user_agent: String,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("api_key", &"[redacted]")
            .field("user_agent", &self.shared.user_agent)
            .finish()
    }
}

/// Configures and builds a [`Client`].
///
/// ```
/// let client = keycrm_api::Client::builder()
///     .api_key("my-key")
///     .application("acme-warehouse")
///     .build()
///     .unwrap();
/// # let _ = client;
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    api_key: Option<ApiKey>,
    base_url: String,
    connect_timeout: Duration,
    timeout: Duration,
    application: Option<String>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("base_url", &self.base_url)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("application", &self.application)
            .finish()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            api_key: None,
            base_url: DEFAULT_BASE_URL.to_string(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            application: None,
        }
    }
}

impl ClientBuilder {
    /// The API key from the KeyCRM account settings (required).
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The base URL (default [`DEFAULT_BASE_URL`]); a trailing slash is ignored.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Time allowed to open a connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for a whole request, from sending to the end of the body (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Your application's name, appended to the user agent (`keycrm-rs/0.1.0 acme-warehouse`).
    pub fn application(mut self, name: impl Into<String>) -> Self {
        self.application = Some(name.into());
        self
    }

    /// Validates the configuration and builds the client.
    pub fn build(self) -> Result<Client> {
        let key = self
            .api_key
            .filter(|k| !k.expose().is_empty())
            .ok_or_else(|| {
                Error::config("an API key is required; set it with `api_key(..)` or KEYCRM_API_KEY")
            })?;
        let base_url = normalize_base_url(&self.base_url)?;
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::config("timeouts must be greater than zero"));
        }
        let mut user_agent = format!("keycrm-rs/{}", env!("CARGO_PKG_VERSION"));
        if let Some(app) = self
            .application
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            user_agent.push(' ');
            user_agent.push_str(app);
        }
        HeaderValue::from_str(&user_agent).map_err(|_| {
            Error::config("the application name contains characters not allowed in a header")
        })?;
        let http = reqwest::Client::builder()
            .user_agent(user_agent.clone())
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .build()
            .map_err(|e| {
                Error::config(format!("cannot build the HTTP client: {}", e.without_url()))
            })?;
        let runtime = Runtime {
            shared: Arc::new(Shared {
                auth: key.header()?,
                user_agent,
            }),
        };
        Ok(Client::new_with_client(&base_url, http, runtime))
    }
}

/// Checks that `url` is an absolute http(s) URL and removes trailing slashes.
fn normalize_base_url(url: &str) -> Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed)
        .map_err(|e| Error::config(format!("the base URL `{trimmed}` is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::config(format!(
            "the base URL `{trimmed}` must be an http(s) URL with a host"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(Error::config(format!(
            "the base URL `{trimmed}` must not carry a query or fragment"
        )));
    }
    Ok(trimmed.to_string())
}

impl Client {
    /// Starts configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Builds a client from `KEYCRM_API_KEY` and, if set, `KEYCRM_BASE_URL`.
    ///
    /// A missing or empty key is a [`Error::Config`], not a panic.
    pub fn from_env() -> Result<Client> {
        let key = std::env::var(ENV_API_KEY)
            .ok()
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                Error::config(format!(
                    "{ENV_API_KEY} is not set; export your KeyCRM API key"
                ))
            })?;
        let mut builder = Client::builder().api_key(key);
        if let Ok(url) = std::env::var(ENV_BASE_URL) {
            if !url.trim().is_empty() {
                builder = builder.base_url(url);
            }
        }
        builder.build()
    }

    /// The user agent this client sends.
    pub fn user_agent(&self) -> &str {
        &self.inner().shared.user_agent
    }
}

impl ClientHooks<Runtime> for Client {
    async fn pre<E>(
        &self,
        request: &mut reqwest::Request,
        _info: &OperationInfo,
    ) -> std::result::Result<(), progenitor_client::Error<E>> {
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, self.inner().shared.auth.clone());
        headers
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("application/json"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised_and_checked() {
        assert_eq!(
            normalize_base_url("https://openapi.keycrm.app/v1/").unwrap(),
            DEFAULT_BASE_URL
        );
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8080//").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in ["", "openapi.keycrm.app", "ftp://x/v1", "https://x/v1?a=1"] {
            assert!(
                matches!(normalize_base_url(bad), Err(Error::Config { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_empty_key_is_a_config_error() {
        let err = Client::builder().api_key("  ").build().unwrap_err();
        assert!(matches!(err, Error::Config { .. }));
        assert!(err.to_string().contains("API key is required"));
        assert!(matches!(
            Client::builder().build(),
            Err(Error::Config { .. })
        ));
    }

    #[test]
    fn the_key_never_shows() {
        let secret = "sk-very-secret-4242";
        let builder = Client::builder().api_key(secret).application("acme");
        assert!(!format!("{builder:?}").contains(secret));
        let client = builder.build().unwrap();
        assert!(!format!("{client:?}").contains(secret));
        assert!(!format!("{:?} {}", ApiKey::new(secret), ApiKey::new(secret)).contains(secret));
        assert_eq!(
            client.user_agent(),
            format!("keycrm-rs/{} acme", env!("CARGO_PKG_VERSION"))
        );
    }
}
