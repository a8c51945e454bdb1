//! List pages read as raw JSON, through the same runtime as every generated call (quota
//! limiter, retries, authentication, correlation ids).
//!
//! The typed list operations decode a whole page at once: one record of an unexpected shape
//! fails the page. A caller that must go on with the rest of the page (the sync engine
//! quarantines such a record and applies the others) reads the page here and decodes each
//! record by itself.

use progenitor_client::{ClientHooks, ClientInfo, OperationInfo};
use reqwest::header::{HeaderName, HeaderValue};

use crate::error::{Error, ErrorMeta, Result, meta_from_headers, runtime_retry_after};
use crate::{Client, Page, types};

impl Client {
    /// Sends `GET {base}{path}?{query}` as the list operation `operation` (the name used in
    /// tracing and statistics, e.g. `order_list`) and returns the page with its records as
    /// raw JSON values, undecoded.
    ///
    /// The request goes through the client's quota pacing, retries and authentication like
    /// every generated call. Only the page envelope is decoded; a record of any shape is
    /// kept. `path` starts with `/` (`/order`); `query` holds the parameters as sent
    /// (`("filter[updated_between]", "...")`, `("limit", "50")`, `("page", "1")`).
    ///
    /// ```no_run
    /// # async fn demo(client: keycrm_api::Client) -> keycrm_api::Result<()> {
    /// let page = client
    ///     .list_page_raw("order_list", "/order", &[("limit", "50".into()), ("page", "1".into())])
    ///     .await?;
    /// for record in &page.data {
    ///     match serde_json::from_value::<keycrm_api::types::Order>(record.clone()) {
    ///         Ok(order) => println!("order {:?}", order.id),
    ///         Err(_) => println!("a record of another shape: {:?}", record.get("id")),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_page_raw(
        &self,
        operation: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Page<serde_json::Value>> {
        if !path.starts_with('/') {
            return Err(Error::InvalidRequest {
                message: "a list path must start with `/`".into(),
            });
        }
        let url = format!("{}{path}", self.baseurl());
        let request = self
            .client()
            .get(url)
            .header(
                reqwest::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            )
            .header(
                HeaderName::from_static("api-version"),
                HeaderValue::from_static(Client::api_version()),
            )
            .query(query)
            .build()
            .map_err(|e| Error::from_reqwest(e, ErrorMeta::new(None, 0)))?;
        self.send_hand_built(request, operation).await
    }

    /// Sends a request built by hand (not by the generator) through the same hooks as every
    /// generated call (authentication, quota pacing, retries, body limits, tracing) and decodes
    /// a success body as `T`; an error answer becomes the same typed [`Error`] as elsewhere.
    pub(crate) async fn send_hand_built<T: serde::de::DeserializeOwned>(
        &self,
        mut request: reqwest::Request,
        operation: &'static str,
    ) -> Result<T> {
        let info = OperationInfo {
            operation_id: operation,
        };
        self.pre::<types::Error>(&mut request, &info)
            .await
            .map_err(Error::from)?;
        let response = self
            .exec(request, &info)
            .await
            .map_err(|e| Error::from_reqwest(e, ErrorMeta::new(None, 1)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let meta = meta_from_headers(&headers);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::from_reqwest(e, meta.clone()))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| Error::decode(&bytes, &e, meta));
        }
        match serde_json::from_slice::<types::Error>(&bytes) {
            Ok(body) => Err(Error::from_status(
                status.as_u16(),
                Some(body),
                runtime_retry_after(&headers),
                meta,
            )),
            Err(_) => Err(Error::from_response_head(status.as_u16(), &headers)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Client;

    #[tokio::test]
    async fn a_path_without_a_slash_is_refused_before_sending() {
        let client = Client::builder()
            .api_key("k")
            .base_url("http://127.0.0.1:9")
            .build()
            .unwrap();
        let err = client
            .list_page_raw("order_list", "order", &[])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("must start with"), "{err}");
    }
}
