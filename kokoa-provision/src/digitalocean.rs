//! DigitalOcean droplets through the API v2 with a personal access token.
//!
//! | call | request | answer |
//! |---|---|---|
//! | create | `POST /v2/droplets` | `202 {"droplet":{"id":…,"status":"new",…}}` |
//! | status | `GET /v2/droplets/{id}` | `200 {"droplet":{…,"networks":{"v4":[…],"v6":[…]}}}` |
//! | destroy | `DELETE /v2/droplets/{id}` | `204`; `404` counts as already destroyed |
//! | list | `GET /v2/droplets?tag_name={tag}&per_page=200&page={n}` | `200 {"droplets":[…],"links":{"pages":{"next":…}},"meta":{"total":…}}` |
//!
//! The [`InstanceConfig::idempotency_key`] travels as one more tag, `kokoa-key:<key>`
//! (DigitalOcean tags may hold letters, digits, `:`, `-` and `_`, up to 255 characters, and
//! are made when first used); a listed droplet's key is read back from it. DigitalOcean has
//! no idempotent create: look with [`Provisioner::find_instance`] before creating again.
//! Pages are asked for by number until an answer has no `links.pages.next`; the link
//! itself is not followed, so the token only ever goes to the configured API.
//!
//! Errors come as `{"id":"not_found","message":"…"}`; a 429 carries `Retry-After` or
//! `ratelimit-reset`.

use std::net::{Ipv4Addr, Ipv6Addr};

use async_trait::async_trait;
use reqwest::{Client, Method};
use serde::Deserialize;
use serde_json::json;

use kokoa_core::Name;

use crate::{
    Error, IdempotencyKey, Instance, InstanceConfig, InstanceId, InstanceStatus, Provisioner,
    Secret, TaggedInstance,
    http::{Api, MAX_PAGES, default_client, id_or_name, numeric_id, too_many_pages},
};

const NAME: &str = "digitalocean";

/// DigitalOcean accepts up to 64 KiB of user data.
const MAX_USER_DATA: usize = 64 * 1024;

/// The largest page DigitalOcean serves.
const PER_PAGE: &str = "200";

/// Creates and destroys droplets.
#[derive(Debug)]
pub struct DigitalOcean {
    api: Api,
}

impl DigitalOcean {
    /// The real API.
    pub const API_URL: &'static str = "https://api.digitalocean.com";

    /// A provider for the real API with `token` (the `DO_API_TOKEN` of SPEC §12).
    pub fn new(token: &Secret) -> Result<Self, Error> {
        Self::with_client(default_client(NAME)?, Self::API_URL, token)
    }

    /// A provider that sends its calls with `client` to `base_url` (the API root without
    /// `/v2`), e.g. a local test server.
    pub fn with_client(client: Client, base_url: &str, token: &Secret) -> Result<Self, Error> {
        Ok(Self {
            api: Api::new(NAME, client, base_url, token, describe)?,
        })
    }
}

/// `{"id":"not_found","message":"The resource you were accessing could not be found."}`
fn describe(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        id: String,
        message: String,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    Some(format!("{} ({})", body.message, body.id))
}

#[derive(Deserialize)]
struct Answer {
    droplet: Droplet,
}

#[derive(Deserialize)]
struct Droplet {
    id: u64,
    status: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    networks: Networks,
    #[serde(default)]
    tags: Vec<String>,
}

/// One page of `GET /v2/droplets`.
#[derive(Deserialize)]
struct Page {
    droplets: Vec<Droplet>,
    #[serde(default)]
    links: Links,
}

#[derive(Default, Deserialize)]
struct Links {
    #[serde(default)]
    pages: Option<Pages>,
}

#[derive(Deserialize)]
struct Pages {
    #[serde(default)]
    next: Option<String>,
}

#[derive(Default, Deserialize)]
struct Networks {
    #[serde(default)]
    v4: Vec<Network<Ipv4Addr>>,
    #[serde(default)]
    v6: Vec<Network<Ipv6Addr>>,
}

#[derive(Deserialize)]
struct Network<A> {
    ip_address: A,
    #[serde(rename = "type")]
    kind: String,
}

fn public<A: Copy>(networks: &[Network<A>]) -> Option<A> {
    networks
        .iter()
        .find(|n| n.kind == "public")
        .map(|n| n.ip_address)
}

