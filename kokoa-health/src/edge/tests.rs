use proptest::prelude::*;

use super::*;
use crate::CpuTracker;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// A healthy edge that sent a heartbeat a second ago.
fn healthy() -> EdgeObservation {
    EdgeObservation {
        at: at(100),
        last_heartbeat: at(99),
        http: HealthState::Healthy,
        tunnel: TunnelStatus::Up,
        cpu_overloaded: false,
        error_rate_percent: 0.2,
    }
}

fn judge(observation: &EdgeObservation) -> EdgeVerdict {
    EdgeVerdict::judge(observation, &EdgeRules::default())
}

/// What a healthy edge (in DNS, marked healthy, no alert) must be told to reach `observation`.
fn actions_from_healthy(observation: &EdgeObservation) -> Vec<EdgeAction> {
    judge(observation).actions_since(&judge(&healthy()))
}

#[test]
fn a_healthy_edge_is_in_dns_and_needs_nothing() {
    let verdict = judge(&healthy());
    assert!(verdict.conditions.is_empty(), "{verdict:?}");
    assert!(verdict.in_dns());
    assert_eq!(verdict.health(), HealthState::Healthy);
    assert_eq!(verdict.actions_since(&verdict), []);
}

#[test]
fn row_http_check_failed_three_times_removes_and_marks_unhealthy() {
    let observation = EdgeObservation {
        http: HealthState::Unhealthy,
        ..healthy()
    };
    assert_eq!(
        actions_from_healthy(&observation),
        [EdgeAction::RemoveFromDns, EdgeAction::MarkUnhealthy]
    );
}

#[test]
fn row_tunnel_down_removes_from_dns_at_once_without_marking() {
    let observation = EdgeObservation {
        tunnel: TunnelStatus::Down,
        ..healthy()
    };
    assert_eq!(
        actions_from_healthy(&observation),
        [EdgeAction::RemoveFromDns]
    );
    assert_eq!(judge(&observation).health(), HealthState::Healthy);
}

#[test]
fn row_cpu_overloaded_alerts_and_keeps_in_dns() {
    let rules = EdgeRules::default();
    let mut cpu = CpuTracker::new(rules.cpu);
    for secs in (0..=300).step_by(5) {
        cpu.record(at(secs), 97.5);
    }
    let observation = EdgeObservation {
        cpu_overloaded: cpu.is_overloaded(),
        ..healthy()
    };
    assert_eq!(
        actions_from_healthy(&observation),
        [EdgeAction::Alert {
            condition: EdgeCondition::CpuOverloaded,
            severity: Severity::Warning
        }]
    );
    assert!(judge(&observation).in_dns());
}

#[test]
fn row_error_rate_above_10_percent_alerts() {
    let at_limit = EdgeObservation {
        error_rate_percent: 10.0,
        ..healthy()
    };
    assert_eq!(actions_from_healthy(&at_limit), []);
    let above = EdgeObservation {
        error_rate_percent: 10.1,
        ..healthy()
    };
    assert_eq!(
        actions_from_healthy(&above),
        [EdgeAction::Alert {
            condition: EdgeCondition::HighErrorRate,
            severity: Severity::Warning
        }]
    );
    assert!(judge(&above).in_dns());
}

#[test]
fn row_no_heartbeat_for_30_s_removes_and_marks_unhealthy() {
    let fresh = EdgeObservation {
        last_heartbeat: at(71),
        ..healthy()
    };
    assert_eq!(actions_from_healthy(&fresh), []);
    let stale = EdgeObservation {
        last_heartbeat: at(70),
        ..healthy()
    };
    assert_eq!(
        actions_from_healthy(&stale),
        [EdgeAction::RemoveFromDns, EdgeAction::MarkUnhealthy]
    );
}

