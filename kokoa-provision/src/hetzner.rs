//! Hetzner Cloud servers through the API v1 with a project's API token.
//!
//! | call | request | answer |
//! |---|---|---|
//! | create | `POST /v1/servers` | `201 {"server":{"id":…,"status":"initializing",…},"action":{…}}` |
//! | status | `GET /v1/servers/{id}` | `200 {"server":{…,"public_net":{"ipv4":{"ip"},"ipv6":{"ip"}}}}` |
//! | destroy | `DELETE /v1/servers/{id}` | `200 {"action":{…}}`; `404` counts as already destroyed |
//! | list | `GET /v1/servers?label_selector={tag}&per_page=50&page={n}` | `200 {"servers":[…],"meta":{"pagination":{"next_page":…}}}` |
//!
//! [`InstanceConfig::region`] is a location (`nbg1`, `sin`), `size` a server type (`cx22`),
//! tags become labels with empty values, and the
//! [`idempotency_key`](InstanceConfig::idempotency_key) the label `kokoa-key=<key>` (a label
//! value holds at most 63 characters and starts and ends with a letter or digit, which
//! every [`IdempotencyKey`] does). Listing selects the tag's label (`label_selector=kokoa`)
//! and reads the pages until `meta.pagination.next_page` is null. Hetzner has no idempotent
//! create: look with [`Provisioner::find_instance`] before creating again. Errors come as
//! `{"error":{"code":"not_found","message":"…"}}`; a duplicate name is a 409
//! `uniqueness_error`.

use std::net::{Ipv4Addr, Ipv6Addr};

use async_trait::async_trait;
use reqwest::{Client, Method};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use std::collections::BTreeMap;

use kokoa_core::Name;

use crate::{
    Error, IdempotencyKey, Instance, InstanceConfig, InstanceId, InstanceStatus, Provisioner,
    Secret, TaggedInstance,
    http::{Api, MAX_PAGES, default_client, id_or_name, numeric_id, too_many_pages},
};

const NAME: &str = "hetzner";

/// Hetzner Cloud accepts up to 32 KiB of user data.
const MAX_USER_DATA: usize = 32 * 1024;

/// The largest page Hetzner serves.
const PER_PAGE: &str = "50";

/// Creates and destroys Hetzner Cloud servers.
#[derive(Debug)]
pub struct Hetzner {
    api: Api,
}

impl Hetzner {
    /// The real API.
    pub const API_URL: &'static str = "https://api.hetzner.cloud";

    /// A provider for the real API with a project's read-write API token.
    pub fn new(token: &Secret) -> Result<Self, Error> {
        Self::with_client(default_client(NAME)?, Self::API_URL, token)
    }

    /// A provider that sends its calls with `client` to `base_url` (the API root without
    /// `/v1`), e.g. a local test server.
    pub fn with_client(client: Client, base_url: &str, token: &Secret) -> Result<Self, Error> {
        Ok(Self {
            api: Api::new(NAME, client, base_url, token, describe)?,
        })
    }
}

/// `{"error":{"code":"not_found","message":"server with ID '42' not found","details":{}}}`
fn describe(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    Some(format!("{} ({})", body.error.message, body.error.code))
}

#[derive(Deserialize)]
struct Answer {
    server: Server,
}

#[derive(Deserialize)]
struct Server {
    id: u64,
    status: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    public_net: PublicNet,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// One page of `GET /v1/servers`.
#[derive(Deserialize)]
struct Page {
    servers: Vec<Server>,
    #[serde(default)]
    meta: Meta,
}

#[derive(Default, Deserialize)]
struct Meta {
    #[serde(default)]
    pagination: Pagination,
}

#[derive(Default, Deserialize)]
struct Pagination {
    #[serde(default)]
    next_page: Option<u64>,
}

#[derive(Default, Deserialize)]
struct PublicNet {
    ipv4: Option<Address<Ipv4Addr>>,
    ipv6: Option<Address<String>>,
}

#[derive(Deserialize)]
struct Address<A> {
    ip: A,
}

/// The server's own address in its IPv6 network: Hetzner assigns a /64 (`2001:db8::/64`)
/// and its images configure the first address in it, `::1`.
fn first_address(network: &str) -> Option<Ipv6Addr> {
    let (prefix, _len) = network.split_once('/')?;
    let base: Ipv6Addr = prefix.parse().ok()?;
    Some(Ipv6Addr::from(u128::from(base) | 1))
}

impl Server {
    fn status(&self) -> InstanceStatus {
        match self.status.as_str() {
            "running" => InstanceStatus::Running {
                ipv4: self.public_net.ipv4.as_ref().map(|a| a.ip),
                ipv6: self
                    .public_net
                    .ipv6
                    .as_ref()
                    .and_then(|a| first_address(&a.ip)),
            },
            "off" | "stopping" => InstanceStatus::Stopped,
            "deleting" => InstanceStatus::Gone,
            "initializing" | "starting" | "migrating" | "rebuilding" | "unknown" => {
                InstanceStatus::Provisioning
            }
            other => {
                tracing::warn!(
                    server = self.id,
                    status = other,
                    "unknown Hetzner server status"
                );
                InstanceStatus::Provisioning
            }
        }
    }

