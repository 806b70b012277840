//! The configuration an origin agent pulls (`GET /api/v1/origins/me/config`), declared once
//! for the control plane that builds it and the agent that reads it.

use serde::{Deserialize, Serialize};

use super::ContentHash;
use crate::{
    Error, HealthCheckPath, Hostname, Name, OriginId, OriginService, Port, Protocol, ServiceId,
    WgPublicKey,
};

/// The configuration payload of one origin.
///
/// The control plane fills the fields and calls [`with_computed_hash`]; the agent calls
/// [`verify_hash`] on what it received before applying it.
///
/// ```
/// use kokoa_core::{OriginConfig, OriginId};
///
/// let config = OriginConfig {
///     config_hash: String::new(),
///     origin_id: OriginId::parse("org_1")?,
///     wg0_conf: "[Interface]\nAddress = 10.0.1.1/24\n".into(),
///     nginx_conf: String::new(),
///     routes: Vec::new(),
///     services: Vec::new(),
///     key_changes: Vec::new(),
///     wireguard_public_key: None,
///     wireguard_key_requested: false,
/// }
/// .with_computed_hash();
/// config.verify_hash()?;
/// let mut altered = config.clone();
/// altered.wg0_conf.push_str("ListenPort = 1\n");
/// assert!(altered.verify_hash().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`with_computed_hash`]: Self::with_computed_hash
/// [`verify_hash`]: Self::verify_hash
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginConfig {
    /// Hash of the rest; also the `ETag`.
    pub config_hash: String,
    /// The origin.
    pub origin_id: OriginId,
    /// Its `wg0.conf` in wg-quick format without `PrivateKey`: one peer per edge, each
    /// dialled out to. The agent adds the key named by `wireguard_public_key`, which it
    /// made and holds.
    pub wg0_conf: String,
    /// Its local proxy (nginx, http context): the alternative to the agent's forwarding.
    pub nginx_conf: String,
    /// Routes to this origin.
    pub routes: Vec<OriginRoute>,
    /// Its services.
    pub services: Vec<ServiceEntry>,
    /// Edges whose key is being replaced (SPEC §10.3): the new key is a peer of `wg0_conf`
    /// without addresses that takes over from the old one at its first handshake.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_changes: Vec<KeyChangeEntry>,
    /// The public half of the key `wg0_conf` is used with; none until the origin
    /// registered one (it then uses the key it has and registers that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_public_key: Option<WgPublicKey>,
    /// Set while a key rotation waits for the origin's next key: the agent makes one and
    /// registers its public half.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wireguard_key_requested: bool,
}

/// A route to the origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginRoute {
    /// Public host name.
    pub hostname: Hostname,
    /// The local port its traffic goes to.
    pub target_port: Port,
}

/// A service running on the origin, as its agent checks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Its id (absent in configurations an agent saved before ids were sent).
    #[serde(default)]
    pub id: Option<ServiceId>,
    /// Name, unique within the origin.
    pub name: Name,
    /// Its local port.
    pub port: Port,
    /// `http`, `https` or `tcp`.
    pub protocol: Protocol,
    /// The path an HTTP(S) check asks for; without one, a TCP connect is the check.
    pub health_check_path: Option<HealthCheckPath>,
}

impl From<OriginService> for ServiceEntry {
    fn from(s: OriginService) -> Self {
        Self {
            id: Some(s.id),
            name: s.name,
            port: s.port,
            protocol: s.protocol,
            health_check_path: s.health_check_path,
        }
    }
}

/// One peer key being replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChangeEntry {
    /// The key in use.
    pub from: WgPublicKey,
    /// Its successor.
    pub to: WgPublicKey,
}

impl OriginConfig {
    /// The hash of everything but `config_hash`: SHA-256 of the JSON array of the other
    /// fields in their declared order.
    pub fn computed_hash(&self) -> ContentHash {
        let content = serde_json::to_vec(&(
            &self.origin_id,
            &self.wg0_conf,
            &self.nginx_conf,
            &self.routes,
            &self.services,
            &self.key_changes,
            &self.wireguard_public_key,
            self.wireguard_key_requested,
        ))
        .expect("validated values serialise");
        ContentHash::of(&content)
    }

    /// The configuration with `config_hash` set to [`computed_hash`](Self::computed_hash).
    pub fn with_computed_hash(mut self) -> Self {
        self.config_hash = self.computed_hash().to_string();
        self
    }

    /// Checks that `config_hash` matches the content: run by the agent before applying a
    /// received configuration.
    pub fn verify_hash(&self) -> Result<(), Error> {
        let computed = self.computed_hash();
        if computed.as_str() == self.config_hash {
            Ok(())
        } else {
            Err(Error::ConfigHashMismatch {
                stated: self.config_hash.clone(),
                computed: computed.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OriginConfig {
        OriginConfig {
            config_hash: String::new(),
            origin_id: OriginId::parse("org_1").unwrap(),
            wg0_conf: "[Interface]\nAddress = 10.0.1.1/24\n".into(),
            nginx_conf: String::new(),
            routes: vec![OriginRoute {
                hostname: Hostname::parse("app.hoge.com").unwrap(),
                target_port: Port::new(8080).unwrap(),
            }],
            services: vec![ServiceEntry {
                id: Some(ServiceId::parse("svc_1").unwrap()),
                name: Name::parse("web").unwrap(),
                port: Port::new(8080).unwrap(),
                protocol: Protocol::Http,
                health_check_path: None,
            }],
            key_changes: Vec::new(),
            wireguard_public_key: None,
            wireguard_key_requested: false,
        }
        .with_computed_hash()
    }

    /// The hash survives the JSON round trip an agent sees, and every field is in it.
    #[test]
    fn every_field_is_hashed_and_the_json_round_trip_keeps_the_hash() {
        let config = config();
        let json = serde_json::to_string(&config).unwrap();
        let back: OriginConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        back.verify_hash().unwrap();
        let key = WgPublicKey::parse("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=").unwrap();
        let changes: [&dyn Fn(&mut OriginConfig); 8] = [
            &|c| c.origin_id = OriginId::parse("org_2").unwrap(),
            &|c| c.wg0_conf.push('\n'),
            &|c| c.nginx_conf.push('#'),
            &|c| c.routes[0].target_port = Port::new(8081).unwrap(),
            &|c| c.services[0].health_check_path = Some(HealthCheckPath::parse("/h").unwrap()),
            &|c| {
                c.key_changes.push(KeyChangeEntry {
                    from: key.clone(),
                    to: key.clone(),
                })
            },
            &|c| c.wireguard_public_key = Some(key.clone()),
            &|c| c.wireguard_key_requested = true,
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut altered = config.clone();
            change(&mut altered);
            let err = altered.verify_hash().unwrap_err().to_string();
            assert!(err.contains(&config.config_hash), "change {i}: {err}");
        }
    }

    /// A configuration an older agent saved (services without ids) still reads.
    #[test]
    fn services_without_ids_read() {
        let json = r#"{"config_hash":"h","origin_id":"org_1","wg0_conf":"","nginx_conf":"",
            "routes":[],"services":[{"name":"web","port":8080,"protocol":"http",
            "health_check_path":null}]}"#;
        let config: OriginConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.services[0].id, None);
        assert!(config.verify_hash().is_err());
    }
}
