//! The EC2 provider against a local server standing in for the EC2 Query API: every call is
//! checked for its exact form body, and its SigV4 `Authorization` is recomputed here with
//! `kokoa_core::sigv4` from what arrived, at a fixed clock. Answers are the documented
//! XML shapes kept in `tests/fixtures/ec2/`.

use std::net::IpAddr;

use kokoa_core::{
    Name, Timestamp,
    sigv4::{self, Credentials, Payload},
};
use kokoa_provision::{
    Error, IdempotencyKey, InstanceConfig, InstanceId, InstanceStatus, Provisioner, Secret,
    TaggedInstance, ec2::Ec2,
};
use reqwest::Client;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{any, body_string, header, method, path},
};

const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const REGION: &str = "ap-southeast-1";
const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// The user data: it holds an enrollment token that must never show in a message.
const USER_DATA: &str = "#cloud-config\nruncmd: [[echo, kk_enr_secret]]\n";

/// 2025-01-21T10:30:00Z: every request is signed at this time.
fn fixed_clock() -> Timestamp {
    Timestamp::from_unix(1_737_455_400).expect("a valid time")
}

fn credentials() -> Credentials {
    Credentials::new(KEY_ID, SECRET)
}

fn xml(status: u16, call: &str) -> ResponseTemplate {
    let file = format!(
        "{}/tests/fixtures/ec2/{call}.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    ResponseTemplate::new(status).set_body_raw(text, "text/xml;charset=UTF-8")
}

fn provider(base_url: &str) -> Ec2 {
    Ec2::with_client(Client::new(), base_url, credentials())
        .expect("provider")
        .with_security_groups(["sg-0123456789abcdef0"])
        .expect("a group id")
        .with_clock(fixed_clock)
}

fn config() -> InstanceConfig {
    let name = |s: &str| Name::parse(s).expect("test name");
    InstanceConfig {
        provider: name("aws"),
        region: name(REGION),
        size: name("t3-micro"),
        image: "ami-0123456789abcdef0".into(),
        ssh_key_id: Some("kokoa-admin".into()),
        user_data: Secret::new(USER_DATA),
        name: name("edge-ap-southeast-1-01"),
        tags: vec![name("kokoa-edge")],
        idempotency_key: None,
        address: None,
    }
}

fn instance() -> InstanceId {
    InstanceId::parse("ap-southeast-1:i-0598c7d356eba48d7").expect("an id")
}

/// Recomputes the signature of every request the server received and compares it with the
/// `Authorization` header sent. A request to `/<region>/` (a base URL with `{region}` in its
/// path) is signed for that region, any other for [`REGION`].
async fn assert_signed(server: &MockServer) {
    let requests = server.received_requests().await.expect("recording is on");
    assert!(!requests.is_empty(), "no request was made");
    for request in requests {
        let region = match request.url.path().trim_matches('/') {
            "" => REGION.to_owned(),
            region => region.to_owned(),
        };
        let region = region.as_str();
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .unwrap_or_else(|| panic!("no {name} header"))
                .to_str()
                .expect("a text header")
                .to_owned()
        };
        assert_eq!(header("x-amz-date"), "20250121T103000Z");
        assert_eq!(header("content-type"), FORM);
        let host = header("host");
        let expected = sigv4::sign(
            &credentials(),
            region,
            "ec2",
            fixed_clock(),
            &sigv4::Request {
                method: "POST",
                host: &host,
                path: request.url.path(),
                headers: &[("content-type", FORM)],
                payload: Payload::Bytes(&request.body),
                ..sigv4::Request::default()
            },
        );
        let authorization = header("authorization");
        assert_eq!(Some(authorization.as_str()), expected.get("authorization"));
        assert!(
            authorization.starts_with(&format!(
                "AWS4-HMAC-SHA256 Credential={KEY_ID}/20250121/{region}/ec2/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, "
            )),
            "{authorization}"
        );
    }
}

fn describe_body() -> &'static str {
    "Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-0598c7d356eba48d7"
}

