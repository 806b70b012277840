//! The Hetzner Cloud provider against a local server that checks each documented request.

mod common;

use common::{BEARER, ErrorCases, KEY_A, KEY_B, ListErrorCases, TOKEN, answer, config, key, kokoa};
use kokoa_provision::{
    Error, InstanceId, InstanceStatus, Provisioner, Secret, TaggedInstance, hetzner::Hetzner,
};
use reqwest::Client;
use serde_json::json;
use wiremock::{
    Mock, MockServer,
    matchers::{body_json, header, method, path, query_param},
};

fn provider(base_url: &str) -> Hetzner {
    Hetzner::with_client(Client::new(), base_url, &Secret::new(TOKEN)).unwrap()
}

fn server_id() -> InstanceId {
    InstanceId::parse("42").unwrap()
}

#[tokio::test]
async fn create_posts_the_documented_server() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/servers"))
        .and(header("authorization", BEARER))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "name": "edge-nbg1-01",
            "server_type": "cx22",
            "image": "debian-12",
            "location": "nbg1",
            "ssh_keys": [512189],
            "user_data": "#cloud-config\nruncmd: [[echo, kk_enr_secret]]\n",
            "labels": {"kokoa-edge": ""},
            "public_net": {"enable_ipv4": true, "enable_ipv6": true}
        })))
        .respond_with(answer(201, "hetzner", "create"))
        .expect(1)
        .mount(&server)
        .await;
    let created = provider(&server.uri())
        .create_instance(&config("hetzner", "nbg1", "cx22", "debian-12"))
        .await
        .unwrap();
    assert_eq!(created.id, server_id());
    assert_eq!(created.status, InstanceStatus::Provisioning);
}

#[tokio::test]
async fn status_and_ssh_of_a_running_server() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/servers/42"))
        .and(header("authorization", BEARER))
        .respond_with(answer(200, "hetzner", "get"))
        .expect(2)
        .mount(&server)
        .await;
    let provider = provider(&server.uri());
    assert_eq!(
        provider.instance_status(&server_id()).await.unwrap(),
        InstanceStatus::Running {
            ipv4: Some("203.0.113.30".parse().unwrap()),
            ipv6: Some("2001:db8:1234::1".parse().unwrap()),
        }
    );
    let ssh = provider.ssh_config(&server_id()).await.unwrap();
    assert_eq!(ssh.host.to_string(), "203.0.113.30");
    assert_eq!((ssh.port, ssh.user.as_str()), (22, "root"));
}

#[tokio::test]
async fn destroy_is_idempotent() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/v1/servers/42"))
        .and(header("authorization", BEARER))
        .respond_with(answer(200, "hetzner", "delete"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/servers/42"))
        .respond_with(answer(404, "hetzner", "not_found"))
        .expect(2)
        .mount(&server)
        .await;
    let provider = provider(&server.uri());
    provider.destroy_instance(&server_id()).await.unwrap();
    provider.destroy_instance(&server_id()).await.unwrap();
    assert_eq!(
        provider.instance_status(&server_id()).await.unwrap(),
        InstanceStatus::Gone
    );
}

#[tokio::test]
async fn a_locked_server_is_a_temporary_failure() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .respond_with(wiremock::ResponseTemplate::new(423).set_body_raw(
            r#"{"error":{"code":"locked","message":"server is locked","details":{}}}"#,
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = provider(&server.uri())
        .destroy_instance(&server_id())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Transient { .. }) && err.is_retryable(),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "hetzner: temporary failure: DELETE /v1/servers/42: HTTP 423: server is locked (locked)"
    );
}

#[tokio::test]
async fn error_answers_map_to_error_variants() {
    ErrorCases {
        provider: "hetzner",
        make: |base| Box::new(provider(base)),
        create_path: "/v1/servers",
        config: config("hetzner", "nbg1", "cx22", "debian-12"),
        server_error: 503,
        invalid: 400,
    }
    .check()
    .await;
}

#[tokio::test]
async fn create_carries_the_idempotency_key_as_a_label() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/servers"))
        .and(header("authorization", BEARER))
        .and(body_json(json!({
            "name": "edge-nbg1-01",
            "server_type": "cx22",
            "image": "debian-12",
            "location": "nbg1",
            "ssh_keys": [512189],
            "user_data": "#cloud-config\nruncmd: [[echo, kk_enr_secret]]\n",
            "labels": {"kokoa-edge": "", "kokoa-key": KEY_A},
            "public_net": {"enable_ipv4": true, "enable_ipv6": true}
        })))
        .respond_with(answer(201, "hetzner", "create"))
        .expect(1)
        .mount(&server)
        .await;
    let mut config = config("hetzner", "nbg1", "cx22", "debian-12");
    config.idempotency_key = Some(key(KEY_A));
    let created = provider(&server.uri())
        .create_instance(&config)
        .await
        .unwrap();
    assert_eq!(created.id, server_id());
}

/// Answers the two pages of servers with the label `kokoa`, each asked for by number.
async fn list_server() -> MockServer {
    let server = MockServer::start().await;
    for page in ["1", "2"] {
        Mock::given(method("GET"))
            .and(path("/v1/servers"))
            .and(header("authorization", BEARER))
            .and(query_param("label_selector", "kokoa"))
            .and(query_param("per_page", "50"))
            .and(query_param("page", page))
            .respond_with(answer(200, "hetzner", &format!("list_page{page}")))
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
    // Server 58 is being deleted: gone, so left out.
    assert_eq!(
        listed,
        [
            TaggedInstance {
                id: server_id(),
                status: InstanceStatus::Running {
                    ipv4: Some("203.0.113.30".parse().unwrap()),
                    ipv6: Some("2001:db8:1234::1".parse().unwrap()),
                },
                name: Some("edge-nbg1-01".into()),
                idempotency_key: Some(key(KEY_A)),
            },
            TaggedInstance {
                id: InstanceId::parse("43").unwrap(),
                status: InstanceStatus::Provisioning,
                name: Some("edge-hel1-01".into()),
                idempotency_key: Some(key(KEY_B)),
            },
            TaggedInstance {
                id: InstanceId::parse("57").unwrap(),
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
        .find_instance(&kokoa(), &key(KEY_B))
        .await
        .unwrap()
        .expect("server 43 carries the key");
    assert_eq!(found.id.as_str(), "43");

    // The key of a server being deleted is not found.
    let server = list_server().await;
    let deleting = key("kokoa-edge-0c1d2e3f405162738495a6b7c8d9e0f1");
    assert_eq!(
        provider(&server.uri())
            .find_instance(&kokoa(), &deleting)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn list_error_answers_map_to_error_variants() {
    ListErrorCases {
        provider: "hetzner",
        make: |base| Box::new(provider(base)),
        list_path: "/v1/servers",
        server_error: 503,
    }
    .check()
    .await;
}
