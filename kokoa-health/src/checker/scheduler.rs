//! The scheduling loop behind [`Checker`].

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    fmt,
    num::NonZeroUsize,
    pin::pin,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use tokio::{
    sync::{oneshot, watch},
    task::{self, JoinSet},
    time::{Instant, sleep_until},
};

use super::{CheckReport, CheckSink, Target, TargetCheck};
use crate::{CheckConfig, CheckExecutor, HealthTracker, shard::stable_hash};

/// Runs many targets' checks, each on its own schedule, through one executor, and hands
/// every result to a sink.
///
/// - The targets come from a [`watch`] channel: send a new list and targets added, changed
///   or removed take effect at once. A check whose configuration is unchanged keeps its
///   state, streak and schedule; a changed one keeps its state (and its streak if the
///   thresholds are the same) and runs again soon; a removed one is dropped, and its run
///   in progress is cancelled.
/// - Each check runs every `interval`, timed from the start of the previous run; a run
///   that ends late (or waited for a worker) is followed by the next one at once, never by
///   a burst. A check that appears first runs within
///   [`first_run_spread`](Self::with_first_run_spread) (2 s by default, at most its
///   interval), at a point derived from the target id and check name, so that a thousand
///   targets added at once do not fire in one instant.
/// - At most one run of a check is in flight, and at most
///   [`workers`](Self::with_workers) runs overall (10 by default, as in the specification).
///   A worker is busy until the sink has taken the report.
/// - Every outcome goes through the check's [`HealthTracker`]; the [`CheckReport`] carries
///   the resulting state and the [`Transition`](crate::Transition), reported once per flip.
/// - [`run`](Self::run) returns when the shutdown future resolves: runs still waiting for
///   the executor are cancelled, reports already being recorded are finished.
///
/// Invalid checks, duplicate check names and duplicate target ids are logged (`warn`) and
/// left out; validate configurations where they are entered.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use async_trait::async_trait;
/// use kokoa_health::{
///     CheckConfig, CheckExecutor, CheckOutcome, Checker, HealthState, Target, TargetCheck,
///     Transition,
/// };
/// use tokio::sync::{mpsc, watch};
///
/// /// An edge that stopped answering.
/// #[derive(Debug)]
/// struct Down;
///
/// #[async_trait]
/// impl CheckExecutor for Down {
///     async fn check(&self, _: &CheckConfig) -> CheckOutcome {
///         CheckOutcome::failure(5_000, "timed out after 5 s")
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // Restored as healthy after a restart of the control plane.
/// let check = TargetCheck::new("http", CheckConfig::https("https://203.0.113.7/health"))
///     .starting(HealthState::Healthy);
/// let (_targets, watch) = watch::channel(vec![Target::new("edg_7f3a", [check])]);
/// let (reports, mut received) = mpsc::channel(16);
/// let checker = Checker::new(Arc::new(Down), Arc::new(reports));
/// // Runs at about 0 s, 10 s and 20 s, then stops.
/// checker.run(watch, tokio::time::sleep(Duration::from_secs(25))).await;
/// drop(checker);
///
/// let mut flips = Vec::new();
/// while let Some(report) = received.recv().await {
///     flips.extend(report.transition.map(|flip| (report.consecutive_failures, flip)));
/// }
/// let unhealthy = Transition { from: HealthState::Healthy, to: HealthState::Unhealthy };
/// assert_eq!(flips, [(3, unhealthy)]);
/// # }
/// ```
#[derive(Clone)]
pub struct Checker {
    executor: Arc<dyn CheckExecutor>,
    sink: Arc<dyn CheckSink>,
    workers: NonZeroUsize,
    first_run_spread: Duration,
}

impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker")
            .field("workers", &self.workers)
            .field("first_run_spread", &self.first_run_spread)
            .finish_non_exhaustive()
    }
}

impl Checker {
    /// Runs in flight at most, by default (SPEC 8.4: 10 parallel workers).
    pub const DEFAULT_WORKERS: NonZeroUsize = NonZeroUsize::new(10).expect("10 is not zero");
    /// Window over which new checks' first runs are spread, by default.
    pub const DEFAULT_FIRST_RUN_SPREAD: Duration = Duration::from_secs(2);

    /// A checker running checks through `executor` and reporting to `sink`.
    pub fn new(executor: Arc<dyn CheckExecutor>, sink: Arc<dyn CheckSink>) -> Self {
        Self {
            executor,
            sink,
            workers: Self::DEFAULT_WORKERS,
            first_run_spread: Self::DEFAULT_FIRST_RUN_SPREAD,
        }
    }

    /// At most `workers` runs in flight at once.
    pub fn with_workers(mut self, workers: NonZeroUsize) -> Self {
        self.workers = workers;
        self
    }

