//! Vultr instances through the API v2 with an API key.
//!
//! | call | request | answer |
//! |---|---|---|
//! | create | `POST /v2/instances` | `202 {"instance":{"id":…,"status":"pending",…}}` |
//! | status | `GET /v2/instances/{id}` | `200 {"instance":{…,"main_ip","v6_main_ip","power_status","server_status"}}` |
//! | destroy | `DELETE /v2/instances/{id}` | `204`; `404` counts as already destroyed |
//! | list | `GET /v2/instances?tag={tag}&per_page=500[&cursor={next}]` | `200 {"instances":[…],"meta":{"total":…,"links":{"next":"…","prev":"…"}}}` |
//!
//! The [`InstanceConfig::idempotency_key`] travels as one more tag, `kokoa-key:<key>`, and
//! a listed instance's key is read back from its `tags`. Vultr has no idempotent create:
//! look with [`Provisioner::find_instance`] before creating again. The list is read page
//! by page, each `meta.links.next` cursor asking for the next, until it is empty.
//!
//! User data travels base64-encoded. A numeric [`InstanceConfig::image`] is sent as
//! `os_id`, anything else as `image_id` (a marketplace application image). Errors come as
//! `{"error":"…","status":404}`.

use std::net::IpAddr;

use async_trait::async_trait;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use reqwest::{Client, Method};
use serde::Deserialize;
use serde_json::json;

use kokoa_core::Name;

use crate::{
    Error, IdempotencyKey, Instance, InstanceConfig, InstanceId, InstanceStatus, Provisioner,
    Secret, TaggedInstance,
    http::{Api, MAX_PAGES, default_client, too_many_pages},
};

const NAME: &str = "vultr";

/// The cloud-init limit we hold to before encoding (Vultr publishes none; this is the
/// common cloud limit).
const MAX_USER_DATA: usize = 64 * 1024;

/// The largest page Vultr serves.
const PER_PAGE: &str = "500";

/// Creates and destroys Vultr instances.
#[derive(Debug)]
pub struct Vultr {
    api: Api,
}

impl Vultr {
    /// The real API.
    pub const API_URL: &'static str = "https://api.vultr.com";

    /// A provider for the real API with the account's API key.
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

/// `{"error":"Invalid instance-id.","status":404}`
fn describe(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        error: String,
    }
    serde_json::from_slice::<Body>(body).ok().map(|b| b.error)
}

#[derive(Deserialize)]
struct Answer {
    instance: VultrInstance,
}

#[derive(Deserialize)]
struct VultrInstance {
    id: String,
    status: String,
    #[serde(default)]
    power_status: String,
    #[serde(default)]
    server_status: String,
    #[serde(default)]
    main_ip: String,
    #[serde(default)]
    v6_main_ip: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// One page of `GET /v2/instances`.
#[derive(Deserialize)]
struct Page {
    instances: Vec<VultrInstance>,
    #[serde(default)]
    meta: Meta,
}

#[derive(Default, Deserialize)]
struct Meta {
    #[serde(default)]
    links: Links,
}

#[derive(Default, Deserialize)]
struct Links {
    #[serde(default)]
    next: Option<String>,
}

/// An address Vultr reports, or `None` for the `0.0.0.0` / empty it shows before one is
/// assigned.
fn assigned<A: std::str::FromStr + Into<IpAddr> + Copy>(text: &str) -> Option<A> {
    text.parse::<A>()
        .ok()
        .filter(|a| !(*a).into().is_unspecified())
}

impl VultrInstance {
    fn status(&self) -> InstanceStatus {
        match (
            self.status.as_str(),
            self.power_status.as_str(),
            self.server_status.as_str(),
        ) {
            ("active", "running", "ok") => InstanceStatus::Running {
                ipv4: assigned(&self.main_ip),
                ipv6: assigned(&self.v6_main_ip),
            },
            ("active", "stopped", _) | ("suspended", _, _) => InstanceStatus::Stopped,
            // Booting, installing, or locked for a change: not reachable yet.
            ("pending" | "active" | "resizing", _, _) => InstanceStatus::Provisioning,
            (other, _, _) => {
                tracing::warn!(instance = %self.id, status = other, "unknown Vultr instance status");
                InstanceStatus::Provisioning
            }
        }
    }

    fn tagged(&self) -> Result<TaggedInstance, Error> {
        Ok(TaggedInstance {
            id: InstanceId::parse(&self.id)?,
            status: self.status(),
            name: self.label.clone().filter(|l| !l.is_empty()),
            idempotency_key: IdempotencyKey::from_tags(self.tags.iter().map(String::as_str)),
        })
    }
}

#[async_trait]
impl Provisioner for Vultr {
    fn name(&self) -> &str {
        NAME
    }

