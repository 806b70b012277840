//! The pure core of the DNS manager: from the desired state and the provider's records to a
//! [`Plan`] of creates, updates and deletes.
//!
//! The manager owns only the records whose ids it recorded (the control plane's
//! `dns_records` table); everything else in the zone is foreign and never touched. A host
//! name never loses its last address record unless the edge behind it was withdrawn on
//! purpose (deleted, or being destroyed): when every edge of a name looks unhealthy, the
//! observer is more likely wrong than all of them, so they are all published (fail open,
//! as Route 53 answers with every record when all of a group fail their checks). An edge
//! whose state the control plane could not read keeps its records.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use kokoa_core::{EdgeNode, EdgeNodeId, EdgeStatus, Hostname, RecordData};

use crate::{ProviderRecord, RecordId, RecordSpec};

/// TTL of the managed records unless configured: short, so clients move off a removed edge
/// within half a minute.
pub const DEFAULT_TTL: u32 = 30;

/// Why an edge is or is not in DNS, as the control plane judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EdgeState {
    /// Active and healthy: its addresses belong in DNS.
    Serving,
    /// Still being set up: not added yet. Records left from before are removed only when
    /// the host name keeps another address.
    Provisioning,
    /// Judged unhealthy: its records go while the host name keeps another address. When
    /// no edge of a name serves, the checks, not the edges, are the likelier fault: the
    /// unhealthy edges are published (fail open).
    Unhealthy,
    /// Withdrawn on purpose (deleted, or about to be destroyed): its records go, even the
    /// last one of a host name.
    Deleted,
    /// The control plane could not read its state: its records stay as they are.
    Unknown,
}

impl From<EdgeStatus> for EdgeState {
    /// `active` serves; the health checker marks a failing edge `unhealthy`, so an active
    /// edge is a healthy one.
    fn from(status: EdgeStatus) -> Self {
        match status {
            EdgeStatus::Active => Self::Serving,
            EdgeStatus::Provisioning => Self::Provisioning,
            EdgeStatus::Unhealthy => Self::Unhealthy,
            EdgeStatus::Deleted => Self::Deleted,
            _ => Self::Unknown,
        }
    }
}

/// One edge as the reconciler sees it: its public addresses and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeTarget {
    /// The edge.
    pub id: EdgeNodeId,
    /// Public IPv4 address, for A records.
    pub ipv4: Option<Ipv4Addr>,
    /// Public IPv6 address, for AAAA records.
    pub ipv6: Option<Ipv6Addr>,
    /// Whether it belongs in DNS, and if not, why.
    pub state: EdgeState,
}

impl From<&EdgeNode> for EdgeTarget {
    fn from(node: &EdgeNode) -> Self {
        let (ipv4, ipv6) = match node.public_ip {
            Some(IpAddr::V4(v4)) => (Some(v4), None),
            Some(IpAddr::V6(v6)) => (None, Some(v6)),
            None => (None, None),
        };
        Self {
            id: node.id.clone(),
            ipv4,
            ipv6,
            state: node.status.into(),
        }
    }
}

impl EdgeTarget {
    fn addresses(&self) -> impl Iterator<Item = IpAddr> {
        let v4 = self.ipv4.map(IpAddr::V4);
        let v6 = self.ipv6.map(IpAddr::V6);
        v4.into_iter().chain(v6)
    }
}