#[test]
fn recovery_adds_back_marks_healthy_and_resolves_alerts() {
    let sick = judge(&EdgeObservation {
        http: HealthState::Unhealthy,
        error_rate_percent: 50.0,
        ..healthy()
    });
    assert_eq!(
        judge(&healthy()).actions_since(&sick),
        [
            EdgeAction::AddToDns,
            EdgeAction::MarkHealthy,
            EdgeAction::ResolveAlert(EdgeCondition::HighErrorRate)
        ]
    );
    let tunnel_down = judge(&EdgeObservation {
        tunnel: TunnelStatus::Down,
        ..healthy()
    });
    assert_eq!(
        judge(&healthy()).actions_since(&tunnel_down),
        [EdgeAction::AddToDns]
    );
}

#[test]
fn a_new_edge_joins_dns_only_when_its_check_has_recovered() {
    let pending = EdgeObservation {
        http: HealthState::Unknown,
        ..healthy()
    };
    assert_eq!(judge(&pending), EdgeVerdict::pending());
    assert!(!EdgeVerdict::pending().in_dns());
    assert_eq!(judge(&pending).actions_since(&EdgeVerdict::pending()), []);
    assert_eq!(
        judge(&healthy()).actions_since(&EdgeVerdict::pending()),
        [EdgeAction::AddToDns, EdgeAction::MarkHealthy]
    );
    // Recovering its HTTP check does not put it in DNS while its tunnel is still down.
    let no_tunnel = judge(&EdgeObservation {
        tunnel: TunnelStatus::Down,
        ..healthy()
    });
    assert_eq!(
        no_tunnel.actions_since(&EdgeVerdict::pending()),
        [EdgeAction::MarkHealthy]
    );
}

#[test]
fn a_pending_edge_without_heartbeat_is_unhealthy_until_it_sends_one() {
    let silent = judge(&EdgeObservation {
        http: HealthState::Unknown,
        last_heartbeat: at(0),
        ..healthy()
    });
    assert_eq!(
        silent.actions_since(&EdgeVerdict::pending()),
        [EdgeAction::MarkUnhealthy]
    );
    let back = judge(&EdgeObservation {
        http: HealthState::Unknown,
        ..healthy()
    });
    assert_eq!(back.actions_since(&silent), [EdgeAction::MarkPending]);
}

#[test]
fn verdicts_and_actions_are_json_events() {
    let verdict = judge(&EdgeObservation {
        http: HealthState::Unhealthy,
        cpu_overloaded: true,
        ..healthy()
    });
    let json = serde_json::to_value(&verdict).expect("serialises");
    assert_eq!(
        json,
        serde_json::json!({ "conditions": ["http_check_failing", "cpu_overloaded"] })
    );
    let back: EdgeVerdict = serde_json::from_value(json).expect("parses");
    assert_eq!(back, verdict);
    assert_eq!(
        serde_json::to_value(verdict.actions_since(&EdgeVerdict::pending())).expect("serialises"),
        serde_json::json!([
            "mark_unhealthy",
            { "alert": { "condition": "cpu_overloaded", "severity": "warning" } }
        ])
    );
}

fn any_health() -> impl Strategy<Value = HealthState> {
    prop_oneof![
        Just(HealthState::Unknown),
        Just(HealthState::Healthy),
        Just(HealthState::Unhealthy)
    ]
}

prop_compose! {
    fn any_observation()(
        heartbeat_age in 0u64..90,
        http in any_health(),
        tunnel_up in any::<bool>(),
        cpu_overloaded in any::<bool>(),
        error_rate_percent in 0.0f64..=100.0,
    ) -> EdgeObservation {
        EdgeObservation {
            at: at(100),
            last_heartbeat: at(100 - heartbeat_age),
            http,
            tunnel: if tunnel_up { TunnelStatus::Up } else { TunnelStatus::Down },
            cpu_overloaded,
            error_rate_percent,
        }
    }
}

/// The outside world an edge's actions change.
#[derive(Debug, PartialEq)]
struct World {
    in_dns: bool,
    marked: HealthState,
    alerts: BTreeSet<EdgeCondition>,
}