#[tokio::test]
async fn create_posts_the_documented_run_instances_form() {
    let server = MockServer::start().await;
    let user_data = "I2Nsb3VkLWNvbmZpZwpydW5jbWQ6IFtbZWNobywga2tfZW5yX3NlY3JldF1dCg%3D%3D";
    let body = format!(
        "Action=RunInstances&Version=2016-11-15&ImageId=ami-0123456789abcdef0\
         &InstanceType=t3.micro&MinCount=1&MaxCount=1&KeyName=kokoa-admin\
         &SecurityGroupId.1=sg-0123456789abcdef0&UserData={user_data}\
         &MetadataOptions.HttpTokens=required&TagSpecification.1.ResourceType=instance\
         &TagSpecification.1.Tag.1.Key=Name&TagSpecification.1.Tag.1.Value=edge-ap-southeast-1-01\
         &TagSpecification.1.Tag.2.Key=kokoa-edge&TagSpecification.1.Tag.2.Value="
    );
    Mock::given(method("POST"))
        .and(path("/"))
        .and(header("content-type", FORM))
        .and(body_string(body))
        .respond_with(xml(200, "run_instances"))
        .expect(1)
        .mount(&server)
        .await;
    let created = provider(&server.uri())
        .create_instance(&config())
        .await
        .expect("created");
    assert_eq!(created.id, instance());
    assert_eq!(created.status, InstanceStatus::Provisioning);
    assert_signed(&server).await;
}

#[tokio::test]
async fn status_follows_the_instance_state() {
    for (fixture, expected) in [
        (
            "describe_running",
            InstanceStatus::Running {
                ipv4: Some("203.0.113.10".parse().expect("address")),
                ipv6: Some("2001:db8:1234:1a00::123".parse().expect("address")),
            },
        ),
        ("describe_pending", InstanceStatus::Provisioning),
        ("describe_stopped", InstanceStatus::Stopped),
        ("describe_terminated", InstanceStatus::Gone),
        ("describe_empty", InstanceStatus::Gone),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/"))
            .and(body_string(describe_body()))
            .respond_with(xml(200, fixture))
            .expect(1)
            .mount(&server)
            .await;
        let status = provider(&server.uri())
            .instance_status(&instance())
            .await
            .expect(fixture);
        assert_eq!(status, expected, "{fixture}");
        assert_signed(&server).await;
    }
}

#[tokio::test]
async fn ssh_goes_to_the_public_ipv4() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(xml(200, "describe_running"))
        .mount(&server)
        .await;
    let ssh = provider(&server.uri())
        .ssh_config(&instance())
        .await
        .expect("running");
    assert_eq!(ssh.host, "203.0.113.10".parse::<IpAddr>().expect("address"));
    assert_eq!((ssh.port, ssh.user.as_str()), (22, "root"));
}

