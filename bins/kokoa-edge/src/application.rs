//! The origins' application check, run from the edge through each tunnel (SPEC §8.4:
//! `GET http://<origin_wg_ip>/health`, 200 expected).
//!
//! The control plane is not on the tunnels, the edges are: each edge checks the origins it
//! reaches at the interval its configuration gives, and reports the result per tunnel in its
//! heartbeats once `failures` checks in a row failed or `recoveries` passed. The control
//! plane serves an origin's routes as 503 only when every edge with a verdict sees the
//! check failing, so one edge with a broken path cannot condemn an origin.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use kokoa_agent::LinkState;
use kokoa_core::{ApplicationCheck, EdgeConfig, OriginId};
use kokoa_health::{CheckStatus, HealthState, HealthTracker, Thresholds};
use tokio::task::JoinSet;

use crate::Error;

/// One origin to check: where, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationTarget {
    /// The origin.
    pub origin_id: OriginId,
    /// `http://<origin tunnel address>:<port>/health`.
    pub url: String,
    /// Timing and thresholds.
    pub check: ApplicationCheck,
}

/// The application checks `config` asks for, one per tunnel that has one.
pub fn application_targets(config: &EdgeConfig) -> Vec<ApplicationTarget> {
    config
        .content()
        .tunnels
        .iter()
        .filter_map(|t| {
            let check = t.application_check?;
            Some(ApplicationTarget {
                origin_id: t.origin_id.clone(),
                url: format!("http://{}:{}/health", t.origin_ip, check.port),
                check,
            })
        })
        .collect()
}

#[derive(Debug)]
struct Tracked {
    check: ApplicationCheck,
    tracker: HealthTracker,
    next: Instant,
}

/// The checks' state across rounds.
#[derive(Debug)]
pub struct ApplicationChecks {
    http: reqwest::Client,
    tracked: HashMap<OriginId, Tracked>,
}

/// Rounds come about once a second, each a little late. A check due within half a round
/// runs in this one: counted from the round's own time, a 2 s interval became 3 s whenever a
/// round came a little less late than the one before (three failures took up to 9 s, not 6).
const EARLY: Duration = Duration::from_millis(500);

impl ApplicationChecks {
    /// Checks with their own HTTP client (no redirects followed, no proxy).
    pub fn new() -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("kokoa-edge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| Error::Http {
                url: "(application check client)".into(),
                source,
            })?;
        Ok(Self {
            http,
            tracked: HashMap::new(),
        })
    }

    /// Runs the checks of `targets` that are due at `now`, at once, and forgets origins no
    /// longer among them. Returns whether any reported state changed.
    pub async fn round(&mut self, targets: &[ApplicationTarget], now: Instant) -> bool {
        let mut changed = false;
        let before = self.tracked.len();
        self.tracked
            .retain(|origin, _| targets.iter().any(|t| &t.origin_id == origin));
        changed |= self.tracked.len() != before;
        let mut running = JoinSet::new();
        for target in targets {
            let tracked = self
                .tracked
                .entry(target.origin_id.clone())
                .or_insert_with(|| Tracked::new(target.check, now));
            if tracked.check != target.check {
                // New thresholds: start over rather than judge by the old ones.
                changed |= tracked.tracker.state() != HealthState::Unknown;
                *tracked = Tracked::new(target.check, now);
            }
            if tracked.next > now + EARLY {
                continue;
            }
            // Kept on its own schedule, not counted from this round (unless far behind it).
            let interval = secs(target.check.interval_secs.get());
            tracked.next = if tracked.next + interval > now {
                tracked.next + interval
            } else {
                now + interval
            };
            let (http, target) = (self.http.clone(), target.clone());
            running.spawn(async move {
                let timeout = secs(target.check.timeout_secs.get());
                let passed = http
                    .get(&target.url)
                    .timeout(timeout)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
                (target, passed)
            });
        }
        while let Some(done) = running.join_next().await {
            let Ok((target, passed)) = done else { continue };
            let Some(tracked) = self.tracked.get_mut(&target.origin_id) else {
                continue;
            };
            let status = if passed {
                CheckStatus::Success
            } else {
                CheckStatus::Failure
            };
            if let Some(flip) = tracked.tracker.observe(status) {
                tracing::info!(origin = %target.origin_id, url = %target.url, from = ?flip.from, to = ?flip.to, "origin application check changed");
                changed = true;
            }
        }
        changed
    }

    /// The reported state of `origin`'s application: none while it has no verdict yet.
    pub fn state(&self, origin: &OriginId) -> Option<LinkState> {
        match self.tracked.get(origin)?.tracker.state() {
            HealthState::Healthy => Some(LinkState::Up),
            HealthState::Unhealthy => Some(LinkState::Down),
            HealthState::Unknown => None,
        }
    }
}