impl World {
    fn of(verdict: &EdgeVerdict) -> Self {
        Self {
            in_dns: verdict.in_dns(),
            marked: verdict.health(),
            alerts: verdict
                .conditions
                .iter()
                .copied()
                .filter(|c| c.severity().is_some())
                .collect(),
        }
    }

    /// Applies actions, refusing any that would do nothing: each change is asked for once.
    fn apply(&mut self, actions: &[EdgeAction]) -> Result<(), TestCaseError> {
        for action in actions {
            let changed = match action {
                EdgeAction::RemoveFromDns => std::mem::replace(&mut self.in_dns, false),
                EdgeAction::AddToDns => !std::mem::replace(&mut self.in_dns, true),
                EdgeAction::MarkUnhealthy => {
                    std::mem::replace(&mut self.marked, HealthState::Unhealthy)
                        != HealthState::Unhealthy
                }
                EdgeAction::MarkHealthy => {
                    std::mem::replace(&mut self.marked, HealthState::Healthy)
                        != HealthState::Healthy
                }
                EdgeAction::MarkPending => {
                    std::mem::replace(&mut self.marked, HealthState::Unknown)
                        != HealthState::Unknown
                }
                EdgeAction::Alert { condition, .. } => self.alerts.insert(*condition),
                EdgeAction::ResolveAlert(condition) => self.alerts.remove(condition),
            };
            prop_assert!(changed, "{action:?} changed nothing in {self:?}");
        }
        Ok(())
    }
}

proptest! {
    #[test]
    fn tunnel_down_always_means_out_of_dns(mut observation in any_observation(), before in any_observation()) {
        observation.tunnel = TunnelStatus::Down;
        let previous = judge(&before);
        let verdict = judge(&observation);
        prop_assert!(!verdict.in_dns());
        let removals = verdict
            .actions_since(&previous)
            .into_iter()
            .filter(|a| *a == EdgeAction::RemoveFromDns)
            .count();
        prop_assert_eq!(removals, usize::from(previous.in_dns()));
    }

    #[test]
    fn a_worse_observation_never_puts_an_edge_into_dns(
        observation in any_observation(),
        worse in 0usize..5,
    ) {
        let mut bad = observation.clone();
        let condition = match worse {
            0 => { bad.tunnel = TunnelStatus::Down; EdgeCondition::TunnelDown }
            1 => { bad.http = HealthState::Unhealthy; EdgeCondition::HttpCheckFailing }
            2 => { bad.last_heartbeat = at(0); EdgeCondition::HeartbeatMissing }
            3 => { bad.cpu_overloaded = true; EdgeCondition::CpuOverloaded }
            _ => { bad.error_rate_percent += 50.0; EdgeCondition::HighErrorRate }
        };
        let verdict = judge(&bad);
        prop_assert!(verdict.conditions.contains(&condition));
        prop_assert!(judge(&observation).in_dns() || !verdict.in_dns());
        // Getting worse never makes a sick edge healthy.
        prop_assert!(verdict.health() != HealthState::Healthy || judge(&observation).health() == HealthState::Healthy);
    }

    #[test]
    fn only_dns_rows_take_an_edge_out_of_dns(observation in any_observation()) {
        let verdict = judge(&observation);
        let expected = observation.http == HealthState::Healthy
            && observation.tunnel == TunnelStatus::Up
            && observation.at.duration_since(observation.last_heartbeat).expect("past") < Duration::from_secs(30);
        prop_assert_eq!(verdict.in_dns(), expected);
    }

    #[test]
    fn acting_on_each_change_reaches_the_verdict_exactly_once(
        observations in prop::collection::vec(any_observation(), 1..12),
    ) {
        let mut acted_on = EdgeVerdict::pending();
        let mut world = World::of(&acted_on);
        for observation in &observations {
            let verdict = judge(observation);
            world.apply(&verdict.actions_since(&acted_on))?;
            acted_on = verdict;
            prop_assert_eq!(&world, &World::of(&acted_on));
            prop_assert_eq!(acted_on.actions_since(&acted_on), []);
        }
    }
}
