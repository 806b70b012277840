//! Validated, normalised DNS host names.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, HostnameProblem};

/// Longest input we even look at: IDNA conversion of megabytes of text would be a cheap denial
/// of service, and no valid name comes anywhere near this.
const MAX_INPUT: usize = 1024;

/// A validated, normalised DNS host name such as `app.hoge.com` or `*.fuga.com`.
///
/// Normal form: lowercase ASCII, internationalised labels in their punycode (`xn--`) form,
/// no trailing dot. Every label is 1–63 characters of `a-z`, `0-9` and `-`, not starting or
/// ending with `-`; the whole name is at most 253 characters with at least two labels. A
/// wildcard is allowed only as the whole leftmost label. The last label is never all digits
/// (no top-level domain is, so a name never reads as an IP address), and an `xn--` label
/// is the ASCII form of a valid internationalised label. Internationalised names need the
/// `idna` feature (on by default); without it they are refused
/// ([`HostnameProblem::IdnaUnsupported`](crate::HostnameProblem::IdnaUnsupported)).
///
/// Because of these rules a `Hostname` can be written between double quotes in an nginx or
/// wg-quick file as it is: it never holds a quote, `;`, braces, `$`, `\`, whitespace or a
/// control character.
///
/// ```
/// use kokoa_core::Hostname;
///
/// let h: Hostname = "App.Hoge.COM.".parse()?;
/// assert_eq!(h.as_str(), "app.hoge.com");
/// #[cfg(feature = "idna")]
/// assert_eq!(Hostname::parse("bücher.example")?.as_str(), "xn--bcher-kva.example");
/// assert!(Hostname::parse("*.fuga.com")?.is_wildcard());
/// assert!(Hostname::parse("a.*.fuga.com").is_err());
/// assert!(Hostname::parse("203.0.113.10").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hostname(String);

impl Hostname {
    /// Validates and normalises `input`.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let fail = |problem| Error::InvalidHostname {
            input: input.chars().take(300).collect(),
            problem,
        };
        if input.len() > MAX_INPUT {
            return Err(fail(HostnameProblem::TooLong(input.len())));
        }
        let name = input.strip_suffix('.').unwrap_or(input);
        if name.is_empty() {
            return Err(fail(HostnameProblem::Empty));
        }
        let (wildcard, rest) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        let ascii = if rest.is_ascii() {
            rest.to_ascii_lowercase()
        } else {
            to_ascii(rest).map_err(fail)?
        };
        let mut labels = 0;
        for label in ascii.split('.') {
            check_label(label).map_err(fail)?;
            labels += 1;
        }
        if labels < 2 {
            return Err(fail(HostnameProblem::TooFewLabels));
        }
        // No top-level domain is all digits: such a name would read as an IP address.
        let last = ascii.rsplit('.').next().unwrap_or_default();
        if last.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail(HostnameProblem::NumericTopLabel(last.to_owned())));
        }
        // An ASCII name with `xn--` labels is checked as IDNA too: it must decode, and
        // encode back to itself.
        if ascii.split('.').any(|l| l.starts_with("xn--")) {
            check_punycode(&ascii).map_err(fail)?;
        }
        let normal = if wildcard {
            format!("*.{ascii}")
        } else {
            ascii
        };
        if normal.len() > 253 {
            return Err(fail(HostnameProblem::TooLong(normal.len())));
        }
        Ok(Self(normal))
    }

    /// The normal form, e.g. `app.hoge.com`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the leftmost label is `*`.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// Whether a certificate or route for `self` covers `name`: equal names, or `self` is
    /// `*.x` and `name` is exactly one label below `x`.
    ///
    /// ```
    /// use kokoa_core::Hostname;
    /// let w = Hostname::parse("*.fuga.com")?;
    /// assert!(w.covers(&Hostname::parse("wiki.fuga.com")?));
    /// assert!(!w.covers(&Hostname::parse("a.wiki.fuga.com")?));
    /// assert!(!w.covers(&Hostname::parse("fuga.com")?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn covers(&self, name: &Hostname) -> bool {
        if self == name {
            return true;
        }
        match (self.0.strip_prefix("*."), name.0.split_once('.')) {
            (Some(base), Some((first, rest))) => first != "*" && rest == base,
            _ => false,
        }
    }
}

