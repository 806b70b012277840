//! The checker on tokio's paused clock with a scripted executor (schedule, concurrency,
//! thresholds, target changes, shutdown), and once in real time with the default executor
//! against a local server that goes down and comes back.

use std::{
    collections::{HashMap, VecDeque},
    num::NonZeroUsize,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use kokoa_health::{
    CheckConfig, CheckExecutor, CheckOutcome, CheckReport, CheckSink, Checker, HealthState, Target,
    TargetCheck, Transition,
};
use tokio::{
    sync::{mpsc, watch},
    time::{Instant, sleep, sleep_until},
};

const SECOND: Duration = Duration::from_secs(1);

/// Answers each target's runs from its script (success once the script is used up), each
/// run taking `delay`, and measures what the checker does with it.
#[derive(Debug, Default)]
struct Scripted {
    delay: Duration,
    /// `false` = failure, by the target's URL.
    scripts: Mutex<HashMap<String, VecDeque<bool>>>,
    /// The URL and start of every run, in order.
    runs: Mutex<Vec<(String, Instant)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Runs dropped before they finished.
    cancelled: AtomicUsize,
}

impl Scripted {
    fn taking(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            ..Self::default()
        })
    }

    fn script(&self, target: &str, results: &[bool]) {
        self.scripts
            .lock()
            .unwrap()
            .insert(url(target), results.iter().copied().collect());
    }

    /// Start times of the runs for `target`, relative to `origin`.
    fn starts(&self, target: &str, origin: Instant) -> Vec<Duration> {
        self.runs
            .lock()
            .unwrap()
            .iter()
            .filter(|(u, _)| *u == url(target))
            .map(|(_, at)| *at - origin)
            .collect()
    }

    fn run_count(&self) -> usize {
        self.runs.lock().unwrap().len()
    }
}

/// Counts the run as cancelled unless it is disarmed at the end.
struct Armed<'a>(&'a Scripted, bool);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl CheckExecutor for Scripted {
    async fn check(&self, check: &CheckConfig) -> CheckOutcome {
        let url = check.url.clone().unwrap_or_default();
        self.runs
            .lock()
            .unwrap()
            .push((url.clone(), Instant::now()));
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let mut guard = Armed(self, true);
        sleep(self.delay).await;
        guard.1 = false;
        let success = self
            .scripts
            .lock()
            .unwrap()
            .get_mut(&url)
            .and_then(VecDeque::pop_front)
            .unwrap_or(true);
        if success {
            CheckOutcome::success(1)
        } else {
            CheckOutcome::failure(1, format!("GET {url}: expected status 200, got 503"))
        }
    }
}

/// Keeps every report with the (paused) time it arrived.
#[derive(Debug, Default)]
struct Recorder {
    reports: Mutex<Vec<(Instant, CheckReport)>>,
}

#[async_trait]
impl CheckSink for Recorder {
    async fn record(&self, report: CheckReport) {
        self.reports.lock().unwrap().push((Instant::now(), report));
    }
}

impl Recorder {
    fn of(&self, target: &str) -> Vec<CheckReport> {
        self.reports
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| r.target == target)
            .map(|(_, r)| r.clone())
            .collect()
    }

    fn transitions(&self, target: &str) -> Vec<(usize, Transition)> {
        self.of(target)
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i + 1, r.transition?)))
            .collect()
    }
}

fn url(target: &str) -> String {
    format!("http://{target}/health")
}

fn http(interval: Duration) -> CheckConfig {
    let mut check = CheckConfig::http("http://placeholder/health");
    check.interval = interval;
    check.timeout = interval.min(Duration::from_secs(5));
    check
}

fn target(id: &str, interval: Duration) -> Target {
    let mut check = http(interval);
    check.url = Some(url(id));
    Target::new(id, [TargetCheck::new("http", check)])
}

fn checker(executor: &Arc<Scripted>, sink: &Arc<Recorder>) -> Checker {
    Checker::new(executor.clone(), sink.clone())
}

