//! The settings of the control plane's duties: health checks (SPEC §8.4), the edge
//! automation (`edge_node_management`, SPEC §9) and the VPS providers it may use.

use std::{collections::BTreeMap, fmt, path::PathBuf, sync::Arc, time::Duration};

use kokoa_health::{Damping, EdgeRules, ObserverGuard};
use kokoa_provision::{AgentSource, EdgeNodeManagement, Provisioner};

/// How edges and origins are checked, beyond what `edge_node_management` sets (the HTTP
/// check's interval and failure threshold).
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// The port of every edge's HTTPS `/health` (443; another one only for tests).
    pub edge_https_port: u16,
    /// Longest wait for one check attempt (SPEC: 5 s).
    pub timeout: Duration,
    /// Successful checks in a row before an edge counts as healthy (SPEC: 3).
    pub recovery_threshold: u32,
    /// Checks running at once (SPEC: 10 workers).
    pub workers: usize,
    /// Period of the end-to-end check through each edge (SPEC: 30 s).
    pub end_to_end_interval: Duration,
    /// Period of the certificate check at each edge (SPEC: daily).
    pub certificate_interval: Duration,
    /// A certificate with fewer days left raises an alert.
    pub certificate_min_days: u32,
    /// Certificates (PEM) trusted beyond the system's, for the end-to-end and certificate
    /// checks: a private CA, or a test ACME server's.
    pub trusted_ca_file: Option<PathBuf>,
    /// No origin heartbeat for this long raises an alert (SPEC: 60 s).
    pub origin_heartbeat_timeout: Duration,
    /// Period of the origins' application check, run by the edges through their tunnels
    /// (SPEC: 30 s); failing 3 times in a row at every edge that reaches the origin serves
    /// its routes as 503.
    pub origin_application_interval: Duration,
    /// Disk use above this percentage of an origin raises a critical alert (SPEC: 90).
    pub origin_disk_percent: f64,
    /// The edge table's thresholds (heartbeat 30 s, error rate 10 %, CPU 90 % for 5 min).
    pub edge: EdgeRules,
    /// When so many edges look unhealthy at once that the checks, not the edges, are
    /// suspect (default: more than half).
    pub observer: ObserverGuard,
    /// How often an origin's state may change the edges' configuration (default 4 times
    /// a minute).
    pub damping: Damping,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            edge_https_port: 443,
            timeout: Duration::from_secs(5),
            recovery_threshold: 3,
            workers: 10,
            end_to_end_interval: Duration::from_secs(30),
            certificate_interval: Duration::from_secs(86_400),
            certificate_min_days: 7,
            trusted_ca_file: None,
            origin_heartbeat_timeout: Duration::from_secs(60),
            origin_application_interval: Duration::from_secs(30),
            origin_disk_percent: 90.0,
            edge: EdgeRules::default(),
            observer: ObserverGuard::default(),
            damping: Damping::default(),
        }
    }
}

/// A VPS provider the automation may create edges at.
#[derive(Clone)]
pub struct ProvisionerEntry {
    /// The client.
    pub provisioner: Arc<dyn Provisioner>,
    /// The image new edges boot (a slug, name or id, as the provider takes it).
    pub image: String,
    /// The size or plan used when an edge asks for none.
    pub size: String,
    /// The provider's id of the SSH key installed when an edge asks for none.
    pub ssh_key_id: Option<String>,
}

impl fmt::Debug for ProvisionerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisionerEntry")
            .field("provider", &self.provisioner.name())
            .field("image", &self.image)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// How the automation creates, replaces and destroys edges.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// SPEC §9 `edge_node_management`.
    pub management: EdgeNodeManagement,
    /// The providers, by the name edges carry (`digitalocean`, `lab`, ...).
    pub provisioners: BTreeMap<String, ProvisionerEntry>,
    /// Where new VPSes get the `kokoa-edge` agent from.
    pub agent: Option<AgentSource>,
    /// A VPS that has not come up (enrolled, tunnels up, checks passed) within this time
    /// is destroyed and replaced.
    pub provision_timeout: Duration,
    /// How long a new VPS's enrollment token stays valid.
    pub enrollment_ttl: Duration,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            management: EdgeNodeManagement::default(),
            provisioners: BTreeMap::new(),
            agent: None,
            provision_timeout: Duration::from_secs(15 * 60),
            enrollment_ttl: Duration::from_secs(3600),
        }
    }
}

/// How long what the control plane records is kept: the leader deletes older rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Events (default 7 days).
    pub events: Duration,
    /// Each edge's health check history (default 7 days).
    pub health_history: Duration,
    /// The leader's record of its actions (default 7 days).
    pub intents: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        const WEEK: Duration = Duration::from_secs(7 * 86_400);
        Self {
            events: WEEK,
            health_history: WEEK,
            intents: WEEK,
        }
    }
}

