use proptest::{prelude::*, sample::subsequence};

use super::*;

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn at(provider: &str, region: &str) -> Placement {
    Placement {
        provider: name(provider),
        region: name(region),
    }
}

#[test]
fn defaults_are_the_specs() {
    let yaml = "
auto_remove_unhealthy_from_dns: true   # always on
health_check_failure_threshold: 3
health_check_interval: 10
auto_destroy_unhealthy_vps: true
destroy_delay: 60            # seconds after DNS removal
auto_replace_unhealthy_nodes: true
replace_delay: 5             # seconds after destroy
replacement_strategy:
  change_provider: true
  change_region: true
  preferred_providers: [vultr, digitalocean, hetzner]
  preferred_regions: [nrt, sgp, fra]
min_active_nodes: 2          # below this, new nodes are created automatically
";
    let from_spec: EdgeNodeManagement = serde_norway::from_str(yaml).unwrap();
    assert_eq!(
        from_spec,
        EdgeNodeManagement::default(),
        "max_nodes defaults to 10"
    );
    assert_eq!(from_spec.max_nodes, 10);
    from_spec.validate().unwrap();
    let empty: EdgeNodeManagement = serde_norway::from_str("{}").unwrap();
    assert_eq!(empty, from_spec);
}

#[test]
fn settings_are_checked() {
    let err = serde_norway::from_str::<EdgeNodeManagement>("destroy_dealy: 30")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `destroy_dealy`"), "{err}");
    let err = serde_norway::from_str::<EdgeNodeManagement>(
        "replacement_strategy: {preferred_regions: [Tokyo]}",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("Tokyo"), "{err}");

    let mut settings = EdgeNodeManagement {
        min_active_nodes: 11,
        ..EdgeNodeManagement::default()
    };
    assert_eq!(
        settings.validate().unwrap_err().to_string(),
        "invalid min_active_nodes \"11\": it is above max_nodes"
    );
    settings.min_active_nodes = 2;
    settings.health_check_failure_threshold = 0;
    assert!(settings.validate().is_err());
    settings.health_check_failure_threshold = 3;
    // A provider code where an area belongs: no provider has a data centre "sgp1".
    settings.replacement_strategy.preferred_regions = vec![name("sgp1")];
    assert_eq!(
        settings.validate().unwrap_err().to_string(),
        "invalid preferred_providers \"vultr\": this provider has a data centre in none of the preferred_regions"
    );
}

#[test]
fn region_table_maps_both_ways() {
    assert_eq!(region_code("digitalocean", "sgp"), Some("sgp1"));
    assert_eq!(region_code("vultr", "sgp"), Some("sgp"));
    assert_eq!(region_code("hetzner", "sgp"), Some("sin"));
    assert_eq!(region_code("digitalocean", "nrt"), None);
    assert_eq!(region_code("manual", "home"), Some("home"));
    assert_eq!(region_code("aws", "sgp"), Some("ap-southeast-1"));
    assert_eq!(region_code("aws", "nrt"), Some("ap-northeast-1"));
    assert_eq!(region_code("aws", "fra"), Some("eu-central-1"));
    assert_eq!(region_code("aws", "ams"), None);
    assert_eq!(region_area("aws", "ap-northeast-1"), "nrt");
    assert_eq!(region_area("hetzner", "nbg1"), "fra");
    assert_eq!(region_area("digitalocean", "xyz9"), "xyz9");
    for (area, codes) in REGIONS {
        // Every code is a valid name and maps back to its area.
        for (provider, code) in PROVIDERS.iter().zip(codes) {
            if let Some(code) = code {
                Name::parse(code).unwrap();
                assert_eq!(region_area(provider, code), *area, "{provider} {code}");
                assert_eq!(region_code(provider, area), Some(*code));
            }
        }
    }
}

