//! Reading bodies: the decoding the generated code cannot do on its own, and the public
//! [`decode`] that reads any KeyCRM JSON body as the client does.

use progenitor_client::{Error, ResponseValue};
use serde::de::DeserializeOwned;

/// Decoding needs at most this much stack for KeyCRM's deepest records in a debug build
/// (an order with buyer, lines, offers and products); below it, decoding moves to a new stack.
const DECODE_RED_ZONE: usize = 1024 * 1024;

/// Size of the stack decoding moves to: room for serde_json's 128 nesting levels of the
/// largest generated types.
const DECODE_STACK: usize = 8 * 1024 * 1024;

/// `serde_json::from_slice` on a stack with room to spare.
///
/// Decoding runs inside whatever future polls the request, often deep in a host's async
/// stack on a 2 MiB thread; a generated model's `Deserialize` has large frames (flattened
/// `extra` maps, dozens of optional fields), and a hostile body can nest 128 levels. When
/// less than [`DECODE_RED_ZONE`] is left, the decode runs on a fresh [`DECODE_STACK`] instead
/// of overflowing (which aborts the process).
pub(crate) fn from_slice<T: DeserializeOwned>(body: &[u8]) -> serde_json::Result<T> {
    stacker::maybe_grow(DECODE_RED_ZONE, DECODE_STACK, || {
        serde_json::from_slice(body)
    })
}

/// Reads a 2xx body like `ResponseValue::from_response`, decoding through [`from_slice`].
///
/// `cargo xtask codegen` calls this in the 2xx arm of every operation.
pub(crate) async fn from_response<T, E>(
    response: reqwest::Response,
) -> Result<ResponseValue<T>, Error<E>>
where
    T: DeserializeOwned,
{
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(Error::ResponseBodyError)?;
    let inner = from_slice(&body).map_err(|e| Error::InvalidResponsePayload(body, e))?;
    Ok(ResponseValue::new(inner, status, headers))
}

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
        from_slice(&body).map_err(|e| Error::InvalidResponsePayload(body, e))?
    };
    Ok(ResponseValue::new(inner, status, headers))
}

/// Decodes a KeyCRM JSON body (a page such as `Page<types::Order>`, a record, a webhook
/// payload) the way the client decodes responses: with the tolerant readers of the generated
/// types and, on failure, an [`crate::Error::Decode`] that names the JSON path of the
/// offending value and never the value itself.
///
/// ```
/// use keycrm_api::{Page, types};
/// let page: Page<types::Offer> =
///     keycrm_api::decode(br#"{"data": [{"id": 1, "sku": 42, "is_archived": "false"}]}"#).unwrap();
/// assert_eq!(page.data[0].sku.as_deref(), Some("42"));
/// let err = keycrm_api::decode::<Page<types::Offer>>(br#"{"data": [{"id": "x"}]}"#).unwrap_err();
/// assert!(err.to_string().contains("data[0].id"), "{err}");
/// ```
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> crate::Result<T> {
    from_slice(bytes).map_err(|e| crate::Error::decode(bytes, &e, crate::ErrorMeta::default()))
}
