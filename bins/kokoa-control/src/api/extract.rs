//! Body, path and query extractors whose failures are answered in the API's error shape
//! instead of axum's plain-text rejections.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::request::Parts,
};
use serde::de::DeserializeOwned;

use crate::{error::ApiError, state::AppState};

/// A JSON body. Text that is not JSON is 400; JSON of the wrong shape (a missing field, a
/// string where a number belongs) is 422 naming the field.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        parse_json(&bytes).map(Self)
    }
}

/// Parses `bytes` as in [`ApiJson`].
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_data() {
            let path = e.path().to_string();
            let field = if path == "." { "body".to_owned() } else { path };
            ApiError::invalid(field, inner)
        } else {
            ApiError::bad_request(format!(
                "the request body is not valid JSON: {inner}; send a JSON object with \
                 `Content-Type: application/json`"
            ))
        }
    })?;
    // Trailing text after the JSON value is malformed input too.
    de.end()
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// Path parameters.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|e| ApiError::bad_request(format!("bad path parameter: {}", e.body_text())))
    }
}

/// Query parameters; a value of the wrong type is 422 naming the parameter.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e| ApiError::invalid("query", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)] // the fields exist to be deserialised
    struct Body {
        hostname: String,
        target_port: i64,
    }

    #[test]
    fn syntax_is_400_and_shape_is_422_with_the_field() {
        let err = parse_json::<Body>(b"{\"hostname\":").unwrap_err();
        assert_eq!((err.status().as_u16(), err.code()), (400, "bad_request"));
        let err = parse_json::<Body>(br#"{"hostname":"a.b","target_port":1} x"#).unwrap_err();
        assert_eq!(err.status(), 400);
        let err = parse_json::<Body>(br#"{"hostname":"a.b","target_port":"x"}"#).unwrap_err();
        assert_eq!(err.status(), 422);
        assert_eq!(err.field(), Some("target_port"));
        assert!(err.message().contains("\"x\""), "{}", err.message());
        let err = parse_json::<Body>(br#"{"hostname":"a.b"}"#).unwrap_err();
        assert!(err.message().contains("target_port"), "{}", err.message());
        assert!(parse_json::<Body>(br#"{"hostname":"a.b","target_port":1}"#).is_ok());
    }
}
