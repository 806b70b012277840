//! The DigitalOcean provider against a local server that checks each documented request.

mod common;

use std::{
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::{BEARER, ErrorCases, KEY_A, KEY_B, ListErrorCases, TOKEN, answer, config, key, kokoa};
use kokoa_provision::{
    Error, InstanceId, InstanceStatus, Provisioner, Secret, TaggedInstance,
    digitalocean::DigitalOcean,
};
use reqwest::Client;
use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_json, header, method, path, query_param},
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

#[tokio::test]
async fn create_carries_the_idempotency_key_as_a_tag() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/droplets"))
        .and(header("authorization", BEARER))
        .and(body_json(json!({
            "name": "edge-sgp1-01",
            "region": "sgp1",
            "size": "s-1vcpu-1gb",
            "image": "ubuntu-24-04-x64",
            "ssh_keys": [512189],
            "user_data": "#cloud-config\nruncmd: [[echo, kk_enr_secret]]\n",
            "tags": ["kokoa-edge", format!("kokoa-key:{KEY_A}")],
            "ipv6": true
        })))
        .respond_with(answer(202, "digitalocean", "create"))
        .expect(1)
        .mount(&server)
        .await;
    let mut config = config("digitalocean", "sgp1", "s-1vcpu-1gb", "ubuntu-24-04-x64");
    config.idempotency_key = Some(key(KEY_A));
    let instance = provider(&server.uri())
        .create_instance(&config)
        .await
        .unwrap();
    assert_eq!(instance.id, droplet());
}

/// Answers the two pages of droplets tagged `kokoa`, each asked for by number.
async fn list_server() -> MockServer {
    let server = MockServer::start().await;
    for page in ["1", "2"] {
        Mock::given(method("GET"))
            .and(path("/v2/droplets"))
            .and(header("authorization", BEARER))
            .and(query_param("tag_name", "kokoa"))
            .and(query_param("per_page", "200"))
            .and(query_param("page", page))
            .respond_with(answer(200, "digitalocean", &format!("list_page{page}")))
            .expect(1)
            .mount(&server)
            .await;
    }
    server
}

#[tokio::test]
async fn list_reads_every_page_and_the_keys() {
    let server = list_server().await;
    let listed = provider(&server.uri())
        .list_instances(&kokoa())
        .await
        .unwrap();
    assert_eq!(
        listed,
        [
            TaggedInstance {
                id: droplet(),
                status: InstanceStatus::Running {
                    ipv4: Some("203.0.113.10".parse().unwrap()),
                    ipv6: None,
                },
                name: Some("edge-sgp1-01".into()),
                idempotency_key: Some(key(KEY_A)),
            },
            TaggedInstance {
                id: InstanceId::parse("3164495").unwrap(),
                status: InstanceStatus::Provisioning,
                name: Some("edge-fra1-01".into()),
                idempotency_key: Some(key(KEY_B)),
            },
            // Tagged by hand, without a key.
            TaggedInstance {
                id: InstanceId::parse("3164512").unwrap(),
                status: InstanceStatus::Stopped,
                name: Some("edge-by-hand".into()),
                idempotency_key: None,
            },
        ]
    );
    // The next page is asked of the configured server, not of the link in the answer.
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn find_instance_finds_by_key() {
    let server = list_server().await;
    let found = provider(&server.uri())
        .find_instance(&kokoa(), &key(KEY_B))
        .await
        .unwrap()
        .expect("the second droplet carries the key");
    assert_eq!(found.id.as_str(), "3164495");
    assert_eq!(found.idempotency_key, Some(key(KEY_B)));

    let server = list_server().await;
    let unknown = key("kokoa-edge-00000000000000000000000000000000");
    assert_eq!(
        provider(&server.uri())
            .find_instance(&kokoa(), &unknown)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn list_error_answers_map_to_error_variants() {
    ListErrorCases {
        provider: "digitalocean",
        make: |base| Box::new(provider(base)),
        list_path: "/v2/droplets",
        server_error: 500,
    }
    .check()
    .await;
}
