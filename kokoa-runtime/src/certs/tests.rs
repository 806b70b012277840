//! The schedule on an injected clock: which rows exist, what is due, what a success and a
//! failure leave behind.

use kokoa_core::{OriginId, Port, RouteId};

use super::*;

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).expect("test time")
}

fn host(name: &str) -> Hostname {
    Hostname::parse(name).expect("test name")
}

fn route(name: &str, mode: CertificateMode) -> Route {
    Route {
        id: RouteId::new(),
        hostname: host(name),
        origin_id: OriginId::parse("org_1").expect("id"),
        target_port: Port::new(8080).expect("port"),
        certificate: mode,
        created_at: at("2025-01-01T00:00:00Z"),
    }
}

/// A self-signed certificate valid from 2025-01-01 to 2025-04-01.
fn issued(names: &[&str]) -> IssuedCertificate {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2025, 4, 1);
    let cert = params.self_signed(&key).expect("cert");
    IssuedCertificate::from_pem(&cert.pem(), &key.serialize_pem()).expect("issued")
}

#[test]
fn rows_follow_the_routes_and_leave_uploads_alone() {
    let now = at("2025-01-01T00:00:00Z");
    let routes = [
        route("app.hoge.com", CertificateMode::Http01),
        route("*.fuga.com", CertificateMode::Dns01),
        route("plain.hoge.com", CertificateMode::None),
        route("own.hoge.com", CertificateMode::Http01),
    ];
    let changes = sync_rows(&routes, &[], None, now);
    let names: Vec<String> = changes
        .create
        .iter()
        .map(|c| format!("{:?} {}", c.names, c.method))
        .collect();
    assert_eq!(
        names,
        [
            "{Hostname(*.fuga.com)} dns-01",
            "{Hostname(app.hoge.com)} http-01",
            "{Hostname(own.hoge.com)} http-01",
        ]
    );
    assert!(changes.create.iter().all(|c| c.next_renewal.is_none()));

    // The rows exist; one route changes method, one is deleted, one name was uploaded.
    let mut certs = changes.create;
    certs[2].source = CertificateSource::Manual;
    certs[2].method = CertificateMode::Manual;
    let routes = [
        route("app.hoge.com", CertificateMode::Dns01),
        route("own.hoge.com", CertificateMode::Http01),
    ];
    let changes = sync_rows(&routes, &certs, None, now);
    assert!(changes.create.is_empty(), "{:?}", changes.create);
    assert_eq!(changes.update.len(), 1);
    assert_eq!(changes.update[0].method, CertificateMode::Dns01);
    assert_eq!(changes.update[0].id, certs[1].id);
    assert_eq!(changes.delete, [certs[0].id.clone()]);
    // With no route at all, the upload still stays.
    let changes = sync_rows(&[], &certs, None, now);
    assert!(!changes.delete.contains(&certs[2].id));
}

#[test]
fn names_in_origin_ca_zones_get_origin_ca_rows_and_switch_back_without_them() {
    let now = at("2025-01-01T00:00:00Z");
    let origin_ca = OriginCaSettings::new(
        kokoa_acme::cloudflare::OriginCaAuth::ApiToken(String::from("t").into()),
        vec![host("hoge.com")],
    );
    let routes = [
        route("app.hoge.com", CertificateMode::Http01),
        route("*.hoge.com", CertificateMode::Dns01),
        route("app.xhoge.com", CertificateMode::Http01),
        route("plain.hoge.com", CertificateMode::None),
    ];
    let mut certs = sync_rows(&routes, &[], Some(&origin_ca), now).create;
    let sources: Vec<String> = certs
        .iter()
        .map(|c| format!("{:?} {}", c.names, c.source.as_str()))
        .collect();
    assert_eq!(
        sources,
        [
            "{Hostname(*.hoge.com)} cloudflare_origin_ca",
            "{Hostname(app.hoge.com)} cloudflare_origin_ca",
            "{Hostname(app.xhoge.com)} acme",
        ]
    );
    assert_eq!(due(&certs, now).len(), 3);

    // Issued by the Origin CA, then the section goes: ACME orders it at once, the Origin
    // CA chain serving meanwhile.
    record_issued(
        &mut certs[1],
        &issued(&["app.hoge.com"]),
        at("2025-03-01T00:00:00Z"),
        now,
    );
    let changes = sync_rows(&routes, &certs, None, now);
    assert_eq!(changes.update.len(), 2, "{:?}", changes.update);
    let app = changes
        .update
        .iter()
        .find(|c| c.id == certs[1].id)
        .expect("the issued row changes");
    assert_eq!(app.source, CertificateSource::Acme);
    assert!(app.chain_pem.is_some() && app.next_renewal.is_none());
    assert!(changes.create.is_empty() && changes.delete.is_empty());
    // No route: Origin CA rows go like ACME ones.
    assert_eq!(
        sync_rows(&[], &certs, Some(&origin_ca), now).delete.len(),
        3
    );
}