#[tokio::test(start_paused = true)]
async fn each_check_runs_every_interval_from_the_start_of_the_last_run() {
    let executor = Scripted::taking(SECOND); // each run takes 1 s
    let sink = Arc::new(Recorder::default());
    let (_send, targets) = watch::channel(vec![target("edg_a", 10 * SECOND)]);
    let start = Instant::now();
    checker(&executor, &sink)
        .run(targets, sleep(Duration::from_secs(45)))
        .await;
    let starts = executor.starts("edg_a", start);
    assert_eq!(starts.len(), 5, "{starts:?}");
    let first = starts[0];
    assert!(
        first < 2 * SECOND,
        "first run within the 2 s spread: {first:?}"
    );
    for (n, at) in starts.iter().enumerate() {
        assert_eq!(*at, first + 10 * SECOND * n as u32, "run {n} of {starts:?}");
    }
    // Each report comes when its run ends.
    let reports = sink.reports.lock().unwrap();
    assert_eq!(reports.len(), 5);
    assert_eq!(reports[0].0 - start, first + SECOND);
}

#[tokio::test(start_paused = true)]
async fn runs_in_flight_never_exceed_the_workers() {
    let executor = Scripted::taking(Duration::from_millis(500));
    let sink = Arc::new(Recorder::default());
    let ids: Vec<String> = (0..100).map(|i| format!("edg_{i:03}")).collect();
    let (_send, targets) = watch::channel(ids.iter().map(|id| target(id, 10 * SECOND)).collect());
    checker(&executor, &sink)
        .with_first_run_spread(Duration::ZERO)
        .run(targets, sleep(Duration::from_secs(29)))
        .await;
    // All 100 are due at 0 s, 10 s and 20 s; 10 workers finish each wave in 5 s.
    assert_eq!(executor.max_in_flight.load(Ordering::SeqCst), 10);
    assert_eq!(executor.run_count(), 300);
    for id in &ids {
        assert_eq!(sink.of(id).len(), 3, "{id}");
    }

    let executor = Scripted::taking(Duration::from_millis(500));
    let (_send, targets) = watch::channel(ids.iter().map(|id| target(id, 10 * SECOND)).collect());
    checker(&executor, &sink)
        .with_workers(NonZeroUsize::new(3).unwrap())
        .run(targets, sleep(Duration::from_secs(5)))
        .await;
    assert_eq!(executor.max_in_flight.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn three_failures_flip_to_unhealthy_and_three_successes_back_each_reported_once() {
    let executor = Scripted::taking(Duration::from_millis(10));
    executor.script(
        "edg_a",
        &[false, false, false, false, false, true, true, true, true],
    );
    let sink = Arc::new(Recorder::default());
    let mut edge = target("edg_a", 10 * SECOND);
    edge.checks[0].initial = HealthState::Healthy;
    let (_send, targets) = watch::channel(vec![edge]);
    checker(&executor, &sink)
        .run(targets, sleep(Duration::from_secs(95)))
        .await;
    let reports = sink.of("edg_a");
    assert_eq!(reports.len(), 10);
    assert_eq!(
        sink.transitions("edg_a"),
        [
            (
                3,
                Transition {
                    from: HealthState::Healthy,
                    to: HealthState::Unhealthy
                }
            ),
            (
                8,
                Transition {
                    from: HealthState::Unhealthy,
                    to: HealthState::Healthy
                }
            ),
        ]
    );
    let states: Vec<_> = reports.iter().map(|r| r.state).collect();
    use HealthState::{Healthy as H, Unhealthy as U};
    assert_eq!(states, [H, H, U, U, U, U, U, H, H, H]);
    let failures: Vec<_> = reports.iter().map(|r| r.consecutive_failures).collect();
    assert_eq!(failures, [1, 2, 3, 4, 5, 0, 0, 0, 0, 0]);
    assert_eq!(reports[2].check, "http");
    assert_eq!(reports[2].kind, kokoa_health::CheckKind::Http);
    assert_eq!(
        reports[2].outcome.error.as_deref(),
        Some("GET http://edg_a/health: expected status 200, got 503")
    );
}

#[tokio::test(start_paused = true)]
async fn target_changes_take_effect_at_once_and_unchanged_targets_keep_their_state() {
    let executor = Scripted::taking(Duration::from_millis(10));
    executor.script("edg_a", &[false; 20]);
    executor.script("edg_c", &[false; 20]);
    let sink = Arc::new(Recorder::default());
    let mut a = target("edg_a", 10 * SECOND);
    a.checks[0].initial = HealthState::Healthy;
    let b = target("edg_b", 10 * SECOND);
    let (send, targets) = watch::channel(vec![a.clone(), b.clone()]);
    let start = Instant::now();
    let runner = checker(&executor, &sink);
    let running = tokio::spawn(async move {
        runner.run(targets, sleep(Duration::from_secs(100))).await;
    });

    // After two failures of edg_a: drop edg_b, add edg_c (restored as unhealthy).
    sleep_until(start + Duration::from_secs(15)).await;
    assert_eq!(sink.of("edg_a").len(), 2);
    assert_eq!(sink.of("edg_b").len(), 2);
    let mut c = target("edg_c", 10 * SECOND);
    c.checks[0].initial = HealthState::Unhealthy;
    send.send(vec![a.clone(), c.clone()]).unwrap();

    // The third failure, though the list changed in between, completes edg_a's streak.
    sleep_until(start + Duration::from_secs(25)).await;
    assert_eq!(
        sink.transitions("edg_a"),
        [(
            3,
            Transition {
                from: HealthState::Healthy,
                to: HealthState::Unhealthy
            }
        )]
    );
    assert_eq!(
        executor.starts("edg_a", start).len(),
        3,
        "edg_a kept its schedule"
    );
    assert_eq!(sink.of("edg_b").len(), 2, "edg_b stopped at once");
    let c_starts = executor.starts("edg_c", start);
    assert_eq!(c_starts.len(), 1);
    assert!(
        c_starts[0] < Duration::from_secs(17),
        "edg_c ran soon: {c_starts:?}"
    );

    // A changed check keeps its state and runs again soon; its streak restarts only if the
    // thresholds change.
    let mut a2 = a.clone();
    a2.checks[0].config.timeout = 2 * SECOND;
    a2.checks[0].config.threshold = 2;
    send.send(vec![a2, c]).unwrap();
    sleep_until(start + Duration::from_secs(28)).await;
    let a_reports = sink.of("edg_a");
    assert_eq!(a_reports.len(), 4, "ran again within the 2 s spread");
    assert_eq!(a_reports[3].state, HealthState::Unhealthy);
    assert_eq!(
        a_reports[3].consecutive_failures, 1,
        "new thresholds, new streak"
    );

    // Nothing left: every check stops.
    send.send(Vec::new()).unwrap();
    let runs = executor.run_count();
    sleep_until(start + Duration::from_secs(60)).await;
    assert_eq!(executor.run_count(), runs);
    // edg_c failed from the start but started unhealthy: no flip to report.
    assert!(sink.transitions("edg_c").is_empty());
    assert!(
        sink.of("edg_c")
            .iter()
            .all(|r| r.state == HealthState::Unhealthy)
    );
    running.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_runs_in_flight_and_returns() {
    let executor = Scripted::taking(Duration::from_secs(3600)); // never ends on its own
    let sink = Arc::new(Recorder::default());
    let ids: Vec<String> = (0..25).map(|i| format!("edg_{i}")).collect();
    let (_send, targets) = watch::channel(ids.iter().map(|id| target(id, 10 * SECOND)).collect());
    let start = Instant::now();
    checker(&executor, &sink)
        .run(targets, sleep(Duration::from_secs(5)))
        .await;
    assert_eq!(Instant::now() - start, Duration::from_secs(5));
    assert_eq!(executor.run_count(), 10, "10 workers busy");
    assert_eq!(executor.cancelled.load(Ordering::SeqCst), 10);
    assert_eq!(executor.in_flight.load(Ordering::SeqCst), 0);
    assert!(sink.reports.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn invalid_and_duplicate_checks_are_left_out() {
    let executor = Scripted::taking(Duration::from_millis(10));
    let sink = Arc::new(Recorder::default());
    let mut broken = target("edg_broken", 10 * SECOND);
    broken.checks[0].config.timeout = Duration::ZERO;
    let mut twice = target("edg_twice", 10 * SECOND);
    twice.checks.push(twice.checks[0].clone());
    let (_send, targets) = watch::channel(vec![broken, twice.clone(), twice]);
    checker(&executor, &sink)
        .run(targets, sleep(Duration::from_secs(15)))
        .await;
    assert!(sink.of("edg_broken").is_empty());
    assert_eq!(
        sink.of("edg_twice").len(),
        2,
        "one check, run twice in 15 s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_channel_sink_receives_the_reports() {
    let executor = Scripted::taking(Duration::from_millis(10));
    let (send, mut received) = mpsc::channel(4);
    let (_targets, watch) = watch::channel(vec![target("edg_a", 10 * SECOND)]);
    Checker::new(executor, Arc::new(send))
        .run(watch, sleep(Duration::from_secs(15)))
        .await;
    let mut reports = Vec::new();
    while let Some(report) = received.recv().await {
        reports.push(report);
    }
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0].target, "edg_a");
}

#[cfg(feature = "executors")]
#[path = "executor/support.rs"]
#[allow(dead_code)] // shared with the executor tests, which use more of it
mod support;

/// Real time, real executor: a local server that answers, goes down (connections
/// refused), and comes back on the same port.
#[cfg(feature = "executors")]
#[tokio::test]
async fn the_default_executor_follows_a_server_down_and_up() {
    use kokoa_health::DefaultExecutor;
    use tokio::net::TcpSocket;

    let behaviour = || {
        Arc::new(Mutex::new(support::Behaviour {
            status: 200,
            body: "ok".into(),
            requests: Vec::new(),
            sni: Vec::new(),
        }))
    };
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let server = tokio::spawn(support::serve(
        socket.listen(64).unwrap(),
        None,
        behaviour(),
    ));

    let mut check = CheckConfig::http(format!("http://{addr}/health"));
    check.interval = Duration::from_millis(200);
    check.timeout = Duration::from_millis(200);
    check.retries = 0;
    let (_targets, watch) = watch::channel(vec![Target::new(
        "edg_local",
        [TargetCheck::new("http", check)],
    )]);
    let (send, mut received) = mpsc::channel(64);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let checker = Checker::new(Arc::new(DefaultExecutor::new()), Arc::new(send))
        .with_first_run_spread(Duration::ZERO);
    let running = tokio::spawn(async move {
        checker
            .run(watch, async { stopped.await.unwrap_or_default() })
            .await;
    });
    // The report that flips the state, within 5 s.
    let mut next_flip = async || loop {
        let report = tokio::time::timeout(Duration::from_secs(5), received.recv())
            .await
            .expect("a report within 5 s")
            .expect("checker running");
        if let Some(flip) = report.transition {
            return (flip, report);
        }
    };

    let (flip, _) = next_flip().await;
    assert_eq!(
        flip,
        Transition {
            from: HealthState::Unknown,
            to: HealthState::Healthy
        }
    );

    // Down: nothing listens, but the port stays ours.
    server.abort();
    let _ = server.await;
    let reserved = TcpSocket::new_v4().unwrap();
    reserved.set_reuseaddr(true).unwrap();
    reserved.bind(addr).unwrap();
    let (flip, report) = next_flip().await;
    assert_eq!(
        flip,
        Transition {
            from: HealthState::Healthy,
            to: HealthState::Unhealthy
        }
    );
    assert_eq!(
        report.outcome.error.as_deref(),
        Some(format!("cannot connect to {addr}: Connection refused").as_str())
    );
    assert_eq!(report.consecutive_failures, 3);

    // Up again on the same port.
    let server = tokio::spawn(support::serve(
        reserved.listen(64).unwrap(),
        None,
        behaviour(),
    ));
    let (flip, _) = next_flip().await;
    assert_eq!(
        flip,
        Transition {
            from: HealthState::Unhealthy,
            to: HealthState::Healthy
        }
    );

    stop.send(()).unwrap();
    running.await.unwrap();
    server.abort();
}