    /// New checks first run within `spread` of appearing (within their interval if
    /// shorter); zero runs them at once.
    pub fn with_first_run_spread(mut self, spread: Duration) -> Self {
        self.first_run_spread = spread;
        self
    }

    /// Runs the checks of the targets in `targets` until `shutdown` resolves. If the
    /// sending side of `targets` is dropped, the last list keeps being checked.
    pub async fn run(
        &self,
        mut targets: watch::Receiver<Vec<Target>>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut shutdown = pin!(shutdown);
        let mut schedule = Schedule::new(self.first_run_spread);
        schedule.apply(&targets.borrow_and_update(), Instant::now());
        let mut running = JoinSet::new();
        let mut runs: HashMap<task::Id, (u64, Instant)> = HashMap::new();
        let mut targets_open = true;
        loop {
            let now = Instant::now();
            while running.len() < self.workers.get() {
                let Some((id, due)) = schedule.pop_due(now) else {
                    break;
                };
                let slot = schedule.slots.get_mut(&id).expect("popped slots exist");
                let (cancel, cancelled) = oneshot::channel();
                slot.cancel = Some(cancel);
                let run = Run {
                    executor: self.executor.clone(),
                    sink: self.sink.clone(),
                    target: slot.target.clone(),
                    check: slot.check.clone(),
                    config: slot.config.clone(),
                    tracker: slot.tracker.clone(),
                };
                let handle = running.spawn(run.go(cancelled));
                runs.insert(handle.id(), (id, due));
            }
            let wake = if running.len() < self.workers.get() {
                schedule.next_due()
            } else {
                None
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                changed = targets.changed(), if targets_open => match changed {
                    Ok(()) => schedule.apply(&targets.borrow_and_update(), Instant::now()),
                    Err(_) => targets_open = false,
                },
                Some(done) = running.join_next_with_id() => {
                    let task = match done {
                        Ok((task, ())) => task,
                        Err(error) => {
                            if error.is_panic() {
                                tracing::error!(%error, "a check run panicked; the check is rescheduled");
                            }
                            error.id()
                        }
                    };
                    if let Some((id, due)) = runs.remove(&task) {
                        schedule.finished(id, due, Instant::now());
                    }
                }
                () = sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
            }
        }
        // Dropping the slots cancels every run still waiting for its executor.
        drop(schedule);
        while running.join_next().await.is_some() {}
    }
}

/// Everything one run needs, owned, so that it can be spawned.
struct Run {
    executor: Arc<dyn CheckExecutor>,
    sink: Arc<dyn CheckSink>,
    target: Arc<str>,
    check: Arc<str>,
    config: Arc<CheckConfig>,
    tracker: Arc<Mutex<HealthTracker>>,
}

impl Run {
    /// Runs the check unless `cancelled` closes first, then records the report.
    async fn go(self, mut cancelled: oneshot::Receiver<()>) {
        let outcome = tokio::select! {
            biased;
            _ = &mut cancelled => return,
            outcome = self.executor.check(&self.config) => outcome,
        };
        if cancelled.try_recv() != Err(oneshot::error::TryRecvError::Empty) {
            return; // removed while the executor was finishing
        }
        let report = {
            let mut tracker = self.tracker.lock().unwrap_or_else(PoisonError::into_inner);
            let transition = tracker.observe(outcome.status);
            CheckReport {
                target: self.target.to_string(),
                check: self.check.to_string(),
                kind: self.config.kind,
                outcome,
                at: SystemTime::now(),
                state: tracker.state(),
                consecutive_failures: tracker.consecutive_failures(),
                transition,
            }
        };
        self.sink.record(report).await;
    }
}

/// A check the checker runs.
struct Slot {
    target: Arc<str>,
    check: Arc<str>,
    config: Arc<CheckConfig>,
    /// Shared with the run in flight, and kept when the configuration changes.
    tracker: Arc<Mutex<HealthTracker>>,
    /// When the next run is due; `None` while one is in flight.
    due: Option<Instant>,
    /// Held while a run is in flight; dropping it cancels the run.
    cancel: Option<oneshot::Sender<()>>,
}

/// The checks, by target and name, and the queue of their next runs.
struct Schedule {
    spread: Duration,
    slots: HashMap<u64, Slot>,
    index: HashMap<String, HashMap<String, u64>>,
    /// Due times; an entry whose slot is gone or has another due time is stale.
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    next_id: u64,
}

impl Schedule {
    fn new(spread: Duration) -> Self {
        Self {
            spread,
            slots: HashMap::new(),
            index: HashMap::new(),
            queue: BinaryHeap::new(),
            next_id: 0,
        }
    }