impl Droplet {
    fn status(&self) -> InstanceStatus {
        match self.status.as_str() {
            "active" => InstanceStatus::Running {
                ipv4: public(&self.networks.v4),
                ipv6: public(&self.networks.v6),
            },
            "off" => InstanceStatus::Stopped,
            "archive" => InstanceStatus::Gone,
            "new" => InstanceStatus::Provisioning,
            other => {
                tracing::warn!(droplet = self.id, status = other, "unknown droplet status");
                InstanceStatus::Provisioning
            }
        }
    }

    fn tagged(&self) -> Result<TaggedInstance, Error> {
        Ok(TaggedInstance {
            id: InstanceId::parse(&self.id.to_string())?,
            status: self.status(),
            name: self.name.clone(),
            idempotency_key: IdempotencyKey::from_tags(self.tags.iter().map(String::as_str)),
        })
    }
}

#[async_trait]
impl Provisioner for DigitalOcean {
    fn name(&self) -> &str {
        NAME
    }

    async fn create_instance(&self, config: &InstanceConfig) -> Result<Instance, Error> {
        config.check(NAME, MAX_USER_DATA)?;
        config.check_no_address()?;
        let mut tags: Vec<String> = config.tags.iter().map(Name::to_string).collect();
        tags.extend(config.idempotency_key.as_ref().map(IdempotencyKey::to_tag));
        let mut body = json!({
            "name": config.name,
            "region": config.region,
            "size": config.size,
            "image": id_or_name(&config.image),
            "user_data": config.user_data.expose(),
            "tags": tags,
            "ipv6": true,
        });
        if let Some(key) = &config.ssh_key_id {
            body["ssh_keys"] = json!([id_or_name(key)]);
        }
        let answer: Answer = self
            .api
            .json(Method::POST, &["v2", "droplets"], Some(&body))
            .await?;
        Ok(Instance {
            id: InstanceId::parse(&answer.droplet.id.to_string())?,
            status: answer.droplet.status(),
        })
    }

    async fn destroy_instance(&self, id: &InstanceId) -> Result<(), Error> {
        let id = numeric_id(id, "DigitalOcean droplet ids are numbers")?;
        self.api.delete(&["v2", "droplets", id]).await
    }

    async fn instance_status(&self, id: &InstanceId) -> Result<InstanceStatus, Error> {
        let id = numeric_id(id, "DigitalOcean droplet ids are numbers")?;
        match self
            .api
            .json::<Answer>(Method::GET, &["v2", "droplets", id], None)
            .await
        {
            Ok(answer) => Ok(answer.droplet.status()),
            Err(e) if e.is_not_found() => Ok(InstanceStatus::Gone),
            Err(e) => Err(e),
        }
    }

    async fn list_instances(&self, tag: &Name) -> Result<Vec<TaggedInstance>, Error> {
        let mut found = Vec::new();
        for page in 1..=MAX_PAGES {
            let number = page.to_string();
            let query = [
                ("tag_name", tag.as_str()),
                ("per_page", PER_PAGE),
                ("page", number.as_str()),
            ];
            let answer: Page = self.api.get_page(&["v2", "droplets"], &query).await?;
            for droplet in &answer.droplets {
                let instance = droplet.tagged()?;
                if instance.status != InstanceStatus::Gone {
                    found.push(instance);
                }
            }
            let next = answer.links.pages.and_then(|p| p.next);
            if next.is_none() || answer.droplets.is_empty() {
                return Ok(found);
            }
        }
        Err(too_many_pages(NAME, "GET /v2/droplets"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn droplet(status: &str) -> Droplet {
        serde_json::from_value(json!({
            "id": 3164494,
            "status": status,
            "networks": {
                "v4": [
                    {"ip_address": "10.128.192.124", "netmask": "255.255.0.0", "gateway": "nil", "type": "private"},
                    {"ip_address": "203.0.113.10", "netmask": "255.255.240.0", "gateway": "203.0.113.1", "type": "public"}
                ],
                "v6": []
            }
        }))
        .unwrap()
    }

    #[test]
    fn statuses() {
        assert_eq!(droplet("new").status(), InstanceStatus::Provisioning);
        assert_eq!(
            droplet("active").status(),
            InstanceStatus::Running {
                ipv4: Some(Ipv4Addr::new(203, 0, 113, 10)),
                ipv6: None
            }
        );
        assert_eq!(droplet("off").status(), InstanceStatus::Stopped);
        assert_eq!(droplet("archive").status(), InstanceStatus::Gone);
        assert_eq!(droplet("resizing").status(), InstanceStatus::Provisioning);
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            describe(br#"{"id":"unprocessable_entity","message":"Region is not available"}"#)
                .as_deref(),
            Some("Region is not available (unprocessable_entity)")
        );
        assert_eq!(describe(b"<html>"), None);
    }
}
