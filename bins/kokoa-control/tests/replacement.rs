//! Automatic replacement (SPEC §9) with the control plane's duties running against a
//! stand-in cloud: `min_active_nodes` edges are created at it; one stops answering, leaves
//! DNS, is destroyed at the provider after `destroy_delay`, and `replace_delay` later a
//! replacement in another region comes up through every step and goes into DNS.
//!
//! The stand-in cloud does what a VPS provider and cloud-init would: each "VPS" is an
//! address on loopback answering `/health`, whose agent enrolls with the token from the
//! rendered user data and reports like the real one.

mod common;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use common::standin::{Plane, agent, free_port, health_server, until};
use kokoa_control::runtime::{ProvisionerEntry, RuntimeSettings};
use kokoa_core::Name;
use kokoa_provision::{
    EdgeBootstrap, Error, IdempotencyKey, Instance, InstanceConfig, InstanceId, InstanceStatus,
    Provisioner, TaggedInstance,
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// One stand-in VPS.
struct Vps {
    address: Ipv4Addr,
    region: String,
    tags: Vec<String>,
    key: Option<IdempotencyKey>,
    tasks: Vec<JoinHandle<()>>,
}

/// A provider whose VPSes are stand-in edges on 127.0.0.40 and up.
#[derive(Default)]
struct StandInCloud {
    port: u16,
    next: AtomicU8,
    vpses: Mutex<HashMap<String, Vps>>,
    destroyed: Mutex<Vec<String>>,
    /// The next create makes its VPS, then answers as if it had timed out.
    lose_next_answer: AtomicBool,
}

impl std::fmt::Debug for StandInCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StandInCloud")
    }
}

impl StandInCloud {
    /// Makes the VPS at `address` stop answering its health check.
    fn break_vps(&self, address: Ipv4Addr) {
        let vpses = self.vpses.lock().unwrap();
        let vps = vpses
            .values()
            .find(|v| v.address == address)
            .expect("a VPS there");
        vps.tasks[0].abort();
    }
}

#[async_trait]
impl Provisioner for StandInCloud {
    fn name(&self) -> &str {
        "standin"
    }

