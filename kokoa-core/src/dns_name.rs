//! DNS owner names: host names, and the names of records that are not hosts.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Hostname};

/// The name a DNS record is set at: a [`Hostname`], or a name a host cannot have, such as
/// `_acme-challenge.app.hoge.com` (ACME DNS-01) or `_dmarc.hoge.com`.
///
/// Normal form: lowercase ASCII, no trailing dot. Every label is 1–63 characters of `a-z`,
/// `0-9`, `-` and `_`, not starting or ending with `-`; the whole name is at most 253
/// characters. A wildcard is allowed only as the whole leftmost label. Internationalised
/// names are given in their punycode (`xn--`) form, as [`Hostname`] normalises them.
///
/// Like a `Hostname` it never holds a quote, `;`, braces, `$`, `\`, whitespace or a control
/// character, so it can be written into a zone file line or an API body as it is.
///
/// ```
/// use kokoa_core::{DnsName, Hostname};
///
/// let name = DnsName::parse("_ACME-Challenge.App.Hoge.com.")?;
/// assert_eq!(name.as_str(), "_acme-challenge.app.hoge.com");
/// assert_eq!(name.to_hostname(), None);
///
/// let host = Hostname::parse("app.hoge.com")?;
/// assert_eq!(DnsName::from(&host).to_hostname(), Some(host));
/// assert!(DnsName::parse("a b.hoge.com").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsName(String);

impl DnsName {
    /// Validates and normalises `input`.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let fail = |reason: String| Error::InvalidDnsName {
            input: input.chars().take(300).collect(),
            reason,
        };
        let name = input.strip_suffix('.').unwrap_or(input);
        if name.is_empty() {
            return Err(fail("it is empty".into()));
        }
        if !name.is_ascii() {
            return Err(fail(
                "it holds a character outside ASCII; give internationalised labels in \
                 their punycode (xn--) form"
                    .into(),
            ));
        }
        let name = name.to_ascii_lowercase();
        if name.len() > 253 {
            return Err(fail(format!(
                "it is {} characters long, the limit is 253",
                name.len()
            )));
        }
        let rest = name.strip_prefix("*.").unwrap_or(&name);
        for label in rest.split('.') {
            check_label(label).map_err(fail)?;
        }
        Ok(Self(name))
    }

    /// The normal form, e.g. `_acme-challenge.app.hoge.com`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same name as a [`Hostname`], when it is one (no `_`, at least two labels).
    pub fn to_hostname(&self) -> Option<Hostname> {
        Hostname::parse(&self.0).ok()
    }

    /// Whether the name is `apex` or lies below it.
    ///
    /// ```
    /// use kokoa_core::{DnsName, Hostname};
    /// let zone = Hostname::parse("hoge.com")?;
    /// assert!(DnsName::parse("_acme-challenge.hoge.com")?.is_within(&zone));
    /// assert!(!DnsName::parse("_acme-challenge.xhoge.com")?.is_within(&zone));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_within(&self, apex: &Hostname) -> bool {
        let apex = apex.as_str();
        self.0 == apex
            || self
                .0
                .strip_suffix(apex)
                .is_some_and(|below| below.ends_with('.'))
    }
}

fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("it has an empty label (two dots in a row?)".into());
    }
    if label.len() > 63 {
        return Err(format!(
            "label {label:?} is {} characters long, the limit is 63",
            label.len()
        ));
    }
    if label.contains('*') {
        return Err(format!(
            "label {label:?}: '*' is allowed only as the whole leftmost label"
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')))
    {
        return Err(format!(
            "label {label:?} contains {c:?}; only a-z, 0-9, '-' and '_' are allowed"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label {label:?} starts or ends with '-'"));
    }
    Ok(())
}

impl From<&Hostname> for DnsName {
    fn from(host: &Hostname) -> Self {
        // A host name's rules are a subset of these: nothing to check again.
        Self(host.as_str().to_owned())
    }
}

impl From<Hostname> for DnsName {
    fn from(host: Hostname) -> Self {
        Self::from(&host)
    }
}

impl PartialEq<Hostname> for DnsName {
    fn eq(&self, other: &Hostname) -> bool {
        self.0 == other.as_str()
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DnsName({})", self.0)
    }
}

impl FromStr for DnsName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl AsRef<str> for DnsName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for DnsName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DnsName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn normalises_and_refuses_with_the_reason() {
        for (input, want) in [
            (
                "_acme-challenge.app.hoge.com",
                "_acme-challenge.app.hoge.com",
            ),
            ("_ACME-challenge.Hoge.COM.", "_acme-challenge.hoge.com"),
            ("*.fuga.com", "*.fuga.com"),
            ("_dmarc.hoge.com", "_dmarc.hoge.com"),
            ("localhost", "localhost"),
            ("a_b.xn--wgv71a.jp", "a_b.xn--wgv71a.jp"),
        ] {
            assert_eq!(DnsName::parse(input).unwrap().as_str(), want, "{input}");
        }
        for (input, reason) in [
            ("", "empty"),
            (".", "empty"),
            ("a..com", "empty label"),
            ("-a.com", "starts or ends with '-'"),
            ("a.*.com", "leftmost"),
            ("*a.com", "leftmost"),
            ("a b.com", "' '"),
            ("a\"b.com", "'\"'"),
            ("bücher.example", "punycode"),
        ] {
            let err = DnsName::parse(input).unwrap_err().to_string();
            assert!(err.contains(reason), "{input:?}: {err}");
            assert!(err.contains(&format!("{input:?}")), "{input:?}: {err}");
        }
        let long = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        assert!(
            DnsName::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("253")
        );
        let label = format!("{}.com", "a".repeat(64));
        assert!(
            DnsName::parse(&label)
                .unwrap_err()
                .to_string()
                .contains("63")
        );
    }

    #[test]
    fn host_names_convert_both_ways() {
        let host = Hostname::parse("*.fuga.com").unwrap();
        let name = DnsName::from(&host);
        assert_eq!(name, host);
        assert_eq!(name.to_hostname(), Some(host));
        assert_eq!(DnsName::parse("_x.fuga.com").unwrap().to_hostname(), None);
        assert_eq!(DnsName::parse("localhost").unwrap().to_hostname(), None);
    }

    #[test]
    fn serde_validates() {
        let n: DnsName = serde_json::from_str("\"_ACME.hoge.com\"").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"_acme.hoge.com\"");
        assert!(serde_json::from_str::<DnsName>("\"a;b.com\"").is_err());
    }

    proptest! {
        #[test]
        fn accepted_names_are_inert_normal_and_idempotent(input in "\\PC{0,80}") {
            if let Ok(n) = DnsName::parse(&input) {
                let s = n.as_str();
                prop_assert!(s.len() <= 253);
                prop_assert!(!s.ends_with('.'));
                prop_assert_eq!(s.to_ascii_lowercase(), s);
                let inert = !s.chars().any(|c| c.is_whitespace() || c.is_control()
                    || matches!(c, '"' | '\'' | ';' | '{' | '}' | '$' | '\\' | '#'));
                prop_assert!(inert, "{:?} holds a special character", s);
                prop_assert_eq!(&DnsName::parse(s).unwrap(), &n);
            }
        }

        #[test]
        fn every_hostname_is_a_dns_name_with_the_same_text(input in "[a-zA-Z0-9.*-]{1,60}") {
            if let Ok(host) = Hostname::parse(&input) {
                let parsed = DnsName::parse(host.as_str()).unwrap();
                prop_assert_eq!(&parsed, &DnsName::from(&host));
                prop_assert_eq!(parsed.to_hostname(), Some(host));
            }
        }

        #[test]
        fn underscore_labels_are_accepted(
            labels in proptest::collection::vec("_?[a-z0-9]([a-z0-9_-]{0,20}[a-z0-9_])?", 1..6),
            upper in any::<bool>(),
        ) {
            let name = labels.join(".");
            let input = if upper { name.to_uppercase() } else { name.clone() };
            let parsed = DnsName::parse(&input).unwrap();
            prop_assert_eq!(parsed.as_str(), name.as_str());
        }
    }
}
