use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use kokoa_core::{EdgeNodeId, Hostname};
use proptest::prelude::*;

use super::*;
use crate::{DnsProvider, MemoryProvider, Reconciler, Zone};

fn host(name: &str) -> Hostname {
    Hostname::parse(name).expect("test host name")
}

fn edge(id: &str, ip: &str, state: EdgeState) -> EdgeTarget {
    let ip: IpAddr = ip.parse().expect("test address");
    let (ipv4, ipv6) = match ip {
        IpAddr::V4(v4) => (Some(v4), None),
        IpAddr::V6(v6) => (None, Some(v6)),
    };
    EdgeTarget {
        id: EdgeNodeId::parse(id).expect("test edge id"),
        ipv4,
        ipv6,
        state,
    }
}

fn record(id: &str, name: &str, ip: &str, ttl: u32) -> ProviderRecord {
    let ip: IpAddr = ip.parse().expect("test address");
    ProviderRecord {
        id: RecordId::new(id),
        spec: RecordSpec {
            name: host(name).into(),
            data: address_data(ip),
            ttl,
        },
    }
}

fn desired(names: &[&str], edges: Vec<EdgeTarget>) -> DesiredState {
    DesiredState {
        hostnames: names.iter().map(|n| host(n)).collect(),
        edges,
        ..DesiredState::default()
    }
}

fn owned(ids: &[&str]) -> BTreeSet<RecordId> {
    ids.iter().map(|id| RecordId::new(*id)).collect()
}

#[test]
fn an_empty_zone_gets_one_record_per_name_and_serving_address() {
    let mut both = edge("e1", "203.0.113.1", EdgeState::Serving);
    both.ipv6 = Some("2001:db8::1".parse().expect("test address"));
    let state = desired(
        &["app.hoge.com", "wiki.hoge.com"],
        vec![
            both,
            edge("e2", "203.0.113.2", EdgeState::Serving),
            edge("e3", "203.0.113.3", EdgeState::Provisioning),
            edge("e4", "203.0.113.4", EdgeState::Unknown),
        ],
    );
    let plan = plan(&state, &[], &BTreeSet::new());
    assert_eq!(
        plan.to_string(),
        "+ app.hoge.com. 30 IN A 203.0.113.1 (edge e1)\n\
         + app.hoge.com. 30 IN A 203.0.113.2 (edge e2)\n\
         + app.hoge.com. 30 IN AAAA 2001:db8::1 (edge e1)\n\
         + wiki.hoge.com. 30 IN A 203.0.113.1 (edge e1)\n\
         + wiki.hoge.com. 30 IN A 203.0.113.2 (edge e2)\n\
         + wiki.hoge.com. 30 IN AAAA 2001:db8::1 (edge e1)\n"
    );
    assert!(plan.updates.is_empty() && plan.deletes.is_empty());
}

#[test]
fn an_unhealthy_edge_keeps_the_last_record_of_a_name_and_a_deleted_one_does_not() {
    // Every edge of the name looks unhealthy: the observer is suspect, every one of them
    // is published (one removed a moment earlier comes back).
    let state = desired(
        &["app.hoge.com"],
        vec![
            edge("e1", "203.0.113.1", EdgeState::Unhealthy),
            edge("e2", "203.0.113.2", EdgeState::Unhealthy),
        ],
    );
    let current = [
        record("r1", "app.hoge.com", "203.0.113.1", 30),
        record("r2", "app.hoge.com", "203.0.113.2", 30),
    ];
    let plan = plan(&state, &current, &owned(&["r1", "r2"]));
    assert!(plan.is_empty(), "{plan}");
    let plan = super::plan(&state, &current[1..], &owned(&["r2"]));
    assert_eq!(
        plan.to_string(),
        "+ app.hoge.com. 30 IN A 203.0.113.1 (edge e1)\n"
    );
    // One of them serves: the unhealthy one goes.
    let state = desired(
        &["app.hoge.com"],
        vec![
            edge("e1", "203.0.113.1", EdgeState::Unhealthy),
            edge("e2", "203.0.113.2", EdgeState::Serving),
        ],
    );
    let plan = super::plan(&state, &current, &owned(&["r1", "r2"]));
    assert_eq!(
        plan.to_string(),
        "- app.hoge.com. 30 IN A 203.0.113.1 (id r1): edge e1 is unhealthy\n"
    );
    let current = [record("r1", "app.hoge.com", "203.0.113.1", 30)];
    let deleted = desired(
        &["app.hoge.com"],
        vec![edge("e1", "203.0.113.1", EdgeState::Deleted)],
    );
    let plan = super::plan(&deleted, &current, &owned(&["r1"]));
    assert_eq!(
        plan.deletes[0].reason,
        DeleteReason::EdgeDeleted(EdgeNodeId::parse("e1").expect("id"))
    );
}

