//! Request ids on the API: every request gets one (see [`kokoa_runtime::operation`]),
//! served inside a `request` span and answered in `X-Request-Id`.

use axum::{extract::Request, http::HeaderValue, middleware::Next, response::Response};
use kokoa_runtime::operation;
use tracing::Instrument as _;

/// The header a request id travels in.
pub const HEADER: &str = "x-request-id";

/// Middleware: gives the request its id, serves it inside a `request` span and answers
/// the id in `X-Request-Id`.
pub async fn layer(request: Request, next: Next) -> Response {
    let id = operation::of_request(request.headers().get(HEADER).and_then(|v| v.to_str().ok()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = operation::within(id.clone(), next.run(request).instrument(span)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
