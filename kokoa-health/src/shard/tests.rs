use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// Ids shaped like the control plane's (`edg_` and 128 bits in hex), from a fixed sequence.
fn edge_ids(count: u64) -> Vec<String> {
    (0..count)
        .map(|i| {
            format!(
                "edg_{:032x}",
                u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c)
            )
        })
        .collect()
}

/// Each instance's exact share of the ring: the arcs that end at its points.
fn arc_shares(ring: &Ring) -> BTreeMap<&str, f64> {
    let mut arcs: BTreeMap<&str, f64> =
        ring.instances().iter().map(|i| (i.as_str(), 0.0)).collect();
    let Some(&(last, _)) = ring.points.last() else {
        return arcs;
    };
    let mut previous = last;
    for &(point, index) in &ring.points {
        // The first point's arc wraps around from the last one.
        let arc = point.wrapping_sub(previous) as f64 / 2f64.powi(64);
        *arcs
            .get_mut(ring.instances[index as usize].as_str())
            .expect("live") += arc;
        previous = point;
    }
    arcs
}

fn shares<'a>(ring: &'a Ring, keys: &[String]) -> BTreeMap<&'a str, usize> {
    let mut shares: BTreeMap<&str, usize> =
        ring.instances().iter().map(|i| (i.as_str(), 0)).collect();
    for key in keys {
        *shares
            .get_mut(ring.owner(key).expect("ring is not empty"))
            .expect("owner is live") += 1;
    }
    shares
}

#[test]
fn the_hash_is_pinned() {
    // Instances of different builds must agree: these values may never change.
    assert_eq!(stable_hash(&[b""]), 0xefd0_1f60_ba99_2926);
    assert_eq!(stable_hash(&[b"edge-1"]), 0x4c84_4b4e_075b_b0c5);
    assert_eq!(
        stable_hash(&[b"checker-a", &0u32.to_le_bytes()]),
        0x563a_3f29_bf54_062c
    );
    assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
}

#[test]
fn an_empty_ring_owns_nothing() {
    let ring = Ring::new(Vec::<String>::new());
    assert!(ring.is_empty());
    assert_eq!(ring.owner("edg_1"), None);
    assert!(!ring.owns("checker-0", "edg_1"));
}

#[test]
fn one_hundred_edges_over_five_instances_get_fair_shares() {
    let ring = Ring::new((0..5).map(|i| format!("checker-{i}")));
    let shares = shares(&ring, &edge_ids(100));
    assert_eq!(shares.values().sum::<usize>(), 100);
    // Measured: 17, 26, 18, 21, 18 — within ±50 % of 20 with room to spare.
    for (instance, share) in &shares {
        assert!(
            (10..=30).contains(share),
            "{instance} got {share} of 100: {shares:?}"
        );
    }
}

fn instance_ids() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::btree_set("[a-z0-9-]{1,12}", 1..8).prop_map(|s| s.into_iter().collect())
}

/// `count` distinct ids from a random seed: as random as generated strings, and much
/// cheaper to make in numbers.
fn target_ids(count: usize) -> impl Strategy<Value = Vec<String>> {
    any::<u64>().prop_map(move |seed| {
        (0..count as u64)
            .map(|i| {
                format!(
                    "edg_{:x}",
                    stable_hash(&[&seed.to_le_bytes(), &i.to_le_bytes()])
                )
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn every_target_has_one_live_owner_whatever_the_order(
        instances in instance_ids(),
        targets in target_ids(50),
    ) {
        let ring = Ring::new(instances.clone());
        let reversed = Ring::new(instances.iter().rev().cloned().chain(instances.first().cloned()));
        prop_assert_eq!(&ring, &reversed);
        for target in &targets {
            let owner = ring.owner(target).expect("ring is not empty");
            prop_assert!(instances.iter().any(|i| i == owner));
            prop_assert_eq!(instances.iter().filter(|i| ring.owns(i, target)).count(), 1);
        }
    }

    #[test]
    fn a_new_instance_takes_only_targets_that_become_its_own(
        instances in instance_ids(),
        new in "[A-Z]{1,8}",
        targets in target_ids(300),
    ) {
        let before = Ring::new(instances.clone());
        let after = Ring::new(instances.iter().cloned().chain([new.clone()]));
        let mut moved = 0;
        for target in &targets {
            let (was, is) = (before.owner(target), after.owner(target));
            if was != is {
                prop_assert_eq!(is, Some(new.as_str()), "{} moved between old instances", target);
                moved += 1;
            }
        }
        // About 1/n move; at most twice that (measured: within ±30 % of 1/n at 300 keys).
        let n = instances.len() + 1;
        prop_assert!(moved <= 2 * targets.len() / n, "{} of {} moved to instance {} of {}", moved, targets.len(), new, n);
    }

    #[test]
    fn a_leaving_instance_gives_up_only_its_own_targets(
        instances in instance_ids().prop_filter("two or more", |i| i.len() > 1),
        leaving in any::<prop::sample::Index>(),
        targets in target_ids(100),
    ) {
        let leaving = leaving.get(&instances).clone();
        let before = Ring::new(instances.clone());
        let after = Ring::new(instances.iter().filter(|i| **i != leaving).cloned());
        for target in &targets {
            let (was, is) = (before.owner(target), after.owner(target));
            if was != is {
                prop_assert_eq!(was, Some(leaving.as_str()), "{} moved between staying instances", target);
            }
            prop_assert_ne!(is, Some(leaving.as_str()));
        }
    }

    #[test]
    fn five_instances_share_the_ring_evenly(
        instances in proptest::collection::btree_set("[a-z0-9-]{1,12}", 5),
        targets in target_ids(2_000),
    ) {
        let ring = Ring::new(instances);
        let arcs = arc_shares(&ring);
        // Each instance's exact share of the ring. Measured over 400 random rings: the
        // largest deviation from a fifth is 8 % at the median, 14 % at the 95th percentile,
        // 19.5 % at worst.
        for (instance, arc) in &arcs {
            prop_assert!((0.14..=0.26).contains(arc), "{} holds {:.3} of the ring: {:?}", instance, arc, arcs);
        }
        // Keys land as the arcs say: each count within six standard deviations of its
        // expectation (a fixed band around a fifth failed once in many runs when a ring at
        // its 99th percentile met a sample three deviations out).
        let n = targets.len() as f64;
        let shares = shares(&ring, &targets);
        for (instance, share) in &shares {
            let p = arcs[instance];
            let expected = n * p;
            let deviation = (n * p * (1.0 - p)).sqrt();
            prop_assert!(
                (*share as f64 - expected).abs() <= 6.0 * deviation,
                "{} got {} of {}, expected {:.0}: {:?}", instance, share, n, expected, shares
            );
        }
    }
}
