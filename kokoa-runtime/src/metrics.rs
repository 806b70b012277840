//! What the duties did, counted since the process started, in the Prometheus text
//! exposition format (0.0.4): runs by outcome with durations and last success, DNS changes
//! and provider calls by zone, ACME orders by outcome, leadership changes and the edges'
//! lifecycle steps. Labels are bounded by the configuration.

use std::{collections::BTreeMap, fmt::Write as _, sync::Mutex, time::Duration};

use kokoa_agent::prometheus::{Histogram, MINUTE_BUCKETS, escape, family, number};

/// The duties whose runs are counted, as their `duty` label.
pub const DUTIES: [&str; 4] = [
    "dns_manager",
    "edge_automation",
    "health_judge",
    "key_rotation",
];

/// What the duties did since this control plane started: every series of a duty and of
/// an ACME outcome exists from the start (at 0), so rules can compare them at once.
#[derive(Debug, Default)]
pub struct DutyMetrics {
    inner: Mutex<DutySeries>,
}

#[derive(Debug, Default)]
struct DutySeries {
    /// By (duty, succeeded).
    runs: BTreeMap<(&'static str, bool), u64>,
    durations: BTreeMap<&'static str, Histogram>,
    /// Unix time of each duty's last successful run.
    last_success: BTreeMap<&'static str, f64>,
    /// By (zone, action): records created, updated or deleted at the provider.
    dns_changes: BTreeMap<(String, &'static str), u64>,
    /// By zone: changes the provider refused, and rounds the zone could not be planned.
    dns_failures: BTreeMap<String, u64>,
    /// Calls to the DNS providers by (provider, zone, operation, succeeded).
    dns_calls: BTreeMap<(&'static str, String, &'static str, bool), u64>,
    /// Their durations by (provider, zone).
    dns_call_seconds: BTreeMap<(&'static str, String), Histogram>,
    /// By outcome (`issued`, `failed`).
    acme_orders: BTreeMap<&'static str, u64>,
    /// By change (`acquired`, `lost`).
    leader_changes: BTreeMap<&'static str, u64>,
    /// By (provider, step).
    edge_steps: BTreeMap<(String, String), u64>,
    /// Seconds from an edge's creation to each step, by step.
    edge_step_seconds: BTreeMap<String, Histogram>,
    /// Failed lifecycle attempts, by provider.
    edge_failures: BTreeMap<String, u64>,
}

impl DutyMetrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, DutySeries> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one run of `duty` (one of [`DUTIES`]) that took `took`.
    pub fn run(&self, duty: &'static str, succeeded: bool, took: Duration) {
        let mut series = self.lock();
        *series.runs.entry((duty, succeeded)).or_default() += 1;
        series
            .durations
            .entry(duty)
            .or_default()
            .observe(took.as_secs_f64());
        if succeeded {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            series.last_success.insert(duty, now.as_secs_f64());
        }
    }

    /// Counts what a DNS round did in `zone`: changes made by action, and failures.
    pub fn dns_round(&self, zone: &str, made: &[&'static str], failures: usize) {
        let mut series = self.lock();
        for action in made {
            *series
                .dns_changes
                .entry((zone.to_owned(), action))
                .or_default() += 1;
        }
        *series.dns_failures.entry(zone.to_owned()).or_default() += failures as u64;
    }

    /// Counts a call to a zone's DNS provider and its duration.
    pub fn dns_call(&self, zone: &str, call: &kokoa_dns::Call) {
        let mut series = self.lock();
        *series
            .dns_calls
            .entry((call.provider, zone.to_owned(), call.operation, call.ok))
            .or_default() += 1;
        series
            .dns_call_seconds
            .entry((call.provider, zone.to_owned()))
            .or_default()
            .observe(call.duration.as_secs_f64());
    }

    /// Counts an ACME order that ended `issued` or `failed`.
    pub fn acme_order(&self, issued: bool) {
        *self
            .lock()
            .acme_orders
            .entry(if issued { "issued" } else { "failed" })
            .or_default() += 1;
    }

    /// Counts this control plane taking the lease (`acquired`) or losing it.
    pub fn leader_change(&self, acquired: bool) {
        *self
            .lock()
            .leader_changes
            .entry(if acquired { "acquired" } else { "lost" })
            .or_default() += 1;
    }

    /// Counts an edge at `provider` reaching `step` of its lifecycle (`instance_created`,
    /// `enrolled`, …, `destroyed`) `seconds` after it was created.
    pub fn edge_step(&self, provider: &str, step: &str, seconds: i64) {
        let mut series = self.lock();
        *series
            .edge_steps
            .entry((provider.to_owned(), step.to_owned()))
            .or_default() += 1;
        series
            .edge_step_seconds
            .entry(step.to_owned())
            .or_insert_with(|| Histogram::with_bounds(&MINUTE_BUCKETS))
            .observe(seconds.max(0) as f64);
    }

    /// Counts a failed attempt of an edge's lifecycle at `provider`.
    pub fn edge_failure(&self, provider: &str) {
        *self
            .lock()
            .edge_failures
            .entry(provider.to_owned())
            .or_default() += 1;
    }

    /// Writes every series in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let series = self.lock();
        family(
            out,
            "kokoa_duty_runs_total",
            "counter",
            "Runs of the leader's duties by outcome (ok, failed).",
        );
        for duty in DUTIES {
            for (outcome, succeeded) in [("ok", true), ("failed", false)] {
                let count = series.runs.get(&(duty, succeeded)).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "kokoa_duty_runs_total{{duty=\"{duty}\",outcome=\"{outcome}\"}} {count}"
                );
            }
        }
        family(
            out,
            "kokoa_duty_run_duration_seconds",
            "histogram",
            "How long the duties' runs took.",
        );
        for duty in DUTIES {
            let histogram = series.durations.get(duty).cloned().unwrap_or_default();
            histogram.write(
                out,
                "kokoa_duty_run_duration_seconds",
                &format!("duty=\"{duty}\""),
            );
        }
        family(
            out,
            "kokoa_duty_last_success_timestamp_seconds",
            "gauge",
            "When each duty last ran without a failure (Unix time; absent before the first).",
        );
        for (duty, at) in &series.last_success {
            let _ = writeln!(
                out,
                "kokoa_duty_last_success_timestamp_seconds{{duty=\"{duty}\"}} {}",
                number(*at)
            );
        }
        family(
            out,
            "kokoa_dns_changes_total",
            "counter",
            "DNS records created, updated or deleted at the providers, by zone and action.",
        );
        for ((zone, action), count) in &series.dns_changes {
            let _ = writeln!(
                out,
                "kokoa_dns_changes_total{{zone=\"{}\",action=\"{action}\"}} {count}",
                escape(zone)
            );
        }
        family(
            out,
            "kokoa_dns_failures_total",
            "counter",
            "DNS changes a provider refused, and rounds a zone could not be planned, by zone.",
        );
        for (zone, count) in &series.dns_failures {
            let _ = writeln!(
                out,
                "kokoa_dns_failures_total{{zone=\"{}\"}} {count}",
                escape(zone)
            );
        }
        family(
            out,
            "kokoa_dns_provider_calls_total",
            "counter",
            "Calls to the DNS providers' APIs by provider, zone, operation and outcome (ok, \
             failed).",
        );
        for ((provider, zone, operation, ok), count) in &series.dns_calls {
            let _ = writeln!(
                out,
                "kokoa_dns_provider_calls_total{{provider=\"{provider}\",zone=\"{}\",\
                 operation=\"{operation}\",outcome=\"{}\"}} {count}",
                escape(zone),
                if *ok { "ok" } else { "failed" }
            );
        }
        family(
            out,
            "kokoa_dns_provider_call_duration_seconds",
            "histogram",
            "How long calls to the DNS providers' APIs took, by provider and zone.",
        );
        for ((provider, zone), histogram) in &series.dns_call_seconds {
            histogram.write(
                out,
                "kokoa_dns_provider_call_duration_seconds",
                &format!("provider=\"{provider}\",zone=\"{}\"", escape(zone)),
            );
        }
        family(
            out,
            "kokoa_acme_orders_total",
            "counter",
            "Certificate orders by outcome (issued, failed), the control plane's own included.",
        );
        for outcome in ["issued", "failed"] {
            let count = series.acme_orders.get(outcome).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "kokoa_acme_orders_total{{outcome=\"{outcome}\"}} {count}"
            );
        }
        family(
            out,
            "kokoa_leader_changes_total",
            "counter",
            "Times this control plane took the leader lease (acquired) or lost it.",
        );
        for change in ["acquired", "lost"] {
            let count = series.leader_changes.get(change).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "kokoa_leader_changes_total{{change=\"{change}\"}} {count}"
            );
        }
        family(
            out,
            "kokoa_lifecycle_steps_total",
            "counter",
            "Edges that reached a step of their lifecycle (instance_created … serving, \
             dns_removed, destroyed), by provider.",
        );
        for ((provider, step), count) in &series.edge_steps {
            let _ = writeln!(
                out,
                "kokoa_lifecycle_steps_total{{provider=\"{}\",step=\"{}\"}} {count}",
                escape(provider),
                escape(step)
            );
        }
        family(
            out,
            "kokoa_lifecycle_step_seconds",
            "histogram",
            "Seconds from an edge's creation to each step of its lifecycle.",
        );
        for (step, histogram) in &series.edge_step_seconds {
            histogram.write(
                out,
                "kokoa_lifecycle_step_seconds",
                &format!("step=\"{}\"", escape(step)),
            );
        }
        family(
            out,
            "kokoa_lifecycle_failures_total",
            "counter",
            "Failed attempts of the edges' lifecycle (a provider call, a timeout), by provider.",
        );
        for (provider, count) in &series.edge_failures {
            let _ = writeln!(
                out,
                "kokoa_lifecycle_failures_total{{provider=\"{}\"}} {count}",
                escape(provider)
            );
        }
    }
}