    fn tagged(&self) -> Result<TaggedInstance, Error> {
        Ok(TaggedInstance {
            id: InstanceId::parse(&self.id.to_string())?,
            status: self.status(),
            name: self.name.clone(),
            idempotency_key: self
                .labels
                .get(IdempotencyKey::TAG)
                .and_then(|key| IdempotencyKey::parse(key).ok()),
        })
    }
}

#[async_trait]
impl Provisioner for Hetzner {
    fn name(&self) -> &str {
        NAME
    }

    async fn create_instance(&self, config: &InstanceConfig) -> Result<Instance, Error> {
        config.check(NAME, MAX_USER_DATA)?;
        config.check_no_address()?;
        let mut labels: Map<String, Value> = config
            .tags
            .iter()
            .map(|tag| (tag.to_string(), Value::from("")))
            .collect();
        if let Some(key) = &config.idempotency_key {
            labels.insert(IdempotencyKey::TAG.to_owned(), Value::from(key.as_str()));
        }
        let mut body = json!({
            "name": config.name,
            "server_type": config.size,
            "image": config.image,
            "location": config.region,
            "user_data": config.user_data.expose(),
            "labels": labels,
            "public_net": {"enable_ipv4": true, "enable_ipv6": true},
        });
        if let Some(key) = &config.ssh_key_id {
            body["ssh_keys"] = json!([id_or_name(key)]);
        }
        let answer: Answer = self
            .api
            .json(Method::POST, &["v1", "servers"], Some(&body))
            .await?;
        Ok(Instance {
            id: InstanceId::parse(&answer.server.id.to_string())?,
            status: answer.server.status(),
        })
    }

    async fn destroy_instance(&self, id: &InstanceId) -> Result<(), Error> {
        let id = numeric_id(id, "Hetzner server ids are numbers")?;
        self.api.delete(&["v1", "servers", id]).await
    }

    async fn instance_status(&self, id: &InstanceId) -> Result<InstanceStatus, Error> {
        let id = numeric_id(id, "Hetzner server ids are numbers")?;
        match self
            .api
            .json::<Answer>(Method::GET, &["v1", "servers", id], None)
            .await
        {
            Ok(answer) => Ok(answer.server.status()),
            Err(e) if e.is_not_found() => Ok(InstanceStatus::Gone),
            Err(e) => Err(e),
        }
    }

    async fn list_instances(&self, tag: &Name) -> Result<Vec<TaggedInstance>, Error> {
        let mut found = Vec::new();
        let mut page = 1;
        for _ in 0..MAX_PAGES {
            let number = page.to_string();
            let query = [
                ("label_selector", tag.as_str()),
                ("per_page", PER_PAGE),
                ("page", number.as_str()),
            ];
            let answer: Page = self.api.get_page(&["v1", "servers"], &query).await?;
            for server in &answer.servers {
                let instance = server.tagged()?;
                if instance.status != InstanceStatus::Gone {
                    found.push(instance);
                }
            }
            match answer.meta.pagination.next_page {
                Some(next) if next > page && !answer.servers.is_empty() => page = next,
                _ => return Ok(found),
            }
        }
        Err(too_many_pages(NAME, "GET /v1/servers"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status: &str, public_net: Value) -> Server {
        serde_json::from_value(json!({"id": 42, "status": status, "public_net": public_net}))
            .unwrap()
    }

    #[test]
    fn statuses() {
        let net = json!({"ipv4": {"ip": "203.0.113.30"}, "ipv6": {"ip": "2001:db8:1234::/64"}});
        assert_eq!(
            server("running", net.clone()).status(),
            InstanceStatus::Running {
                ipv4: Some(Ipv4Addr::new(203, 0, 113, 30)),
                ipv6: Some("2001:db8:1234::1".parse().unwrap()),
            }
        );
        let v6_only = json!({"ipv4": null, "ipv6": {"ip": "2001:db8:1234::/64"}});
        assert_eq!(
            server("running", v6_only).status().address(),
            Some("2001:db8:1234::1".parse().unwrap())
        );
        assert_eq!(
            server("initializing", net.clone()).status(),
            InstanceStatus::Provisioning
        );
        assert_eq!(server("off", net.clone()).status(), InstanceStatus::Stopped);
        assert_eq!(server("deleting", net).status(), InstanceStatus::Gone);
    }

    #[test]
    fn error_bodies() {
        let body = br#"{"error":{"code":"uniqueness_error","message":"server name is already used","details":{"fields":[{"name":"name"}]}}}"#;
        assert_eq!(
            describe(body).as_deref(),
            Some("server name is already used (uniqueness_error)")
        );
        assert_eq!(first_address("not an address"), None);
    }
}
