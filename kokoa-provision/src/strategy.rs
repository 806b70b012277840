//! When and where edges are replaced (SPEC §9): the `edge_node_management` settings, the
//! choice of a replacement's provider and region, and how many edges to add.
//!
//! # Regions
//!
//! Settings name regions by area — `nrt` (Tokyo), `sgp` (Singapore), `fra` (Frankfurt) —
//! while each provider has its own codes. [`region_code`] maps an area to a provider's
//! code and [`region_area`] maps back:
//!
//! | area | digitalocean | vultr | hetzner | aws |
//! |---|---|---|---|---|
//! | `nrt` Tokyo | — | `nrt` | — | `ap-northeast-1` |
//! | `sgp` Singapore | `sgp1` | `sgp` | `sin` | `ap-southeast-1` |
//! | `fra` Frankfurt / central Germany | `fra1` | `fra` | `nbg1` (Nuremberg) | `eu-central-1` |
//! | `ams` Amsterdam | `ams3` | `ams` | — | — |
//! | `lon` London | `lon1` | `lhr` | — | `eu-west-2` |
//! | `nyc` New York / US east coast | `nyc3` | `ewr` | — | `us-east-1` (N. Virginia) |
//! | `sfo` San Francisco Bay | `sfo3` | `sjc` | — | `us-west-1` (N. California) |
//! | `tor` Toronto | `tor1` | `yto` | — | — |
//! | `syd` Sydney | `syd1` | `syd` | — | `ap-southeast-2` |
//! | `blr` Bangalore | `blr1` | `blr` | — | — |
//! | `hel` Helsinki | — | — | `hel1` | — |
//!
//! `aws` is Amazon EC2; its regions nearest Toronto (Montreal), Bangalore (Mumbai,
//! Hyderabad) and Helsinki (Stockholm) are too far off to count as the same area.
//!
//! Any other provider (`manual`, a custom one) uses the area names as its codes.

use kokoa_core::Name;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Providers with their own region codes, in the column order of [`REGIONS`].
const PROVIDERS: [&str; 4] = ["digitalocean", "vultr", "hetzner", "aws"];

/// Each area and its code at each of [`PROVIDERS`]; `None` where it has no data centre.
const REGIONS: &[(&str, [Option<&str>; 4])] = &[
    ("nrt", [None, Some("nrt"), None, Some("ap-northeast-1")]),
    (
        "sgp",
        [
            Some("sgp1"),
            Some("sgp"),
            Some("sin"),
            Some("ap-southeast-1"),
        ],
    ),
    (
        "fra",
        [
            Some("fra1"),
            Some("fra"),
            Some("nbg1"),
            Some("eu-central-1"),
        ],
    ),
    ("ams", [Some("ams3"), Some("ams"), None, None]),
    ("lon", [Some("lon1"), Some("lhr"), None, Some("eu-west-2")]),
    ("nyc", [Some("nyc3"), Some("ewr"), None, Some("us-east-1")]),
    ("sfo", [Some("sfo3"), Some("sjc"), None, Some("us-west-1")]),
    ("tor", [Some("tor1"), Some("yto"), None, None]),
    (
        "syd",
        [Some("syd1"), Some("syd"), None, Some("ap-southeast-2")],
    ),
    ("blr", [Some("blr1"), Some("blr"), None, None]),
    ("hel", [None, None, Some("hel1"), None]),
];

/// `provider`'s code for the region `area` (`("digitalocean", "sgp")` → `sgp1`), or
/// `None` when it has no data centre there. Providers outside the table take the area
/// name itself.
pub fn region_code<'a>(provider: &str, area: &'a str) -> Option<&'a str> {
    let Some(column) = PROVIDERS.iter().position(|p| *p == provider) else {
        return Some(area);
    };
    REGIONS
        .iter()
        .find(|(name, _)| *name == area)
        .and_then(|(_, codes)| codes[column])
}

/// The area of `provider`'s region `code` (`("hetzner", "sin")` → `sgp`); a code outside
/// the table is its own area.
pub fn region_area<'a>(provider: &str, code: &'a str) -> &'a str {
    let Some(column) = PROVIDERS.iter().position(|p| *p == provider) else {
        return code;
    };
    REGIONS
        .iter()
        .find(|(_, codes)| codes[column] == Some(code))
        .map_or(code, |(area, _)| area)
}

/// Where an edge runs: a provider and that provider's region code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// `digitalocean`, `vultr`, `hetzner`, `aws`, `manual`, ...
    pub provider: Name,
    /// The provider's region code, e.g. `sgp1`.
    pub region: Name,
}

impl Placement {
    /// Where the region lies, in the provider-neutral names of the settings.
    pub fn area(&self) -> &str {
        region_area(self.provider.as_str(), self.region.as_str())
    }
}

/// Where a replacement goes (`replacement_strategy` in SPEC §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReplacementStrategy {
    /// Put the replacement at another provider than the failed edge's.
    pub change_provider: bool,
    /// Put the replacement in another region (area) than the failed edge's.
    pub change_region: bool,
    /// Providers to use, most preferred first.
    pub preferred_providers: Vec<Name>,
    /// Regions to use, as area names such as `nrt` (see [`region_code`]), most preferred
    /// first.
    pub preferred_regions: Vec<Name>,
}

impl Default for ReplacementStrategy {
    fn default() -> Self {
        let names = |list: &[&str]| list.iter().filter_map(|n| Name::parse(n).ok()).collect();
        Self {
            change_provider: true,
            change_region: true,
            preferred_providers: names(&["vultr", "digitalocean", "hetzner"]),
            preferred_regions: names(&["nrt", "sgp", "fra"]),
        }
    }
}

