//! The Vultr provider against a local server that checks each documented request.

mod common;

use common::{BEARER, ErrorCases, KEY_A, KEY_B, ListErrorCases, TOKEN, answer, config, key, kokoa};
use kokoa_provision::{
    InstanceId, InstanceStatus, Provisioner, Secret, TaggedInstance, vultr::Vultr,
};
use reqwest::Client;
use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_json, header, method, path, query_param, query_param_is_missing},
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

#[tokio::test]
async fn create_carries_the_idempotency_key_as_a_tag() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/instances"))
        .and(header("authorization", BEARER))
        .and(body_json(json!({
            "region": "nrt",
            "plan": "vc2-1c-1gb",
            "os_id": 2136,
            "label": "edge-nrt-01",
            "hostname": "edge-nrt-01",
            "sshkey_id": ["512189"],
            "user_data": "I2Nsb3VkLWNvbmZpZwpydW5jbWQ6IFtbZWNobywga2tfZW5yX3NlY3JldF1dCg==",
            "tags": ["kokoa-edge", format!("kokoa-key:{KEY_A}")],
            "enable_ipv6": true
        })))
        .respond_with(answer(202, "vultr", "create"))
        .expect(1)
        .mount(&server)
        .await;
    let mut config = config("vultr", "nrt", "vc2-1c-1gb", "2136");
    config.idempotency_key = Some(key(KEY_A));
    let created = provider(&server.uri())
        .create_instance(&config)
        .await
        .unwrap();
    assert_eq!(created.id, instance());
}

/// Cursor of the second page, as the first page names it.
const NEXT: &str = "bmV4dF9fNGYwZjEyZTUtMWY4NC00MDRmLWFhODQtODVmNDMxZWE1ZWMy";

/// Answers the two pages of instances tagged `kokoa`: the first without a cursor, the
/// second with the first page's `next`.
async fn list_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/instances"))
        .and(header("authorization", BEARER))
        .and(query_param("tag", "kokoa"))
        .and(query_param("per_page", "500"))
        .and(query_param_is_missing("cursor"))
        .respond_with(answer(200, "vultr", "list_page1"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/instances"))
        .and(header("authorization", BEARER))
        .and(query_param("tag", "kokoa"))
        .and(query_param("per_page", "500"))
        .and(query_param("cursor", NEXT))
        .respond_with(answer(200, "vultr", "list_page2"))
        .expect(1)
        .mount(&server)
        .await;
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
                id: instance(),
                status: InstanceStatus::Running {
                    ipv4: Some("203.0.113.20".parse().unwrap()),
                    ipv6: Some("2001:db8:5400:1:5400:4ff:fe5a:1a2b".parse().unwrap()),
                },
                name: Some("edge-nrt-01".into()),
                idempotency_key: Some(key(KEY_A)),
            },
            TaggedInstance {
                id: InstanceId::parse("4f0f12e5-1f84-404f-aa84-85f431ea5ec2").unwrap(),
                status: InstanceStatus::Provisioning,
                name: Some("edge-sgp-01".into()),
                idempotency_key: Some(key(KEY_B)),
            },
            TaggedInstance {
                id: InstanceId::parse("9a1c3e5f-7b2d-4e6a-8c0f-1d3b5a7c9e2f").unwrap(),
                status: InstanceStatus::Stopped,
                name: Some("edge-by-hand".into()),
                idempotency_key: None,
            },
        ]
    );
}

#[tokio::test]
async fn find_instance_finds_by_key() {
    let server = list_server().await;
    let found = provider(&server.uri())
        .find_instance(&kokoa(), &key(KEY_A))
        .await
        .unwrap()
        .expect("the first instance carries the key");
    assert_eq!(found.id, instance());

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
        provider: "vultr",
        make: |base| Box::new(provider(base)),
        list_path: "/v2/instances",
        server_error: 500,
    }
    .check()
    .await;
}