impl Tracked {
    fn new(check: ApplicationCheck, now: Instant) -> Self {
        // Both thresholds are at least 1 by their type.
        let thresholds = Thresholds::new(check.failures.get(), check.recoveries.get())
            .expect("thresholds are non-zero");
        Self {
            check,
            tracker: HealthTracker::new(thresholds, HealthState::Unknown),
            next: now,
        }
    }
}

fn secs(n: u32) -> Duration {
    Duration::from_secs(u64::from(n))
}

#[cfg(test)]
mod tests {
    use std::{
        num::NonZeroU32,
        sync::{
            Arc,
            atomic::{AtomicU16, Ordering},
        },
    };

    use axum::{Router, http::StatusCode, routing::get};
    use kokoa_core::Port;

    use super::*;

    fn check(port: u16) -> ApplicationCheck {
        let n = |v| NonZeroU32::new(v).unwrap();
        ApplicationCheck {
            port: Port::new(port).unwrap(),
            interval_secs: n(10),
            timeout_secs: n(1),
            failures: n(3),
            recoveries: n(2),
        }
    }

    #[tokio::test]
    async fn reports_after_the_thresholds_and_only_when_due() {
        let answer = Arc::new(AtomicU16::new(200));
        let served = Arc::clone(&answer);
        let app = Router::new().route(
            "/health",
            get(move || {
                let code = served.load(Ordering::SeqCst);
                async move { StatusCode::from_u16(code).unwrap() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let origin = OriginId::parse("org_1").unwrap();
        let target = ApplicationTarget {
            origin_id: origin.clone(),
            url: format!("http://127.0.0.1:{port}/health"),
            check: check(port),
        };
        let mut checks = ApplicationChecks::new().unwrap();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);

        assert!(!checks.round(std::slice::from_ref(&target), at(0)).await);
        assert_eq!(checks.state(&origin), None, "one pass is no verdict yet");
        // Not due again before the interval: nothing runs, nothing changes.
        assert!(!checks.round(std::slice::from_ref(&target), at(5)).await);
        // A round a little before the due time runs the check, and the schedule stays put.
        let early = at(10) - Duration::from_millis(300);
        assert!(checks.round(std::slice::from_ref(&target), early).await);
        assert_eq!(checks.state(&origin), Some(LinkState::Up));

        answer.store(500, Ordering::SeqCst);
        assert!(!checks.round(std::slice::from_ref(&target), at(20)).await);
        assert!(!checks.round(std::slice::from_ref(&target), at(30)).await);
        assert_eq!(checks.state(&origin), Some(LinkState::Up));
        assert!(checks.round(std::slice::from_ref(&target), at(40)).await);
        assert_eq!(checks.state(&origin), Some(LinkState::Down), "3 failures");

        answer.store(200, Ordering::SeqCst);
        assert!(!checks.round(std::slice::from_ref(&target), at(50)).await);
        assert!(checks.round(std::slice::from_ref(&target), at(60)).await);
        assert_eq!(checks.state(&origin), Some(LinkState::Up), "2 passes");

        // An origin no longer configured is forgotten.
        assert!(checks.round(&[], at(70)).await);
        assert_eq!(checks.state(&origin), None);
    }

    #[test]
    fn targets_come_from_tunnels_with_a_check() {
        let config = crate::tests::config_with_tunnels(&[Some(check(80)), None]);
        let targets = application_targets(&config);
        assert_eq!(targets.len(), 1, "{targets:?}");
        assert_eq!(targets[0].url, "http://10.0.1.1:80/health");
    }
}
