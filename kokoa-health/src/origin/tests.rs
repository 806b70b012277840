use proptest::prelude::*;

use super::*;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// An origin with two healthy services, `app` and `wiki`.
fn healthy() -> OriginObservation {
    OriginObservation {
        at: at(100),
        last_heartbeat: at(80),
        tunnel: TunnelStatus::Up,
        application: HealthState::Healthy,
        services: BTreeMap::from([
            ("app".to_owned(), HealthState::Healthy),
            ("wiki".to_owned(), HealthState::Healthy),
        ]),
        disk_percent: 40.0,
    }
}

fn judge(observation: &OriginObservation) -> OriginVerdict {
    OriginVerdict::judge(observation, &OriginRules::default())
}

fn actions_from_healthy(observation: &OriginObservation) -> Vec<OriginAction> {
    judge(observation).actions_since(&judge(&healthy()))
}

fn service(name: &str) -> Scope {
    Scope::Service(name.to_owned())
}

#[test]
fn a_healthy_origin_is_served_with_no_alert() {
    let verdict = judge(&healthy());
    assert_eq!(verdict, OriginVerdict::default());
    assert!(verdict.unavailable().is_empty());
}

#[test]
fn row_tunnel_down_serves_503_for_every_route() {
    let observation = OriginObservation {
        tunnel: TunnelStatus::Down,
        ..healthy()
    };
    assert_eq!(
        actions_from_healthy(&observation),
        [OriginAction::ServeUnavailable(Scope::Origin)]
    );
}

#[test]
fn row_application_not_answering_three_times_serves_503() {
    let observation = OriginObservation {
        application: HealthState::Unhealthy,
        ..healthy()
    };
    assert_eq!(
        actions_from_healthy(&observation),
        [OriginAction::ServeUnavailable(Scope::Origin)]
    );
    // The tunnel going down as well changes nothing more: the routes already answer 503.
    let both = OriginObservation {
        tunnel: TunnelStatus::Down,
        ..observation.clone()
    };
    assert_eq!(judge(&both).actions_since(&judge(&observation)), []);
}

#[test]
fn row_one_service_down_serves_503_for_that_service_only() {
    let mut observation = healthy();
    observation
        .services
        .insert("wiki".to_owned(), HealthState::Unhealthy);
    assert_eq!(
        actions_from_healthy(&observation),
        [OriginAction::ServeUnavailable(service("wiki"))]
    );
    assert_eq!(
        judge(&observation).unavailable(),
        BTreeSet::from([service("wiki")])
    );
}

#[test]
fn row_no_heartbeat_for_60_s_alerts() {
    let fresh = OriginObservation {
        last_heartbeat: at(41),
        ..healthy()
    };
    assert_eq!(actions_from_healthy(&fresh), []);
    let stale = OriginObservation {
        last_heartbeat: at(40),
        ..healthy()
    };
    assert_eq!(
        actions_from_healthy(&stale),
        [OriginAction::Alert {
            condition: OriginCondition::HeartbeatMissing,
            severity: Severity::Warning
        }]
    );
}

#[test]
fn row_disk_above_90_percent_is_a_critical_alert() {
    let at_limit = OriginObservation {
        disk_percent: 90.0,
        ..healthy()
    };
    assert_eq!(actions_from_healthy(&at_limit), []);
    let full = OriginObservation {
        disk_percent: 93.0,
        ..healthy()
    };
    assert_eq!(
        actions_from_healthy(&full),
        [OriginAction::Alert {
            condition: OriginCondition::DiskFull,
            severity: Severity::Critical
        }]
    );
}

#[test]
fn recovery_serves_again_but_keeps_a_service_still_down() {
    let mut sick = OriginObservation {
        tunnel: TunnelStatus::Down,
        disk_percent: 99.0,
        ..healthy()
    };
    sick.services
        .insert("app".to_owned(), HealthState::Unhealthy);
    let mut better = healthy();
    better
        .services
        .insert("app".to_owned(), HealthState::Unhealthy);
    assert_eq!(
        judge(&better).actions_since(&judge(&sick)),
        [
            OriginAction::ServeNormally(Scope::Origin),
            OriginAction::ResolveAlert(OriginCondition::DiskFull)
        ]
    );
    assert_eq!(
        judge(&healthy()).actions_since(&judge(&better)),
        [OriginAction::ServeNormally(service("app"))]
    );
}