#[tokio::test]
async fn destroy_terminates_and_an_unknown_instance_is_already_gone() {
    let server = MockServer::start().await;
    let body = "Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-0598c7d356eba48d7";
    Mock::given(method("POST"))
        .and(body_string(body))
        .respond_with(xml(200, "terminate_instances"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    // Once terminated and gone, EC2 does not know the id.
    Mock::given(method("POST"))
        .respond_with(xml(400, "instance_not_found"))
        .expect(2)
        .mount(&server)
        .await;
    let ec2 = provider(&server.uri());
    ec2.destroy_instance(&instance()).await.expect("terminated");
    ec2.destroy_instance(&instance()).await.expect("idempotent");
    assert_eq!(
        ec2.instance_status(&instance()).await.expect("status"),
        InstanceStatus::Gone
    );
    assert_signed(&server).await;
}

/// Answers the create call with `status` and the error fixture `call`.
async fn create_error(status: u16, call: &str) -> Error {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(xml(status, call))
        .expect(1)
        .mount(&server)
        .await;
    let ec2 = provider(&server.uri());
    let err = ec2.create_instance(&config()).await.expect_err(call);
    let shown = format!("{err} {err:?} {ec2:?}");
    assert!(
        !shown.contains(SECRET) && !shown.contains("EXAMPLEKEY"),
        "{shown}"
    );
    assert!(
        !shown.contains("kk_enr_secret"),
        "the user data leaked: {shown}"
    );
    err
}

#[tokio::test]
async fn error_codes_map_to_error_classes() {
    type Class = fn(&Error) -> bool;
    let cases: [(u16, &str, Class, &str); 10] = [
        (
            401,
            "auth_failure",
            |e| matches!(e, Error::Auth { .. }),
            "AuthFailure: AWS was not able to validate",
        ),
        (
            403,
            "unauthorized_operation",
            |e| matches!(e, Error::Auth { .. }),
            "UnauthorizedOperation",
        ),
        (
            400,
            "instance_limit_exceeded",
            |e| matches!(e, Error::Quota { .. }),
            "InstanceLimitExceeded: Your quota allows for 0 more",
        ),
        (
            400,
            "vcpu_limit_exceeded",
            |e| matches!(e, Error::Quota { .. }),
            "VcpuLimitExceeded",
        ),
        (
            400,
            "invalid_parameter_value",
            |e| matches!(e, Error::Rejected { .. }),
            "InvalidParameterValue: Invalid value 't3.mikro' for InstanceType.",
        ),
        (
            400,
            "invalid_ami_id",
            |e| matches!(e, Error::Rejected { .. }),
            "InvalidAMIID.NotFound: The image id '[ami-0123456789abcdef0]' does not exist",
        ),
        (
            400,
            "unsupported",
            |e| matches!(e, Error::Rejected { .. }),
            "Unsupported",
        ),
        (
            503,
            "request_limit_exceeded",
            |e| {
                matches!(
                    e,
                    Error::RateLimited {
                        retry_after: None,
                        ..
                    }
                )
            },
            "rate limited",
        ),
        (
            500,
            "internal_error",
            |e| matches!(e, Error::Transient { .. }),
            "InternalError: An internal error has occurred",
        ),
        (503, "internal_error", |e| e.is_retryable(), "HTTP 503"),
    ];
    for (status, call, class, text) in cases {
        let err = create_error(status, call).await;
        assert!(class(&err), "{call}: {err:?}");
        let shown = err.to_string();
        assert!(shown.contains(text), "{call}: {shown}");
        if matches!(err, Error::Rejected { .. } | Error::Quota { .. }) {
            // A refusal names what was asked for.
            assert!(
                shown.contains("RunInstances in ap-southeast-1")
                    && shown.contains("(region ap-southeast-1, instance type t3.micro, image ami-0123456789abcdef0)"),
                "{shown}"
            );
        }
        assert_eq!(
            err.is_retryable(),
            matches!(err, Error::RateLimited { .. } | Error::Transient { .. })
        );
    }
    // An answer that is not the documented XML is an error, not a panic.
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>hello</html>"))
        .mount(&server)
        .await;
    let err = provider(&server.uri())
        .create_instance(&config())
        .await
        .expect_err("not EC2");
    assert!(matches!(err, Error::Other { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("RunInstances in ap-southeast-1: unexpected answer"),
        "{err}"
    );
    // Nothing listens there: a temporary failure.
    let err = provider("http://127.0.0.1:1")
        .instance_status(&instance())
        .await
        .expect_err("closed");
    assert!(matches!(err, Error::Transient { .. }), "{err:?}");
}

#[tokio::test]
async fn bad_configurations_never_reach_the_api() {
    let server = MockServer::start().await;
    let ec2 = provider(&server.uri());
    let refused = |field: &'static str, change: fn(&mut InstanceConfig)| {
        let mut config = config();
        change(&mut config);
        (field, config)
    };
    for (field, config) in [
        refused("provider", |c| {
            c.provider = Name::parse("vultr").expect("name")
        }),
        refused("region", |c| c.region = Name::parse("sgp1").expect("name")),
        refused("size", |c| c.size = Name::parse("micro").expect("name")),
        refused("image", |c| c.image = "ubuntu-24-04-x64".into()),
        refused("address", |c| {
            c.address = Some("203.0.113.99".parse().expect("address"))
        }),
        refused("user_data", |c| {
            c.user_data = Secret::new("x".repeat(16 * 1024 + 1))
        }),
    ] {
        let err = ec2.create_instance(&config).await.expect_err(field);
        assert!(
            matches!(err, Error::InvalidConfig { field: f, .. } if f == field),
            "{field}: {err:?}"
        );
    }
    // An SSM parameter instead of an AMI id is fine: AWS resolves it in the region.
    let mut ssm = config();
    ssm.image = "resolve:ssm:/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id".into();
    Mock::given(any())
        .respond_with(xml(200, "run_instances"))
        .expect(1)
        .mount(&server)
        .await;
    ec2.create_instance(&ssm).await.expect("created");
    for bad in ["i-0598c7d356eba48d7", "3164494", "sgp1:i-0598c7d356eba48d7"] {
        let id = InstanceId::parse(bad).expect("a valid id in general");
        let err = ec2.destroy_instance(&id).await.expect_err(bad);
        assert!(err.to_string().contains("<region>:<instance>"), "{err}");
    }
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(1));
    let err = Ec2::with_client(Client::new(), "http://127.0.0.1", credentials())
        .expect("provider")
        .with_security_groups(["default"])
        .expect_err("not a group id");
    assert!(err.to_string().contains("\"default\""), "{err}");
    assert!(Ec2::with_client(Client::new(), "ec2.amazonaws.com", credentials()).is_err());
}

#[tokio::test]
async fn the_region_picks_the_endpoint() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(xml(200, "describe_pending"))
        .mount(&server)
        .await;
    // `{region}` in the base URL is the region of the call; here it lands in the path so
    // the local server can see it.
    let base = format!("{}/{{region}}", server.uri());
    let ec2 = Ec2::with_client(Client::new(), &base, credentials()).expect("provider");
    let id = InstanceId::parse("eu-central-1:i-0598c7d356eba48d7").expect("an id");
    ec2.instance_status(&id).await.expect("status");
    let requests = server.received_requests().await.expect("recording is on");
    assert_eq!(requests[0].url.path(), "/eu-central-1/");
    let authorization = requests[0]
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        authorization.contains("/eu-central-1/ec2/aws4_request"),
        "{authorization}"
    );
}