/// The address of an A or AAAA record; the reconciler handles no other type.
fn address(data: &RecordData) -> Option<IpAddr> {
    match data {
        RecordData::A(v4) => Some(IpAddr::V4(*v4)),
        RecordData::Aaaa(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn address_data(ip: IpAddr) -> RecordData {
    match ip {
        IpAddr::V4(v4) => RecordData::A(v4),
        IpAddr::V6(v6) => RecordData::Aaaa(v6),
    }
}

/// What DNS should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredState {
    /// Host names served: each gets one A (and AAAA) record per serving edge.
    pub hostnames: BTreeSet<Hostname>,
    /// Host names whose routes were removed: every owned record of them goes. A name in
    /// both sets is served. Owned records of names in neither set are left alone, so a
    /// control plane that failed to read its routes cannot empty the zone.
    pub retired: BTreeSet<Hostname>,
    /// Every edge the control plane knows, in any state.
    pub edges: Vec<EdgeTarget>,
    /// TTL of the records, in seconds.
    pub ttl: u32,
}

impl Default for DesiredState {
    fn default() -> Self {
        Self {
            hostnames: BTreeSet::new(),
            retired: BTreeSet::new(),
            edges: Vec::new(),
            ttl: DEFAULT_TTL,
        }
    }
}

impl DesiredState {
    /// Every record that should exist, with the edge it points at, in name order.
    pub fn records(&self) -> Vec<(RecordSpec, EdgeNodeId)> {
        self.wanted()
            .into_iter()
            .map(|((name, ip), edge)| {
                let spec = RecordSpec {
                    name: name.into(),
                    data: address_data(ip),
                    ttl: self.ttl,
                };
                (spec, edge)
            })
            .collect()
    }

    /// (name, address) → the edge that serves it; the first edge wins when two share an
    /// address. When no edge serves but some were only judged unhealthy, those are
    /// published: every edge failing its checks at once is likelier the observer's fault
    /// than all of theirs, and an empty answer is an outage for sure (fail open, as
    /// Route 53 answers when every record of a group is unhealthy).
    fn wanted(&self) -> BTreeMap<(Hostname, IpAddr), EdgeNodeId> {
        let mut wanted = BTreeMap::new();
        let any_serving = self.edges.iter().any(|e| e.state == EdgeState::Serving);
        let publish = if any_serving {
            EdgeState::Serving
        } else {
            EdgeState::Unhealthy
        };
        let serving = self.edges.iter().filter(|e| e.state == publish);
        for edge in serving {
            for ip in edge.addresses() {
                for name in &self.hostnames {
                    wanted
                        .entry((name.clone(), ip))
                        .or_insert_with(|| edge.id.clone());
                }
            }
        }
        wanted
    }
}

/// A record to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    /// The record.
    pub spec: RecordSpec,
    /// The edge whose address it holds.
    pub edge: EdgeNodeId,
}

/// An owned record whose TTL differs from the configured one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The record as the provider holds it.
    pub current: ProviderRecord,
    /// What it becomes.
    pub spec: RecordSpec,
}

/// An owned record to delete, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The record as the provider holds it.
    pub record: ProviderRecord,
    /// Why it goes.
    pub reason: DeleteReason,
}

/// Why a record is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeleteReason {
    /// Its edge was judged unhealthy.
    EdgeUnhealthy(EdgeNodeId),
    /// Its edge was destroyed.
    EdgeDeleted(EdgeNodeId),
    /// Its edge is provisioning, not serving; the name keeps another address.
    EdgeNotServing(EdgeNodeId),
    /// No known edge has its address; the name keeps another address.
    NoEdge,
    /// Another record already holds the same value.
    Duplicate,
    /// The host name's route was removed.
    Retired,
}

impl DeleteReason {
    /// Whether the delete may only happen while the host name keeps another address.
    pub fn needs_other_address(&self) -> bool {
        matches!(
            self,
            Self::EdgeNotServing(_) | Self::NoEdge | Self::EdgeUnhealthy(_)
        )
    }
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EdgeUnhealthy(edge) => write!(f, "edge {edge} is unhealthy"),
            Self::EdgeDeleted(edge) => write!(f, "edge {edge} is deleted"),
            Self::EdgeNotServing(edge) => write!(f, "edge {edge} is not serving yet"),
            Self::NoEdge => f.write_str("no known edge has this address"),
            Self::Duplicate => f.write_str("another record holds the same value"),
            Self::Retired => f.write_str("the host name is no longer routed"),
        }
    }
}

/// One change of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Create a record.
    Create(Create),
    /// Change a record's TTL.
    Update(Update),
    /// Delete a record.
    Delete(Delete),
}

/// `+`, `~` or `-`, the record as a zone file line, and the record id or edge.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Create(c) => write!(f, "+ {} (edge {})", c.spec, c.edge),
            Self::Update(u) => write!(
                f,
                "~ {} (id {}): ttl {} -> {}",
                u.spec, u.current.id, u.current.spec.ttl, u.spec.ttl
            ),
            Self::Delete(d) => write!(f, "- {} (id {}): {}", d.record.spec, d.record.id, d.reason),
        }
    }
}

/// The changes that bring the owned records to the desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Records to create. Applied first, so a host name never goes empty during a swap.
    pub creates: Vec<Create>,
    /// Records to delete, applied second.
    pub deletes: Vec<Delete>,
    /// TTL changes, applied last: the least urgent, and a duplicate being deleted cannot
    /// clash with them any more.
    pub updates: Vec<Update>,
    /// The owned ids that still exist at the provider; ids of records removed behind the
    /// manager's back are dropped here.
    pub owned: BTreeSet<RecordId>,
}

impl Plan {
    /// Whether nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty() && self.updates.is_empty() && self.deletes.is_empty()
    }

    /// The changes in the order they are applied: creates, deletes, updates.
    pub fn changes(&self) -> impl Iterator<Item = Change> + '_ {
        let creates = self.creates.iter().cloned().map(Change::Create);
        let deletes = self.deletes.iter().cloned().map(Change::Delete);
        let updates = self.updates.iter().cloned().map(Change::Update);
        creates.chain(deletes).chain(updates)
    }
}

/// The dry run: one line per change, in the order they are applied; nothing when empty.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.changes()
            .try_for_each(|change| writeln!(f, "{change}"))
    }
}

