//! The control plane client and the agent's loops against a fake control plane on
//! 127.0.0.1, with a fake data plane: headers, status codes, conditional and long-polled
//! fetches, back-off, refusal, heartbeats, ready, and the last good configuration.

mod common;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{CREDENTIAL, ENROLL_TOKEN, FakeControl, FakePlane, NODE_ID, Served, eventually};
use kokoa_core::{ContentHash, EdgeConfig, EdgeContent, EdgeNodeId, Hostname};
use kokoa_edge::{
    Agent, ControlPlane, Credential, Error, Fetched, Sampler, Secret, StateDir, Timing,
    apply_and_save,
};
use tokio::sync::oneshot;

/// The public key the edge enrolls with.
const KEY: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

fn config(names: &[&str]) -> EdgeConfig {
    let mut content = EdgeContent::default();
    for (n, name) in names.iter().enumerate() {
        content.routes.insert(
            Hostname::parse(name).unwrap(),
            format!("10.0.1.1:{}", 8000 + n).parse().unwrap(),
        );
    }
    EdgeConfig::new(content).unwrap()
}

fn credential(control: &FakeControl, secret: &str) -> Credential {
    Credential {
        control_plane_url: control.url(),
        node_id: EdgeNodeId::parse(NODE_ID).unwrap(),
        credential: Secret::new(secret),
        ca_pin: None,
    }
}

#[tokio::test]
async fn enroll_exchanges_the_token_for_a_credential() {
    let control = FakeControl::start(Served::Status(500)).await;
    let got = ControlPlane::enroll(
        &format!("{}/", control.url()),
        None,
        &Secret::new(ENROLL_TOKEN),
        KEY,
    )
    .await
    .unwrap();
    assert_eq!(got, credential(&control, CREDENTIAL));
    let err = ControlPlane::enroll(&control.url(), None, &Secret::new("wrong"), KEY)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unauthorized { status: 401, .. }),
        "{err}"
    );
    for bad in ["ftp://x", "not a url", "http://u:p@127.0.0.1/"] {
        let err = ControlPlane::enroll(bad, None, &Secret::new(ENROLL_TOKEN), KEY)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{bad}: {err}");
    }
}

