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
        edge_binary: bins.path("kokoa-edge")?.into(),
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
        assert!(dir.path().join("vps/state.json").exists());
    }
}
