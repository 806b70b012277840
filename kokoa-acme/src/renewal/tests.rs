use proptest::prelude::*;

use super::*;

const DAY_SECS: i64 = 86_400;

fn at(rfc3339: &str) -> Timestamp {
    Timestamp::parse_rfc3339(rfc3339).unwrap()
}

fn ts(seconds: i64) -> Timestamp {
    Timestamp::from_unix(seconds).unwrap()
}

fn status(
    not_before: Timestamp,
    not_after: Timestamp,
    policy: &RenewalPolicy,
) -> CertificateStatus {
    CertificateStatus::new(
        ["app.hoge.com".parse().unwrap()].into(),
        "CN=Test".into(),
        not_before,
        not_after,
        policy,
    )
}

#[test]
fn a_90_day_certificate_renews_30_days_before_expiry_by_default() {
    let renewal = RenewalPolicy::default()
        .next_renewal(at("2025-01-01T00:00:00Z"), at("2025-04-01T00:00:00Z"));
    assert_eq!(renewal, at("2025-03-02T00:00:00Z"));
}

#[test]
fn short_lived_certificates_renew_at_two_thirds_of_their_life() {
    // A 6-day certificate with "30 days before" would be renewed forever; it waits 4 days.
    let renewal = RenewalPolicy::default()
        .next_renewal(at("2025-01-01T00:00:00Z"), at("2025-01-07T00:00:00Z"));
    assert_eq!(renewal, at("2025-01-05T00:00:00Z"));
}

fn window(start: &str, end: &str) -> AriWindow {
    AriWindow {
        start: at(start),
        end: at(end),
    }
}

fn info(window: AriWindow, retry_after: u64) -> RenewalInfo {
    RenewalInfo {
        window,
        explanation_url: None,
        retry_after: Duration::from_secs(retry_after),
    }
}

#[test]
fn the_ca_window_wins_but_never_past_expiry() {
    let policy = RenewalPolicy::default();
    let (issued, expires) = (at("2025-01-01T00:00:00Z"), at("2025-04-01T00:00:00Z"));
    let mut s = status(issued, expires, &policy);
    let now = at("2025-01-01T00:00:10Z");
    assert!(s.is_renewal_info_due(now), "asked right after issuance");

    let early = window("2025-01-10T00:00:00Z", "2025-01-11T00:00:00Z");
    s.record_renewal_info(&policy, info(early, 3600), now, 0);
    assert_eq!(s.next_renewal, early.start);
    assert_eq!(s.ari_window, Some(early));
    assert_eq!(s.ari_next_check, Some(at("2025-01-01T01:00:10Z")));

    let late = window("2025-05-01T00:00:00Z", "2025-05-02T00:00:00Z");
    s.record_renewal_info(&policy, info(late, 3600), now, 12345);
    assert_eq!(s.next_renewal, expires);
}

#[test]
fn the_same_window_keeps_its_time_and_a_new_one_is_picked_again() {
    let policy = RenewalPolicy::default();
    let mut s = status(
        at("2025-01-01T00:00:00Z"),
        at("2025-04-01T00:00:00Z"),
        &policy,
    );
    let now = at("2025-01-02T00:00:00Z");
    let first = window("2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z");
    s.record_renewal_info(&policy, info(first, 21600), now, 7200);
    assert_eq!(s.next_renewal, at("2025-03-01T02:00:00Z"));
    // Six hours later the CA says the same: the time picked before stays.
    s.record_renewal_info(
        &policy,
        info(first, 21600),
        at("2025-01-02T06:00:00Z"),
        50_000,
    );
    assert_eq!(s.next_renewal, at("2025-03-01T02:00:00Z"));
    // The CA moves the window forward (e.g. before a revocation): renew in the new one.
    let urgent = window("2025-01-02T06:00:00Z", "2025-01-02T12:00:00Z");
    s.record_renewal_info(&policy, info(urgent, 21600), at("2025-01-02T07:00:00Z"), 60);
    assert_eq!(s.next_renewal, at("2025-01-02T06:01:00Z"));
    assert!(s.is_due(at("2025-01-02T07:00:00Z")));
}