#[test]
fn orders_are_due_at_once_then_at_renewal_and_retries_back_off() {
    let start = at("2025-01-01T00:00:00Z");
    let mut cert = sync_rows(
        &[route("app.hoge.com", CertificateMode::Http01)],
        &[],
        None,
        start,
    )
    .create
    .remove(0);
    let policy = RenewalPolicy::renew_days_before(30);
    assert_eq!(due(std::slice::from_ref(&cert), start).len(), 1);
    assert_eq!(status(&cert, start), CertState::Pending);

    // The first order fails: no chain, failed, retried a minute later, then 2, 4 minutes.
    record_failed(&mut cert, "pebble unreachable", &policy, start);
    assert_eq!(status(&cert, start), CertState::Failed);
    assert_eq!(cert.next_renewal, Some(at("2025-01-01T00:01:00Z")));
    assert!(due(std::slice::from_ref(&cert), at("2025-01-01T00:00:59Z")).is_empty());
    assert_eq!(
        next_wake(std::slice::from_ref(&cert), start),
        Duration::from_secs(60)
    );
    let retry = at("2025-01-01T00:01:00Z");
    record_failed(&mut cert, "pebble unreachable", &policy, retry);
    assert_eq!(cert.next_renewal, Some(at("2025-01-01T00:03:00Z")));
    assert_eq!(cert.failures, 2);

    // Then it works: the chain is there, failures reset, renewal 30 days before expiry.
    let chain = issued(&["app.hoge.com"]);
    let plan = CertificateStatus::of(&chain, &policy);
    record_issued(
        &mut cert,
        &chain,
        plan.next_renewal,
        at("2025-01-01T00:03:00Z"),
    );
    assert_eq!(status(&cert, at("2025-02-01T00:00:00Z")), CertState::Valid);
    assert_eq!((cert.failures, cert.last_error.as_deref()), (0, None));
    assert_eq!(cert.next_renewal, Some(at("2025-03-02T00:00:00Z")));
    assert_eq!(days_left(&cert, at("2025-03-02T00:00:00Z")), Some(30));
    assert!(due(std::slice::from_ref(&cert), at("2025-03-01T23:59:59Z")).is_empty());
    assert_eq!(
        due(std::slice::from_ref(&cert), at("2025-03-02T00:00:00Z")).len(),
        1
    );
    // The wake-up never sleeps past a minute, nor less than a second.
    assert_eq!(
        next_wake(std::slice::from_ref(&cert), at("2025-02-01T00:00:00Z")),
        PERIOD
    );
    assert_eq!(
        next_wake(std::slice::from_ref(&cert), at("2025-03-03T00:00:00Z")),
        Duration::from_secs(1)
    );

    // A failed renewal keeps the old chain serving and says why.
    let sha = cert.sha256.clone();
    let renewal = at("2025-03-02T00:00:00Z");
    record_failed(&mut cert, "the CA is down", &policy, renewal);
    assert_eq!(status(&cert, renewal), CertState::Valid);
    assert_eq!(cert.sha256, sha);
    assert!(cert.chain_pem.is_some());
    assert_eq!(cert.last_error.as_deref(), Some("the CA is down"));
    assert_eq!(cert.next_renewal, Some(at("2025-03-02T00:01:00Z")));
    assert_eq!(
        status(&cert, at("2025-04-02T00:00:00Z")),
        CertState::Expired
    );
}

#[test]
fn a_large_renew_days_before_renews_now_once() {
    let policy = RenewalPolicy::renew_days_before(30);
    let mut cert = sync_rows(
        &[route("app.hoge.com", CertificateMode::Http01)],
        &[],
        None,
        at("2025-01-01T00:00:00Z"),
    )
    .create
    .remove(0);
    assert!(!replan(&mut cert, 365), "nothing to replan without a chain");
    let chain = issued(&["app.hoge.com"]);
    let plan = CertificateStatus::of(&chain, &policy);
    record_issued(
        &mut cert,
        &chain,
        plan.next_renewal,
        at("2025-01-01T00:00:00Z"),
    );
    let now = at("2025-01-01T00:05:00Z");
    assert!(due(std::slice::from_ref(&cert), now).is_empty());
    assert!(replan(&mut cert, 36_500));
    assert_eq!(due(std::slice::from_ref(&cert), now).len(), 1);
    // The certificate issued then is planned by the policy again: not due right away.
    let again = CertificateStatus::of(&chain, &RenewalPolicy::renew_days_before(36_500));
    assert!(again.next_renewal > now);
}

#[test]
fn reference_names_are_file_safe_and_lead_back_to_the_id() {
    let id = CertificateId::new();
    let name = ref_name(&id).expect("a name");
    assert!(!name.as_str().contains('_'));
    assert_eq!(id_of_ref(name.as_str()), Some(id));
    assert_eq!(id_of_ref("../etc"), None);
    assert_eq!(id_of_ref("fallback"), None);
}
