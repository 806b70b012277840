//! The manual provider: the records a person sets by hand, for host names outside the
//! managed zone or installations without a DNS API (`kokoa dns instructions`).

use crate::DesiredState;

/// The records `desired` needs, one zone file line each (`app.hoge.com. 30 IN A
/// 203.0.113.10`), sorted by name, type and value.
///
/// Records of edges that are not serving are not listed: the person removes any other
/// A or AAAA record of these names.
///
/// ```
/// use kokoa_core::{EdgeNodeId, Hostname};
/// use kokoa_dns::{DesiredState, EdgeState, EdgeTarget, manual};
///
/// let mut desired = DesiredState::default();
/// desired.hostnames.insert(Hostname::parse("app.hoge.com")?);
/// desired.edges.push(EdgeTarget {
///     id: EdgeNodeId::parse("edge-1")?,
///     ipv4: Some("203.0.113.10".parse()?),
///     ipv6: Some("2001:db8::10".parse()?),
///     state: EdgeState::Serving,
/// });
/// assert_eq!(
///     manual::instructions(&desired),
///     "app.hoge.com. 30 IN A 203.0.113.10\napp.hoge.com. 30 IN AAAA 2001:db8::10\n",
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn instructions(desired: &DesiredState) -> String {
    desired
        .records()
        .into_iter()
        .map(|(spec, _)| format!("{spec}\n"))
        .collect()
}