    async fn create_instance(&self, config: &InstanceConfig) -> Result<Instance, Error> {
        // What cloud-init would read: the control plane, the node and its token.
        let boot = EdgeBootstrap::from_user_data(&config.user_data)?;
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let address = Ipv4Addr::new(127, 0, 0, 40 + n);
        let health = health_server(SocketAddr::new(IpAddr::V4(address), self.port)).await;
        let enrolled: Value = reqwest::Client::new()
            .post(format!("{}/api/v1/enroll", boot.control_plane_url))
            .json(&json!({"token": boot.enrollment_token.expose()}))
            .send()
            .await
            .map_err(|e| Error::Other {
                provider: "standin",
                source: Box::new(e),
            })?
            .json()
            .await
            .map_err(|e| Error::Other {
                provider: "standin",
                source: Box::new(e),
            })?;
        let credential = enrolled["credential"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let agent = agent(
            boot.control_plane_url.clone(),
            boot.node_id.to_string(),
            credential,
        );
        let id = format!("vps-{n}");
        self.vpses.lock().unwrap().insert(
            id.clone(),
            Vps {
                address,
                region: config.region.to_string(),
                tags: config.tags.iter().map(ToString::to_string).collect(),
                key: config.idempotency_key.clone(),
                tasks: vec![health, agent],
            },
        );
        if self.lose_next_answer.swap(false, Ordering::SeqCst) {
            return Err(Error::Transient {
                provider: "standin",
                detail: "POST /instances: timed out waiting for the answer".into(),
            });
        }
        Ok(Instance {
            id: InstanceId::parse(&id)?,
            status: InstanceStatus::Provisioning,
        })
    }

    async fn destroy_instance(&self, id: &InstanceId) -> Result<(), Error> {
        if let Some(vps) = self.vpses.lock().unwrap().remove(id.as_str()) {
            for task in vps.tasks {
                task.abort();
            }
            self.destroyed.lock().unwrap().push(id.as_str().to_owned());
        }
        Ok(())
    }

    async fn instance_status(&self, id: &InstanceId) -> Result<InstanceStatus, Error> {
        Ok(match self.vpses.lock().unwrap().get(id.as_str()) {
            Some(vps) => InstanceStatus::Running {
                ipv4: Some(vps.address),
                ipv6: None,
            },
            None => InstanceStatus::Gone,
        })
    }

    async fn list_instances(&self, tag: &Name) -> Result<Vec<TaggedInstance>, Error> {
        let vpses = self.vpses.lock().unwrap();
        let mut found: Vec<TaggedInstance> = vpses
            .iter()
            .filter(|(_, vps)| vps.tags.iter().any(|t| t == tag.as_str()))
            .map(|(id, vps)| TaggedInstance {
                id: InstanceId::parse(id).unwrap(),
                status: InstanceStatus::Running {
                    ipv4: Some(vps.address),
                    ipv6: None,
                },
                name: None,
                idempotency_key: vps.key.clone(),
            })
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }
}

/// A stand-in cloud as the only provider, with checks every second (two failures make an
/// edge unhealthy, two successes healthy).
fn standin_settings() -> (Arc<StandInCloud>, RuntimeSettings) {
    let cloud = Arc::new(StandInCloud {
        port: free_port(),
        ..StandInCloud::default()
    });
    let mut settings = RuntimeSettings::default();
    settings.health.edge_https_port = cloud.port;
    settings.health.timeout = Duration::from_millis(800);
    settings.health.recovery_threshold = 2;
    settings.edges.provisioners.insert(
        "standin".into(),
        ProvisionerEntry {
            provisioner: cloud.clone(),
            image: "debian-12".into(),
            size: "small".into(),
            ssh_key_id: None,
        },
    );
    let m = &mut settings.edges.management;
    m.health_check_interval = 1;
    m.health_check_failure_threshold = 2;
    m.replacement_strategy.preferred_providers = vec![Name::parse("standin").unwrap()];
    (cloud, settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_edge_is_destroyed_and_replaced_in_another_region() {
    let (cloud, mut settings) = standin_settings();
    let m = &mut settings.edges.management;
    m.destroy_delay = 2;
    m.replace_delay = 1;
    m.min_active_nodes = 2;
    m.max_nodes = 4;
    let (plane, _) = Plane::start(settings, None).await;

    // min_active_nodes: two edges are created, in two regions, and come up.
    let records = until("two edges in DNS", Duration::from_secs(90), || {
        let found = plane.dig();
        (found.len() == 2).then_some(found)
    })
    .await;
    let regions: Vec<String> = cloud
        .vpses
        .lock()
        .unwrap()
        .values()
        .map(|v| v.region.clone())
        .collect();
    assert_eq!(regions.len(), 2);
    assert_ne!(regions[0], regions[1], "spread over regions: {regions:?}");

    // The first stops answering.
    let failing: Ipv4Addr = records[0].parse().unwrap();
    let failed_region = cloud
        .vpses
        .lock()
        .unwrap()
        .values()
        .find(|v| v.address == failing)
        .unwrap()
        .region
        .clone();
    cloud.break_vps(failing);
    let broke = Instant::now();
    until(
        "the failing edge out of DNS",
        Duration::from_secs(15),
        || (!plane.dig().contains(&failing.to_string())).then_some(()),
    )
    .await;
    let out_of_dns = broke.elapsed();

    // Destroyed at the provider after destroy_delay, replaced after replace_delay, and the
    // replacement passes its checks and goes into DNS.
    let new_address = until("a replacement in DNS", Duration::from_secs(60), || {
        plane
            .dig()
            .into_iter()
            .find(|a| a != &failing.to_string() && !records.contains(a))
    })
    .await;
    let replaced = broke.elapsed();
    eprintln!(
        "out of DNS {:.1} s after it stopped answering, replacement in DNS after {:.1} s",
        out_of_dns.as_secs_f64(),
        replaced.as_secs_f64()
    );
    assert_eq!(
        cloud.destroyed.lock().unwrap().len(),
        1,
        "one VPS destroyed"
    );
    let new_region = cloud
        .vpses
        .lock()
        .unwrap()
        .values()
        .find(|v| v.address.to_string() == new_address)
        .unwrap()
        .region
        .clone();
    assert_ne!(new_region, failed_region, "the replacement went elsewhere");
    assert_eq!(plane.dig().len(), 2);

    // The failed edge: deleted, and pointing at its replacement, which went through every
    // step, each an event in order.
    let edges = plane
        .call(Method::GET, "/api/v1/edge-nodes", None, 200)
        .await;
    let edges = edges["edge_nodes"].as_array().unwrap();
    let failed = edges
        .iter()
        .find(|e| e["public_ip"] == failing.to_string())
        .unwrap();
    assert_eq!(failed["status"], "deleted", "{failed}");
    assert_eq!(failed["lifecycle"]["removal"], "unhealthy");
    let replacement_id = failed["lifecycle"]["replaced_by"].as_str().unwrap();
    let events = plane
        .call(
            Method::GET,
            &format!("/api/v1/events?subject={replacement_id}&after=0"),
            None,
            200,
        )
        .await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "edge.replacement_requested",
            "edge.created",
            "edge.provisioned",
            "edge.enrolled",
            "edge.reported_ready",
            "edge.tunnels_up",
            "edge.certificates_installed",
            "edge.ready"
        ]
    );
    // One operation id, begun by the automation when it decided to remove the failed
    // edge, runs through its removal and every step of its replacement.
    let failed_events = plane
        .call(
            Method::GET,
            &format!(
                "/api/v1/events?subject={}&after=0",
                failed["id"].as_str().unwrap()
            ),
            None,
            200,
        )
        .await;
    let removal = failed_events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "edge.removal_started")
        .unwrap_or_else(|| panic!("no removal event: {failed_events}"));
    let operation = removal["data"]["request_id"].as_str().unwrap();
    assert!(operation.starts_with("op_"), "{removal}");
    for event in events["events"].as_array().unwrap() {
        assert_eq!(event["data"]["request_id"], operation, "{event}");
    }
    // The same steps in /metrics: three edges made at the provider (two, then the
    // replacement), one destroyed, and how long after their creation they passed checks.
    let metrics = plane.metrics().await;
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    let step = |step: &str| {
        value(&format!(
            "kokoa_lifecycle_steps_total{{provider=\"standin\",step=\"{step}\"}}"
        ))
    };
    assert_eq!(step("instance_created"), 3.0);
    assert_eq!(step("checks_passed"), 3.0);
    assert_eq!(step("destroyed"), 1.0);
    assert_eq!(
        value("kokoa_lifecycle_step_seconds_count{step=\"checks_passed\"}"),
        3.0
    );
    assert_eq!(
        value("kokoa_lifecycle_step_seconds_bucket{step=\"checks_passed\",le=\"60\"}"),
        3.0,
        "every edge passed its checks within a minute of its creation"
    );
    // Every call to PowerDNS counted by operation and timed: three edges' records made,
    // the failed one's deleted.
    let calls = |operation: &str| {
        value(&format!(
            "kokoa_dns_provider_calls_total{{provider=\"powerdns\",zone=\"kokoa.test\",\
             operation=\"{operation}\",outcome=\"ok\"}}"
        ))
    };
    assert!(calls("create_record") >= 1.0 && calls("delete_record") >= 1.0);
    let all: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with(
                "kokoa_dns_provider_calls_total{provider=\"powerdns\",zone=\"kokoa.test\"",
            )
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(
        value(
            "kokoa_dns_provider_call_duration_seconds_count{provider=\"powerdns\",zone=\"kokoa.test\"}"
        ),
        all
    );
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automation_picks_up_after_a_restart() {
    let (cloud, mut settings) = standin_settings();
    settings.edges.management.min_active_nodes = 1;
    let (mut plane, _) = Plane::start(settings, None).await;

    // The first step is done: a VPS was created for the edge min_active_nodes asks for.
    until("a VPS created", Duration::from_secs(20), || {
        (!cloud.vpses.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    // The control plane goes away and comes back: the edge goes on from where it was.
    plane.restart_duties().await;
    until("the edge in DNS", Duration::from_secs(40), || {
        (plane.dig().len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        cloud.vpses.lock().unwrap().len(),
        1,
        "no second VPS for the same edge"
    );
    let edges = plane
        .call(Method::GET, "/api/v1/edge-nodes", None, 200)
        .await;
    let edges = edges["edge_nodes"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!(edges[0]["status"], "active");
    // Created by the automation on its own (min_active_nodes): one operation id from its
    // first event to its last, across the restart.
    let created = plane
        .call(
            Method::GET,
            &format!(
                "/api/v1/events?subject={}&after=0",
                edges[0]["id"].as_str().unwrap()
            ),
            None,
            200,
        )
        .await;
    let ids: std::collections::BTreeSet<&str> = created["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["request_id"].as_str().unwrap_or("none"))
        .collect();
    assert!(
        ids.len() == 1 && ids.iter().all(|id| id.starts_with("op_")),
        "{created}"
    );

    // A removal asked while the duties are down completes once they are back.
    plane.restart_duties().await;
    let id = edges[0]["id"].as_str().unwrap();
    let answer = plane
        .request(Method::DELETE, &format!("/api/v1/edge-nodes/{id}"))
        .header("X-Request-Id", "remove-edge-1")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    assert_eq!(answer.headers()["x-request-id"], "remove-edge-1");
    plane.restart_duties().await;
    until("the edge destroyed", Duration::from_secs(20), || {
        (cloud.destroyed.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    // The duties' events about the removal name the request that asked for it.
    let events = plane
        .call(
            Method::GET,
            &format!("/api/v1/events?subject={id}&after=0"),
            None,
            200,
        )
        .await;
    let removal: Vec<(&str, &Value)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            ["edge.removal_started", "edge.destroyed"].contains(&e["type"].as_str().unwrap())
        })
        .map(|e| (e["type"].as_str().unwrap(), &e["data"]["request_id"]))
        .collect();
    assert_eq!(
        removal.last().map(|(kind, _)| *kind),
        Some("edge.destroyed"),
        "{events}"
    );
    assert!(
        removal.len() >= 2 && removal.iter().all(|(_, id)| **id == "remove-edge-1"),
        "{events}"
    );
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_was_lost_makes_exactly_one_vps() {
    let (cloud, mut settings) = standin_settings();
    let m = &mut settings.edges.management;
    m.min_active_nodes = 1;
    m.max_nodes = 3;
    // The provider makes the VPS but its answer never arrives (a timeout).
    cloud.lose_next_answer.store(true, Ordering::SeqCst);
    let (plane, _) = Plane::start(settings, None).await;

    let serving = until("the edge serves", Duration::from_secs(40), || {
        let dig = plane.dig();
        (!dig.is_empty()).then_some(dig)
    })
    .await;
    assert_eq!(serving, ["127.0.0.40"], "the one VPS that was made serves");
    let edges = plane
        .call(Method::GET, "/api/v1/edge-nodes", None, 200)
        .await;
    let edges = edges["edge_nodes"].as_array().unwrap().clone();
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!(edges[0]["instance_id"], "vps-0", "{edges:?}");
    assert_eq!(cloud.vpses.lock().unwrap().len(), 1, "exactly one VPS");
    assert!(cloud.destroyed.lock().unwrap().is_empty());
    let created = plane
        .call(Method::GET, "/api/v1/events?type=edge.created", None, 200)
        .await;
    let message = created["events"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("found (created by an earlier request)"),
        "{created}"
    );
    let failed = plane
        .call(
            Method::GET,
            "/api/v1/events?type=edge.step_failed",
            None,
            200,
        )
        .await;
    assert!(
        failed["events"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("timed out")),
        "{failed}"
    );
    plane.stop().await;
}
