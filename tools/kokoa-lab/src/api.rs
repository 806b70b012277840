//! A minimal client of the control plane's REST API, as the lab (root namespace) uses it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use kokoa_agent::CaPin;

use crate::Error;

/// The control plane at `base` with an admin token, trusted by the pin of its CA.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
    ca_pin: CaPin,
}

impl Api {
    /// A client of `base` (e.g. `https://10.99.0.1:8080`) authenticated by `token`, trusting
    /// only the CA pinned by `ca_pin`.
    pub fn new(base: String, token: String, ca_pin: CaPin) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tls_backend_preconfigured(kokoa_agent::pinned_client_config(ca_pin))
            .build()
            .map_err(|e| Error::Api {
                request: "client setup".into(),
                status: 0,
                body: e.to_string(),
            })?;
        Ok(Self {
            http,
            base,
            token,
            ca_pin,
        })
    }

    /// `GET path` without the token, as a node downloads: the answer's bytes on 200.
    pub async fn download(&self, path: &str) -> Result<Vec<u8>, Error> {
        let fail = |status: u16, body: String| Error::Api {
            request: format!("GET {path}"),
            status,
            body,
        };
        let answer = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| fail(0, e.to_string()))?;
        let status = answer.status();
        let bytes = answer.bytes().await.map_err(|e| fail(0, e.to_string()))?;
        if status != StatusCode::OK {
            return Err(fail(
                status.as_u16(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        Ok(bytes.into())
    }

    /// The admin token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The pin of the control plane's CA.
    pub fn ca_pin(&self) -> CaPin {
        self.ca_pin
    }

    /// Sends `method path` with an optional JSON body and returns the answer's bytes when
    /// its status is `expect`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expect: StatusCode,
    ) -> Result<Vec<u8>, Error> {
        let request = format!("{method} {path}");
        let fail = |status: u16, body: String| Error::Api {
            request: request.clone(),
            status,
            body,
        };
        let mut builder = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            builder = builder.json(body);
        }
        let answer = builder.send().await.map_err(|e| fail(0, e.to_string()))?;
        let status = answer.status();
        let bytes = answer
            .bytes()
            .await
            .map_err(|e| fail(status.as_u16(), e.to_string()))?;
        if status != expect {
            return Err(fail(
                status.as_u16(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        Ok(bytes.to_vec())
    }

    /// Like [`Api::send`], parsing the answer as JSON.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expect: StatusCode,
    ) -> Result<Value, Error> {
        let bytes = self
            .send(method.clone(), path, body.as_ref(), expect)
            .await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Api {
            request: format!("{method} {path}"),
            status: expect.as_u16(),
            body: format!("not JSON: {e}"),
        })
    }

    /// Whether `GET /health` answers 200.
    pub async fn healthy(&self) -> bool {
        self.http
            .get(format!("{}/health", self.base))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|a| a.status().is_success())
    }

    /// The status of `GET /ready` (0 when nothing answered within 5 s).
    pub async fn readiness(&self) -> u16 {
        self.http
            .get(format!("{}/ready", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_or(0, |a| a.status().as_u16())
    }

    /// Creates a route and returns its id.
    pub async fn add_route(
        &self,
        hostname: &str,
        origin_id: &str,
        port: u16,
    ) -> Result<String, Error> {
        let body = serde_json::json!({
            "hostname": hostname, "origin_id": origin_id, "target_port": port,
        });
        let route = self
            .json(
                Method::POST,
                "/api/v1/routes",
                Some(body),
                StatusCode::CREATED,
            )
            .await?;
        string_field(&route, "id", "POST /api/v1/routes")
    }

    /// The events of type `kind` (a type, or the start of types followed by `*`) numbered
    /// above `after`, oldest first (at most 1000).
    pub async fn events_after(&self, kind: &str, after: i64) -> Result<Vec<Value>, Error> {
        let path = format!("/api/v1/events?type={kind}&after={after}&limit=1000");
        let list = self.json(Method::GET, &path, None, StatusCode::OK).await?;
        Ok(list["events"].as_array().cloned().unwrap_or_default())
    }

    /// The newest event of type `kind`, if any.
    pub async fn newest_event(&self, kind: &str) -> Result<Option<Value>, Error> {
        let path = format!("/api/v1/events?type={kind}&limit=1");
        let list = self.json(Method::GET, &path, None, StatusCode::OK).await?;
        Ok(list["events"].as_array().and_then(|a| a.first()).cloned())
    }

    /// The number of the newest event (0 when there is none).
    pub async fn last_event_id(&self) -> Result<i64, Error> {
        let list = self
            .json(Method::GET, "/api/v1/events?limit=1", None, StatusCode::OK)
            .await?;
        Ok(list["events"][0]["id"].as_i64().unwrap_or(0))
    }

    /// Deletes a route.
    pub async fn delete_route(&self, id: &str) -> Result<(), Error> {
        let path = format!("/api/v1/routes/{id}");
        self.send(Method::DELETE, &path, None, StatusCode::NO_CONTENT)
            .await
            .map(drop)
    }
}

/// The string field `name` of an API answer.
pub fn string_field(value: &Value, name: &str, request: &str) -> Result<String, Error> {
    value[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Api {
            request: request.to_owned(),
            status: 0,
            body: format!("no string field {name:?} in {value}"),
        })
}