#[test]
fn retry_after_is_kept_between_a_minute_and_a_day() {
    let policy = RenewalPolicy::default();
    let mut s = status(
        at("2025-01-01T00:00:00Z"),
        at("2025-04-01T00:00:00Z"),
        &policy,
    );
    let w = window("2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z");
    let now = at("2025-01-02T00:00:00Z");
    for (retry_after, next) in [
        (0, "2025-01-02T00:01:00Z"),
        (59, "2025-01-02T00:01:00Z"),
        (21600, "2025-01-02T06:00:00Z"),
        (86_400, "2025-01-03T00:00:00Z"),
        (30 * 86_400, "2025-01-03T00:00:00Z"),
    ] {
        s.record_renewal_info(&policy, info(w, retry_after), now, 0);
        assert_eq!(
            s.ari_next_check,
            Some(at(next)),
            "Retry-After {retry_after}"
        );
    }
}

#[test]
fn failed_checks_keep_the_plan_and_back_off() {
    let policy = RenewalPolicy::default();
    let mut s = status(
        at("2025-01-01T00:00:00Z"),
        at("2025-04-01T00:00:00Z"),
        &policy,
    );
    let w = window("2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z");
    s.record_renewal_info(&policy, info(w, 21600), at("2025-01-02T00:00:00Z"), 3600);
    let planned = s.clone();
    let now = at("2025-01-02T06:00:00Z");
    s.record_renewal_info_failure(&policy, now);
    s.record_renewal_info_failure(&policy, now);
    assert_eq!(s.next_renewal, planned.next_renewal);
    assert_eq!(s.ari_window, planned.ari_window);
    assert_eq!(s.ari_failures, 2);
    assert_eq!(s.ari_next_check, Some(at("2025-01-02T06:02:00Z")));
    // An invalid window (end not after start) is no answer at all.
    let backwards = AriWindow {
        start: w.end,
        end: w.start,
    };
    s.record_renewal_info(&policy, info(backwards, 60), now, 0);
    assert_eq!(s.next_renewal, planned.next_renewal);
    assert_eq!(s.ari_failures, 3);
    // A good answer resets the count.
    s.record_renewal_info(&policy, info(w, 21600), now, 0);
    assert_eq!(s.ari_failures, 0);
    // A CA without renewal information is not asked again; the plan stays.
    s.record_no_renewal_info();
    assert!(!s.is_renewal_info_due(at("2030-01-01T00:00:00Z")));
    assert_eq!(s.next_renewal, planned.next_renewal);
}

#[test]
fn a_window_does_not_undo_the_backoff_of_a_failed_renewal() {
    let policy = RenewalPolicy::default();
    let mut s = status(
        at("2025-01-01T00:00:00Z"),
        at("2025-04-01T00:00:00Z"),
        &policy,
    );
    let now = at("2025-03-02T00:00:00Z");
    s.record_failure(&policy, "rate limited", now);
    s.record_failure(&policy, "rate limited", now);
    let retry = s.next_renewal;
    assert_eq!(retry, at("2025-03-02T00:02:00Z"));
    let past = window("2025-03-01T00:00:00Z", "2025-03-01T01:00:00Z");
    s.record_renewal_info(&policy, info(past, 21600), now, 0);
    assert_eq!(s.next_renewal, retry);
}

#[test]
fn old_statuses_without_renewal_information_still_load() {
    let json = r#"{"domains":["app.hoge.com"],"issuer":"CN=R11",
        "not_before":"2025-01-01T00:00:00Z","not_after":"2025-04-01T00:00:00Z",
        "next_renewal":"2025-03-02T00:00:00Z","failures":0,"last_error":null}"#;
    let s: CertificateStatus = serde_json::from_str(json).unwrap();
    assert_eq!(s.ari_window, None);
    assert_eq!(s.ari_failures, 0);
}

#[test]
fn retries_double_from_one_minute_up_to_six_hours() {
    let policy = RenewalPolicy::default();
    let delays: Vec<u64> = (0..=11).map(|n| policy.retry_delay(n).as_secs()).collect();
    assert_eq!(
        delays,
        [
            60, 60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 21600, 21600
        ]
    );
    assert_eq!(policy.retry_delay(u32::MAX).as_secs(), 21600);
}

#[test]
fn a_failure_is_recorded_and_a_success_starts_afresh() {
    let policy = RenewalPolicy::default();
    let mut s = status(
        at("2025-01-01T00:00:00Z"),
        at("2025-04-01T00:00:00Z"),
        &policy,
    );
    let now = at("2025-03-05T12:00:00Z");
    s.record_failure(&policy, "connection refused", now);
    s.record_failure(&policy, "timed out", now);
    assert_eq!(s.failures, 2);
    assert_eq!(s.last_error.as_deref(), Some("timed out"));
    assert_eq!(s.next_renewal, at("2025-03-05T12:02:00Z"));
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<CertificateStatus>(&json).unwrap(), s);
    assert!(
        json.contains(r#""next_renewal":"2025-03-05T12:02:00Z""#),
        "{json}"
    );
}

