//! Batch writes that one bad row does not block.
//!
//! KeyCRM validates a batch (`POST /order/import`, `POST /products/import`, `PUT /offers`,
//! `PUT /offers/stocks`) as a whole: one unknown SKU answers 422 for the request and nothing
//! is written. Its answer names the rows it refused (`stocks.3.sku`), so the engine sets
//! those rows aside with KeyCRM's message and sends the rest again, in the same run.

use std::collections::BTreeMap;
use std::future::Future;

use tracing::Instrument;

use super::SyncError;
use crate::model::EntityKind;

/// The longest KeyCRM message kept for one refused row (issue: no unbounded echo).
const MAX_MESSAGE: usize = 512;

/// What became of the rows of one batch.
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    /// Positions (in the rows given) that KeyCRM accepted.
    pub delivered: Vec<usize>,
    /// Positions KeyCRM refused, each with its message (to be dead-lettered: sending the row
    /// again would be refused again).
    pub rejected: Vec<(usize, String)>,
    /// Positions not delivered because a request failed for another reason (retried later),
    /// and that reason.
    pub failed: Vec<usize>,
    /// Why the `failed` rows were not delivered.
    pub error: Option<SyncError>,
    /// Requests sent.
    pub requests: usize,
}

/// Sends `rows` in one request; when KeyCRM answers 422 naming rows (`{field}.N.…`, where
/// `field` is the list's name in the body), those rows are set aside with KeyCRM's messages
/// and the others sent again, until a request succeeds, fails for another reason, or no row
/// is left. Each pass removes at least one row, so at most `rows.len()` requests are sent.
///
/// One tracing span per batch (`keycrm_sync.batch`: kind, records, requests, outcome); no
/// row values are logged.
pub(crate) async fn send_splitting<R, T, F, Fut>(
    kind: EntityKind,
    field: &str,
    rows: &[R],
    mut send: F,
) -> BatchOutcome
where
    R: Clone,
    F: FnMut(Vec<R>) -> Fut,
    Fut: Future<Output = Result<T, SyncError>>,
{
    let span = tracing::info_span!(
        "keycrm_sync.batch",
        kind = %kind,
        records = rows.len(),
        requests = tracing::field::Empty,
        delivered = tracing::field::Empty,
        rejected = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let outcome = async {
        let mut out = BatchOutcome::default();
        let mut live: Vec<usize> = (0..rows.len()).collect();
        while !live.is_empty() {
            let body: Vec<R> = live.iter().map(|&i| rows[i].clone()).collect();
            out.requests += 1;
            let error = match send(body).await {
                Ok(_) => {
                    out.delivered.append(&mut live);
                    break;
                }
                Err(error) => error,
            };
            let refused = match &error {
                SyncError::Api(keycrm_api::Error::Validation { errors, .. }) => {
                    refused_rows(field, errors, live.len())
                }
                _ => BTreeMap::new(),
            };
            if refused.is_empty() {
                // Not a row's fault (or KeyCRM did not say which): every row is retried later.
                tracing::debug!(target: "keycrm_sync", %error, "batch failed as a whole");
                out.failed.append(&mut live);
                out.error = Some(error);
                break;
            }
            tracing::debug!(
                target: "keycrm_sync",
                refused = refused.len(),
                "KeyCRM refused rows of a batch; sending the rest again"
            );
            let mut keep = Vec::with_capacity(live.len() - refused.len());
            for (position, index) in live.into_iter().enumerate() {
                match refused.get(&position) {
                    Some(message) => out.rejected.push((index, message.clone())),
                    None => keep.push(index),
                }
            }
            live = keep;
        }
        out
    }
    .instrument(span.clone())
    .await;
    let verdict = match (&outcome.error, outcome.rejected.is_empty()) {
        (None, true) => "delivered",
        (None, false) => "partial",
        (Some(_), _) => "failed",
    };
    span.record("requests", outcome.requests);
    span.record("delivered", outcome.delivered.len());
    span.record("rejected", outcome.rejected.len());
    span.record("outcome", verdict);
    outcome
}

/// The rows (positions in the request, below `len`) a 422 names, each with KeyCRM's
/// messages for it (`sku: The selected stocks.3.sku is invalid.`), capped in length.
fn refused_rows(
    field: &str,
    errors: &BTreeMap<String, Vec<String>>,
    len: usize,
) -> BTreeMap<usize, String> {
    let mut out: BTreeMap<usize, String> = BTreeMap::new();
    for (path, messages) in errors {
        let Some(rest) = path
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix('.'))
        else {
            continue;
        };
        let (position, column) = rest.split_once('.').unwrap_or((rest, ""));
        let Ok(position) = position.parse::<usize>() else {
            continue;
        };
        if position >= len {
            continue;
        }
        let text = if messages.is_empty() {
            "refused".to_string()
        } else {
            messages.join("; ")
        };
        let entry = out.entry(position).or_default();
        if !entry.is_empty() {
            entry.push_str("; ");
        }
        if column.is_empty() {
            entry.push_str(&text);
        } else {
            entry.push_str(&format!("{column}: {text}"));
        }
    }
    for message in out.values_mut() {
        *message = truncate(
            &format!("KeyCRM refused this row (422): {message}"),
            MAX_MESSAGE,
        );
    }
    out
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validation(errors: &[(&str, &str)]) -> SyncError {
        SyncError::Api(keycrm_api::Error::Validation {
            message: "The given data was invalid.".into(),
            errors: errors
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect(),
            meta: keycrm_api::ErrorMeta::default(),
        })
    }

    #[tokio::test]
    async fn refused_rows_are_set_aside_and_the_rest_is_sent_again() {
        let rows: Vec<&str> = vec!["a", "BAD", "c", "BAD2", "e"];
        let mut sent = Vec::new();
        let outcome = send_splitting(EntityKind::Stock, "stocks", &rows, |body: Vec<&str>| {
            sent.push(body.clone());
            let bad: Vec<(String, &str)> = body
                .iter()
                .enumerate()
                .filter(|(_, r)| r.starts_with("BAD"))
                .map(|(i, _)| (format!("stocks.{i}.sku"), "The selected sku is invalid."))
                .collect();
            async move {
                if bad.is_empty() {
                    Ok(())
                } else {
                    let e: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                    Err(validation(&e))
                }
            }
        })
        .await;
        assert_eq!(outcome.requests, 2);
        assert_eq!(outcome.delivered, vec![0, 2, 4]);
        let rejected: Vec<usize> = outcome.rejected.iter().map(|(i, _)| *i).collect();
        assert_eq!(rejected, vec![1, 3]);
        assert!(
            outcome.rejected[0]
                .1
                .contains("sku: The selected sku is invalid.")
        );
        assert!(outcome.failed.is_empty() && outcome.error.is_none());
        assert_eq!(sent[1], vec!["a", "c", "e"]);
    }

    #[tokio::test]
    async fn a_422_that_names_no_row_fails_the_batch_without_looping() {
        let rows = vec![1, 2, 3];
        let mut calls = 0;
        let outcome = send_splitting(EntityKind::Offer, "offers", &rows, |_body: Vec<i32>| {
            calls += 1;
            async { Err::<(), _>(validation(&[("offers", "required"), ("offers.9.id", "x")])) }
        })
        .await;
        assert_eq!(calls, 1);
        assert_eq!(outcome.failed, vec![0, 1, 2]);
        assert!(outcome.error.is_some());
        assert!(outcome.delivered.is_empty() && outcome.rejected.is_empty());
    }

    #[tokio::test]
    async fn every_row_refused_sends_nothing_more() {
        let rows = vec![1, 2];
        let outcome = send_splitting(
            EntityKind::Order,
            "orders",
            &rows,
            |_body: Vec<i32>| async {
                Err::<(), _>(validation(&[
                    ("orders.0.source_uuid", "x"),
                    ("orders.1", "y"),
                ]))
            },
        )
        .await;
        assert_eq!(outcome.requests, 1);
        assert_eq!(outcome.rejected.len(), 2);
        assert!(outcome.delivered.is_empty() && outcome.failed.is_empty());
    }

    #[test]
    fn long_messages_are_capped() {
        let long = "é".repeat(2000);
        let errors = BTreeMap::from([("stocks.0.sku".to_string(), vec![long])]);
        let out = refused_rows("stocks", &errors, 1);
        assert!(out[&0].len() <= MAX_MESSAGE + '…'.len_utf8());
    }
}