#[test]
fn unknown_application_or_service_is_served() {
    let mut observation = OriginObservation {
        application: HealthState::Unknown,
        ..healthy()
    };
    observation
        .services
        .insert("app".to_owned(), HealthState::Unknown);
    assert_eq!(judge(&observation), OriginVerdict::default());
}

#[test]
fn actions_are_json_events() {
    let mut observation = OriginObservation {
        disk_percent: 95.0,
        ..healthy()
    };
    observation
        .services
        .insert("wiki".to_owned(), HealthState::Unhealthy);
    assert_eq!(
        serde_json::to_value(actions_from_healthy(&observation)).expect("serialises"),
        serde_json::json!([
            { "serve_unavailable": { "service": "wiki" } },
            { "alert": { "condition": "disk_full", "severity": "critical" } }
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
        heartbeat_age in 0u64..120,
        tunnel_up in any::<bool>(),
        application in any_health(),
        services in prop::collection::btree_map("[a-d]", any_health(), 0..4),
        disk_percent in 0.0f64..=100.0,
    ) -> OriginObservation {
        OriginObservation {
            at: at(200),
            last_heartbeat: at(200 - heartbeat_age),
            tunnel: if tunnel_up { TunnelStatus::Up } else { TunnelStatus::Down },
            application,
            services,
            disk_percent,
        }
    }
}

proptest! {
    #[test]
    fn tunnel_down_or_application_down_always_means_503(
        mut observation in any_observation(),
        tunnel_down in any::<bool>(),
    ) {
        if tunnel_down {
            observation.tunnel = TunnelStatus::Down;
        } else {
            observation.application = HealthState::Unhealthy;
        }
        prop_assert!(judge(&observation).unavailable().contains(&Scope::Origin));
    }

    #[test]
    fn exactly_the_services_down_get_their_own_503(observation in any_observation()) {
        let services: BTreeSet<_> = judge(&observation)
            .unavailable()
            .into_iter()
            .filter(|scope| *scope != Scope::Origin)
            .collect();
        let down: BTreeSet<_> = observation
            .services
            .iter()
            .filter(|(_, state)| **state == HealthState::Unhealthy)
            .map(|(name, _)| service(name))
            .collect();
        prop_assert_eq!(services, down);
    }

    #[test]
    fn heartbeat_and_disk_never_cause_a_503(mut observation in any_observation()) {
        let served = judge(&observation).unavailable();
        observation.last_heartbeat = at(0);
        observation.disk_percent = 100.0;
        let verdict = judge(&observation);
        prop_assert_eq!(verdict.unavailable(), served);
        prop_assert!(verdict.conditions.contains(&OriginCondition::HeartbeatMissing));
        prop_assert!(verdict.conditions.contains(&OriginCondition::DiskFull));
    }

    #[test]
    fn acting_on_each_change_reaches_the_verdict_exactly_once(
        observations in prop::collection::vec(any_observation(), 1..12),
    ) {
        let mut acted_on = OriginVerdict::default();
        let mut unavailable = BTreeSet::new();
        let mut alerts = BTreeSet::new();
        for observation in &observations {
            let verdict = judge(observation);
            for action in verdict.actions_since(&acted_on) {
                let changed = match &action {
                    OriginAction::ServeUnavailable(scope) => unavailable.insert(scope.clone()),
                    OriginAction::ServeNormally(scope) => unavailable.remove(scope),
                    OriginAction::Alert { condition, .. } => alerts.insert(condition.clone()),
                    OriginAction::ResolveAlert(condition) => alerts.remove(condition),
                };
                prop_assert!(changed, "{:?} changed nothing", action);
            }
            acted_on = verdict;
            prop_assert_eq!(&unavailable, &acted_on.unavailable());
            let expected: BTreeSet<_> = acted_on
                .conditions
                .iter()
                .filter(|c| c.severity().is_some())
                .cloned()
                .collect();
            prop_assert_eq!(&alerts, &expected);
            prop_assert_eq!(acted_on.actions_since(&acted_on), []);
        }
    }
}