/// What to do with an owned record whose value is not wanted.
enum Verdict {
    Keep,
    Delete(DeleteReason),
}

fn judge(edges: &[EdgeTarget], ip: IpAddr) -> Verdict {
    let mut holders: Vec<&EdgeTarget> = edges
        .iter()
        .filter(|edge| edge.addresses().any(|a| a == ip))
        .collect();
    // When an address moved between edges, the most cautious state decides.
    holders.sort_by_key(|edge| match edge.state {
        EdgeState::Serving | EdgeState::Unknown => 0,
        EdgeState::Provisioning => 1,
        EdgeState::Unhealthy => 2,
        EdgeState::Deleted => 3,
    });
    let Some(edge) = holders.first() else {
        return Verdict::Delete(DeleteReason::NoEdge);
    };
    match edge.state {
        EdgeState::Provisioning => Verdict::Delete(DeleteReason::EdgeNotServing(edge.id.clone())),
        EdgeState::Unhealthy => Verdict::Delete(DeleteReason::EdgeUnhealthy(edge.id.clone())),
        EdgeState::Deleted => Verdict::Delete(DeleteReason::EdgeDeleted(edge.id.clone())),
        EdgeState::Serving | EdgeState::Unknown => Verdict::Keep,
    }
}

/// Plans the changes that take the owned records of `current` to `desired`.
///
/// `current` is every record of the zone as the provider lists it; `owned` the ids the
/// manager recorded. Only owned A and AAAA records of names in `desired` are changed. The
/// result is idempotent: planning again after applying it gives an empty plan.
pub fn plan(
    desired: &DesiredState,
    current: &[ProviderRecord],
    owned: &BTreeSet<RecordId>,
) -> Plan {
    let wanted = desired.wanted();
    // Address records live at host names; one at a name that is not a host name (such as
    // `_x.hoge.com`) is not about any edge and is left alone.
    let mut records: Vec<(&ProviderRecord, Hostname, IpAddr)> = current
        .iter()
        .filter_map(|r| Some((r, r.spec.name.to_hostname()?, address(&r.spec.data)?)))
        .collect();
    records.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    let (mine, foreign): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|(r, _, _)| owned.contains(&r.id));

    let mut plan = Plan {
        owned: current
            .iter()
            .filter(|r| owned.contains(&r.id))
            .map(|r| r.id.clone())
            .collect(),
        ..Plan::default()
    };
    // Addresses present at each name, and how many address records each name keeps.
    let mut present: BTreeSet<(Hostname, IpAddr)> = BTreeSet::new();
    let mut kept: BTreeMap<Hostname, usize> = BTreeMap::new();
    for (_, name, ip) in foreign {
        *kept.entry(name.clone()).or_default() += 1;
        present.insert((name, ip));
    }
    let mut conditional = Vec::new();
    for (record, name, ip) in mine {
        let spec = &record.spec;
        let verdict = if desired.hostnames.contains(&name) {
            if !present.insert((name.clone(), ip)) {
                Verdict::Delete(DeleteReason::Duplicate)
            } else if wanted.contains_key(&(name.clone(), ip)) {
                if spec.ttl != desired.ttl {
                    let to = RecordSpec {
                        ttl: desired.ttl,
                        ..spec.clone()
                    };
                    plan.updates.push(Update {
                        current: record.clone(),
                        spec: to,
                    });
                }
                Verdict::Keep
            } else {
                judge(&desired.edges, ip)
            }
        } else if desired.retired.contains(&name) {
            Verdict::Delete(DeleteReason::Retired)
        } else {
            Verdict::Keep
        };
        match verdict {
            Verdict::Keep => *kept.entry(name).or_default() += 1,
            Verdict::Delete(reason) if reason.needs_other_address() => {
                conditional.push(Delete {
                    record: record.clone(),
                    reason,
                });
            }
            Verdict::Delete(reason) => plan.deletes.push(Delete {
                record: record.clone(),
                reason,
            }),
        }
    }
    for ((name, ip), edge) in &wanted {
        if !present.contains(&(name.clone(), *ip)) {
            *kept.entry(name.clone()).or_default() += 1;
            plan.creates.push(Create {
                spec: RecordSpec {
                    name: name.into(),
                    data: address_data(*ip),
                    ttl: desired.ttl,
                },
                edge: edge.clone(),
            });
        }
    }
    // A record of a provisioning or unhealthy edge, or of an address no edge has, stays
    // while it is all its name has left.
    plan.deletes.extend(conditional.into_iter().filter(|d| {
        d.record
            .spec
            .name
            .to_hostname()
            .and_then(|name| kept.get(&name))
            .is_some_and(|n| *n > 0)
    }));
    plan
}

#[cfg(test)]
mod tests;