#[test]
fn an_edge_of_unknown_state_keeps_its_records() {
    let state = desired(
        &["app.hoge.com"],
        vec![
            edge("e1", "203.0.113.1", EdgeState::Unknown),
            edge("e2", "203.0.113.2", EdgeState::Serving),
        ],
    );
    let current = [record("r1", "app.hoge.com", "203.0.113.1", 30)];
    let plan = plan(&state, &current, &owned(&["r1"]));
    assert!(plan.deletes.is_empty(), "{plan}");
    assert_eq!(plan.creates.len(), 1);
}

#[test]
fn records_without_a_serving_reason_go_only_while_the_name_keeps_an_address() {
    let orphan = record("r1", "app.hoge.com", "198.51.100.9", 30);
    let provisioning = record("r2", "app.hoge.com", "203.0.113.5", 30);
    let edges = vec![edge("e5", "203.0.113.5", EdgeState::Provisioning)];
    let current = [orphan.clone(), provisioning];

    // Nothing serves: both stay, the name would be left empty otherwise.
    let alone = plan(
        &desired(&["app.hoge.com"], edges.clone()),
        &current,
        &owned(&["r1", "r2"]),
    );
    assert!(alone.is_empty(), "{alone}");

    // An edge serves: its record is created and both old ones go.
    let mut with_serving = edges;
    with_serving.push(edge("e1", "203.0.113.1", EdgeState::Serving));
    let swap = plan(
        &desired(&["app.hoge.com"], with_serving),
        &current,
        &owned(&["r1", "r2"]),
    );
    assert_eq!(
        swap.to_string(),
        "+ app.hoge.com. 30 IN A 203.0.113.1 (edge e1)\n\
         - app.hoge.com. 30 IN A 198.51.100.9 (id r1): no known edge has this address\n\
         - app.hoge.com. 30 IN A 203.0.113.5 (id r2): edge e5 is not serving yet\n"
    );

    // A foreign address record also keeps the name alive.
    let foreign = record("x1", "app.hoge.com", "192.0.2.1", 300);
    let current = [orphan, foreign];
    let with_foreign = plan(
        &desired(&["app.hoge.com"], vec![]),
        &current,
        &owned(&["r1"]),
    );
    assert_eq!(with_foreign.deletes.len(), 1);
    assert_eq!(with_foreign.deletes[0].record.id.as_str(), "r1");
}

#[test]
fn foreign_records_are_never_touched_and_count_as_present() {
    let state = desired(
        &["app.hoge.com"],
        vec![edge("e1", "203.0.113.1", EdgeState::Serving)],
    );
    let current = [
        record("x1", "app.hoge.com", "203.0.113.1", 300),
        record("x2", "app.hoge.com", "198.51.100.1", 300),
        record("r1", "app.hoge.com", "203.0.113.1", 30),
    ];
    let plan = plan(&state, &current, &owned(&["r1"]));
    // The foreign x1 already points at e1: no create, and the owned copy is redundant.
    assert!(plan.creates.is_empty() && plan.updates.is_empty(), "{plan}");
    assert_eq!(plan.deletes.len(), 1);
    assert_eq!(plan.deletes[0].record.id.as_str(), "r1");
    assert_eq!(plan.deletes[0].reason, DeleteReason::Duplicate);
}

#[test]
fn owned_duplicates_keep_one_and_ttl_changes_become_updates() {
    let mut state = desired(
        &["app.hoge.com"],
        vec![edge("e1", "203.0.113.1", EdgeState::Serving)],
    );
    state.ttl = 60;
    let current = [
        record("r1", "app.hoge.com", "203.0.113.1", 30),
        record("r2", "app.hoge.com", "203.0.113.1", 30),
    ];
    let plan = plan(&state, &current, &owned(&["r1", "r2"]));
    assert_eq!(
        plan.to_string(),
        "- app.hoge.com. 30 IN A 203.0.113.1 (id r2): another record holds the same value\n\
         ~ app.hoge.com. 60 IN A 203.0.113.1 (id r1): ttl 30 -> 60\n"
    );
}

#[test]
fn retired_names_lose_their_records_and_unlisted_names_are_left_alone() {
    let mut state = desired(&[], vec![edge("e1", "203.0.113.1", EdgeState::Serving)]);
    state.retired.insert(host("old.hoge.com"));
    let current = [
        record("r1", "old.hoge.com", "203.0.113.1", 30),
        record("r2", "other.hoge.com", "198.51.100.1", 30),
    ];
    let plan = plan(&state, &current, &owned(&["r1", "r2", "gone"]));
    assert_eq!(
        plan.to_string(),
        "- old.hoge.com. 30 IN A 203.0.113.1 (id r1): the host name is no longer routed\n"
    );
    // The id of a record removed behind the manager's back is forgotten.
    assert_eq!(plan.owned, owned(&["r1", "r2"]));
}