const KEY_A: &str = "kokoa-edge-3f9a0c5e1b2d4f6a8c0e2b4d6f8a0c2e";
const KEY_B: &str = "kokoa-edge-7d1e4b9a2c6f8e0d3a5b7c9e1f2a4b6c";
const KEY_EU: &str = "kokoa-edge-1a2b3c4d5e6f708192a3b4c5d6e7f809";

fn key(key: &str) -> IdempotencyKey {
    IdempotencyKey::parse(key).expect("a key")
}

fn kokoa() -> Name {
    Name::parse("kokoa").expect("a name")
}

#[tokio::test]
async fn create_sends_the_key_as_client_token_and_tag() {
    let server = MockServer::start().await;
    let user_data = "I2Nsb3VkLWNvbmZpZwpydW5jbWQ6IFtbZWNobywga2tfZW5yX3NlY3JldF1dCg%3D%3D";
    let body = format!(
        "Action=RunInstances&Version=2016-11-15&ImageId=ami-0123456789abcdef0\
         &InstanceType=t3.micro&MinCount=1&MaxCount=1&ClientToken={KEY_A}&KeyName=kokoa-admin\
         &SecurityGroupId.1=sg-0123456789abcdef0&UserData={user_data}\
         &MetadataOptions.HttpTokens=required&TagSpecification.1.ResourceType=instance\
         &TagSpecification.1.Tag.1.Key=Name&TagSpecification.1.Tag.1.Value=edge-ap-southeast-1-01\
         &TagSpecification.1.Tag.2.Key=kokoa-edge&TagSpecification.1.Tag.2.Value=\
         &TagSpecification.1.Tag.3.Key=kokoa-key&TagSpecification.1.Tag.3.Value={KEY_A}"
    );
    // EC2 answers a repeated call with the same token with the same instance.
    Mock::given(method("POST"))
        .and(path("/"))
        .and(body_string(body))
        .respond_with(xml(200, "run_instances"))
        .expect(2)
        .mount(&server)
        .await;
    let mut config = config();
    config.idempotency_key = Some(key(KEY_A));
    let ec2 = provider(&server.uri());
    let first = ec2.create_instance(&config).await.expect("created");
    let again = ec2.create_instance(&config).await.expect("the same");
    assert_eq!((first.id.clone(), again.id), (instance(), instance()));
    assert_signed(&server).await;
}

