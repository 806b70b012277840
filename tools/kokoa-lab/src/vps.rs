//! Edge VPSes for the edge automation's scenarios: a [`LabProvisioner`] whose instances
//! are network namespaces `kl-vps-<n>` on the lab's bridge, with addresses from
//! [`FIRST`]–[`LAST`], outside the fixed hosts of the [`plan`](crate::plan).
//!
//! The control plane runs it when configured with this provider (its configuration can
//! be [`config`], which is serde-ready). Its namespaces are made by that process, not by
//! the lab, so `kokoa-lab down` and the [`Ledger`](crate::state::Ledger) find them by
//! their prefix ([`namespaces`]).

use std::{fs, net::Ipv4Addr, path::Path};

use kokoa_core::Name;
use kokoa_provision::lab::{LabConfig, LabProvisioner};

use crate::{
    Error,
    lab::{Bins, Lab},
    plan::{BRIDGE, HUB, NETWORK, NETWORK_LEN},
};

/// Every edge VPS namespace starts with this.
pub const PREFIX: &str = "kl-vps-";
/// The first address handed to an edge VPS.
pub const FIRST: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 30);
/// The last address handed to an edge VPS.
pub const LAST: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 60);
/// The regions the lab provisioner accepts, so replacements can move between them.
pub const REGIONS: [&str; 2] = ["lab-a", "lab-b"];
/// The nginx the edges run.
pub const NGINX: &str = "/usr/sbin/nginx";

/// The provisioner's configuration for the lab's plan: the bridge in [`HUB`], the range
/// [`FIRST`]–[`LAST`], no default route (the control plane is on the bridge's network),
/// `kokoa-edge` from `bins`, and its files in `LAB_DIR/vps`.
pub fn config(lab_dir: &Path, bins: &Bins) -> Result<LabConfig, Error> {
    Ok(LabConfig {
        hub_netns: HUB.to_owned(),
        bridge: BRIDGE.to_owned(),
        network: format!("{NETWORK}/{NETWORK_LEN}")
            .parse()
            .map_err(|e| Error::Command {
                command: "lab provisioner".into(),
                message: format!("the lab's network does not parse: {e}"),
            })?,
        first_address: FIRST,
        last_address: LAST,
        gateway: None,
        dir: lab_dir.join("vps"),
        edge_binary: bins.provisioner_edge()?.into(),
        nginx_binary: NGINX.into(),
        wireguard: "wireguard-go".to_owned(),
        netns_prefix: PREFIX.to_owned(),
        regions: REGIONS
            .iter()
            .map(|r| Name::parse(r))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Command {
                command: "lab provisioner".into(),
                message: e.to_string(),
            })?,
    })
}

/// How often the control plane checks each edge over HTTP, and how many failures in a row
/// make it unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Seconds between two checks (`health_check_interval`).
    pub interval: u64,
    /// Failures in a row (`health_check_failure_threshold`).
    pub threshold: u32,
}

impl Timing {
    /// The lab's: every 2 s, 2 failures (SPEC §9 names these figures for a quick failover).
    pub const LAB: Self = Self {
        interval: 2,
        threshold: 2,
    };
    /// SPEC §9's defaults: every 10 s, 3 failures.
    pub const SPEC: Self = Self {
        interval: 10,
        threshold: 3,
    };
}

/// Seconds between the edges' checks of the origins' applications in the lab (SPEC: 30).
pub const APPLICATION_INTERVAL: u64 = 2;

