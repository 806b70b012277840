use proptest::prelude::*;

use super::*;
use crate::CheckStatus::{Failure, Success};

fn thresholds(failure: u32, recovery: u32) -> Thresholds {
    Thresholds::new(failure, recovery).expect("test thresholds are not zero")
}

/// The state written declaratively: whichever complete window of `failure` failures or
/// `recovery` successes ends last decides; without one, the initial state stands.
fn reference_state(
    results: &[CheckStatus],
    failure: usize,
    recovery: usize,
    initial: HealthState,
) -> HealthState {
    let ends_with_run = |end: usize, status, len: usize| {
        end + 1 >= len && results[end + 1 - len..=end].iter().all(|r| *r == status)
    };
    (0..results.len())
        .rev()
        .find_map(|end| {
            if ends_with_run(end, Failure, failure) {
                Some(HealthState::Unhealthy)
            } else if ends_with_run(end, Success, recovery) {
                Some(HealthState::Healthy)
            } else {
                None
            }
        })
        .unwrap_or(initial)
}

fn any_state() -> impl Strategy<Value = HealthState> {
    prop_oneof![
        Just(HealthState::Unknown),
        Just(HealthState::Healthy),
        Just(HealthState::Unhealthy)
    ]
}

proptest! {
    #[test]
    fn flips_exactly_when_the_reference_model_does(
        results in prop::collection::vec(prop::bool::ANY.prop_map(|ok| if ok { Success } else { Failure }), 0..64),
        failure in 1u32..6,
        recovery in 1u32..6,
        initial in any_state(),
    ) {
        let mut tracker = HealthTracker::new(thresholds(failure, recovery), initial);
        let mut before = initial;
        for (i, result) in results.iter().enumerate() {
            let transition = tracker.observe(*result);
            let after = reference_state(&results[..=i], failure as usize, recovery as usize, initial);
            prop_assert_eq!(tracker.state(), after, "after {:?}", &results[..=i]);
            let expected = (after != before).then_some(Transition { from: before, to: after });
            prop_assert_eq!(transition, expected, "after {:?}", &results[..=i]);
            before = after;
        }
    }

    #[test]
    fn never_flips_on_fewer_than_threshold_opposite_results(
        failure in 1u32..8,
        recovery in 1u32..8,
    ) {
        let mut tracker = HealthTracker::new(thresholds(failure, recovery), HealthState::Healthy);
        for _ in 1..failure {
            prop_assert_eq!(tracker.observe(Failure), None);
        }
        // A success in between restarts the count from zero.
        prop_assert_eq!(tracker.observe(Success), None);
        for _ in 1..failure {
            prop_assert_eq!(tracker.observe(Failure), None);
        }
        prop_assert_eq!(
            tracker.observe(Failure),
            Some(Transition { from: HealthState::Healthy, to: HealthState::Unhealthy })
        );
        for _ in 1..recovery {
            prop_assert_eq!(tracker.observe(Success), None);
        }
        prop_assert_eq!(
            tracker.observe(Success),
            Some(Transition { from: HealthState::Unhealthy, to: HealthState::Healthy })
        );
    }
}

#[test]
fn a_new_edge_needs_three_successes_before_it_is_healthy() {
    let mut edge = HealthTracker::new(Thresholds::default(), HealthState::Unknown);
    assert_eq!(edge.observe(Success), None);
    assert_eq!(edge.observe(Success), None);
    assert_eq!(edge.state(), HealthState::Unknown);
    assert_eq!(
        edge.observe(Success),
        Some(Transition {
            from: HealthState::Unknown,
            to: HealthState::Healthy
        })
    );
}

#[test]
fn a_new_edge_that_never_answers_becomes_unhealthy() {
    let mut edge = HealthTracker::new(Thresholds::default(), HealthState::Unknown);
    let flips: Vec<_> = (0..5).filter_map(|_| edge.observe(Failure)).collect();
    assert_eq!(
        flips,
        [Transition {
            from: HealthState::Unknown,
            to: HealthState::Unhealthy
        }]
    );
    assert_eq!(edge.consecutive_failures(), 5);
    assert_eq!(edge.consecutive_successes(), 0);
}

#[test]
fn recovery_threshold_is_separate_from_failure_threshold() {
    let mut origin = HealthTracker::new(thresholds(2, 4), HealthState::Healthy);
    assert_eq!(origin.observe(Failure), None);
    assert!(origin.observe(Failure).is_some());
    for _ in 0..3 {
        assert_eq!(origin.observe(Success), None);
    }
    assert_eq!(origin.state(), HealthState::Unhealthy);
    assert!(origin.observe(Success).is_some());
    assert_eq!(origin.state(), HealthState::Healthy);
}

#[test]
fn zero_thresholds_are_refused_by_name() {
    assert_eq!(
        Thresholds::new(0, 3).unwrap_err().to_string(),
        "threshold is 0; it counts consecutive results and must be at least 1"
    );
    assert_eq!(
        Thresholds::new(3, 0),
        Err(Error::ZeroThreshold {
            name: "recovery_threshold"
        })
    );
    let zero: Result<Thresholds, _> = serde_json::from_str(r#"{"failure":0}"#);
    assert!(zero.is_err(), "0 deserialised as {zero:?}");
}

#[test]
fn thresholds_default_to_three_and_three() {
    let parsed: Thresholds = serde_json::from_str("{}").expect("all fields default");
    assert_eq!(parsed, Thresholds::new(3, 3).expect("not zero"));
    assert_eq!(parsed, Thresholds::default());
}