#[tokio::test]
async fn a_repeat_with_other_parameters_is_a_conflict() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(xml(400, "idempotent_parameter_mismatch"))
        .expect(1)
        .mount(&server)
        .await;
    let mut config = config();
    config.idempotency_key = Some(key(KEY_A));
    let err = provider(&server.uri())
        .create_instance(&config)
        .await
        .expect_err("refused");
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let shown = err.to_string();
    assert!(
        shown.contains("IdempotentParameterMismatch") && shown.contains("find_instance"),
        "{shown}"
    );
    assert!(!shown.contains("kk_enr_secret"), "{shown}");
}

/// The `DescribeInstances` form of a tagged list, with `extra` (a `NextToken`) at its end.
fn tagged_body(extra: &str) -> String {
    format!(
        "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag-key&Filter.1.Value.1=kokoa\
         &Filter.2.Name=instance-state-name&Filter.2.Value.1=pending&Filter.2.Value.2=running\
         &Filter.2.Value.3=stopping&Filter.2.Value.4=stopped&MaxResults=1000{extra}"
    )
}

/// A server standing in for three regional endpoints, the region first in the path:
/// `DescribeRegions` in us-east-1 names ap-southeast-1 (two pages) and eu-central-1 (one).
/// With `all` false, only eu-central-1 is expected to be asked.
async fn regions_server(all: bool) -> MockServer {
    let times = u64::from(all);
    let server = MockServer::start().await;
    let answers = [
        (
            "/us-east-1/",
            "Action=DescribeRegions&Version=2016-11-15".to_owned(),
            "describe_regions",
            times,
        ),
        (
            "/ap-southeast-1/",
            tagged_body(""),
            "describe_tagged_page1",
            times,
        ),
        (
            "/ap-southeast-1/",
            // The token holds '+', '/' and '=', which travel escaped.
            tagged_body("&NextToken=eyJ2IjoiMiIsImMiOiJ%2BbmV4dC9wYWdlIn0%3D"),
            "describe_tagged_page2",
            times,
        ),
        ("/eu-central-1/", tagged_body(""), "describe_tagged_eu", 1),
    ];
    for (region, body, fixture, times) in answers {
        Mock::given(method("POST"))
            .and(path(region))
            .and(header("content-type", FORM))
            .and(body_string(body))
            .respond_with(xml(200, fixture))
            .expect(times)
            .mount(&server)
            .await;
    }
    server
}

fn regional(server: &MockServer) -> Ec2 {
    Ec2::with_client(
        Client::new(),
        &format!("{}/{{region}}", server.uri()),
        credentials(),
    )
    .expect("provider")
    .with_clock(fixed_clock)
}

#[tokio::test]
async fn list_asks_every_region_and_page() {
    let server = regions_server(true).await;
    let listed = regional(&server)
        .list_instances(&kokoa())
        .await
        .expect("listed");
    // The terminated instance on the second page is left out.
    assert_eq!(
        listed,
        [
            TaggedInstance {
                id: instance(),
                status: InstanceStatus::Running {
                    ipv4: Some("203.0.113.10".parse().expect("address")),
                    ipv6: None,
                },
                name: Some("edge-ap-southeast-1-01".into()),
                idempotency_key: Some(key(KEY_A)),
            },
            TaggedInstance {
                id: InstanceId::parse("ap-southeast-1:i-0a1b2c3d4e5f60718").expect("id"),
                status: InstanceStatus::Provisioning,
                name: Some("edge-ap-southeast-1-02".into()),
                idempotency_key: Some(key(KEY_B)),
            },
            TaggedInstance {
                id: InstanceId::parse("ap-southeast-1:i-0f1e2d3c4b5a69788").expect("id"),
                status: InstanceStatus::Stopped,
                name: None,
                idempotency_key: None,
            },
            TaggedInstance {
                id: InstanceId::parse("eu-central-1:i-0abcdef0123456789").expect("id"),
                status: InstanceStatus::Stopped,
                name: Some("edge-eu-central-1-01".into()),
                idempotency_key: Some(key(KEY_EU)),
            },
        ]
    );
    assert_signed(&server).await;
}