#[tokio::test]
async fn fetch_sends_the_credential_and_the_live_hash() {
    let first = config(&["app.hoge.com"]);
    let control = FakeControl::start(Served::config(&first)).await;
    let client = ControlPlane::new(&credential(&control, CREDENTIAL)).unwrap();

    // 200 with the payload, checked.
    assert_eq!(
        client.fetch_config(None, None).await.unwrap(),
        Fetched::Config(first.clone())
    );
    // 304 while the hash is the live one; the long poll is held up to `wait`.
    let asked = Instant::now();
    let hash = first.config_hash().as_str();
    let got = client
        .fetch_config(Some(hash), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(got, Fetched::NotModified);
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "{:?}",
        asked.elapsed()
    );

    let seen = control.seen();
    let bearer = format!("Bearer {CREDENTIAL}");
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some(bearer.as_str()))
    );
    assert_eq!(seen[0].if_none_match, None);
    assert_eq!(seen[1].if_none_match, Some(format!("\"{hash}\"")));
    assert_eq!((seen[0].wait, seen[1].wait), (None, Some(1)));
    assert_eq!((seen[0].status, seen[1].status), (200, 304));

    // A long poll answers as soon as the configuration changes.
    let second = config(&["app.hoge.com", "wiki.fuga.com"]);
    let waiting = tokio::spawn({
        let client = client.clone();
        let hash = hash.to_owned();
        async move {
            client
                .fetch_config(Some(&hash), Some(Duration::from_secs(30)))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let changed = Instant::now();
    control.serve(Served::config(&second));
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Fetched::Config(second));
    assert!(changed.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn fetch_errors_say_what_went_wrong() {
    let first = config(&["app.hoge.com"]);
    let control = FakeControl::start(Served::config(&first)).await;

    let stranger = ControlPlane::new(&credential(&control, "not-the-credential")).unwrap();
    let err = stranger.fetch_config(None, None).await.unwrap_err();
    assert!(
        matches!(err, Error::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("not-the-credential"), "{err}");

    let client = ControlPlane::new(&credential(&control, CREDENTIAL)).unwrap();
    control.serve(Served::Status(500));
    let err = client.fetch_config(None, None).await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 500, .. }), "{err}");

    let other = config(&["evil.hoge.com"]);
    control.serve(Served::forged(&first, &other));
    let err = client.fetch_config(None, None).await.unwrap_err();
    assert!(err.is_refusal(), "{err}");
    assert!(
        err.to_string().contains(first.config_hash().as_str()),
        "{err}"
    );

    control.serve(Served::Payload {
        hash: "x".into(),
        body: b"{\"routes\": 5}".to_vec(),
    });
    let err = client.fetch_config(None, None).await.unwrap_err();
    assert!(
        err.is_refusal() && err.to_string().contains("does not parse"),
        "{err}"
    );

    drop(control);
    let err = client.fetch_config(None, None).await.unwrap_err();
    assert!(matches!(err, Error::Http { .. }), "{err}");
}

#[tokio::test]
async fn last_good_is_written_only_after_a_successful_apply() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let plane = Arc::new(FakePlane::default());

    let first = config(&["app.hoge.com"]);
    let key = kokoa_wg::PrivateKey::generate();
    apply_and_save(
        Arc::clone(&plane),
        state.clone(),
        first.clone(),
        key.clone(),
    )
    .await
    .unwrap();
    assert_eq!(state.read_last_good().unwrap(), Some(first.clone()));

    // The host fails: nothing saved, the first stays the last good one.
    *plane.fail.lock().unwrap() = true;
    let err = apply_and_save(
        Arc::clone(&plane),
        state.clone(),
        config(&["wiki.fuga.com"]),
        key.clone(),
    )
    .await
    .unwrap_err();
    assert!(!err.is_refusal(), "{err}");
    assert_eq!(state.read_last_good().unwrap(), Some(first.clone()));

    // A payload whose hash does not match is refused before the plane is asked.
    *plane.fail.lock().unwrap() = false;
    let mut json = serde_json::to_value(config(&["other.hoge.com"])).unwrap();
    json["config_hash"] = ContentHash::of(b"forged").to_string().into();
    let forged: EdgeConfig = serde_json::from_value(json).unwrap();
    let err = apply_and_save(Arc::clone(&plane), state.clone(), forged, key)
        .await
        .unwrap_err();
    assert!(
        err.is_refusal() && err.to_string().contains("hash mismatch"),
        "{err}"
    );
    assert_eq!(state.read_last_good().unwrap(), Some(first.clone()));
    assert_eq!(
        *plane.applied.lock().unwrap(),
        vec![first.config_hash().clone()]
    );
}

fn fast_timing() -> Timing {
    Timing {
        long_poll: Duration::from_secs(2),
        poll_interval: Duration::from_millis(200),
        heartbeat_interval: Duration::from_millis(100),
        backoff_initial: Duration::from_millis(40),
        backoff_max: Duration::from_millis(160),
        reconnect: Duration::from_millis(160),
    }
}

fn start_agent(
    control_url: &str,
    plane: &Arc<FakePlane>,
    state_dir: &Path,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), Error>>,
) {
    let credential = Credential {
        control_plane_url: control_url.to_owned(),
        node_id: EdgeNodeId::parse(NODE_ID).unwrap(),
        credential: Secret::new(CREDENTIAL),
        ca_pin: None,
    };
    let agent = Agent::new(
        ControlPlane::new(&credential).unwrap(),
        Arc::clone(plane),
        StateDir::open(state_dir).unwrap(),
        fast_timing(),
        Sampler::new(vec![80, 443], state_dir.join("no-access.log")),
        false,
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));
    (stop, task)
}