#[test]
fn the_specs_replacement_moves_provider_and_region() {
    // SPEC §9: edge-1 at DigitalOcean sgp1 is attacked; the replacement goes to Vultr.
    let strategy = ReplacementStrategy::default();
    let live = [at("vultr", "sgp"), at("hetzner", "nbg1")];
    let choice = choose_replacement(&at("digitalocean", "sgp1"), &live, &strategy);
    assert_eq!(choice, at("vultr", "nrt"));
    assert_eq!(choice.area(), "nrt");
}

#[test]
fn successive_replacements_rotate() {
    let strategy = ReplacementStrategy::default();
    let mut live = vec![at("vultr", "nrt"), at("digitalocean", "sgp1")];
    let mut chosen = Vec::new();
    for _ in 0..4 {
        // The oldest edge fails each time and is replaced.
        let failed = live.remove(0);
        let next = choose_replacement(&failed, &live, &strategy);
        assert_ne!(next.provider, failed.provider);
        assert_ne!(next.area(), failed.area());
        live.push(next.clone());
        chosen.push(format!("{}/{}", next.provider, next.region));
    }
    assert_eq!(
        chosen,
        [
            "hetzner/nbg1",
            "vultr/nrt",
            "digitalocean/sgp1",
            "hetzner/nbg1"
        ]
    );
}

#[test]
fn replacements_rotate_to_aws_when_it_is_preferred() {
    let strategy = ReplacementStrategy {
        preferred_providers: vec![name("vultr"), name("aws")],
        ..ReplacementStrategy::default()
    };
    let settings = EdgeNodeManagement {
        replacement_strategy: strategy.clone(),
        ..EdgeNodeManagement::default()
    };
    settings.validate().unwrap();
    // Vultr in Tokyo is attacked: the replacement goes to AWS, in Singapore.
    let choice = choose_replacement(&at("vultr", "nrt"), &[at("vultr", "fra")], &strategy);
    assert_eq!(choice, at("aws", "ap-southeast-1"));
    assert_eq!(choice.area(), "sgp");
    // And back: AWS in Singapore fails, Vultr in Tokyo takes over.
    let live = [at("vultr", "fra"), at("aws", "ap-northeast-1")];
    let choice = choose_replacement(&at("aws", "ap-southeast-1"), &live, &strategy);
    assert_eq!(choice, at("vultr", "nrt"));
}

#[test]
fn falls_back_when_the_lists_cannot_change_everything() {
    let strategy = ReplacementStrategy {
        preferred_providers: vec![name("vultr")],
        ..ReplacementStrategy::default()
    };
    // Only Vultr is allowed: the region still changes.
    let choice = choose_replacement(&at("vultr", "nrt"), &[], &strategy);
    assert_eq!(choice, at("vultr", "sgp"));
    // Nothing to choose from: replace in place.
    let none = ReplacementStrategy {
        preferred_providers: vec![],
        ..ReplacementStrategy::default()
    };
    assert_eq!(
        choose_replacement(&at("vultr", "nrt"), &[], &none),
        at("vultr", "nrt")
    );
}

#[test]
fn creates_up_to_the_minimum_within_the_maximum() {
    let settings = EdgeNodeManagement::default();
    assert_eq!(nodes_to_create(0, 0, &settings), 2);
    assert_eq!(nodes_to_create(1, 0, &settings), 1);
    assert_eq!(nodes_to_create(1, 1, &settings), 0, "one is on its way");
    assert_eq!(nodes_to_create(12, 0, &settings), 0);
    let tight = EdgeNodeManagement {
        min_active_nodes: 5,
        max_nodes: 3,
        ..EdgeNodeManagement::default()
    };
    assert_eq!(nodes_to_create(1, 0, &tight), 2);
}