/// Everything the duties are configured with.
#[derive(Debug, Clone, Default)]
pub struct RuntimeSettings {
    /// Health checks.
    pub health: HealthSettings,
    /// What is kept, and for how long.
    pub retention: RetentionSettings,
    /// The edge automation.
    pub edges: EdgeSettings,
    /// Which modules are on until switched at run time (available ones default to on).
    pub modules: BTreeMap<crate::Module, bool>,
    /// Keys older than this are rotated, one at a time (`[wireguard] rotate_keys_days`);
    /// `None`: only by hand.
    pub key_rotation: Option<Duration>,
}

/// How certificates are ordered over ACME (the `[acme]` section).
#[derive(Clone)]
pub struct AcmeSettings {
    /// The certificate authority.
    pub issuer: kokoa_acme::Issuer,
    /// The account's contact address.
    pub contact: Option<kokoa_core::Email>,
    /// Renew this many days before expiry (default 30), unless the CA suggests a window.
    pub renew_days_before: u32,
    /// The port edges answer HTTP-01 on, checked before the CA is told to look (default
    /// 80; tests and labs that cannot bind 80 change it).
    pub http01_port: u16,
    /// Cloudflare's Origin CA for the names of some zones (`[acme.origin_ca]`).
    pub origin_ca: Option<OriginCaSettings>,
}

impl fmt::Debug for AcmeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The issuer's own Debug redacts the HMAC key.
        f.debug_struct("AcmeSettings")
            .field("issuer", &self.issuer)
            .field("contact", &self.contact)
            .field("renew_days_before", &self.renew_days_before)
            .field("http01_port", &self.http01_port)
            .field("origin_ca", &self.origin_ca)
            .finish()
    }
}

impl AcmeSettings {
    /// Settings for `issuer` with the defaults: no contact, renewal 30 days ahead, HTTP-01
    /// on port 80.
    pub fn new(issuer: kokoa_acme::Issuer) -> Self {
        Self {
            issuer,
            contact: None,
            renew_days_before: 30,
            http01_port: 80,
            origin_ca: None,
        }
    }

    /// A short name of the certificate authority for status pages: `letsencrypt`, ...
    /// or the directory URL.
    pub fn provider(&self) -> String {
        use kokoa_acme::Issuer;
        match &self.issuer {
            Issuer::LetsEncrypt => "letsencrypt".into(),
            Issuer::LetsEncryptStaging => "letsencrypt-staging".into(),
            Issuer::ZeroSsl(_) => "zerossl".into(),
            other => other.directory_url().to_owned(),
        }
    }
}

/// Certificates from Cloudflare's Origin CA (`[acme.origin_ca]`) for the routes whose host
/// name lies in one of `zones`: names proxied through Cloudflare, whose proxy is the only
/// client that trusts these certificates.
#[derive(Debug, Clone)]
pub struct OriginCaSettings {
    /// The API token or service key (its `Debug` shows neither).
    pub auth: kokoa_acme::cloudflare::OriginCaAuth,
    /// The key type of new certificates (default ECDSA P-256).
    pub key_type: kokoa_acme::cloudflare::OriginKeyType,
    /// How long new certificates are valid, in days (default 5475, 15 years).
    pub validity_days: u16,
    /// The API's base URL (default Cloudflare's; tests point it at a local server).
    pub base_url: String,
    /// The zones whose names get Origin CA certificates.
    pub zones: Vec<kokoa_core::Hostname>,
}

impl OriginCaSettings {
    /// Settings with the defaults (ECC, 15 years, Cloudflare's API) for `zones`.
    pub fn new(
        auth: kokoa_acme::cloudflare::OriginCaAuth,
        zones: Vec<kokoa_core::Hostname>,
    ) -> Self {
        Self {
            auth,
            key_type: kokoa_acme::cloudflare::OriginKeyType::Ecc,
            validity_days: 5475,
            base_url: kokoa_acme::cloudflare::API_BASE.to_owned(),
            zones,
        }
    }

    /// Whether `hostname` (or, for a wildcard, the names it covers) lies in one of the
    /// zones.
    pub fn covers(&self, hostname: &kokoa_core::Hostname) -> bool {
        let name = hostname.as_str();
        let name = name.strip_prefix("*.").unwrap_or(name);
        self.zones.iter().any(|zone| {
            let zone = zone.as_str();
            name == zone
                || name
                    .strip_suffix(zone)
                    .is_some_and(|below| below.ends_with('.'))
        })
    }
}