#[test]
fn edge_state_follows_the_edge_status() {
    use kokoa_core::EdgeStatus;
    assert_eq!(EdgeState::from(EdgeStatus::Active), EdgeState::Serving);
    assert_eq!(EdgeState::from(EdgeStatus::Unhealthy), EdgeState::Unhealthy);
    assert_eq!(EdgeState::from(EdgeStatus::Deleted), EdgeState::Deleted);
    assert_eq!(
        EdgeState::from(EdgeStatus::Provisioning),
        EdgeState::Provisioning
    );
}

// ---- property: plan + apply reaches the desired state and a second plan is empty ----

const NAMES: [&str; 4] = ["a.hoge.com", "b.hoge.com", "c.hoge.com", "d.hoge.com"];
const ADDRESSES: [&str; 7] = [
    "203.0.113.1",
    "203.0.113.2",
    "203.0.113.3",
    "203.0.113.4",
    "2001:db8::1",
    "2001:db8::2",
    "2001:db8::3",
];

fn state_strategy() -> impl Strategy<Value = EdgeState> {
    prop_oneof![
        Just(EdgeState::Serving),
        Just(EdgeState::Provisioning),
        Just(EdgeState::Unhealthy),
        Just(EdgeState::Deleted),
        Just(EdgeState::Unknown),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    /// (name index, address index, ttl, owned)
    seeds: Vec<(usize, usize, u32, bool)>,
    /// (ipv4 index, ipv6 index, state)
    edges: Vec<(Option<usize>, Option<usize>, EdgeState)>,
    /// Per name: 0 served, 1 retired, 2 neither.
    roles: [u8; 4],
    ttl: u32,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(
            (
                0..4usize,
                0..7usize,
                prop_oneof![Just(30u32), Just(60)],
                any::<bool>(),
            ),
            0..10,
        ),
        prop::collection::vec(
            (
                prop::option::of(0..4usize),
                prop::option::of(4..7usize),
                state_strategy(),
            ),
            0..5,
        ),
        [0..3u8, 0..3u8, 0..3u8, 0..3u8],
        prop_oneof![Just(30u32), Just(60)],
    )
        .prop_map(|(seeds, edges, roles, ttl)| Case {
            seeds,
            edges,
            roles,
            ttl,
        })
}

fn pool(i: usize) -> IpAddr {
    ADDRESSES[i].parse().expect("test address")
}

fn name_of(record: &ProviderRecord) -> Hostname {
    record
        .spec
        .name
        .to_hostname()
        .expect("only host names are seeded")
}

fn ip_of(record: &ProviderRecord) -> IpAddr {
    address(&record.spec.data).expect("only address records are seeded")
}

/// Holders of an address: whether the reconciler must delete its records (`Some(true)`),
/// must keep them (`Some(false)`), or may delete them only while the name keeps another
/// address (`None`).
fn forced(state: &DesiredState, ip: IpAddr) -> Option<bool> {
    let states: Vec<EdgeState> = state
        .edges
        .iter()
        .filter(|e| e.addresses().any(|a| a == ip))
        .map(|e| e.state)
        .collect();
    if states
        .iter()
        .any(|s| matches!(s, EdgeState::Serving | EdgeState::Unknown))
    {
        Some(false)
    } else if states.is_empty()
        || states.contains(&EdgeState::Provisioning)
        || states.contains(&EdgeState::Unhealthy)
    {
        None
    } else {
        Some(true)
    }
}

