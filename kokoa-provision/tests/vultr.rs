//! The Vultr provider against a local server that checks each documented request.

mod common;

use common::{BEARER, ErrorCases, TOKEN, answer, config};
use kokoa_provision::{InstanceId, InstanceStatus, Provisioner, Secret, vultr::Vultr};
use reqwest::Client;
use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_json, header, method, path},
};

const ID: &str = "cb676a46-66fd-4dfb-b839-443f2e6c0b60";

fn provider(base_url: &str) -> Vultr {
    Vultr::with_client(Client::new(), base_url, &Secret::new(TOKEN)).unwrap()
}

fn instance() -> InstanceId {
    InstanceId::parse(ID).unwrap()
}

#[tokio::test]
async fn create_posts_the_documented_instance() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/instances"))
        .and(header("authorization", BEARER))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "region": "nrt",
            "plan": "vc2-1c-1gb",
            "os_id": 2136,
            "label": "edge-nrt-01",
            "hostname": "edge-nrt-01",
            "sshkey_id": ["512189"],
            // base64 of "#cloud-config\nruncmd: [[echo, kk_enr_secret]]\n"
            "user_data": "I2Nsb3VkLWNvbmZpZwpydW5jbWQ6IFtbZWNobywga2tfZW5yX3NlY3JldF1dCg==",
            "tags": ["kokoa-edge"],
            "enable_ipv6": true
        })))
        .respond_with(answer(202, "vultr", "create"))
        .expect(1)
        .mount(&server)
        .await;
    let created = provider(&server.uri())
        .create_instance(&config("vultr", "nrt", "vc2-1c-1gb", "2136"))
        .await
        .unwrap();
    assert_eq!(created.id, instance());
    assert_eq!(created.status, InstanceStatus::Provisioning);
}

#[tokio::test]
async fn a_named_image_is_an_image_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/instances"))
        .and(body_json(json!({
            "region": "sgp",
            "plan": "vc2-1c-1gb",
            "image_id": "kokoa-edge-image",
            "label": "edge-sgp-01",
            "hostname": "edge-sgp-01",
            "user_data": "",
            "tags": [],
            "enable_ipv6": true
        })))
        .respond_with(answer(202, "vultr", "create"))
        .expect(1)
        .mount(&server)
        .await;
    let mut config = config("vultr", "sgp", "vc2-1c-1gb", "kokoa-edge-image");
    config.ssh_key_id = None;
    config.tags.clear();
    config.user_data = Secret::new("");
    provider(&server.uri())
        .create_instance(&config)
        .await
        .unwrap();
}

#[tokio::test]
async fn status_and_ssh_of_a_running_instance() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/instances/{ID}")))
        .and(header("authorization", BEARER))
        .respond_with(answer(200, "vultr", "get"))
        .expect(2)
        .mount(&server)
        .await;
    let provider = provider(&server.uri());
    assert_eq!(
        provider.instance_status(&instance()).await.unwrap(),
        InstanceStatus::Running {
            ipv4: Some("203.0.113.20".parse().unwrap()),
            ipv6: Some("2001:db8:5400:1:5400:4ff:fe5a:1a2b".parse().unwrap()),
        }
    );
    let ssh = provider.ssh_config(&instance()).await.unwrap();
    assert_eq!(ssh.host.to_string(), "203.0.113.20");
    assert_eq!((ssh.port, ssh.user.as_str()), (22, "root"));
}

#[tokio::test]
async fn destroy_is_idempotent() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path(format!("/v2/instances/{ID}")))
        .and(header("authorization", BEARER))
        .respond_with(ResponseTemplate::new(204))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(format!("/v2/instances/{ID}")))
        .respond_with(answer(404, "vultr", "not_found"))
        .expect(2)
        .mount(&server)
        .await;
    let provider = provider(&server.uri());
    provider.destroy_instance(&instance()).await.unwrap();
    provider.destroy_instance(&instance()).await.unwrap();
    assert_eq!(
        provider.instance_status(&instance()).await.unwrap(),
        InstanceStatus::Gone
    );
}

#[tokio::test]
async fn error_answers_map_to_error_variants() {
    ErrorCases {
        provider: "vultr",
        make: |base| Box::new(provider(base)),
        create_path: "/v2/instances",
        config: config("vultr", "nrt", "vc2-1c-1gb", "2136"),
        server_error: 500,
        invalid: 400,
    }
    .check()
    .await;
}
