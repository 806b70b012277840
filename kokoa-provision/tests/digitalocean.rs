//! The DigitalOcean provider against a local server that checks each documented request.

mod common;

use std::{
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::{BEARER, ErrorCases, TOKEN, answer, config};
use kokoa_provision::{
    Error, InstanceId, InstanceStatus, Provisioner, Secret, digitalocean::DigitalOcean,
};
use reqwest::Client;
use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_json, header, method, path},
};

fn provider(base_url: &str) -> DigitalOcean {
    DigitalOcean::with_client(Client::new(), base_url, &Secret::new(TOKEN)).unwrap()
}

fn droplet() -> InstanceId {
    InstanceId::parse("3164494").unwrap()
}

#[tokio::test]
async fn create_posts_the_documented_droplet() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/droplets"))
        .and(header("authorization", BEARER))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "name": "edge-sgp1-01",
            "region": "sgp1",
            "size": "s-1vcpu-1gb",
            "image": "ubuntu-24-04-x64",
            "ssh_keys": [512189],
            "user_data": "#cloud-config\nruncmd: [[echo, kk_enr_secret]]\n",
            "tags": ["kokoa-edge"],
            "ipv6": true
        })))
        .respond_with(answer(202, "digitalocean", "create"))
        .expect(1)
        .mount(&server)
        .await;
    let config = config("digitalocean", "sgp1", "s-1vcpu-1gb", "ubuntu-24-04-x64");
    let instance = provider(&server.uri())
        .create_instance(&config)
        .await
        .unwrap();
    assert_eq!(instance.id, droplet());
    assert_eq!(instance.status, InstanceStatus::Provisioning);
}

#[tokio::test]
async fn status_and_ssh_of_an_active_droplet() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/droplets/3164494"))
        .and(header("authorization", BEARER))
        .respond_with(answer(200, "digitalocean", "get"))
        .expect(2)
        .mount(&server)
        .await;
    let provider = provider(&server.uri());
    assert_eq!(
        provider.instance_status(&droplet()).await.unwrap(),
        InstanceStatus::Running {
            ipv4: Some("203.0.113.10".parse().unwrap()),
            ipv6: Some("2001:db8:400:d0::6d:a001".parse().unwrap()),
        }
    );
    let ssh = provider.ssh_config(&droplet()).await.unwrap();
    assert_eq!(ssh.host, "203.0.113.10".parse::<IpAddr>().unwrap());
    assert_eq!((ssh.port, ssh.user.as_str()), (22, "root"));
}

#[tokio::test]
async fn destroy_is_idempotent() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/v2/droplets/3164494"))
        .and(header("authorization", BEARER))
        .respond_with(ResponseTemplate::new(204))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    // Once destroyed, the droplet is unknown.
    Mock::given(path("/v2/droplets/3164494"))
        .respond_with(answer(404, "digitalocean", "not_found"))
        .expect(2)
        .mount(&server)
        .await;
    let provider = provider(&server.uri());
    provider.destroy_instance(&droplet()).await.unwrap();
    provider.destroy_instance(&droplet()).await.unwrap();
    assert_eq!(
        provider.instance_status(&droplet()).await.unwrap(),
        InstanceStatus::Gone
    );
}

#[tokio::test]
async fn error_answers_map_to_error_variants() {
    ErrorCases {
        provider: "digitalocean",
        make: |base| Box::new(provider(base)),
        create_path: "/v2/droplets",
        config: config("digitalocean", "sgp1", "s-1vcpu-1gb", "ubuntu-24-04-x64"),
        server_error: 500,
        invalid: 422,
    }
    .check()
    .await;
}

#[tokio::test]
async fn rate_limit_reset_tells_how_long_to_wait() {
    let server = MockServer::start().await;
    let reset = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(30);
    Mock::given(method("GET"))
        .respond_with(
            answer(429, "digitalocean", "rate_limited")
                .insert_header("ratelimit-limit", "5000")
                .insert_header("ratelimit-remaining", "0")
                .insert_header("ratelimit-reset", reset.as_secs().to_string().as_str()),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = provider(&server.uri())
        .instance_status(&droplet())
        .await
        .unwrap_err();
    let Error::RateLimited {
        retry_after: Some(wait),
        ..
    } = err
    else {
        panic!("{err:?}");
    };
    assert!(
        (Duration::from_secs(28)..=Duration::from_secs(30)).contains(&wait),
        "{wait:?}"
    );
}

#[tokio::test]
async fn non_numeric_ids_never_reach_the_api() {
    let server = MockServer::start().await;
    let provider = provider(&server.uri());
    let id = InstanceId::parse("cb676a46-66fd").unwrap();
    let err = provider.destroy_instance(&id).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid instance id \"cb676a46-66fd\": DigitalOcean droplet ids are numbers"
    );
    assert!(provider.instance_status(&id).await.is_err());
    assert!(server.received_requests().await.unwrap().is_empty());
}
