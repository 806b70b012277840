//! The DNS duty alone against a real PowerDNS server: the records a user would look up
//! at the provider follow the edges' health.

use std::net::IpAddr;

use dns_duty::Published;
use kokoa_core::{Hostname, RecordData};
use kokoa_dns::{DnsProvider, ProviderConfig, local::LocalPowerDns};

/// The A records of `name` at the server, sorted.
async fn a_records(provider: &dyn DnsProvider, name: &str) -> Vec<IpAddr> {
    let zone = provider
        .find_zone(&Hostname::parse("hoge.test").unwrap())
        .await
        .unwrap();
    let mut found: Vec<IpAddr> = provider
        .list_records(&zone, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.spec.name.to_string() == name)
        .filter_map(|r| match r.spec.data {
            RecordData::A(ip) => Some(IpAddr::V4(ip)),
            _ => None,
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn the_records_follow_the_healthy_edges() {
    let server = LocalPowerDns::start().await.unwrap();
    server.create_zone("hoge.test").await.unwrap();
    let provider = ProviderConfig {
        kind: "powerdns".into(),
        settings: [("url".into(), server.api_url().into())].into(),
        credentials: [("api_key".into(), server.api_key().into())].into(),
    }
    .build(&Hostname::parse("hoge.test").unwrap())
    .unwrap()
    .unwrap();
    let edges: Vec<IpAddr> = vec!["192.0.2.10".parse().unwrap(), "192.0.2.11".parse().unwrap()];
    let mut published = Published::new(
        server.api_url(),
        server.api_key(),
        "hoge.test",
        "app.hoge.test",
        &edges,
    )
    .await
    .unwrap();

    let changes = published.reconcile().await.unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(a_records(provider.as_ref(), "app.hoge.test").await, edges);

    // Nothing changed: nothing to do.
    assert_eq!(published.reconcile().await.unwrap(), Vec::<String>::new());

    published.set_healthy(1, false).await.unwrap();
    let changes = published.reconcile().await.unwrap();
    assert!(
        changes.len() == 1
            && changes[0].starts_with("delete ")
            && changes[0].contains("192.0.2.11"),
        "{changes:?}"
    );
    assert_eq!(
        a_records(provider.as_ref(), "app.hoge.test").await,
        edges[..1]
    );

    published.set_healthy(1, true).await.unwrap();
    published.reconcile().await.unwrap();
    assert_eq!(a_records(provider.as_ref(), "app.hoge.test").await, edges);
}