/// The `edge_node_management` settings of SPEC §9, with its defaults. Durations are in
/// seconds, as in the configuration file.
///
/// ```
/// use kokoa_provision::EdgeNodeManagement;
///
/// let settings: EdgeNodeManagement = serde_json::from_str(r#"{"min_active_nodes": 3}"#)?;
/// assert_eq!(settings.min_active_nodes, 3);
/// assert_eq!(settings.destroy_delay, 60);
/// assert!(settings.replacement_strategy.change_provider);
/// settings.validate()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct EdgeNodeManagement {
    /// Remove an unhealthy edge's DNS records (the spec keeps this always on).
    pub auto_remove_unhealthy_from_dns: bool,
    /// Failed checks in a row before an edge is unhealthy.
    pub health_check_failure_threshold: u32,
    /// Seconds between health checks.
    pub health_check_interval: u64,
    /// Destroy an unhealthy edge's VPS.
    pub auto_destroy_unhealthy_vps: bool,
    /// Seconds between the DNS removal and the destroy (lets the records' TTL run out).
    pub destroy_delay: u64,
    /// Create a replacement for an unhealthy edge.
    pub auto_replace_unhealthy_nodes: bool,
    /// Seconds between the destroy and the replacement's creation.
    pub replace_delay: u64,
    /// Where replacements go.
    pub replacement_strategy: ReplacementStrategy,
    /// Below this many active edges, new ones are created.
    pub min_active_nodes: u32,
    /// Never more edges than this, counting those being provisioned.
    pub max_nodes: u32,
}

impl Default for EdgeNodeManagement {
    fn default() -> Self {
        Self {
            auto_remove_unhealthy_from_dns: true,
            health_check_failure_threshold: 3,
            health_check_interval: 10,
            auto_destroy_unhealthy_vps: true,
            destroy_delay: 60,
            auto_replace_unhealthy_nodes: true,
            replace_delay: 5,
            replacement_strategy: ReplacementStrategy::default(),
            min_active_nodes: 2,
            max_nodes: 10,
        }
    }
}

impl EdgeNodeManagement {
    /// Checks that the settings can work: a threshold and an interval, `min_active_nodes`
    /// within `max_nodes`, and every preferred provider offering one of the preferred
    /// regions (else it could never be chosen).
    pub fn validate(&self) -> Result<(), Error> {
        if self.health_check_failure_threshold == 0 {
            return Err(Error::invalid(
                "health_check_failure_threshold",
                "0",
                "at least one failed check must make an edge unhealthy",
            ));
        }
        if self.health_check_interval == 0 {
            return Err(Error::invalid(
                "health_check_interval",
                "0",
                "expected a number of seconds, at least 1",
            ));
        }
        if self.min_active_nodes > self.max_nodes {
            return Err(Error::invalid(
                "min_active_nodes",
                &self.min_active_nodes.to_string(),
                "it is above max_nodes",
            ));
        }
        let strategy = &self.replacement_strategy;
        if let Some(provider) = strategy.preferred_providers.iter().find(|p| {
            !strategy
                .preferred_regions
                .iter()
                .any(|area| region_code(p.as_str(), area.as_str()).is_some())
        }) {
            return Err(Error::invalid(
                "preferred_providers",
                provider.as_str(),
                "this provider has a data centre in none of the preferred_regions",
            ));
        }
        Ok(())
    }
}

/// Where to create the replacement of the edge at `failed`, given the edges still `live`.
///
/// Candidates are every preferred provider in every preferred region it has a data centre
/// in. The choice honours `change_provider` and `change_region` when some candidate can;
/// when none can honour both, it still avoids the failed provider *and* region pair if any
/// candidate allows. Among equals it takes the provider with the fewest live edges, then
/// the region with the fewest, then the earlier in the preferred lists — so successive
/// replacements rotate through the lists. With no candidate at all (empty lists) it
/// answers `failed`: replace in place.
///
/// Pure and deterministic: the order of `live` does not matter.
pub fn choose_replacement(
    failed: &Placement,
    live: &[Placement],
    strategy: &ReplacementStrategy,
) -> Placement {
    let failed_area = failed.area();
    let providers = strategy.preferred_providers.iter().enumerate();
    let candidates = providers.flat_map(|(provider_rank, provider)| {
        let regions = strategy.preferred_regions.iter().enumerate();
        regions.filter_map(move |(region_rank, area)| {
            let code = region_code(provider.as_str(), area.as_str())?;
            let region = Name::parse(code).ok()?;
            let other_provider = *provider != failed.provider;
            let other_area = area.as_str() != failed_area;
            let tier = if (other_provider || !strategy.change_provider)
                && (other_area || !strategy.change_region)
            {
                0
            } else if other_provider || other_area {
                1
            } else {
                2
            };
            let provider_use = live.iter().filter(|e| e.provider == *provider).count();
            let area_use = live.iter().filter(|e| e.area() == area.as_str()).count();
            let key = (tier, provider_use, area_use, provider_rank, region_rank);
            let provider = provider.clone();
            Some((key, Placement { provider, region }))
        })
    });
    candidates
        .min_by_key(|(key, _)| *key)
        .map_or_else(|| failed.clone(), |(_, placement)| placement)
}

/// How many edges to create now: enough to reach `min_active_nodes`, counting those
/// already `provisioning` (they will be active soon, and counting them keeps a slow boot
/// from triggering more creations), without passing `max_nodes`.
pub fn nodes_to_create(active: usize, provisioning: usize, settings: &EdgeNodeManagement) -> usize {
    let have = active.saturating_add(provisioning);
    let wanted = usize::try_from(settings.min_active_nodes).unwrap_or(usize::MAX);
    let limit = usize::try_from(settings.max_nodes).unwrap_or(usize::MAX);
    wanted.saturating_sub(have).min(limit.saturating_sub(have))
}

#[cfg(test)]
mod tests;
