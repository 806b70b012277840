use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use proptest::prelude::*;

use super::*;
use crate::{HealthState, HealthTracker, Transition};

#[test]
fn defaults_are_the_specifications() {
    let check: CheckConfig =
        serde_json::from_str(r#"{"type":"http","url":"http://10.0.1.1/health"}"#)
            .expect("minimal check parses");
    assert_eq!(check.kind, CheckKind::Http);
    assert_eq!(check.interval, Duration::from_secs(10));
    assert_eq!(check.timeout, Duration::from_secs(5));
    assert_eq!(check.retries, 3);
    assert_eq!(check.threshold, 3);
    assert_eq!(check.recovery_threshold, 3);
    assert_eq!(check.expected_status, 200);
    assert_eq!(check.expected_body, None);
    assert!(check.verify_certificate);
    assert_eq!(check.min_days_left, 7);
    assert_eq!((check.address, check.netns.as_deref()), (None, None));
    assert_eq!(check, CheckConfig::http("http://10.0.1.1/health"));
    check.validate().expect("defaults are valid");
}

#[test]
fn durations_are_written_in_seconds() {
    let check: CheckConfig = serde_json::from_str(
        r#"{"type":"wireguard","wireguard_ip":"10.0.1.12","interval":10,"timeout":0.5}"#,
    )
    .expect("parses");
    assert_eq!(check.timeout, Duration::from_millis(500));
    let json = serde_json::to_value(&check).expect("serialises");
    assert_eq!(json["interval"], 10);
    assert_eq!(json["timeout"], 0.5);
    assert_eq!(json["type"], "wireguard");
    assert!(
        json.get("url").is_none(),
        "unused fields are left out: {json}"
    );

    let negative = serde_json::from_str::<CheckConfig>(r#"{"timeout":-1.0}"#).unwrap_err();
    assert!(negative.to_string().contains("-1"), "{negative}");
}

#[test]
fn each_kind_has_a_snake_case_name() {
    for (kind, name) in [
        (CheckKind::Http, "http"),
        (CheckKind::Https, "https"),
        (CheckKind::Tcp, "tcp"),
        (CheckKind::Icmp, "icmp"),
        (CheckKind::Wireguard, "wireguard"),
        (CheckKind::TlsCertificate, "tls_certificate"),
        (CheckKind::EndToEnd, "end_to_end"),
        (CheckKind::Command, "command"),
    ] {
        assert_eq!(kind.to_string(), name);
        assert_eq!(serde_json::to_value(kind).expect("serialises"), name);
    }
}

fn error_of(check: &CheckConfig) -> String {
    check.validate().expect_err("invalid check").to_string()
}

#[test]
fn timeout_longer_than_interval_is_refused_with_both_values() {
    let mut check = CheckConfig::http("http://10.0.1.1/health");
    check.interval = Duration::from_secs(5);
    check.timeout = Duration::from_secs(6);
    assert_eq!(
        error_of(&check),
        "timeout 6s is longer than interval 5s; a check must end before the next one starts"
    );
    check.timeout = check.interval;
    assert_eq!(check.validate(), Ok(()));
}

#[test]
fn zero_values_are_refused_by_name() {
    let mut check = CheckConfig::icmp("203.0.113.7");
    check.interval = Duration::ZERO;
    assert_eq!(
        check.validate(),
        Err(Error::ZeroDuration { name: "interval" })
    );
    let mut check = CheckConfig::icmp("203.0.113.7");
    check.timeout = Duration::ZERO;
    assert_eq!(
        check.validate(),
        Err(Error::ZeroDuration { name: "timeout" })
    );
    let mut check = CheckConfig::icmp("203.0.113.7");
    check.threshold = 0;
    assert_eq!(
        check.validate(),
        Err(Error::ZeroThreshold { name: "threshold" })
    );
    let mut check = CheckConfig::icmp("203.0.113.7");
    check.recovery_threshold = 0;
    assert_eq!(
        check.validate(),
        Err(Error::ZeroThreshold {
            name: "recovery_threshold"
        })
    );
}

#[test]
fn port_zero_is_refused() {
    assert_eq!(
        error_of(&CheckConfig::tcp("10.0.1.1", 0)),
        "port 0 is not a port a check can connect to; use 1-65535"
    );
    let mut check = CheckConfig::tls_certificate("app.hoge.com");
    check.port = Some(0);
    assert_eq!(check.validate(), Err(Error::PortZero));
}

#[test]
fn each_kind_names_the_field_it_is_missing() {
    for (kind, field) in [
        (CheckKind::Http, "url"),
        (CheckKind::Https, "url"),
        (CheckKind::EndToEnd, "url"),
        (CheckKind::Tcp, "host"),
        (CheckKind::Icmp, "host"),
        (CheckKind::TlsCertificate, "host"),
        (CheckKind::Wireguard, "wireguard_ip"),
        (CheckKind::Command, "command"),
    ] {
        let check: CheckConfig =
            serde_json::from_value(serde_json::json!({ "type": kind })).expect("parses");
        assert_eq!(
            error_of(&check),
            format!("the {kind} check needs `{field}`"),
            "{kind}"
        );
    }
    let mut tcp = CheckConfig::tcp("10.0.1.1", 22);
    tcp.port = None;
    assert_eq!(
        tcp.validate(),
        Err(Error::MissingField {
            kind: CheckKind::Tcp,
            field: "port"
        })
    );
    assert!(CheckConfig::icmp("").validate().is_err());
    assert!(CheckConfig::command([""]).validate().is_err());
}

#[test]
fn url_scheme_must_fit_the_kind() {
    assert_eq!(
        error_of(&CheckConfig::https("http://203.0.113.7/health")),
        r#"url "http://203.0.113.7/health" of the https check must start with https:// and name a host"#
    );
    assert!(
        CheckConfig::http("https://203.0.113.7/health")
            .validate()
            .is_err()
    );
    assert!(CheckConfig::http("http:///health").validate().is_err());
    assert!(CheckConfig::http("10.0.1.1/health").validate().is_err());
    assert!(
        CheckConfig::end_to_end("https://app.hoge.com/health")
            .validate()
            .is_ok()
    );
    assert!(
        CheckConfig::end_to_end("http://app.hoge.com/health")
            .validate()
            .is_ok()
    );
    assert!(
        CheckConfig::end_to_end("ftp://app.hoge.com/")
            .validate()
            .is_err()
    );
}

#[test]
fn credentials_in_a_url_are_refused_without_echoing_them() {
    let error = error_of(&CheckConfig::https(
        "https://admin:hunter2@203.0.113.7/health",
    ));
    assert!(!error.contains("hunter2"), "{error}");
    assert_eq!(
        error,
        "the url of the https check carries credentials (`user:password@`); health URLs must not, since they are logged and stored"
    );
    assert!(
        CheckConfig::http("http://10.0.1.1/health?by=a@b")
            .validate()
            .is_ok()
    );
}

#[test]
fn expected_status_must_be_an_http_status() {
    let mut check = CheckConfig::http("http://10.0.1.1/health");
    check.expected_status = 99;
    assert_eq!(
        error_of(&check),
        "expected_status 99 is not an HTTP status code; use 100-599"
    );
    check.expected_status = 600;
    assert_eq!(check.validate(), Err(Error::InvalidStatus { status: 600 }));
    check.expected_status = 204;
    check.any_status_below = Some(100);
    assert_eq!(
        check.validate().unwrap_err().to_string(),
        "any_status_below 100 is not a useful limit; use 101-600"
    );
    check.any_status_below = Some(500);
    assert_eq!(check.validate(), Ok(()));
}

#[test]
fn netns_is_a_name_or_an_absolute_path() {
    let mut check = CheckConfig::wireguard(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 12)));
    for valid in [
        "edge1",
        "kokoa-origin-a",
        "/proc/1234/ns/net",
        "/run/netns/edge1",
    ] {
        check.netns = Some(valid.into());
        assert_eq!(check.validate(), Ok(()), "{valid}");
    }
    for invalid in ["", "..", ".", "netns/edge1", "edge\0one"] {
        check.netns = Some(invalid.into());
        assert_eq!(
            check.validate(),
            Err(Error::InvalidNetns {
                netns: invalid.into()
            }),
            "{invalid}"
        );
    }
    check.netns = Some("../etc".into());
    assert_eq!(
        error_of(&check),
        r#"netns "../etc" is neither a namespace name (as `ip netns add` takes) nor an absolute path to a namespace file"#
    );
}