    /// Makes the checks those of `targets`.
    fn apply(&mut self, targets: &[Target], now: Instant) {
        let mut previous = std::mem::take(&mut self.index);
        for target in targets {
            if self.index.contains_key(&target.id) {
                tracing::warn!(target = %target.id, "target listed twice; only the first is checked");
                continue;
            }
            let target_id: Arc<str> = Arc::from(target.id.as_str());
            let mut old = previous.remove(&target.id).unwrap_or_default();
            let mut checks = HashMap::with_capacity(target.checks.len());
            for check in &target.checks {
                if checks.contains_key(&check.name) {
                    tracing::warn!(target = %target.id, check = %check.name, "check name used twice; only the first is run");
                    continue;
                }
                let thresholds = match check.config.validate().and(check.config.thresholds()) {
                    Ok(thresholds) => thresholds,
                    Err(error) => {
                        tracing::warn!(target = %target.id, check = %check.name, %error, "invalid check is not run");
                        continue;
                    }
                };
                let id = match old.remove(&check.name) {
                    Some(id) if *self.slots[&id].config == check.config => id,
                    Some(id) => {
                        let replaced = self.slots.remove(&id).expect("indexed slots exist");
                        let tracker = replaced.tracker;
                        {
                            let mut tracker =
                                tracker.lock().unwrap_or_else(PoisonError::into_inner);
                            if tracker.thresholds() != thresholds {
                                *tracker = HealthTracker::new(thresholds, tracker.state());
                            }
                        }
                        self.insert(&target_id, check, tracker, now)
                    }
                    None => {
                        let tracker = HealthTracker::new(thresholds, check.initial);
                        self.insert(&target_id, check, Arc::new(Mutex::new(tracker)), now)
                    }
                };
                checks.insert(check.name.clone(), id);
            }
            for id in old.into_values() {
                self.slots.remove(&id);
            }
            self.index.insert(target.id.clone(), checks);
        }
        for id in previous.into_values().flat_map(HashMap::into_values) {
            self.slots.remove(&id);
        }
    }

    fn insert(
        &mut self,
        target: &Arc<str>,
        check: &TargetCheck,
        tracker: Arc<Mutex<HealthTracker>>,
        now: Instant,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let due =
            now + first_run_delay(target, &check.name, self.spread.min(check.config.interval));
        self.queue.push(Reverse((due, id)));
        self.slots.insert(
            id,
            Slot {
                target: target.clone(),
                check: Arc::from(check.name.as_str()),
                config: Arc::new(check.config.clone()),
                tracker,
                due: Some(due),
                cancel: None,
            },
        );
        id
    }

    fn is_current(&self, due: Instant, id: u64) -> bool {
        self.slots
            .get(&id)
            .is_some_and(|slot| slot.due == Some(due))
    }

    /// The earliest run due by `now`, taken off the queue.
    fn pop_due(&mut self, now: Instant) -> Option<(u64, Instant)> {
        while let Some(&Reverse((due, id))) = self.queue.peek() {
            if due > now {
                return None;
            }
            self.queue.pop();
            if self.is_current(due, id) {
                self.slots.get_mut(&id).expect("current slots exist").due = None;
                return Some((id, due));
            }
        }
        None
    }

    /// When the next run is due.
    fn next_due(&mut self) -> Option<Instant> {
        while let Some(&Reverse((due, id))) = self.queue.peek() {
            if self.is_current(due, id) {
                return Some(due);
            }
            self.queue.pop();
        }
        None
    }

    /// Schedules the run after the one of slot `id` that was due at `due`.
    fn finished(&mut self, id: u64, due: Instant, now: Instant) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return; // removed or replaced meanwhile
        };
        slot.cancel = None;
        let next = (due + slot.config.interval).max(now);
        slot.due = Some(next);
        self.queue.push(Reverse((next, id)));
    }
}

/// A point in `[0, spread)` fixed by the target and check names.
fn first_run_delay(target: &str, check: &str, spread: Duration) -> Duration {
    let fraction = stable_hash(&[target.as_bytes(), check.as_bytes()]) as f64 / 2f64.powi(64);
    spread.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_runs_are_spread_deterministically_within_the_window() {
        let spread = Duration::from_secs(2);
        let delays: Vec<Duration> = (0..1000)
            .map(|i| first_run_delay(&format!("edg_{i}"), "http", spread))
            .collect();
        assert!(delays.iter().all(|d| *d < spread));
        assert_eq!(delays[7], first_run_delay("edg_7", "http", spread));
        // Evenly: each tenth of the window gets 100 ± 40 of the 1000 first runs.
        for tenth in 0..10 {
            let (from, to) = (spread / 10 * tenth, spread / 10 * (tenth + 1));
            let count = delays.iter().filter(|d| (from..to).contains(*d)).count();
            assert!(
                (60..=140).contains(&count),
                "{count} first runs in tenth {tenth}"
            );
        }
        assert_eq!(
            first_run_delay("edg_7", "http", Duration::ZERO),
            Duration::ZERO
        );
    }
}
