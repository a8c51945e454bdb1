//! Reading success bodies that the generated code cannot read on its own.

use progenitor_client::{Error, ResponseValue};
use serde::de::DeserializeOwned;

/// Reads a 2xx body like `ResponseValue::from_response`, except that an empty (or
/// whitespace-only) body is the type's default instead of a decode error.
///
/// `cargo xtask codegen` calls this in the 2xx arm of every operation marked
/// `x-keycrm-empty-body-ok` in `openapi/keycrm.yaml`: the batch imports answer 201 with no
/// body or with `{"status": true}`, and both are success.
pub(crate) async fn from_response_or_default<T, E>(
    response: reqwest::Response,
) -> Result<ResponseValue<T>, Error<E>>
where
    T: DeserializeOwned + Default,
{
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(Error::ResponseBodyError)?;
    let inner = if body.iter().all(u8::is_ascii_whitespace) {
        T::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::InvalidResponsePayload(body, e))?
    };
    Ok(ResponseValue::new(inner, status, headers))
}
