//! What the control plane did and why: events (SPEC §8.7), kept in the store, shown at
//! `GET /api/v1/events` and delivered to notification sinks.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Timestamp};

/// Longest event kind accepted.
const MAX_KIND_LEN: usize = 100;

/// The type of an event, e.g. `edge.ready`, `dns.record.added`, `edge_node_unhealthy`
/// (SPEC §8.7): 1–100 characters of `a-z`, `0-9`, `.`, `_` and `-`.
///
/// ```
/// use kokoa_core::EventKind;
/// let kind = EventKind::parse("dns.record.added")?;
/// assert!(kind.matches("dns.*") && kind.matches("dns.record.added"));
/// assert!(!kind.matches("edge.*") && !kind.matches("dns"));
/// assert!(EventKind::parse("DNS added").is_err());
/// # Ok::<(), kokoa_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKind(String);

impl EventKind {
    /// Validates an event kind.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let ok = (1..=MAX_KIND_LEN).contains(&input.len())
            && input
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if ok {
            Ok(Self(input.to_owned()))
        } else {
            Err(Error::InvalidEventKind {
                input: input.chars().take(MAX_KIND_LEN + 1).collect(),
            })
        }
    }

    /// The kind as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the kind matches `pattern`: the kind itself, `*` for every kind, or a prefix
    /// followed by `*` (`edge.*` matches `edge.ready`).
    pub fn matches(&self, pattern: &str) -> bool {
        match pattern.strip_suffix('*') {
            Some(prefix) => self.0.starts_with(prefix),
            None => self.0 == pattern,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventKind({})", self.0)
    }
}

impl FromStr for EventKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How much an event matters to a person.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Severity {
    /// Something happened as planned (an edge became ready, a record was added).
    #[default]
    Info,
    /// Someone should look (an edge was judged unhealthy and replaced).
    Warning,
    /// Someone should look now (no healthy edge left, a disk is full).
    Critical,
}

impl Severity {
    /// The word used in the API and the database, e.g. `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event as recorded: numbered in the order the store received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its number; later events have larger numbers.
    pub id: i64,
    /// What happened, e.g. `edge.ready`.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// How much it matters.
    pub severity: Severity,
    /// What it is about, usually an id such as `edg_…` or a host name.
    pub subject: Option<String>,
    /// One sentence for a person: "edge edge-sgp1-01 is ready".
    pub message: String,
    /// The details, as a JSON object (SPEC §8.7 gives the fields per type).
    pub data: serde_json::Value,
    /// When it happened.
    pub created_at: Timestamp,
}

/// An event to record; the store numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// How much it matters.
    pub severity: Severity,
    /// What it is about.
    pub subject: Option<String>,
    /// One sentence for a person.
    pub message: String,
    /// The details, a JSON object.
    pub data: serde_json::Value,
    /// When it happened.
    pub created_at: Timestamp,
}

/// Which events to list, and in which order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events numbered above this one; the list is then oldest first (to follow the
    /// log). Without it the newest come first.
    pub after: Option<i64>,
    /// Only events numbered below this one (to page back through the log).
    pub before: Option<i64>,
    /// Only kinds matching this pattern (see [`EventKind::matches`]).
    pub kind: Option<String>,
    /// Only events about this subject.
    pub subject: Option<String>,
    /// Only events at least this severe.
    pub min_severity: Option<Severity>,
    /// At most this many.
    pub limit: u32,
}

impl Default for EventFilter {
    /// The 100 newest events.
    fn default() -> Self {
        Self {
            after: None,
            before: None,
            kind: None,
            subject: None,
            min_severity: None,
            limit: 100,
        }
    }
}

impl EventFilter {
    /// Whether `event` passes every condition except the limit.
    pub fn admits(&self, event: &Event) -> bool {
        self.after.is_none_or(|a| event.id > a)
            && self.before.is_none_or(|b| event.id < b)
            && self.kind.as_deref().is_none_or(|k| event.kind.matches(k))
            && self
                .subject
                .as_deref()
                .is_none_or(|s| event.subject.as_deref() == Some(s))
            && self.min_severity.is_none_or(|m| event.severity >= m)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn event(id: i64, kind: &str, severity: Severity, subject: Option<&str>) -> Event {
        Event {
            id,
            kind: EventKind::parse(kind).unwrap(),
            severity,
            subject: subject.map(str::to_owned),
            message: "m".into(),
            data: serde_json::json!({}),
            created_at: Timestamp::from_unix(0).unwrap(),
        }
    }

    #[test]
    fn serde_uses_the_spec_words() {
        let e = event(7, "edge.ready", Severity::Warning, Some("edg_1"));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "edge.ready");
        assert_eq!(v["severity"], "warning");
        assert_eq!(v["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
        assert!(serde_json::from_value::<EventKind>(serde_json::json!("Edge Ready")).is_err());
    }

    #[test]
    fn filters_combine() {
        let e = event(5, "edge.ready", Severity::Warning, Some("edg_1"));
        assert!(EventFilter::default().admits(&e));
        let only = |f: EventFilter| f.admits(&e);
        assert!(only(EventFilter {
            after: Some(4),
            ..Default::default()
        }));
        assert!(!only(EventFilter {
            after: Some(5),
            ..Default::default()
        }));
        assert!(!only(EventFilter {
            before: Some(5),
            ..Default::default()
        }));
        assert!(only(EventFilter {
            kind: Some("edge.*".into()),
            ..Default::default()
        }));
        assert!(!only(EventFilter {
            kind: Some("dns.*".into()),
            ..Default::default()
        }));
        assert!(only(EventFilter {
            subject: Some("edg_1".into()),
            ..Default::default()
        }));
        assert!(!only(EventFilter {
            subject: Some("edg_2".into()),
            ..Default::default()
        }));
        assert!(only(EventFilter {
            min_severity: Some(Severity::Warning),
            ..Default::default()
        }));
        assert!(!only(EventFilter {
            min_severity: Some(Severity::Critical),
            ..Default::default()
        }));
    }

    proptest! {
        #[test]
        fn kinds_accept_exactly_the_charset(input in "\\PC{0,110}") {
            let allowed = (1..=100).contains(&input.len())
                && input.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
            prop_assert_eq!(EventKind::parse(&input).is_ok(), allowed);
        }

        #[test]
        fn a_kind_matches_itself_its_prefixes_and_star(kind in "[a-z][a-z0-9._-]{0,30}", cut in 0usize..31) {
            let k = EventKind::parse(&kind).unwrap();
            let cut = cut.min(kind.len());
            prop_assert!(k.matches(&kind));
            prop_assert!(k.matches("*"));
            let star = format!("{}*", &kind[..cut]);
            prop_assert!(k.matches(&star));
        }
    }
}