#[tokio::test]
async fn agent_backs_off_applies_refuses_and_reports() {
    let control = FakeControl::start(Served::Status(503)).await;
    let plane = Arc::new(FakePlane::default());
    let dir = tempfile::tempdir().unwrap();
    let (stop, task) = start_agent(&control.url(), &plane, dir.path());

    // Failures are retried after growing pauses (steps of 40, 80, 160 ms; at least half
    // of each), not in a tight loop.
    eventually(Duration::from_secs(5), "four failed fetches", || {
        control.seen().len() >= 4
    })
    .await;
    let seen = control.seen();
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, least) in gaps.iter().zip([20, 40, 80]) {
        assert!(
            *gap >= Duration::from_millis(least),
            "pauses {:?}",
            &gaps[..3]
        );
    }

    let first = config(&["app.hoge.com"]);
    control.serve(Served::config(&first));
    eventually(Duration::from_secs(5), "the first configuration", || {
        !plane.applied.lock().unwrap().is_empty()
    })
    .await;
    eventually(Duration::from_secs(5), "ready", || {
        control.ready_calls().len() == 1
    })
    .await;
    assert_eq!(
        StateDir::open(dir.path())
            .unwrap()
            .read_last_good()
            .unwrap(),
        Some(first.clone())
    );
    let fetches = control.seen();
    let last = fetches.last().unwrap();
    assert_eq!(
        last.if_none_match,
        Some(format!("\"{}\"", first.config_hash()))
    );
    assert_eq!(last.wait, Some(2));

    // A forged payload is refused and reported; the plane is not asked again.
    control.serve(Served::forged(
        &config(&["x.hoge.com"]),
        &config(&["evil.hoge.com"]),
    ));
    eventually(Duration::from_secs(5), "a degraded heartbeat", || {
        control
            .heartbeats()
            .iter()
            .any(|h| h["status"] == "degraded")
    })
    .await;
    let beat = control
        .heartbeats()
        .into_iter()
        .find(|h| h["status"] == "degraded")
        .unwrap();
    assert!(
        beat["last_error"]
            .as_str()
            .unwrap()
            .contains("hash mismatch"),
        "{beat}"
    );
    assert_eq!(beat["node_id"], NODE_ID);
    assert_eq!(beat["tunnel_status"], "up");
    for field in [
        "connections_active",
        "cpu_percent",
        "memory_percent",
        "requests_per_second",
        "error_rate",
    ] {
        assert!(beat["metrics"][field].is_number(), "{field}: {beat}");
    }
    assert_eq!(plane.applied.lock().unwrap().len(), 1);
    assert_eq!(
        StateDir::open(dir.path())
            .unwrap()
            .read_last_good()
            .unwrap(),
        Some(first.clone())
    );
    // The refused hash is not fetched in a loop: the control plane holds the request.
    let before = control.seen().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        control.seen().len() <= before + 1,
        "refused payload fetched again and again"
    );

    // A good configuration clears the error.
    let second = config(&["app.hoge.com", "wiki.fuga.com"]);
    control.serve(Served::config(&second));
    eventually(
        Duration::from_secs(5),
        "a healthy heartbeat after the fix",
        || {
            plane.applied.lock().unwrap().len() == 2
                && control
                    .heartbeats()
                    .last()
                    .is_some_and(|h| h["status"] == "healthy")
        },
    )
    .await;
    assert_eq!(control.ready_calls().len(), 1, "ready is sent once");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn agent_serves_the_last_good_configuration_without_a_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let saved = config(&["app.hoge.com"]);
    StateDir::open(dir.path())
        .unwrap()
        .save_last_good(&saved)
        .unwrap();
    // Nothing listens at this address any more.
    let gone = {
        let control = FakeControl::start(Served::Status(500)).await;
        control.url()
    };
    let plane = Arc::new(FakePlane::default());
    let (stop, task) = start_agent(&gone, &plane, dir.path());
    eventually(
        Duration::from_secs(5),
        "the last good configuration",
        || !plane.applied.lock().unwrap().is_empty(),
    )
    .await;
    assert_eq!(
        *plane.applied.lock().unwrap(),
        vec![saved.config_hash().clone()]
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