#[test]
fn options_a_kind_cannot_honour_are_refused() {
    let mut command = CheckConfig::command(["/usr/local/bin/check-db"]);
    command.netns = Some("origin-a".into());
    assert_eq!(
        error_of(&command),
        "the command check does not take `netns`: run the program through `ip netns exec <name>` in `command` instead"
    );
    let mut certificate = CheckConfig::tls_certificate("app.hoge.com");
    certificate.verify_certificate = false;
    assert_eq!(
        error_of(&certificate),
        "the tls_certificate check does not take `verify_certificate: false`: it always verifies; use an https check to reach a server without verifying"
    );
}

#[test]
fn outcomes_stored_before_days_left_existed_still_read() {
    let old: CheckOutcome =
        serde_json::from_str(r#"{"status":"success","response_time_ms":12}"#).expect("parses");
    assert_eq!(old, CheckOutcome::success(12));
    let new = CheckOutcome::success(40).with_certificate_days_left(61);
    assert_eq!(
        serde_json::to_value(&new).expect("serialises"),
        serde_json::json!({"status": "success", "response_time_ms": 40, "certificate_days_left": 61})
    );
    assert_eq!(
        serde_json::to_value(CheckOutcome::success(1)).expect("serialises"),
        serde_json::json!({"status": "success", "response_time_ms": 1}),
        "absent when unknown"
    );
}

#[test]
fn every_constructor_builds_a_valid_check() {
    for check in [
        CheckConfig::http("http://10.0.1.1/health"),
        CheckConfig::https("https://203.0.113.7/health"),
        CheckConfig::end_to_end("https://app.hoge.com/health"),
        CheckConfig::tcp("10.0.1.1", 8001),
        CheckConfig::icmp("203.0.113.7"),
        CheckConfig::tls_certificate("app.hoge.com"),
        CheckConfig::wireguard(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 12))),
        CheckConfig::command(["/usr/local/bin/check-db", "--quick"]),
    ] {
        assert_eq!(check.validate(), Ok(()), "{check:?}");
    }
}

