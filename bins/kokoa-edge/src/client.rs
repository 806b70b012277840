//! The control plane's API as an edge uses it: enroll, fetch the configuration (conditional
//! and long-polled), heartbeat, ready.

use std::time::Duration;

use kokoa_agent::{Api, Enrolled, Secret};
use kokoa_core::{EdgeConfig, EdgeNodeId};
use serde::Serialize;

use crate::{Error, state::Credential};

const USER_AGENT: &str = concat!("kokoa-edge/", env!("CARGO_PKG_VERSION"));

/// The answer to a configuration fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// `304 Not Modified`: the configuration is still the one named in `If-None-Match`.
    NotModified,
    /// `200 OK` with a configuration, parsed and checked against its hash.
    Config(EdgeConfig),
}

/// A client of the control plane for one enrolled edge.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    api: Api,
    node_id: EdgeNodeId,
}

impl ControlPlane {
    /// A client for the edge described by `credential`.
    pub fn new(credential: &Credential) -> Result<Self, Error> {
        Ok(Self {
            api: Api::new(
                USER_AGENT,
                &credential.control_plane_url,
                credential.credential.clone(),
            )?,
            node_id: credential.node_id.clone(),
        })
    }

    /// This edge's id.
    pub fn node_id(&self) -> &EdgeNodeId {
        &self.node_id
    }

    /// Exchanges the single-use enrollment `token` for a node credential
    /// (`POST /api/v1/enroll`).
    pub async fn enroll(control_plane_url: &str, token: &Secret) -> Result<Credential, Error> {
        let Enrolled {
            control_plane_url,
            node_id,
            credential,
        } = Api::enroll(USER_AGENT, control_plane_url, token, "edge").await?;
        Ok(Credential {
            control_plane_url,
            node_id,
            credential,
        })
    }

    /// `GET /api/v1/edge-nodes/me/config`, conditional on `current` (the `config_hash` this
    /// edge has) and, when `wait` is given, long-polled: the control plane holds the request
    /// until the configuration changes or `wait` has passed.
    ///
    /// A payload that does not parse or does not match its hash is [`Error::Refused`].
    pub async fn fetch_config(
        &self,
        current: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<Fetched, Error> {
        let Some(bytes) = self
            .api
            .fetch_config("/api/v1/edge-nodes/me/config", current, wait)
            .await?
        else {
            return Ok(Fetched::NotModified);
        };
        let config: EdgeConfig = serde_json::from_slice(&bytes).map_err(|e| Error::Refused {
            hash: stated_hash(&bytes),
            reason: format!("the payload does not parse: {e}"),
        })?;
        config.verify_hash().map_err(|e| Error::Refused {
            hash: config.config_hash().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Fetched::Config(config))
    }

    /// `POST /api/v1/heartbeat`.
    pub async fn heartbeat(&self, body: &impl Serialize) -> Result<(), Error> {
        Ok(self.api.post("/api/v1/heartbeat", body).await?)
    }

    /// `POST /api/v1/edge-nodes/{id}/ready`: the edge serves its first configuration.
    pub async fn ready(&self) -> Result<(), Error> {
        let path = format!("/api/v1/edge-nodes/{}/ready", self.node_id);
        Ok(self.api.post(&path, &serde_json::json!({})).await?)
    }
}

/// The `config_hash` a payload that failed to parse claims, to name it in logs.
fn stated_hash(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("config_hash")?
                .as_str()
                .map(|s| s.chars().take(64).collect())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