#[tokio::test]
async fn given_regions_are_the_only_ones_asked() {
    let server = regions_server(false).await;
    let ec2 = regional(&server)
        .with_regions(["eu-central-1"])
        .expect("a region");
    let listed = ec2.list_instances(&kokoa()).await.expect("listed");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].idempotency_key, Some(key(KEY_EU)));
    let requests = server.received_requests().await.expect("recording is on");
    assert_eq!(requests.len(), 1, "no DescribeRegions, no other region");
    let err = regional(&server)
        .with_regions(["eu-central-1", "fra1"])
        .expect_err("not a region");
    assert!(err.to_string().contains("\"fra1\""), "{err}");
}

#[tokio::test]
async fn find_instance_finds_by_key_in_any_region() {
    for (wanted, expected) in [
        (KEY_B, Some("ap-southeast-1:i-0a1b2c3d4e5f60718")),
        (KEY_EU, Some("eu-central-1:i-0abcdef0123456789")),
        // The terminated instance's key: gone, so not found.
        ("kokoa-edge-0c1d2e3f405162738495a6b7c8d9e0f1", None),
        ("kokoa-edge-00000000000000000000000000000000", None),
    ] {
        let server = regions_server(true).await;
        let found = regional(&server)
            .find_instance(&kokoa(), &key(wanted))
            .await
            .expect("looked");
        assert_eq!(found.as_ref().map(|i| i.id.as_str()), expected, "{wanted}");
    }
}

#[tokio::test]
async fn list_errors_map_to_error_classes() {
    type Class = fn(&Error) -> bool;
    let cases: [(u16, &str, Class, &str); 4] = [
        (
            401,
            "auth_failure",
            |e| matches!(e, Error::Auth { .. }),
            "DescribeRegions in us-east-1: HTTP 401: AuthFailure",
        ),
        (
            403,
            "unauthorized_operation",
            |e| matches!(e, Error::Auth { .. }),
            "UnauthorizedOperation",
        ),
        (
            503,
            "request_limit_exceeded",
            |e| matches!(e, Error::RateLimited { .. }),
            "rate limited",
        ),
        (
            500,
            "internal_error",
            |e| matches!(e, Error::Transient { .. }),
            "InternalError",
        ),
    ];
    for (status, fixture, class, text) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(xml(status, fixture))
            .expect(2)
            .mount(&server)
            .await;
        let ec2 = regional(&server);
        let err = ec2.list_instances(&kokoa()).await.expect_err(fixture);
        assert!(class(&err), "{fixture}: {err:?}");
        assert!(err.to_string().contains(text), "{fixture}: {err}");
        let found = ec2.find_instance(&kokoa(), &key(KEY_A)).await;
        assert_eq!(
            found.map_err(|e| e.to_string()).expect_err(fixture),
            err.to_string()
        );
    }

    // The first page arrives, the second fails: the whole list fails, no partial answer.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string(tagged_body("")))
        .respond_with(xml(200, "describe_tagged_page1"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(xml(500, "internal_error"))
        .expect(1)
        .mount(&server)
        .await;
    let err = provider(&server.uri())
        .with_regions([REGION])
        .expect("a region")
        .list_instances(&kokoa())
        .await
        .expect_err("second page failed");
    assert!(matches!(err, Error::Transient { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("DescribeInstances in ap-southeast-1"),
        "{err}"
    );
}