fn check(case: Case) -> Result<(), TestCaseError> {
    let zone = Zone {
        id: "z1".into(),
        name: host("hoge.com"),
    };
    let provider = Arc::new(MemoryProvider::new([zone.clone()]));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut mine = BTreeSet::new();
    for (name, ip, ttl, is_mine) in &case.seeds {
        let spec = RecordSpec {
            name: host(NAMES[*name]).into(),
            data: address_data(pool(*ip)),
            ttl: *ttl,
        };
        // The provider refuses identical records; such a seed is simply not added.
        if let Ok(id) = runtime.block_on(provider.create_record(&zone, &spec))
            && *is_mine
        {
            mine.insert(id);
        }
    }
    let mut state = DesiredState {
        ttl: case.ttl,
        ..DesiredState::default()
    };
    for (i, role) in case.roles.iter().enumerate() {
        match role {
            0 => state.hostnames.insert(host(NAMES[i])),
            1 => state.retired.insert(host(NAMES[i])),
            _ => false,
        };
    }
    for (i, (v4, v6, edge_state)) in case.edges.iter().enumerate() {
        state.edges.push(EdgeTarget {
            id: EdgeNodeId::parse(&format!("e{i}")).expect("test edge id"),
            ipv4: v4.map(|v| match pool(v) {
                IpAddr::V4(v4) => v4,
                IpAddr::V6(_) => unreachable!("indices 0..4 are IPv4"),
            }),
            ipv6: v6.map(|v| match pool(v) {
                IpAddr::V6(v6) => v6,
                IpAddr::V4(_) => unreachable!("indices 4..7 are IPv6"),
            }),
            state: *edge_state,
        });
    }

    let before = provider.records(&zone);
    let reconciler = Reconciler::new(provider.clone(), zone.clone());
    let report = runtime.block_on(async {
        let plan = reconciler.plan(&state, &mine).await?;
        Ok::<_, crate::Error>(reconciler.apply(plan).await)
    });
    let report = report.map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(report.is_complete(), "{:?}", report.failed);
    let after = provider.records(&zone);
    let after_ids: BTreeSet<&RecordId> = after.iter().map(|r| &r.id).collect();

    // Foreign records are exactly as they were.
    let foreign = |records: &[ProviderRecord]| -> Vec<ProviderRecord> {
        records
            .iter()
            .filter(|r| !mine.contains(&r.id) && !report.owned.contains(&r.id))
            .cloned()
            .collect()
    };
    prop_assert_eq!(foreign(&before), foreign(&after));
    // Ownership is exact: every owned id exists, and every record is foreign or owned.
    prop_assert!(report.owned.iter().all(|id| after_ids.contains(id)));
    let wanted = state.wanted();
    for (name, ip) in wanted.keys() {
        prop_assert!(
            after
                .iter()
                .any(|r| &r.spec.name == name && r.spec.data == address_data(*ip)),
            "{name} lacks {ip}"
        );
    }
    let mut by_name: BTreeMap<Hostname, Vec<&ProviderRecord>> = BTreeMap::new();
    for r in &after {
        by_name.entry(name_of(r)).or_default().push(r);
    }
    for r in after.iter().filter(|r| report.owned.contains(&r.id)) {
        let ip = ip_of(r);
        let name = name_of(r);
        let same_value = after
            .iter()
            .filter(|o| o.spec.name == r.spec.name && o.spec.data == r.spec.data)
            .count();
        if state.hostnames.contains(&name) {
            prop_assert_eq!(same_value, 1, "duplicate left at {}", r.spec);
            if wanted.contains_key(&(name.clone(), ip)) {
                prop_assert_eq!(r.spec.ttl, state.ttl);
            } else {
                match forced(&state, ip) {
                    Some(true) => prop_assert!(false, "record of a removed edge left: {}", r.spec),
                    Some(false) => {}
                    // Kept only because it is all the name has: nothing else may be there.
                    None => prop_assert!(
                        by_name[&name].iter().all(|o| report.owned.contains(&o.id)
                            && !wanted.contains_key(&(name_of(o), ip_of(o)))
                            && forced(&state, ip_of(o)).is_none()),
                        "{} kept although its name has another address",
                        r.spec
                    ),
                }
            }
        } else {
            prop_assert!(
                !state.retired.contains(&name),
                "retired name kept {}",
                r.spec
            );
        }
    }
    // Records at names neither served nor retired stay as they were.
    for r in &before {
        let name = name_of(r);
        let unmanaged = !state.hostnames.contains(&name) && !state.retired.contains(&name);
        prop_assert!(
            !unmanaged || after.contains(r),
            "record at an unmanaged name changed: {}",
            r.spec
        );
    }
    // A served name left without records lost them only to deleted edges: never to an
    // observer's verdict alone.
    for name in &state.hostnames {
        let had: Vec<&ProviderRecord> = before.iter().filter(|r| &r.spec.name == name).collect();
        if !had.is_empty() && !by_name.contains_key(name) {
            for r in had {
                prop_assert_eq!(
                    forced(&state, ip_of(r)),
                    Some(true),
                    "{} emptied by {}",
                    name,
                    r.spec
                );
            }
        }
    }
    // Idempotent.
    let again = runtime
        .block_on(reconciler.plan(&state, &report.owned))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(again.is_empty(), "second plan not empty:\n{again}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn plan_then_apply_reaches_the_desired_state_and_touches_no_foreign_record(case in case_strategy()) {
        check(case)?;
    }
}
