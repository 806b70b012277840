//! The DigitalOcean provider against a local mock of its API: exact requests, documented
//! answers from `tests/fixtures/digitalocean/`.
#![cfg(feature = "digitalocean")]

use std::time::Duration;

use kokoa_core::{Hostname, RecordData};
use kokoa_dns::{
    DnsProvider, Error, RecordId, RecordSpec, Zone, digitalocean::DigitalOceanProvider,
};
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, Request, ResponseTemplate,
    matchers::{any, body_json, header, method, path},
};

const TOKEN: &str = "dop_v1_test_9c2e";

/// A fixture, with `{base}` replaced by the mock server's address (pagination links are
/// absolute URLs).
fn fixture(name: &str, server: &MockServer) -> Value {
    let file = format!(
        "{}/tests/fixtures/digitalocean/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let text = text.replace("{base}", &server.uri());
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn query(expected: &'static str) -> impl Fn(&Request) -> bool + Send + Sync + 'static {
    move |request: &Request| request.url.query().unwrap_or_default() == expected
}

fn bearer() -> wiremock::matchers::HeaderExactMatcher {
    header("authorization", format!("Bearer {TOKEN}").as_str())
}

fn host(name: &str) -> Hostname {
    Hostname::parse(name).expect("test host name")
}

fn zone() -> Zone {
    Zone {
        id: "hoge.com".into(),
        name: host("hoge.com"),
    }
}

fn provider(server: &MockServer) -> DigitalOceanProvider {
    let base = format!("{}/v2", server.uri());
    DigitalOceanProvider::with_client(reqwest::Client::new(), &base, TOKEN).expect("provider")
}

#[tokio::test]
async fn domains_and_records_are_listed_over_every_page() -> Result<(), Error> {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/domains"))
        .and(query("per_page=200"))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("domains", &server)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/domains/hoge.com/records"))
        .and(query("per_page=200"))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("records_page1", &server)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/domains/hoge.com/records"))
        .and(query("page=2&per_page=200"))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("records_page2", &server)))
        .expect(1)
        .mount(&server)
        .await;
    let digitalocean = provider(&server);
    assert_eq!(digitalocean.find_zone(&host("hoge.com")).await?, zone());
    let records = digitalocean.list_records(&zone(), None).await?;
    // The NS record is outside the model; `app` and `@` become full names.
    let specs: Vec<(String, RecordSpec)> = records
        .into_iter()
        .map(|r| (r.id.to_string(), r.spec))
        .collect();
    assert_eq!(
        specs,
        [
            (
                "3352896".to_owned(),
                RecordSpec {
                    name: host("app.hoge.com").into(),
                    data: RecordData::A("198.51.100.4".parse().expect("address")),
                    ttl: 30,
                }
            ),
            (
                "3352897".to_owned(),
                RecordSpec {
                    name: host("hoge.com").into(),
                    data: RecordData::A("192.0.2.7".parse().expect("address")),
                    ttl: 1800,
                }
            ),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_next_link_to_another_host_is_not_followed() {
    let server = MockServer::start().await;
    let mut page = fixture("records_page1", &server);
    page["links"]["pages"]["next"] = json!("http://192.0.2.1/v2/domains/hoge.com/records?page=2");
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page))
        .expect(1)
        .mount(&server)
        .await;
    let error = provider(&server)
        .list_records(&zone(), None)
        .await
        .expect_err("foreign link");
    assert!(error.to_string().contains("refusing to follow"), "{error}");
}

#[tokio::test]
async fn create_update_and_delete_send_the_documented_requests() -> Result<(), Error> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/domains/hoge.com/records"))
        .and(bearer())
        .and(body_json(
            json!({"type": "A", "name": "app", "data": "203.0.113.10", "ttl": 30}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(fixture("record_create", &server)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v2/domains/hoge.com/records/3352896"))
        .and(bearer())
        .and(body_json(
            json!({"type": "A", "name": "@", "data": "198.51.100.4", "ttl": 60}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("record_update", &server)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v2/domains/hoge.com/records/3352896"))
        .and(bearer())
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let digitalocean = provider(&server);
    let spec = |name: &str, ip: &str, ttl| RecordSpec {
        name: host(name).into(),
        data: RecordData::A(ip.parse().expect("address")),
        ttl,
    };
    let created = digitalocean
        .create_record(&zone(), &spec("app.hoge.com", "203.0.113.10", 30))
        .await?;
    assert_eq!(created.as_str(), "3352900");
    let id = RecordId::new("3352896");
    let updated = digitalocean
        .update_record(&zone(), &id, &spec("hoge.com", "198.51.100.4", 60))
        .await?;
    assert_eq!(updated, id);
    digitalocean.delete_record(&zone(), &id).await?;
    Ok(())
}

async fn failing(status: u16, name: &str, headers: &[(&str, &str)]) -> MockServer {
    let server = MockServer::start().await;
    let mut response = ResponseTemplate::new(status).set_body_json(fixture(name, &server));
    for (header, value) in headers {
        response = response.insert_header(*header, *value);
    }
    Mock::given(any())
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn errors_map_to_their_kinds() {
    let server = failing(401, "error_401", &[]).await;
    let error = provider(&server).list_zones().await.expect_err("401");
    assert!(matches!(error, Error::Auth { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("Unable to authenticate you [Unauthorized]"),
        "{error}"
    );
    assert!(!error.to_string().contains(TOKEN));

    let server = failing(404, "error_404", &[]).await;
    let error = provider(&server)
        .delete_record(&zone(), &RecordId::new("1"))
        .await
        .expect_err("404");
    assert!(error.is_not_found(), "{error}");

    let server = failing(429, "error_429", &[("retry-after", "30")]).await;
    let error = provider(&server).list_zones().await.expect_err("429");
    assert!(
        matches!(error, Error::RateLimited { retry_after: Some(wait), .. } if wait == Duration::from_secs(30)),
        "{error}"
    );

    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(503).set_body_string("<html>upstream</html>"))
        .mount(&server)
        .await;
    let error = provider(&server).list_zones().await.expect_err("503");
    assert!(matches!(error, Error::Transient { .. }), "{error}");
    assert!(
        error.to_string().contains("<html>upstream</html>"),
        "{error}"
    );
}
