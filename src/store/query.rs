//! The D1 query helpers the handlers' reads and writes use (`stmt`, `all`,
//! `first`, the argument conversions), and what a failed read answers.

use crate::problem::ApiError;
use serde::de::DeserializeOwned;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Result};

pub fn s(v: &str) -> JsValue {
    JsValue::from_str(v)
}

pub fn n(v: impl Into<f64>) -> JsValue {
    JsValue::from_f64(v.into())
}

/// Integer columns bound as f64 (`usize`/`i64` values are far below 2^53 here).
pub fn int(v: i64) -> JsValue {
    JsValue::from_f64(v as f64)
}

pub fn stmt(db: &D1Database, sql: &str, args: &[JsValue]) -> Result<D1PreparedStatement> {
    db.prepare(sql).bind(args)
}

/// Runs a query and returns every row. A row that does not decode into `T` (a
/// column of another type, a state or format the code does not know) is
/// [`bad_stored_data`], not a storage failure.
pub async fn all<T: DeserializeOwned>(
    db: &D1Database,
    sql: &str,
    args: &[JsValue],
) -> Result<Vec<T>> {
    // Two steps, so the two failures stay apart: the query (D1's errors, as
    // JavaScript errors), then decoding what it returned (ours).
    let rows = stmt(db, sql, args)?.all().await?;
    rows.results().map_err(|e| bad_stored_data(&e))
}

/// Runs a query and returns its first row, if any (as [`all`] does; D1's own
/// `first()` runs the whole query too).
pub async fn first<T: DeserializeOwned>(
    db: &D1Database,
    sql: &str,
    args: &[JsValue],
) -> Result<Option<T>> {
    Ok(all(db, sql, args).await?.into_iter().next())
}

/// Stored data the code cannot read, as a `worker::Error`: a
/// [`worker::Error::SerdeJsonError`], a variant D1 never produces (its failures
/// reach us as JavaScript errors), so [`is_bad_stored_data`] tells it from a
/// failed read by its type, not its text. A stored JSON column that does not
/// parse (`serde_json::from_str(column)?`) is the same variant already.
pub fn bad_stored_data(what: &dyn std::fmt::Display) -> worker::Error {
    worker::Error::SerdeJsonError(<serde_json::Error as serde::de::Error>::custom(format!(
        "stored row does not decode: {what}"
    )))
}

/// What a failed read answers: 500 `Internal` when the data D1 returned is bad
/// ([`is_bad_stored_data`]), else 503 `StorageUnavailable` (D1 failed; a retry
/// may succeed). For the Worker's read routes; the cause is logged, not echoed.
pub fn read_error(e: worker::Error) -> ApiError {
    let answer = read_failure(&e);
    worker::console_error!("read failed ({}): {}", answer.status(), describe(&e));
    answer
}

/// [`read_error`]'s decision, without the log.
pub fn read_failure(e: &worker::Error) -> ApiError {
    if is_bad_stored_data(e) {
        ApiError::Internal
    } else {
        ApiError::StorageUnavailable
    }
}

/// An error with its cause (worker's `Display` of a wrapped error names only
/// its kind), for the log.
pub fn describe(e: &worker::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Whether a failed read failed on the data D1 returned (a row that does not
/// decode, a stored JSON column that does not parse, our own code's error), not
/// on D1: an internal error (500), where a storage failure is 503.
pub fn is_bad_stored_data(e: &worker::Error) -> bool {
    matches!(
        e,
        worker::Error::SerdeJsonError(_) | worker::Error::RustError(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_stored_data_is_told_from_a_storage_failure_by_its_type() {
        let column: std::result::Result<serde_json::Value, _> = serde_json::from_str("{oops");
        let bad = [
            bad_stored_data(&"unknown variant `xml`"),
            worker::Error::from(column.unwrap_err()),
            worker::Error::RustError("job j has unknown state archived".into()),
        ];
        for e in &bad {
            assert!(is_bad_stored_data(e), "{e}");
        }
        // What D1's failures become (JavaScript errors, a missing binding).
        let failed = [
            worker::Error::JsError("D1_ERROR: database is locked".into()),
            worker::Error::BindingError("DB".into()),
        ];
        for e in &failed {
            assert!(!is_bad_stored_data(e), "{e}");
        }
        assert_eq!(
            describe(&bad_stored_data(&"x")),
            "JSON serialization error: stored row does not decode: x"
        );
        assert_eq!(describe(&failed[0]), "D1_ERROR: database is locked");
        assert!(bad.iter().all(|e| read_failure(e) == ApiError::Internal));
        assert!(failed
            .iter()
            .all(|e| read_failure(e) == ApiError::StorageUnavailable));
    }
}
