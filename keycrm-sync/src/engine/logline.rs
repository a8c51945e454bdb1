//! What the engine writes about an error in logs above debug level: what failed and where,
//! never the values KeyCRM or the host echo back (a buyer's e-mail in a validation message).
//! The whole (bounded) error goes to debug level only.

use super::SyncError;
use crate::model::redact;

/// A one-line, value-free description of `error` for `warn!`/`error!`.
///
/// KeyCRM's validation errors are reduced to their status and field names; other KeyCRM
/// answers keep their message without the values it quotes; everything is bounded.
pub(crate) fn summary(error: &SyncError) -> String {
    use keycrm_api::Error as E;
    let SyncError::Api(api) = error else {
        return redact::unquoted(&error.to_string());
    };
    // KeyCRM's own text (which may echo what was sent) is left to debug level.
    let line = match api {
        E::Validation { errors, .. } => {
            let fields: Vec<&str> = errors.keys().map(String::as_str).collect();
            format!(
                "KeyCRM rejected the request (422) [fields: {}]",
                fields.join(", ")
            )
        }
        E::Forbidden { .. } => "KeyCRM forbids this operation (403)".to_string(),
        E::NotFound { .. } => "KeyCRM has no such record (404)".to_string(),
        E::PayloadTooLarge { .. } => "the request body is too large (413)".to_string(),
        E::Api { status, .. } => format!("KeyCRM refused the request (HTTP {status})"),
        other => format!("KeyCRM: {}", redact::unquoted(&other.to_string())),
    };
    redact::bounded(&line)
}

/// Logs a failed run or call: the summary at warn level, the bounded error at debug level.
pub(crate) fn warn(error: &SyncError, what: &'static str) {
    tracing::warn!(target: "keycrm_sync", error = %summary(error), "{what}");
    tracing::debug!(target: "keycrm_sync", error = %redact::bounded(&error.to_string()), "{what} (details)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_show_field_names_only() {
        let error = SyncError::Api(keycrm_api::Error::Validation {
            message: "The e-mail olena@example.com is taken.".into(),
            errors: [(
                "buyer.email".to_string(),
                vec!["The e-mail olena@example.com is taken.".to_string()],
            )]
            .into_iter()
            .collect(),
            meta: keycrm_api::ErrorMeta::new(None, 1),
        });
        let line = summary(&error);
        assert_eq!(
            line,
            "KeyCRM rejected the request (422) [fields: buyer.email]"
        );
        let error = SyncError::Api(keycrm_api::Error::Api {
            status: 400,
            message: Some("No buyer olena@example.com".into()),
            meta: keycrm_api::ErrorMeta::new(None, 1),
        });
        assert_eq!(summary(&error), "KeyCRM refused the request (HTTP 400)");
        let error = SyncError::Config("a \"quoted value\" in `field`".into());
        assert_eq!(summary(&error), "sync engine configuration: a … in `field`");
    }
}
