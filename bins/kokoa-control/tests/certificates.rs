//! Certificates through the API: uploads checked, handed only to the edge that serves
//! them; and DNS-01 for real: pebble validating a wildcard name through a PowerDNS zone
//! the control plane manages, the TXT record visible with `dig` during the order and gone
//! after, and a failed renewal leaving the old certificate in place with its error.

mod common;

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use common::{
    Backend, Server, assert_error,
    pebble::{INSTALL, Pebble},
};
use kokoa_control::config::AcmeSettings;
use reqwest::Method;
use serde_json::{Value, json};

/// A self-signed certificate for `names`, valid from `days.0` to `days.1` days from today.
fn self_signed(names: &[&str], days: (i64, i64)) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 86_400;
    let (y, m, d) = civil(today + days.0);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil(today + days.1);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// The civil date `days` after 1970-01-01 (H. Hinnant's algorithm).
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month, day)
}

#[tokio::test]
async fn uploads_are_checked_and_reach_only_the_edge_serving_them() {
    let s = Server::start(&Backend::Sqlite).await;
    let origin = s.origin("home-server").await;
    let origin_id = origin["id"].as_str().unwrap().to_owned();
    let route = json!({"hostname": "app.hoge.com", "origin_id": origin_id, "target_port": 8080,
                       "certificate": "manual"});
    s.admin(Method::POST, "/api/v1/routes", Some(route), 201)
        .await;
    let wildcard = json!({"hostname": "*.hoge.com", "origin_id": origin_id, "target_port": 8080});
    let (status, answer) = s
        .call(
            Method::POST,
            "/api/v1/routes",
            Some(&s.admin),
            Some(wildcard),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        assert_error(&answer, "invalid_value")["field"],
        "certificate"
    );
    assert!(answer.to_string().contains("dns-01"), "{answer}");

    let upload = |cert: &str, key: &str| json!({"certificate_pem": cert, "private_key_pem": key});
    let (good_cert, good_key) = self_signed(&["app.hoge.com"], (-1, 60));
    let (_, other_key) = self_signed(&["app.hoge.com"], (-1, 60));
    for (body, field, needle) in [
        (
            upload(&good_cert, &other_key),
            "private_key_pem",
            "does not match",
        ),
        (
            upload("not a pem", &good_key),
            "certificate_pem",
            "BEGIN CERTIFICATE",
        ),
        (
            {
                let (c, k) = self_signed(&["app.hoge.com"], (-30, -1));
                upload(&c, &k)
            },
            "certificate_pem",
            "expired",
        ),
        (
            {
                let (c, k) = self_signed(&["127.0.0.1"], (-1, 60));
                upload(&c, &k)
            },
            "certificate_pem",
            "no DNS host name",
        ),
    ] {
        let (status, answer) = s
            .call(
                Method::POST,
                "/api/v1/certificates",
                Some(&s.admin),
                Some(body),
            )
            .await;
        assert_eq!(status, 422, "{answer}");
        let error = assert_error(&answer, "invalid_value");
        assert_eq!(error["field"], field, "{answer}");
        assert!(answer.to_string().contains(needle), "{needle}: {answer}");
        assert!(!answer.to_string().contains("PRIVATE KEY"), "{answer}");
    }
    let stored = s
        .admin(
            Method::POST,
            "/api/v1/certificates",
            Some(upload(&good_cert, &good_key)),
            201,
        )
        .await;
    assert_eq!(stored["source"], "manual");
    assert_eq!(stored["status"], "valid");
    assert_eq!(stored["names"], json!(["app.hoge.com"]));
    let listed = s
        .admin(Method::GET, "/api/v1/certificates", None, 200)
        .await;
    assert_eq!(listed["certificates"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains("PRIVATE KEY"));

    // The edge serving the origin lists it and may fetch it; another edge may not.
    let (_, serving) = s.enrolled_edge(Some(&origin_id)).await;
    let elsewhere = s.origin("elsewhere").await;
    let (_, idle) = s.enrolled_edge(elsewhere["id"].as_str()).await;
    let (status, config) = s
        .call(
            Method::GET,
            "/api/v1/edge-nodes/me/config",
            Some(&serving),
            None,
        )
        .await;
    assert_eq!(status, 200, "{config}");
    let refs = config["certificates"].as_array().unwrap();
    assert_eq!(refs.len(), 1, "{config}");
    assert_eq!(refs[0]["hostnames"], json!(["app.hoge.com"]));
    let name = refs[0]["name"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/edge-nodes/me/certificates/{name}");
    let response = s.send(Method::GET, &path, Some(&serving), None, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let pems: Value = response.json().await.unwrap();
    assert_eq!(pems["chain_pem"], good_cert);
    assert_eq!(pems["private_key_pem"], good_key);
    assert_eq!(pems["sha256"], refs[0]["sha256"]);
    let (status, answer) = s.call(Method::GET, &path, Some(&idle), None).await;
    assert_eq!(status, 404, "{answer}");
    let (_, config) = s
        .call(
            Method::GET,
            "/api/v1/edge-nodes/me/config",
            Some(&idle),
            None,
        )
        .await;
    assert!(
        config.get("certificates").is_none_or(|c| c == &json!([])),
        "{config}"
    );
}

fn dig(server: SocketAddr, name: &str) -> Vec<String> {
    let out = Command::new("dig")
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            "+short",
            name,
            "TXT",
        ])
        .output()
        .unwrap_or_else(|e| panic!("dig: {e}; {INSTALL}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn certificate(s: &Server) -> Value {
    let list = s
        .admin(Method::GET, "/api/v1/certificates", None, 200)
        .await;
    list["certificates"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_01_through_the_managed_zone_gives_a_wildcard_certificate() {
    let pdns = kokoa_dns::local::LocalPowerDns::start()
        .await
        .unwrap_or_else(|e| panic!("{e}; {INSTALL}"));
    pdns.create_zone("kokoa.test").await.unwrap();

    // pebble, asking PowerDNS for the TXT records.
    let pebble = Pebble::start(pdns.dns_address()).await;

    let s = Server::start(&Backend::Sqlite).await;
    s.state
        .set_acme(AcmeSettings::new(kokoa_acme::Issuer::Custom {
            directory_url: pebble.directory(),
            trusted_root: Some(pebble.tls_root()),
            external_account: None,
        }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let duties = tokio::spawn(kokoa_control::runtime::run(s.state.clone(), async move {
        let _ = stopped.await;
    }));

    let zone = json!({"name": "kokoa.test", "provider": "powerdns",
        "settings": {"url": pdns.api_url(), "nameservers": [pdns.dns_address().to_string()]},
        "credentials": {"api_key": pdns.api_key()}});
    s.admin(Method::POST, "/api/v1/dns/zones", Some(zone), 201)
        .await;
    let origin = s.origin("home-server").await;
    let route = json!({"hostname": "*.kokoa.test", "origin_id": origin["id"], "target_port": 8080,
                       "certificate": "dns-01"});
    s.admin(Method::POST, "/api/v1/routes", Some(route), 201)
        .await;

    // The TXT record shows up while the order runs, and the certificate follows.
    let (mut seen_txt, mut cert) = (false, Value::Null);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        seen_txt |= !dig(pdns.dns_address(), "_acme-challenge.kokoa.test").is_empty();
        cert = certificate(&s).await;
        if cert["status"] == "valid" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cert["status"], "valid", "{cert}");
    assert!(seen_txt, "the TXT record was never seen with dig");
    assert_eq!(cert["names"], json!(["*.kokoa.test"]));
    assert_eq!(cert["method"], "dns-01");
    assert!(
        cert["issuer"].as_str().unwrap().contains("Pebble"),
        "{cert}"
    );
    assert!(cert["days_left"].as_i64().unwrap() > 30, "{cert}");
    assert!(dig(pdns.dns_address(), "_acme-challenge.kokoa.test").is_empty());

    // The DNS server goes away: a forced renewal fails, the old certificate stays.
    // pebble reuses a valid authorization once in a hundred orders even with
    // PEBBLE_AUTHZREUSE=0, and such a renewal needs no DNS: it is asked again, at most
    // three times in all (one run in a million sees three reuses).
    let id = cert["id"].as_str().unwrap().to_owned();
    let mut sha = cert["sha256"].clone();
    drop(pdns);
    for _ in 0..3 {
        let renewing = s
            .admin(
                Method::POST,
                &format!("/api/v1/certificates/{id}/renew"),
                None,
                202,
            )
            .await;
        assert_eq!(renewing["status"], "valid");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            cert = certificate(&s).await;
            if cert["failures"].as_u64() > Some(0) || cert["sha256"] != sha {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if cert["failures"].as_u64() > Some(0) {
            break;
        }
        sha = cert["sha256"].clone();
    }
    assert_eq!(cert["failures"], 1, "{cert}");
    assert_eq!(cert["status"], "valid", "{cert}");
    assert_eq!(cert["sha256"], sha);
    assert!(
        cert["last_error"].as_str().unwrap().contains("kokoa.test"),
        "{cert}"
    );
    let modules = s.admin(Method::GET, "/api/v1/modules", None, 200).await;
    let ssl = modules["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "ssl_manager")
        .unwrap()
        .clone();
    assert_eq!(ssl["counts"]["valid"], 1, "{ssl}");
    assert_eq!(ssl["connected"], false, "{ssl}");
    let _ = stop.send(());
    let _ = duties.await;
}