fn any_check() -> impl Strategy<Value = CheckConfig> {
    (
        prop_oneof![
            Just(CheckKind::Http),
            Just(CheckKind::Tcp),
            Just(CheckKind::Wireguard),
            Just(CheckKind::Command)
        ],
        0u64..100_000,
        0u64..100_000,
        any::<u32>(),
        proptest::option::of("[a-z0-9./:]{0,20}"),
        any::<u16>(),
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<[u8; 4]>()),
        proptest::collection::vec("[a-z -]{0,8}", 0..3),
        (
            proptest::option::of(any::<[u8; 16]>()),
            any::<bool>(),
            any::<u32>(),
            proptest::option::of("[a-z0-9/-]{1,12}"),
        ),
    )
        .prop_map(
            |(
                kind,
                interval_ms,
                timeout_ms,
                retries,
                url,
                status,
                port,
                ip,
                command,
                (address, verify_certificate, min_days_left, netns),
            )| {
                CheckConfig {
                    kind,
                    interval: Duration::from_millis(interval_ms),
                    timeout: Duration::from_millis(timeout_ms),
                    retries,
                    url,
                    expected_status: status,
                    port,
                    wireguard_ip: ip.map(IpAddr::from),
                    command,
                    address: address.map(IpAddr::from),
                    verify_certificate,
                    min_days_left,
                    netns,
                    ..CheckConfig::default()
                }
            },
        )
}

proptest! {
    #[test]
    fn json_round_trip_keeps_every_field(check in any_check()) {
        let json = serde_json::to_string(&check).expect("serialises");
        let back: CheckConfig = serde_json::from_str(&json).expect("parses its own output");
        prop_assert_eq!(back, check);
    }
}

/// Answers from a script of results, the way a real executor would report a target that
/// goes down.
#[derive(Debug)]
struct Scripted {
    results: Vec<bool>,
    next: AtomicUsize,
}

#[async_trait]
impl CheckExecutor for Scripted {
    async fn check(&self, check: &CheckConfig) -> CheckOutcome {
        let run = self.next.fetch_add(1, Ordering::Relaxed);
        if self.results.get(run).copied().unwrap_or(false) {
            CheckOutcome::success(12)
        } else {
            let url = check.url.as_deref().unwrap_or_default();
            CheckOutcome::failure(5_000, format!("GET {url}: timed out"))
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn executor_outcomes_drive_the_tracker() {
    let executor: Arc<dyn CheckExecutor> = Arc::new(Scripted {
        results: vec![true, false, false, false, true],
        next: AtomicUsize::new(0),
    });
    let check = CheckConfig::https("https://203.0.113.7/health");
    let mut tracker = HealthTracker::new(check.thresholds().expect("valid"), HealthState::Healthy);
    let mut flips = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let outcome = executor.check(&check).await;
        flips.extend(tracker.observe(outcome.status));
        last = Some(outcome);
    }
    assert_eq!(
        flips,
        [Transition {
            from: HealthState::Healthy,
            to: HealthState::Unhealthy
        }]
    );
    assert_eq!(last, Some(CheckOutcome::success(12)));
    let failure = CheckOutcome::failure(5_000, "GET https://203.0.113.7/health: timed out");
    assert_eq!(
        serde_json::to_value(&failure).expect("serialises"),
        serde_json::json!({
            "status": "failure",
            "response_time_ms": 5000,
            "error": "GET https://203.0.113.7/health: timed out"
        })
    );
}
