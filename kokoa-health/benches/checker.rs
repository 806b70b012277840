//! What the checker itself costs, with an executor that answers at once and a sink that
//! only counts, on a 2-thread tokio runtime:
//!
//! 1. 1 000 targets every 10 s (SPEC 8.4's figure): runs per second sustained, and CPU
//!    time of the whole process per run, measured over 20 s after one interval of warm-up.
//! 2. The same targets every 1 ms: the most runs per second the scheduler can start with
//!    its 10 workers, and CPU time per run under that load.
//!
//! Run with `cargo bench -p kokoa-health`; figures are printed, nothing is asserted.
//! `KOKOA_BENCH_TARGETS` changes the number of targets.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use kokoa_health::{
    CheckConfig, CheckExecutor, CheckOutcome, CheckReport, CheckSink, Checker, Target, TargetCheck,
};
use rustix::time::{ClockId, clock_gettime};
use tokio::sync::watch;

#[derive(Debug)]
struct Instant0;

#[async_trait]
impl CheckExecutor for Instant0 {
    async fn check(&self, _: &CheckConfig) -> CheckOutcome {
        CheckOutcome::success(0)
    }
}

#[derive(Debug, Default)]
struct Count(AtomicU64);

#[async_trait]
impl CheckSink for Count {
    async fn record(&self, _: CheckReport) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn cpu() -> Duration {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn targets(count: usize, interval: Duration) -> Vec<Target> {
    (0..count)
        .map(|i| {
            let mut check = CheckConfig::https(format!("https://edge-{i}.bench.invalid/health"));
            check.interval = interval;
            check.timeout = interval;
            Target::new(format!("edg_{i:032x}"), [TargetCheck::new("http", check)])
        })
        .collect()
}

/// Runs `count` targets at `interval` for `warm_up + measure`; returns runs per second and
/// CPU time per run over the measured part.
async fn scenario(
    count: usize,
    interval: Duration,
    warm_up: Duration,
    measure: Duration,
) -> (f64, Duration) {
    let sink = Arc::new(Count::default());
    let (_send, watch) = watch::channel(targets(count, interval));
    let checker = Checker::new(Arc::new(Instant0), sink.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        checker
            .run(watch, async { stopped.await.unwrap_or_default() })
            .await;
    });
    tokio::time::sleep(warm_up).await;
    let (runs, cpu_start, wall) = (sink.0.load(Ordering::Relaxed), cpu(), Instant::now());
    tokio::time::sleep(measure).await;
    let runs = sink.0.load(Ordering::Relaxed) - runs;
    let (cpu_used, elapsed) = (cpu() - cpu_start, wall.elapsed());
    stop.send(()).unwrap();
    running.await.unwrap();
    (
        runs as f64 / elapsed.as_secs_f64(),
        cpu_used / runs.max(1) as u32,
    )
}

fn main() {
    let count = std::env::var("KOKOA_BENCH_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let (rate, per_run) =
            scenario(count, Duration::from_secs(10), Duration::from_secs(10), Duration::from_secs(20)).await;
        println!(
            "{count} targets every 10 s: {rate:.1} runs/s sustained (expected {:.1}), {:.1} µs CPU per run ({:.2} % of one core)",
            count as f64 / 10.0,
            per_run.as_secs_f64() * 1e6,
            rate * per_run.as_secs_f64() * 100.0
        );
        let (rate, per_run) =
            scenario(count, Duration::from_millis(1), Duration::from_secs(1), Duration::from_secs(5)).await;
        println!(
            "{count} targets every 1 ms (saturated): {rate:.0} runs/s, {:.1} µs CPU per run",
            per_run.as_secs_f64() * 1e6
        );
    });
}
