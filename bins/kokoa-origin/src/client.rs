//! The control plane's API as an origin uses it: enroll, fetch the configuration
//! (conditional and long-polled), heartbeat.

use std::time::Duration;

use kokoa_agent::{Api, ApiError, CaPin, Enrolled, Secret, with_causes};
use kokoa_core::{OriginConfig, OriginId};
use serde::Deserialize;

use crate::{Error, heartbeat::Heartbeat, state::Credential};

const USER_AGENT: &str = concat!("kokoa-origin/", env!("CARGO_PKG_VERSION"));

/// The origin's configuration endpoint.
const CONFIG_PATH: &str = "/api/v1/origins/me/config";

/// A client of the control plane for one enrolled origin.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    api: Api,
    node_id: OriginId,
}

impl ControlPlane {
    /// A client for the origin described by `credential`.
    pub fn new(credential: &Credential) -> Result<Self, Error> {
        Ok(Self {
            api: Api::new(
                USER_AGENT,
                &credential.control_plane_url,
                credential.ca_pin,
                credential.credential.clone(),
            )?,
            node_id: credential.node_id.clone(),
        })
    }

    /// This origin's id.
    pub fn node_id(&self) -> &OriginId {
        &self.node_id
    }

    /// The API client, for what the agents share (registering keys).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Exchanges the single-use enrollment `token` for the origin's credential
    /// (`POST /api/v1/enroll`), registering `wireguard_public_key`, the public half of the
    /// origin's own key.
    /// With `ca_pin`, only the control plane's own CA is trusted, then and afterwards.
    pub async fn enroll(
        control_plane_url: &str,
        ca_pin: Option<CaPin>,
        token: &Secret,
        wireguard_public_key: &str,
    ) -> Result<Credential, Error> {
        let Enrolled {
            control_plane_url,
            node_id,
            credential,
            ca_pin,
        } = Api::enroll(
            USER_AGENT,
            control_plane_url,
            ca_pin,
            token,
            "origin",
            wireguard_public_key,
        )
        .await?;
        Ok(Credential {
            control_plane_url,
            node_id,
            credential,
            ca_pin,
        })
    }

    /// `GET /api/v1/origins/me/config`, conditional on `current` (the `config_hash` this
    /// origin has) and, with `wait`, long-polled. `None`: unchanged (`304`). A configuration
    /// whose content does not match its `config_hash` is refused.
    pub async fn fetch_config(
        &self,
        current: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<Option<OriginConfig>, Error> {
        let Some(bytes) = self.api.fetch_config(CONFIG_PATH, current, wait).await? else {
            return Ok(None);
        };
        let config: OriginConfig =
            serde_json::from_slice(&bytes).map_err(|e| Error::BadAnswer {
                url: self.api.config_url(CONFIG_PATH, wait),
                message: e.to_string(),
            })?;
        config.verify_hash().map_err(|e| Error::Refused {
            hash: config.config_hash.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some(config))
    }

    /// `POST /api/v1/heartbeat`.
    pub async fn heartbeat(&self, body: &Heartbeat) -> Result<(), Error> {
        Ok(self.api.post("/api/v1/heartbeat", body).await?)
    }
}

impl From<ApiError> for Error {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidUrl { url, reason } => Self::InvalidUrl { url, reason },
            ApiError::Http { url, source } => Self::Http {
                url,
                message: with_causes(&source),
            },
            ApiError::Status { url, status, body } => Self::Status {
                url,
                status,
                message: api_message(&body),
            },
            ApiError::BadAnswer { url, message } => Self::BadAnswer { url, message },
            ApiError::WrongNodeKind { kind } => Self::WrongNodeKind { kind },
        }
    }
}

/// `code: message` from the API's `{"error":{"code","message"}}`, else the start of `body`.
fn api_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    match serde_json::from_str::<Body>(body) {
        Ok(Body { error }) => format!("{}: {}", error.code, error.message),
        Err(_) => body.chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_shown_as_the_api_said_them() {
        let body = r#"{"error":{"code":"unauthorized","message":"the bearer token is unknown"}}"#;
        assert_eq!(
            api_message(body),
            "unauthorized: the bearer token is unknown"
        );
        assert_eq!(api_message("Bad Gateway"), "Bad Gateway");
    }
}
