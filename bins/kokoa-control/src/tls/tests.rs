use kokoa_store::MemoryStore;

use super::*;

#[tokio::test]
async fn control_planes_sharing_a_store_share_one_ca() {
    let store = MemoryStore::new();
    let master = MasterKey::generate();
    let first = ControlCa::load_or_create(&store, &master).await.unwrap();
    let second = ControlCa::load_or_create(&store, &master).await.unwrap();
    assert_eq!(first.pin(), second.pin());
    // The key is sealed: the stored text holds no PEM key.
    let stored = store
        .kv_get(KV.0, KV.1, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.contains("PRIVATE KEY"), "{stored}");

    // Another master key does not open it, and says so.
    let err = ControlCa::load_or_create(&store, &MasterKey::generate())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("the stored CA key does not open"), "{err}");
}

#[tokio::test]
async fn a_serving_certificate_names_what_was_asked_and_chains_to_the_ca() {
    let store = MemoryStore::new();
    let ca = ControlCa::load_or_create(&store, &MasterKey::generate())
        .await
        .unwrap();
    let names = serving_names(
        "https://cp.example.net:8443",
        "10.0.0.5:8443".parse().unwrap(),
        &["cp.internal".into()],
    );
    assert_eq!(
        names,
        [
            "10.0.0.5",
            "127.0.0.1",
            "::1",
            "cp.example.net",
            "cp.internal",
            "localhost"
        ]
    );
    let key = ca.issue(&names).unwrap();
    assert_eq!(key.cert.len(), 2, "leaf, then the CA");
    assert_eq!(CaPin::of(&key.cert[1]), ca.pin());
    let (_, leaf) = x509_parser::parse_x509_certificate(&key.cert[0]).unwrap();
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => dns.to_string(),
            x509_parser::extensions::GeneralName::IPAddress(ip) => format!("{ip:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(sans.contains(&"cp.example.net".to_owned()), "{sans:?}");
    let days =
        (leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, LEAF_DAYS + 1, "valid from a day ago for LEAF_DAYS");
    // An unspecified listen address is not a name.
    assert!(
        !serving_names("https://h", "0.0.0.0:1".parse().unwrap(), &[])
            .contains(&"0.0.0.0".to_owned())
    );
}