/// The ASCII (punycode) form of an internationalised name.
#[cfg(feature = "idna")]
fn to_ascii(name: &str) -> Result<String, HostnameProblem> {
    idna::domain_to_ascii(name).map_err(|_| HostnameProblem::Idna)
}

#[cfg(not(feature = "idna"))]
fn to_ascii(_: &str) -> Result<String, HostnameProblem> {
    Err(HostnameProblem::IdnaUnsupported)
}

/// An ASCII name with `xn--` labels must decode, and encode back to itself.
#[cfg(feature = "idna")]
fn check_punycode(ascii: &str) -> Result<(), HostnameProblem> {
    let (unicode, decoded) = idna::domain_to_unicode(ascii);
    let canonical = idna::domain_to_ascii(&unicode).ok();
    if decoded.is_err() || canonical.as_deref() != Some(ascii) {
        return Err(HostnameProblem::Idna);
    }
    Ok(())
}

#[cfg(not(feature = "idna"))]
fn check_punycode(_: &str) -> Result<(), HostnameProblem> {
    Err(HostnameProblem::IdnaUnsupported)
}

fn check_label(label: &str) -> Result<(), HostnameProblem> {
    if label.is_empty() {
        return Err(HostnameProblem::EmptyLabel);
    }
    if label.len() > 63 {
        return Err(HostnameProblem::LabelTooLong(label.to_owned()));
    }
    if label.contains('*') {
        return Err(HostnameProblem::MisplacedWildcard(label.to_owned()));
    }
    if let Some(character) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(HostnameProblem::BadCharacter {
            label: label.to_owned(),
            character,
        });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(HostnameProblem::HyphenAtEdge(label.to_owned()));
    }
    Ok(())
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hostname({})", self.0)
    }
}

impl FromStr for Hostname {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl AsRef<str> for Hostname {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Hostname {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Hostname {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn problem(input: &str) -> HostnameProblem {
        match Hostname::parse(input) {
            Err(Error::InvalidHostname { problem, .. }) => problem,
            other => panic!("{input:?} should be rejected, got {other:?}"),
        }
    }

    #[cfg(feature = "idna")]
    #[test]
    fn normalises() {
        for (input, want) in [
            ("App.Hoge.COM", "app.hoge.com"),
            ("wiki.fuga.com.", "wiki.fuga.com"),
            ("*.Fuga.com", "*.fuga.com"),
            ("ÄPFEL.example", "xn--pfel-koa.example"),
            ("日本.jp", "xn--wgv71a.jp"),
            ("xn--wgv71a.jp", "xn--wgv71a.jp"),
            ("a-b.c0", "a-b.c0"),
        ] {
            assert_eq!(Hostname::parse(input).unwrap().as_str(), want, "{input}");
        }
    }

