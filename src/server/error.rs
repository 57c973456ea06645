//! The one table from workflow errors to HTTP statuses. Clients see a clear message for their
//! own mistakes and an opaque message with a request id for ours; the cause goes to the log.

use crate::workflow::Error;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// A workflow error on its way out as an HTTP response.
pub struct ApiError(pub Error);

/// Every error. Client mistakes carry a message naming the problem; internal errors (500)
/// carry an opaque message and a `request_id` to quote to the operator.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// Only on 500: the id under which the cause was logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = "uuid")]
    pub request_id: Option<uuid::Uuid>,
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::BadRequest(_) | Error::Path(_) | Error::Interrupted(_) => StatusCode::BAD_REQUEST,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::ChecksumMismatch(_) => StatusCode::from_u16(460).expect("460 is a valid status"),
        Error::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
        Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        let body = if let Error::Internal(cause) = &self.0 {
            let request_id = uuid::Uuid::new_v4();
            tracing::error!(%request_id, %cause, "internal error");
            ErrorBody {
                error: format!("internal error; quote request id {request_id} to the operator"),
                request_id: Some(request_id),
            }
        } else {
            ErrorBody {
                error: self.0.to_string(),
                request_id: None,
            }
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::INSUFFICIENT_STORAGE {
            // Space comes back when the operator frees it or a review releases a transfer.
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("60"),
            );
        }
        if let Error::Unavailable(_) = &self.0 {
            // The store is usually back within seconds (a restart, a failover).
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("10"),
            );
        }
        if let Error::RangeNotSatisfiable(size) = &self.0 {
            if let Ok(v) = axum::http::HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut()
                    .insert(axum::http::header::CONTENT_RANGE, v);
            }
        }
        if let Error::TooManyRequests { retry_after, .. } = &self.0 {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, (*retry_after).into());
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}