fn validity() -> impl Strategy<Value = (i64, i64)> {
    // From a minute to ten years, starting anywhere between 2000 and 2100.
    (946_684_800i64..4_102_444_800, 60i64..3650 * DAY_SECS)
        .prop_map(|(start, life)| (start, start + life))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Renewal happens between two thirds of the lifetime and expiry, and no more than
    /// `renew_before` ahead of expiry.
    #[test]
    fn renewal_lies_inside_its_window((start, end) in validity(), days in 0u32..400) {
        let policy = RenewalPolicy::renew_days_before(days);
        let renewal = policy.next_renewal(ts(start), ts(end)).as_unix();
        prop_assert!(renewal <= end);
        prop_assert!(renewal >= start + (end - start) * 2 / 3);
        prop_assert!(renewal >= end - i64::from(days) * DAY_SECS);
        // Inside the window it is due at once; before it, never.
        let s = status(ts(start), ts(end), &policy);
        prop_assert!(s.is_due(ts(renewal)));
        prop_assert!(!s.is_due(ts(renewal - 1)));
    }

    /// For any clock, due exactly from the renewal time on.
    #[test]
    fn due_exactly_from_the_renewal_time((start, end) in validity(), offset in -400 * DAY_SECS..400 * DAY_SECS) {
        let policy = RenewalPolicy::default();
        let s = status(ts(start), ts(end), &policy);
        let now = ts(s.next_renewal.as_unix() + offset);
        prop_assert_eq!(s.is_due(now), offset >= 0);
    }

    /// Any random number picks a time inside the window, and every second of a small
    /// window can be picked.
    #[test]
    fn a_picked_time_lies_inside_the_window(start in 0i64..4_102_444_800, span in 1i64..400 * DAY_SECS, random: u64) {
        let window = AriWindow { start: ts(start), end: ts(start + span) };
        let picked = window.pick(random).unwrap().as_unix();
        prop_assert!(start <= picked && picked < start + span);
        prop_assert_eq!(picked - start, (random % span as u64) as i64);
        let backwards = AriWindow { start: window.end, end: window.start };
        let empty = AriWindow { start: window.start, end: window.start };
        prop_assert!(backwards.pick(random).is_none() && empty.pick(random).is_none());
    }

    /// Backoff never shrinks, starts at `first_retry` and stays at most `max_retry`.
    #[test]
    fn backoff_is_monotone_and_bounded(first in 1u64..7200, max in 1u64..86_400, n in 0u32..200) {
        let policy = RenewalPolicy {
            first_retry: Duration::from_secs(first),
            max_retry: Duration::from_secs(max),
            ..RenewalPolicy::default()
        };
        prop_assert!(policy.retry_delay(n) <= policy.retry_delay(n + 1));
        prop_assert!(policy.retry_delay(n) <= policy.max_retry);
        prop_assert_eq!(policy.retry_delay(1), policy.first_retry.min(policy.max_retry));
    }

    /// A run of failures at any times never moves renewal earlier, never before the
    /// window, and each retry is not due before its backoff delay has passed.
    #[test]
    fn failures_never_pull_renewal_earlier(
        (start, end) in validity(),
        gaps in proptest::collection::vec(0i64..30 * DAY_SECS, 1..12),
        early in -100 * DAY_SECS..0,
    ) {
        let policy = RenewalPolicy::default();
        let mut s = status(ts(start), ts(end), &policy);
        let window = s.next_renewal;
        // Even a failure recorded before the window (a manual attempt) keeps the plan.
        let mut now = ts(window.as_unix() + early);
        for gap in gaps {
            let before = s.next_renewal;
            s.record_failure(&policy, "failed", now);
            prop_assert!(s.next_renewal >= before);
            prop_assert!(s.next_renewal >= window);
            let delay = policy.retry_delay(s.failures).as_secs() as i64;
            prop_assert!(s.next_renewal.as_unix() >= now.as_unix() + delay);
            prop_assert!(!s.is_due(now));
            now = ts(now.as_unix() + gap);
        }
    }
}