/// The control plane's settings for the edge automation in the lab, as configuration
/// file sections: the edge provisioner off at first (the lab registers its own two edges;
/// the failover scenario switches it on), this provisioner as provider `lab`, replacements
/// rotating over
/// [`REGIONS`], checks at `timing` ([`Timing::LAB`] is fast enough for a scenario that must
/// end within a minute), `destroy_delay` 5 s (the lab zones' TTL), `replace_delay` 1 s.
pub fn control_config(
    lab_dir: &Path,
    bins: &Bins,
    trusted_ca: &Path,
    timing: Timing,
) -> Result<String, Error> {
    let lab = toml::to_string(&config(lab_dir, bins)?).map_err(|e| Error::Command {
        command: "lab provisioner".into(),
        message: format!("its configuration does not serialise: {e}"),
    })?;
    let regions = REGIONS.map(|r| format!("\"{r}\"")).join(", ");
    Ok(format!(
        "[modules.edge_provisioner]\n\
         enabled = false\n\
         \n\
         [edge_node_management]\n\
         health_check_failure_threshold = {threshold}\n\
         health_check_interval = {interval}\n\
         destroy_delay = 5\n\
         replace_delay = 1\n\
         min_active_nodes = 2\n\
         max_nodes = 4\n\
         [edge_node_management.replacement_strategy]\n\
         preferred_providers = [\"lab\"]\n\
         preferred_regions = [{regions}]\n\
         \n\
         [health]\n\
         timeout = 1\n\
         recovery_threshold = 3\n\
         end_to_end_interval = 10\n\
         origin_application_interval = {APPLICATION_INTERVAL}\n\
         trusted_ca_file = \"{}\"\n\
         \n\
         [edge_provisioning]\n\
         timeout = 120\n\
         \n\
         [[provisioners]]\n\
         kind = \"lab\"\n\
         image = \"lab\"\n\
         size = \"lab\"\n\
         [provisioners.lab]\n\
         {lab}",
        trusted_ca.display(),
        threshold = timing.threshold,
        interval = timing.interval,
    ))
}

/// A [`LabProvisioner`] with [`config`].
pub fn provisioner(lab_dir: &Path, bins: &Bins) -> Result<LabProvisioner, Error> {
    Ok(LabProvisioner::new(config(lab_dir, bins)?)?)
}

impl Lab {
    /// A [`LabProvisioner`] for this lab, its files in the lab's directory.
    pub fn provisioner(&self) -> Result<LabProvisioner, Error> {
        provisioner(&self.dir, self.bins())
    }
}

/// The edge VPS namespaces that exist now.
pub fn namespaces() -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .filter(|name| name.starts_with(PREFIX))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan;

    #[test]
    fn the_range_is_in_the_lab_network_and_clear_of_the_fixed_hosts() {
        assert!(FIRST <= LAST);
        for address in [FIRST, LAST] {
            assert!(plan::contains(NETWORK, NETWORK_LEN, address));
        }
        let fixed = plan::HOSTS.iter().map(|h| h.address);
        for address in fixed.chain([plan::CONTROL_ADDRESS]) {
            assert!(
                !(FIRST..=LAST).contains(&address),
                "{address} is in the VPS range"
            );
        }
        assert!(PREFIX.starts_with(plan::PREFIX));
        assert!(!plan::namespaces().iter().any(|ns| ns.starts_with(PREFIX)));
    }

    #[test]
    fn the_provisioner_is_configured_for_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let bin_dir = dir.path().join("bin");
        fs::create_dir(&bin_dir).unwrap();
        for name in ["kokoa-control", "kokoa-edge", "kokoa-origin"] {
            fs::write(bin_dir.join(name), "").unwrap();
        }
        let bins = Bins::locate(Some(bin_dir.clone())).unwrap();
        let config = config(dir.path(), &bins).unwrap();
        assert_eq!(
            (config.hub_netns.as_str(), config.bridge.as_str()),
            (HUB, BRIDGE)
        );
        assert_eq!(config.network.to_string(), "10.99.0.0/24");
        assert_eq!(config.edge_binary, bin_dir.join("kokoa-edge"));
        assert_eq!(config.dir, dir.path().join("vps"));
        let lab = provisioner(dir.path(), &bins).unwrap_or_else(|e| {
            panic!("{e} (the lab provisioner needs nginx: apt-get install -y --no-install-recommends nginx)")
        });
        assert_eq!(lab.config().regions.len(), 2);
        // Its state file appears with the first instance; the directory at once.
        assert!(dir.path().join("vps").is_dir());
    }
}
