//! Errors as HTTP answers: a status per code, the `{code, message}` body, and `Retry-After` on
//! rate limits and a database away for now (503). Internal details are logged here and never
//! sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_proto::ErrorCode;

use crate::error::ServerError;

/// The HTTP status for each error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidInput | ErrorCode::MalformedBody => StatusCode::BAD_REQUEST,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Unauthenticated
        | ErrorCode::SessionExpired
        | ErrorCode::ProofRequired
        | ErrorCode::ProofInvalid
        | ErrorCode::ProofNonceRequired => StatusCode::UNAUTHORIZED,
        ErrorCode::BindingRequired => StatusCode::FORBIDDEN,
        ErrorCode::StepUpRequired
        | ErrorCode::Forbidden
        | ErrorCode::RecoveryInProgress
        | ErrorCode::AccountDisabled => StatusCode::FORBIDDEN,
        ErrorCode::CeremonyExpired
        | ErrorCode::AuthenticationFailed
        | ErrorCode::RegistrationFailed
        | ErrorCode::PolicyRefused
        | ErrorCode::RecoveryFailed => StatusCode::BAD_REQUEST,
        ErrorCode::UsernameUnavailable | ErrorCode::LastAuthenticator | ErrorCode::Conflict => {
            StatusCode::CONFLICT
        }
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        match &self {
            ServerError::Internal(detail) => tracing::error!(%detail, "internal error"),
            ServerError::Unavailable(detail) => tracing::warn!(%detail, "database unavailable"),
            _ => {}
        }
        crate::metrics::refused(self.code());
        let status = match self {
            ServerError::FreshSignInRequired => StatusCode::CONFLICT,
            _ => status_of(self.code()),
        };
        let mut response = (status, axum::Json(self.to_wire())).into_response();
        let retry_after = match self {
            ServerError::RateLimited { retry_after_secs } => Some(retry_after_secs),
            // A restart or a burst of conflicts is over in moments.
            ServerError::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        // RFC 9449 section 7.1: the challenge names DPoP and ES256, and the error.
        let dpop_error = match &self {
            ServerError::ProofRequired => Some(("invalid_token", None)),
            ServerError::ProofInvalid(_) => Some(("invalid_dpop_proof", None)),
            ServerError::ProofNonceRequired { nonce, .. } => Some(("use_dpop_nonce", Some(nonce))),
            _ => None,
        };
        if let Some((error, nonce)) = dpop_error {
            let challenge = format!(
                "DPoP algs=\"ES256\", error=\"{error}\", error_description=\"{}\"",
                self.to_string().replace(['"', '\\'], "'")
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            if let Some(n) = nonce
                && let Ok(v) = HeaderValue::from_str(n)
            {
                response.headers_mut().insert("dpop-nonce", v);
            }
        }
        response
    }
}
