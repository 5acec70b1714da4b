//! Why a SensorThings request failed, and the status each reason answers
//! with: 400 names the option or path part at fault, 404 the missing entity,
//! 503 the per-query deadline.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::filter::{EvalError, SyntaxError};

#[derive(Debug, thiserror::Error)]
pub enum StaError {
    #[error("{option}: {source}")]
    Filter { option: String, source: SyntaxError },
    #[error("{option}: {reason}")]
    Option { option: String, reason: String },
    #[error("$filter/$orderby: {0}")]
    Eval(#[from] EvalError),
    #[error("path `{path}`: {reason}")]
    Path { path: String, reason: String },
    #[error("no {what} `{id}`")]
    NotFound { what: &'static str, id: String },
    #[error("no such resource `{0}`; the entity sets are listed at /sta/v1.1/")]
    NoResource(String),
    #[error("{0}")]
    TooBroad(String),
    #[error("the query ran over its {0} ms deadline (sta.deadline); narrow it with a $filter on phenomenonTime, a smaller $top, or without $count")]
    Deadline(u64),
    #[error("too many requests without a token: {0} per second are served to anonymous callers (sta.anonymous_rate); retry shortly or use a token")]
    RateLimited(u32),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

impl StaError {
    pub fn status(&self) -> StatusCode {
        match self {
            StaError::NotFound { .. } | StaError::NoResource(_) => StatusCode::NOT_FOUND,
            StaError::Deadline(_) => StatusCode::SERVICE_UNAVAILABLE,
            StaError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            StaError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for StaError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut r = (status, Json(serde_json::json!({ "code": status.as_u16(), "type": "error", "error": self.to_string() }))).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        r
    }
}