const PROVIDER_POOL: [&str; 5] = ["digitalocean", "vultr", "hetzner", "aws", "manual"];
const AREA_POOL: [&str; 5] = ["nrt", "sgp", "fra", "ams", "hel"];
const CODE_POOL: [&str; 12] = [
    "nrt",
    "sgp1",
    "sgp",
    "sin",
    "fra1",
    "fra",
    "nbg1",
    "ams3",
    "hel1",
    "xyz1",
    "ap-northeast-1",
    "eu-central-1",
];

fn placement() -> impl Strategy<Value = Placement> {
    (
        proptest::sample::select(&PROVIDER_POOL[..]),
        proptest::sample::select(&CODE_POOL[..]),
    )
        .prop_map(|(p, r)| at(p, r))
}

fn strategy() -> impl Strategy<Value = ReplacementStrategy> {
    (
        any::<bool>(),
        any::<bool>(),
        subsequence(&PROVIDER_POOL[..], 0..=5).prop_shuffle(),
        subsequence(&AREA_POOL[..], 0..=5).prop_shuffle(),
    )
        .prop_map(
            |(change_provider, change_region, providers, areas)| ReplacementStrategy {
                change_provider,
                change_region,
                preferred_providers: providers.into_iter().map(name).collect(),
                preferred_regions: areas.into_iter().map(name).collect(),
            },
        )
}

/// Every (provider, area) the lists allow, computed the obvious way.
fn candidates(strategy: &ReplacementStrategy) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for p in &strategy.preferred_providers {
        for a in &strategy.preferred_regions {
            if region_code(p.as_str(), a.as_str()).is_some() {
                all.push((p.to_string(), a.to_string()));
            }
        }
    }
    all
}

proptest! {
    #[test]
    fn the_choice_avoids_the_failed_placement_when_it_can(
        failed in placement(),
        live in proptest::collection::vec(placement(), 0..8),
        strategy in strategy(),
    ) {
        let choice = choose_replacement(&failed, &live, &strategy);
        let chosen = (choice.provider.to_string(), choice.area().to_owned());
        let failed_pair = (failed.provider.to_string(), failed.area().to_owned());
        let all = candidates(&strategy);
        if all.is_empty() {
            prop_assert_eq!(&choice, &failed);
            return Ok(());
        }
        prop_assert!(all.contains(&chosen), "{:?} is not a candidate", chosen);
        let honours = |(p, a): &(String, String)| {
            (!strategy.change_provider || *p != failed_pair.0)
                && (!strategy.change_region || *a != failed_pair.1)
        };
        if all.iter().any(honours) {
            prop_assert!(honours(&chosen), "{:?} ignores a requested change", chosen);
        }
        let asked = strategy.change_provider || strategy.change_region;
        if asked && all.iter().any(|c| *c != failed_pair) {
            prop_assert_ne!(&chosen, &failed_pair);
        }
    }

    #[test]
    fn the_choice_is_deterministic_and_ignores_the_order_of_live_edges(
        failed in placement(),
        (live, shuffled) in proptest::collection::vec(placement(), 0..8)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        strategy in strategy(),
    ) {
        let first = choose_replacement(&failed, &live, &strategy);
        prop_assert_eq!(&first, &choose_replacement(&failed, &live, &strategy));
        prop_assert_eq!(&first, &choose_replacement(&failed, &shuffled, &strategy));
    }

    #[test]
    fn creation_never_exceeds_max_nodes(
        active in 0usize..30,
        provisioning in 0usize..30,
        min_active_nodes in 0u32..20,
        max_nodes in 0u32..20,
    ) {
        let settings = EdgeNodeManagement { min_active_nodes, max_nodes, ..EdgeNodeManagement::default() };
        let create = nodes_to_create(active, provisioning, &settings);
        let total = active + provisioning + create;
        if create > 0 {
            prop_assert!(total <= max_nodes as usize);
            prop_assert!(total <= min_active_nodes as usize);
        }
        if min_active_nodes <= max_nodes && active + provisioning <= min_active_nodes as usize {
            prop_assert_eq!(total, min_active_nodes as usize);
        }
    }
}
