//! The control plane's API as an edge uses it: enroll, fetch the configuration (conditional
//! and long-polled), heartbeat, ready.

use std::time::Duration;

use kokoa_agent::{Api, CaPin, Enrolled, Secret};
use kokoa_core::{CertificateRef, ContentHash, EdgeConfig, EdgeNodeId};
use serde::Serialize;
use zeroize::Zeroizing;

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

/// A certificate's chain and key as fetched from the control plane. `Debug` hides the key.
pub struct CertificatePems {
    /// The chain, leaf first.
    pub chain_pem: String,
    /// The private key; wiped from memory when dropped.
    pub private_key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for CertificatePems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificatePems")
            .field("private_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
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
                credential.ca_pin,
                credential.credential.clone(),
            )?,
            node_id: credential.node_id.clone(),
        })
    }

    /// This edge's id.
    pub fn node_id(&self) -> &EdgeNodeId {
        &self.node_id
    }

    /// The API client, for what the agents share (registering keys).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Exchanges the single-use enrollment `token` for a node credential
    /// (`POST /api/v1/enroll`), registering `wireguard_public_key`, the public half of the
    /// edge's own key. With `ca_pin`, only the control plane's own CA is trusted, then and
    /// afterwards.
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
            "edge",
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

    /// `GET /api/v1/edge-nodes/me/certificates/{name}`: the chain and key of a certificate
    /// in this edge's configuration, checked against `sha256`.
    pub async fn fetch_certificate(&self, cert: &CertificateRef) -> Result<CertificatePems, Error> {
        #[derive(serde::Deserialize)]
        struct Answer {
            chain_pem: String,
            private_key_pem: String,
        }
        let path = format!("/api/v1/edge-nodes/me/certificates/{}", cert.name);
        let url = self.api.config_url(&path, None);
        let bytes = Zeroizing::new(
            self.api
                .fetch_config(&path, None, None)
                .await?
                .unwrap_or_default(),
        );
        // The error says where, never what: the body holds a private key.
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| Error::BadAnswer {
            url: url.clone(),
            message: format!(
                "not a certificate (line {}, column {})",
                e.line(),
                e.column()
            ),
        })?;
        let got = ContentHash::of(answer.chain_pem.as_bytes());
        if got != cert.sha256 {
            return Err(Error::BadAnswer {
                url,
                message: format!(
                    "the chain's SHA-256 is {got}, the configuration says {}",
                    cert.sha256
                ),
            });
        }
        Ok(CertificatePems {
            chain_pem: answer.chain_pem,
            private_key_pem: Zeroizing::new(answer.private_key_pem),
        })
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