    #[cfg(feature = "idna")]
    #[test]
    fn rejects_with_the_bad_part() {
        assert_eq!(problem(""), HostnameProblem::Empty);
        assert_eq!(problem("."), HostnameProblem::Empty);
        assert_eq!(problem("localhost"), HostnameProblem::TooFewLabels);
        assert_eq!(problem("*.com"), HostnameProblem::TooFewLabels);
        assert_eq!(problem("a..com"), HostnameProblem::EmptyLabel);
        assert_eq!(problem(".a.com"), HostnameProblem::EmptyLabel);
        assert_eq!(problem("a.com.."), HostnameProblem::EmptyLabel);
        assert_eq!(
            problem("-a.com"),
            HostnameProblem::HyphenAtEdge("-a".into())
        );
        assert_eq!(
            problem("a-.com"),
            HostnameProblem::HyphenAtEdge("a-".into())
        );
        assert_eq!(
            problem("a.*.com"),
            HostnameProblem::MisplacedWildcard("*".into())
        );
        assert_eq!(
            problem("*a.com"),
            HostnameProblem::MisplacedWildcard("*a".into())
        );
        assert_eq!(
            problem("a_b.com"),
            HostnameProblem::BadCharacter {
                label: "a_b".into(),
                character: '_'
            }
        );
        assert_eq!(
            problem("a\"b.com"),
            HostnameProblem::BadCharacter {
                label: "a\"b".into(),
                character: '"'
            }
        );
        assert_eq!(
            problem("1.2.3.4"),
            HostnameProblem::NumericTopLabel("4".into())
        );
        assert_eq!(
            problem("app.hoge.123"),
            HostnameProblem::NumericTopLabel("123".into())
        );
        assert_eq!(
            problem("xn--abc-.com"),
            HostnameProblem::HyphenAtEdge("xn--abc-".into())
        );
        assert_eq!(problem("xn--a-zz.com"), HostnameProblem::Idna);
        // The ASCII form of a real internationalised name stays accepted.
        let munchen = Hostname::parse("münchen.de").unwrap();
        assert_eq!(munchen.as_str(), "xn--mnchen-3ya.de");
        assert_eq!(Hostname::parse(munchen.as_str()).unwrap(), munchen);
        assert!(
            Hostname::parse("1a.2b.3c").is_ok(),
            "digits are fine with a letter"
        );
        let long = "a".repeat(64);
        assert_eq!(
            problem(&format!("{long}.com")),
            HostnameProblem::LabelTooLong(long)
        );
        let total = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        assert!(matches!(problem(&total), HostnameProblem::TooLong(_)));
        let err = Hostname::parse("a b.com").unwrap_err().to_string();
        assert!(err.contains("\"a b.com\"") && err.contains("' '"), "{err}");
    }

    /// Without the `idna` feature internationalised names are refused, saying why; ASCII
    /// names are not affected.
    #[cfg(not(feature = "idna"))]
    #[test]
    fn internationalised_names_need_the_idna_feature() {
        for input in ["münchen.de", "xn--mnchen-3ya.de", "*.xn--wgv71a.jp"] {
            assert_eq!(problem(input), HostnameProblem::IdnaUnsupported, "{input}");
            let message = Hostname::parse(input).unwrap_err().to_string();
            assert!(message.contains("`idna` feature"), "{message}");
        }
        assert_eq!(
            Hostname::parse("App.Hoge.COM.").unwrap().as_str(),
            "app.hoge.com"
        );
        assert_eq!(
            problem("203.0.113.10"),
            HostnameProblem::NumericTopLabel("10".into())
        );
    }

    #[test]
    fn serde_validates() {
        let h: Hostname = serde_json::from_str("\"APP.hoge.com\"").unwrap();
        assert_eq!(serde_json::to_string(&h).unwrap(), "\"app.hoge.com\"");
        assert!(serde_json::from_str::<Hostname>("\"app;hoge.com\"").is_err());
    }

    proptest! {
        #[test]
        fn accepted_names_are_inert_and_idempotent(input in "\\PC{0,80}") {
            if let Ok(h) = Hostname::parse(&input) {
                let s = h.as_str();
                prop_assert!(s.len() <= 253);
                let inert = !s.chars().any(|c| c.is_whitespace() || c.is_control()
                    || matches!(c, '"' | '\'' | ';' | '{' | '}' | '$' | '\\' | '#'));
                prop_assert!(inert, "{:?} holds a special character", s);
                prop_assert_eq!(&Hostname::parse(s).unwrap(), &h);
            }
        }

        #[test]
        fn well_formed_names_are_accepted(
            labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1..5),
            top in "[a-z][a-z0-9]{1,10}",
            upper in any::<bool>(),
        ) {
            prop_assume!(labels.iter().all(|l| !l.starts_with("xn--")));
            let name = format!("{}.{top}", labels.join("."));
            let input = if upper { name.to_uppercase() } else { name.clone() };
            let parsed = Hostname::parse(&input).unwrap();
            prop_assert_eq!(parsed.as_str(), name.as_str());
        }
    }
}