    async fn create_instance(&self, config: &InstanceConfig) -> Result<Instance, Error> {
        config.check(NAME, MAX_USER_DATA)?;
        config.check_no_address()?;
        let mut tags: Vec<String> = config.tags.iter().map(Name::to_string).collect();
        tags.extend(config.idempotency_key.as_ref().map(IdempotencyKey::to_tag));
        let mut body = json!({
            "region": config.region,
            "plan": config.size,
            "label": config.name,
            "hostname": config.name,
            "user_data": STANDARD.encode(config.user_data.expose()),
            "tags": tags,
            "enable_ipv6": true,
        });
        match config.image.parse::<u64>() {
            Ok(os_id) => body["os_id"] = os_id.into(),
            Err(_) => body["image_id"] = config.image.as_str().into(),
        }
        if let Some(key) = &config.ssh_key_id {
            body["sshkey_id"] = json!([key]);
        }
        let answer: Answer = self
            .api
            .json(Method::POST, &["v2", "instances"], Some(&body))
            .await?;
        Ok(Instance {
            id: InstanceId::parse(&answer.instance.id)?,
            status: answer.instance.status(),
        })
    }

    async fn destroy_instance(&self, id: &InstanceId) -> Result<(), Error> {
        self.api.delete(&["v2", "instances", id.as_str()]).await
    }

    async fn instance_status(&self, id: &InstanceId) -> Result<InstanceStatus, Error> {
        match self
            .api
            .json::<Answer>(Method::GET, &["v2", "instances", id.as_str()], None)
            .await
        {
            Ok(answer) => Ok(answer.instance.status()),
            Err(e) if e.is_not_found() => Ok(InstanceStatus::Gone),
            Err(e) => Err(e),
        }
    }

    async fn list_instances(&self, tag: &Name) -> Result<Vec<TaggedInstance>, Error> {
        let mut found = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("tag", tag.as_str()), ("per_page", PER_PAGE)];
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.as_str()));
            }
            let answer: Page = self.api.get_page(&["v2", "instances"], &query).await?;
            for instance in &answer.instances {
                let instance = instance.tagged()?;
                if instance.status != InstanceStatus::Gone {
                    found.push(instance);
                }
            }
            match answer.meta.links.next.filter(|next| !next.is_empty()) {
                Some(next) if !answer.instances.is_empty() => cursor = Some(next),
                _ => return Ok(found),
            }
        }
        Err(too_many_pages(NAME, "GET /v2/instances"))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn instance(status: &str, power: &str, server: &str, ip: &str) -> VultrInstance {
        VultrInstance {
            id: "cb676a46-66fd-4dfb-b839-443f2e6c0b60".into(),
            status: status.into(),
            power_status: power.into(),
            server_status: server.into(),
            main_ip: ip.into(),
            v6_main_ip: String::new(),
            label: None,
            tags: Vec::new(),
        }
    }

    #[test]
    fn statuses() {
        let pending = instance("pending", "running", "none", "0.0.0.0");
        assert_eq!(pending.status(), InstanceStatus::Provisioning);
        let booting = instance("active", "running", "installingbooting", "203.0.113.20");
        assert_eq!(booting.status(), InstanceStatus::Provisioning);
        let mut ok = instance("active", "running", "ok", "203.0.113.20");
        ok.v6_main_ip = "2001:db8:5400::1".into();
        assert_eq!(
            ok.status(),
            InstanceStatus::Running {
                ipv4: Some(Ipv4Addr::new(203, 0, 113, 20)),
                ipv6: Some("2001:db8:5400::1".parse::<Ipv6Addr>().unwrap()),
            }
        );
        let no_ip = instance("active", "running", "ok", "0.0.0.0");
        assert_eq!(
            no_ip.status(),
            InstanceStatus::Running {
                ipv4: None,
                ipv6: None
            }
        );
        assert_eq!(
            instance("active", "stopped", "ok", "203.0.113.20").status(),
            InstanceStatus::Stopped
        );
        assert_eq!(
            instance("suspended", "stopped", "ok", "203.0.113.20").status(),
            InstanceStatus::Stopped
        );
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            describe(br#"{"error":"Invalid instance-id.","status":404}"#).as_deref(),
            Some("Invalid instance-id.")
        );
        assert_eq!(describe(b""), None);
    }
}
