//! Against a real PowerDNS Authoritative (gsqlite3 backend) started by the test: records
//! written through the provider and the reconciler are checked with `dig`.
#![cfg(all(feature = "powerdns", feature = "local-powerdns"))]

mod common;

use std::{collections::BTreeSet, sync::Arc};

use common::Pdns;
use kokoa_core::{EdgeNodeId, Hostname, RecordData};
use kokoa_dns::{
    DesiredState, DnsProvider, EdgeState, EdgeTarget, Error, Reconciler, RecordSpec, Zone,
    powerdns::PowerDnsProvider,
};

fn host(name: &str) -> Hostname {
    Hostname::parse(name).expect("test host name")
}

fn edge(id: &str, v4: &str, v6: Option<&str>, state: EdgeState) -> EdgeTarget {
    EdgeTarget {
        id: EdgeNodeId::parse(id).expect("test edge id"),
        ipv4: Some(v4.parse().expect("test address")),
        ipv6: v6.map(|v| v.parse().expect("test address")),
        state,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_keeps_powerdns_in_step_with_the_edges() -> Result<(), Error> {
    let pdns = Pdns::start(&[]).await;
    pdns.create_zone("kokoa.test").await;
    let provider = Arc::new(PowerDnsProvider::new(&pdns.api, pdns.key())?);
    let zone = provider.find_zone(&host("kokoa.test")).await?;
    assert_eq!(zone.id, "kokoa.test.");

    // Someone else's record in the same set: it must survive everything below.
    let foreign = RecordSpec {
        name: host("app.kokoa.test").into(),
        data: RecordData::A("192.0.2.50".parse().expect("address")),
        ttl: 30,
    };
    provider.create_record(&zone, &foreign).await?;

    let reconciler = Reconciler::new(provider.clone(), zone.clone());
    let mut desired = DesiredState::default();
    desired.hostnames.insert(host("app.kokoa.test"));
    desired.edges = vec![
        edge("edge-1", "203.0.113.10", None, EdgeState::Serving),
        edge(
            "edge-2",
            "203.0.113.11",
            Some("2001:db8::11"),
            EdgeState::Serving,
        ),
    ];
    let plan = reconciler.plan(&desired, &BTreeSet::new()).await?;
    assert_eq!(plan.creates.len(), 3, "{plan}");
    let report = reconciler.apply(plan).await;
    assert!(report.is_complete(), "{:?}", report.failed);
    assert_eq!(
        pdns.dig("app.kokoa.test", "A"),
        [
            "app.kokoa.test. 30 IN A 192.0.2.50",
            "app.kokoa.test. 30 IN A 203.0.113.10",
            "app.kokoa.test. 30 IN A 203.0.113.11",
        ]
    );
    assert_eq!(
        pdns.dig("app.kokoa.test", "AAAA"),
        ["app.kokoa.test. 30 IN AAAA 2001:db8::11"]
    );
    assert!(reconciler.plan(&desired, &report.owned).await?.is_empty());

    // edge-2 fails its checks: both of its records leave DNS, its AAAA set entirely.
    desired.edges[1].state = EdgeState::Unhealthy;
    let plan = reconciler.plan(&desired, &report.owned).await?;
    assert_eq!(plan.deletes.len(), 2, "{plan}");
    let report = reconciler.apply(plan).await;
    assert!(report.is_complete(), "{:?}", report.failed);
    assert_eq!(
        pdns.dig("app.kokoa.test", "A"),
        [
            "app.kokoa.test. 30 IN A 192.0.2.50",
            "app.kokoa.test. 30 IN A 203.0.113.10"
        ]
    );
    assert!(pdns.dig("app.kokoa.test", "AAAA").is_empty());

    // A longer TTL is applied in place; the record keeps its id.
    desired.ttl = 120;
    let plan = reconciler.plan(&desired, &report.owned).await?;
    assert_eq!(
        plan.to_string(),
        "~ app.kokoa.test. 120 IN A 203.0.113.10 (id app.kokoa.test|A|203.0.113.10): ttl 30 -> 120\n"
    );
    let report = reconciler.apply(plan).await;
    assert!(report.is_complete(), "{:?}", report.failed);
    assert!(
        pdns.dig("app.kokoa.test", "A")
            .contains(&"app.kokoa.test. 120 IN A 203.0.113.10".to_owned())
    );
    assert!(reconciler.plan(&desired, &report.owned).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_added_to_and_removed_from_record_sets() -> Result<(), Error> {
    let pdns = Pdns::start(&[]).await;
    pdns.create_zone("kokoa.test").await;
    let provider = PowerDnsProvider::new(&pdns.api, pdns.key())?;
    let zone = Zone {
        id: "kokoa.test.".into(),
        name: host("kokoa.test"),
    };
    let spec = |ip: &str| RecordSpec {
        name: host("www.kokoa.test").into(),
        data: RecordData::A(ip.parse().expect("address")),
        ttl: 60,
    };
    let first = provider.create_record(&zone, &spec("198.51.100.1")).await?;
    let second = provider.create_record(&zone, &spec("198.51.100.2")).await?;
    assert_eq!(second.as_str(), "www.kokoa.test|A|198.51.100.2");
    let listed = provider
        .list_records(&zone, Some(&host("www.kokoa.test").into()))
        .await?;
    assert_eq!(listed.len(), 2);

    let moved = provider
        .update_record(&zone, &first, &spec("198.51.100.3"))
        .await?;
    assert_eq!(moved.as_str(), "www.kokoa.test|A|198.51.100.3");
    assert_eq!(
        pdns.dig("www.kokoa.test", "A"),
        [
            "www.kokoa.test. 60 IN A 198.51.100.2",
            "www.kokoa.test. 60 IN A 198.51.100.3"
        ]
    );
    provider.delete_record(&zone, &second).await?;
    provider.delete_record(&zone, &moved).await?;
    assert!(pdns.dig("www.kokoa.test", "A").is_empty());
    let again = provider
        .delete_record(&zone, &moved)
        .await
        .expect_err("already gone");
    assert!(again.is_not_found(), "{again}");

    let missing = Zone {
        id: "nowhere.test.".into(),
        name: host("nowhere.test"),
    };
    let error = provider
        .list_records(&missing, None)
        .await
        .expect_err("no such zone");
    assert!(error.is_not_found(), "{error}");
    assert!(error.to_string().contains("zones/nowhere.test."), "{error}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_is_an_auth_error() -> Result<(), Error> {
    let pdns = Pdns::start(&[]).await;
    let provider = PowerDnsProvider::new(&pdns.api, "not-the-key")?;
    let error = provider.list_zones().await.expect_err("wrong key");
    assert!(matches!(error, Error::Auth { .. }), "{error}");
    assert!(!error.to_string().contains("not-the-key"));
    assert!(!format!("{provider:?}").contains("not-the-key"));
    Ok(())
}

/// DNS-01 needs TXT records at names no host can have (`_acme-challenge.…`): written,
/// listed by name and deleted through the provider, seen with `dig`; the reconciler leaves
/// them alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txt_records_at_underscore_names_round_trip() -> Result<(), Error> {
    let pdns = Pdns::start(&[]).await;
    pdns.create_zone("kokoa.test").await;
    let provider = Arc::new(PowerDnsProvider::new(&pdns.api, pdns.key())?);
    let zone = provider.find_zone(&host("kokoa.test")).await?;
    let name = kokoa_core::DnsName::parse("_acme-challenge.app.kokoa.test").expect("name");
    let spec = RecordSpec {
        name: name.clone(),
        data: RecordData::Txt(kokoa_core::TxtText::new("a-b_c").unwrap()),
        ttl: 30,
    };
    let id = provider.create_record(&zone, &spec).await?;
    assert_eq!(
        pdns.dig("_acme-challenge.app.kokoa.test", "TXT"),
        ["_acme-challenge.app.kokoa.test. 30 IN TXT \"a-b_c\""]
    );
    let listed = provider.list_records(&zone, Some(&name)).await?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].spec, spec);

    let reconciler = Reconciler::new(provider.clone(), zone.clone());
    let mut desired = DesiredState::default();
    desired.hostnames.insert(host("app.kokoa.test"));
    let plan = reconciler
        .plan(&desired, &BTreeSet::from([id.clone()]))
        .await?;
    assert!(plan.deletes.is_empty(), "{plan}");

    provider.delete_record(&zone, &id).await?;
    assert!(pdns.dig("_acme-challenge.app.kokoa.test", "TXT").is_empty());
    Ok(())
}
