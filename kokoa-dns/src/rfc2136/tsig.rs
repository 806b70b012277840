//! TSIG (RFC 8945): signing requests and verifying answers, one message or a stream of
//! them (a zone transfer), each answer's MAC chained to the one before.

use std::{fmt, str::FromStr};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use zeroize::Zeroizing;

use super::wire::{CLASS_ANY, Message, Name, RData, Rcode, Record, TYPE_TSIG, Tsig, WireError};
use crate::Error;

/// Seconds of clock difference allowed between us and the server, the value RFC 8945
/// recommends.
pub(crate) const FUDGE: u16 = 300;
/// Most answers of a stream that may go unsigned in a row (RFC 8945 §5.3.1).
const MAX_UNSIGNED: u32 = 99;

/// A TSIG algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TsigAlgorithm {
    /// `hmac-sha1`, for old servers only.
    HmacSha1,
    /// `hmac-sha256`, the default.
    #[default]
    HmacSha256,
    /// `hmac-sha512`.
    HmacSha512,
}

impl TsigAlgorithm {
    /// The name as servers write it in their configuration, e.g. `hmac-sha256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha1 => "hmac-sha1",
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha512 => "hmac-sha512",
        }
    }

    fn wire_name(self) -> Name {
        Name::from_labels(vec![self.as_str().as_bytes().to_vec()])
            .unwrap_or_else(|_| unreachable!("algorithm names are short single labels"))
    }

    fn mac_len(self) -> usize {
        match self {
            Self::HmacSha1 => 20,
            Self::HmacSha256 => 32,
            Self::HmacSha512 => 64,
        }
    }
}

impl fmt::Display for TsigAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `hmac-sha256`, `hmac-sha512` or `hmac-sha1`, in any case, with or without a
/// final dot.
impl FromStr for TsigAlgorithm {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let name = text.strip_suffix('.').unwrap_or(text);
        [Self::HmacSha256, Self::HmacSha512, Self::HmacSha1]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                super::config_error(format!(
                    "unknown TSIG algorithm {:?}: use hmac-sha256, hmac-sha512 or hmac-sha1",
                    text.chars().take(100).collect::<String>()
                ))
            })
    }
}

/// A TSIG key: its name, algorithm and secret, as configured on the DNS server.
///
/// `Debug` never shows the secret, and it is wiped from memory when the key is dropped.
///
/// ```
/// use kokoa_dns::rfc2136::{TsigAlgorithm, TsigKey};
/// let key = TsigKey::new("kokoa-key", TsigAlgorithm::HmacSha256, "c2VjcmV0LWJ5dGVz")?;
/// assert_eq!(key.name(), "kokoa-key.");
/// assert_eq!(
///     format!("{key:?}"),
///     r#"TsigKey { name: "kokoa-key.", algorithm: HmacSha256, secret: "<redacted>" }"#
/// );
/// # Ok::<(), kokoa_dns::Error>(())
/// ```
#[derive(Clone)]
pub struct TsigKey {
    name: Name,
    algorithm: TsigAlgorithm,
    secret: Zeroizing<Vec<u8>>,
}

impl TsigKey {
    /// The key `name` (e.g. `kokoa-key`) with `algorithm` and its secret in base64, as
    /// `tsig-keygen`, `pdnsutil generate-tsig-key` or `keymgr` print it. The error never
    /// contains the secret.
    pub fn new(name: &str, algorithm: TsigAlgorithm, secret_base64: &str) -> Result<Self, Error> {
        let shown: String = name.chars().take(100).collect();
        let name = Name::parse(name).map_err(|e| {
            super::config_error(format!(
                "the TSIG key name {shown:?} is not a DNS name ({e})"
            ))
        })?;
        let secret = Zeroizing::new(STANDARD.decode(secret_base64.trim()).map_err(|_| {
            super::config_error(format!(
                "the secret of the TSIG key {name} is not base64; copy it as the server prints it"
            ))
        })?);
        if secret.is_empty() {
            return Err(super::config_error(format!(
                "the secret of the TSIG key {name} is empty"
            )));
        }
        Ok(Self {
            name,
            algorithm,
            secret,
        })
    }

    /// The key name with its final dot, e.g. `kokoa-key.`.
    pub fn name(&self) -> String {
        self.name.to_string()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> TsigAlgorithm {
        self.algorithm
    }

    fn hasher(&self) -> Hasher {
        Hasher::new(self.algorithm, &self.secret)
    }
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name.to_string())
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// An HMAC of one of the algorithms.
enum Hasher {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

impl Hasher {
    fn new(algorithm: TsigAlgorithm, secret: &[u8]) -> Self {
        match algorithm {
            TsigAlgorithm::HmacSha1 => Self::Sha1(keyed(secret)),
            TsigAlgorithm::HmacSha256 => Self::Sha256(keyed(secret)),
            TsigAlgorithm::HmacSha512 => Self::Sha512(keyed(secret)),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha1(mac) => mac.update(data),
            Self::Sha256(mac) => mac.update(data),
            Self::Sha512(mac) => mac.update(data),
        }
    }

    /// Prefixes a MAC as RFC 8945 chains them: its length, then the MAC.
    fn update_mac(&mut self, mac: &[u8]) {
        // MACs are at most 64 bytes here.
        self.update(&(mac.len() as u16).to_be_bytes());
        self.update(mac);
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Self::Sha1(mac) => mac.finalize().into_bytes().to_vec(),
            Self::Sha256(mac) => mac.finalize().into_bytes().to_vec(),
            Self::Sha512(mac) => mac.finalize().into_bytes().to_vec(),
        }
    }

    /// Compares in constant time.
    fn verify(self, expected: &[u8]) -> bool {
        match self {
            Self::Sha1(mac) => mac.verify_slice(expected).is_ok(),
            Self::Sha256(mac) => mac.verify_slice(expected).is_ok(),
            Self::Sha512(mac) => mac.verify_slice(expected).is_ok(),
        }
    }
}

fn keyed<M: Mac + hmac::digest::KeyInit>(secret: &[u8]) -> M {
    <M as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

/// The TSIG variables a MAC covers after the message (RFC 8945 §4.3.3).
fn variables(key_name: &Name, tsig: &Tsig) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    key_name.write(&mut out, true);
    out.extend(CLASS_ANY.to_be_bytes());
    out.extend(0u32.to_be_bytes());
    tsig.algorithm.write(&mut out, true);
    out.extend(timers(tsig));
    out.extend(tsig.error.0.to_be_bytes());
    out.extend((tsig.other.len() as u16).to_be_bytes());
    out.extend_from_slice(&tsig.other);
    out
}

/// Time signed and fudge, all that later answers of a stream sign of their variables.
fn timers(tsig: &Tsig) -> [u8; 8] {
    let mut out = [0; 8];
    out[..6].copy_from_slice(&tsig.time_signed.to_be_bytes()[2..]);
    out[6..].copy_from_slice(&tsig.fudge.to_be_bytes());
    out
}

/// A request signed at `now`: its bytes, TSIG record last, and the MAC the answer chains to.
pub(crate) struct Signed {
    pub(crate) bytes: Vec<u8>,
    pub(crate) mac: Vec<u8>,
}

/// Signs `message` with `key` at `now` (seconds since the Unix epoch).
pub(crate) fn sign(key: &TsigKey, message: &Message, now: u64) -> Result<Signed, WireError> {
    let mut tsig = Tsig {
        algorithm: key.algorithm.wire_name(),
        time_signed: now,
        fudge: FUDGE,
        mac: Vec::new(),
        original_id: message.id,
        error: Rcode::NOERROR,
        other: Vec::new(),
    };
    let mut hasher = key.hasher();
    hasher.update(&message.encode()?);
    hasher.update(&variables(&key.name, &tsig));
    tsig.mac = hasher.finish();
    let mac = tsig.mac.clone();
    let mut signed = message.clone();
    signed.additionals.push(Record {
        name: key.name.clone(),
        kind: TYPE_TSIG,
        class: CLASS_ANY,
        ttl: 0,
        data: RData::Tsig(tsig),
    });
    Ok(Signed {
        bytes: signed.encode()?,
        mac,
    })
}

/// Why an answer's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// The server's TSIG record reports an error: it did not accept our signature.
    Server(Rcode),
    /// Signed with another key or algorithm than ours.
    OtherKey(String),
    /// The MAC does not verify.
    BadMac,
    /// Signed more than the fudge away from our clock.
    BadTime { skew: u64 },
    /// A TSIG record elsewhere than last, or several.
    Misplaced,
    /// More than 99 answers of a stream in a row without a signature.
    TooManyUnsigned,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Server(error) => write!(f, "{error}"),
            Self::OtherKey(name) => write!(f, "the answer is signed with another key ({name})"),
            Self::BadMac => f.write_str(
                "the answer's signature does not verify: the secret differs from the server's, or the answer was altered",
            ),
            Self::BadTime { skew } => write!(
                f,
                "the answer was signed {skew} s away from our clock (more than {FUDGE} s): synchronise the clocks"
            ),
            Self::Misplaced => f.write_str("the answer holds a TSIG record that is not its last"),
            Self::TooManyUnsigned => {
                write!(f, "more than {MAX_UNSIGNED} answers in a row without a signature")
            }
        }
    }
}

/// Verifies the answers to one signed request, in the order they arrive.
pub(crate) struct Verifier<'k> {
    key: &'k TsigKey,
    /// The MAC input so far: the request's (then the previous answer's) MAC and the
    /// unsigned answers since.
    hasher: Hasher,
    first: bool,
    unsigned: u32,
}

impl<'k> Verifier<'k> {
    pub(crate) fn new(key: &'k TsigKey, request_mac: &[u8]) -> Self {
        let mut hasher = key.hasher();
        hasher.update_mac(request_mac);
        Self {
            key,
            hasher,
            first: true,
            unsigned: 0,
        }
    }

    /// Checks one answer: `bytes` as received, `message` decoded from them with its last
    /// additional record at `last_at`. Returns whether it was signed; an unsigned answer
    /// is for the caller to accept or not.
    pub(crate) fn check(
        &mut self,
        bytes: &[u8],
        message: &Message,
        last_at: Option<usize>,
        now: u64,
    ) -> Result<bool, Rejected> {
        let is_tsig = |r: &Record| r.kind == TYPE_TSIG;
        let tsigs = message
            .answers
            .iter()
            .chain(&message.authorities)
            .chain(&message.additionals)
            .filter(|r| is_tsig(r))
            .count();
        let (Some(record), Some(at)) = (message.additionals.last().filter(|r| is_tsig(r)), last_at)
        else {
            if tsigs > 0 {
                return Err(Rejected::Misplaced);
            }
            if !self.first {
                self.unsigned += 1;
                if self.unsigned > MAX_UNSIGNED {
                    return Err(Rejected::TooManyUnsigned);
                }
                self.hasher.update(bytes);
            }
            return Ok(false);
        };
        let RData::Tsig(tsig) = &record.data else {
            return Err(Rejected::Misplaced);
        };
        if tsigs > 1 {
            return Err(Rejected::Misplaced);
        }
        if !record.name.eq_ignore_case(&self.key.name)
            || !tsig
                .algorithm
                .eq_ignore_case(&self.key.algorithm.wire_name())
        {
            return Err(Rejected::OtherKey(format!(
                "{} {}",
                record.name, tsig.algorithm
            )));
        }
        if tsig.error != Rcode::NOERROR {
            return Err(Rejected::Server(tsig.error));
        }
        if tsig.mac.len() != self.key.algorithm.mac_len() {
            return Err(Rejected::BadMac);
        }
        // The message as it was before the TSIG record was added: without it in the count,
        // with the id it was signed with.
        let mut unsigned = bytes[..at].to_vec();
        unsigned[..2].copy_from_slice(&tsig.original_id.to_be_bytes());
        let additionals = (message.additionals.len() - 1) as u16;
        unsigned[10..12].copy_from_slice(&additionals.to_be_bytes());
        let mut hasher = std::mem::replace(&mut self.hasher, self.key.hasher());
        hasher.update(&unsigned);
        if self.first {
            hasher.update(&variables(&self.key.name, tsig));
        } else {
            hasher.update(&timers(tsig));
        }
        if !hasher.verify(&tsig.mac) {
            return Err(Rejected::BadMac);
        }
        let skew = now.abs_diff(tsig.time_signed);
        if skew > u64::from(tsig.fudge) {
            return Err(Rejected::BadTime { skew });
        }
        self.hasher.update_mac(&tsig.mac);
        self.first = false;
        self.unsigned = 0;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rfc2136::wire::{CLASS_IN, OPCODE_UPDATE, Question, TYPE_A, TYPE_SOA, decode};

    fn test_key(algorithm: TsigAlgorithm) -> TsigKey {
        TsigKey::new(
            "kokoa-key",
            algorithm,
            "a29rb2EtdGVzdC1zZWNyZXQtMzItYnl0ZXMtbG9uZyE=",
        )
        .expect("test key")
    }

    fn update(id: u16) -> Message {
        let mut message = Message::new(id, OPCODE_UPDATE);
        message.questions.push(Question {
            name: Name::parse("kokoa.test").expect("name"),
            kind: TYPE_SOA,
            class: CLASS_IN,
        });
        message.authorities.push(Record {
            name: Name::parse("app.kokoa.test").expect("name"),
            kind: TYPE_A,
            class: CLASS_IN,
            ttl: 30,
            data: RData::A([203, 0, 113, 10].into()),
        });
        message
    }

    /// Answers `request` as a server would: same id, QR set, signed with the request's MAC
    /// (or the previous answer's, `first` false, timers only) chained in.
    fn answer(
        key: &TsigKey,
        prior_mac: &[u8],
        first: bool,
        id: u16,
        now: u64,
    ) -> (Vec<u8>, Vec<u8>) {
        let mut message = update(id);
        message.flags |= 1 << 15;
        let mut tsig = Tsig {
            algorithm: key.algorithm.wire_name(),
            time_signed: now,
            fudge: FUDGE,
            mac: Vec::new(),
            original_id: id,
            error: Rcode::NOERROR,
            other: Vec::new(),
        };
        let mut hasher = key.hasher();
        hasher.update_mac(prior_mac);
        hasher.update(&message.encode().expect("encode"));
        if first {
            hasher.update(&variables(&key.name, &tsig));
        } else {
            hasher.update(&timers(&tsig));
        }
        tsig.mac = hasher.finish();
        let mac = tsig.mac.clone();
        message.additionals.push(Record {
            name: key.name.clone(),
            kind: TYPE_TSIG,
            class: CLASS_ANY,
            ttl: 0,
            data: RData::Tsig(tsig),
        });
        (message.encode().expect("encode"), mac)
    }

    fn check(verifier: &mut Verifier<'_>, bytes: &[u8], now: u64) -> Result<bool, Rejected> {
        let (message, at) = decode(bytes).expect("decode");
        verifier.check(bytes, &message, at, now)
    }

    #[test]
    fn a_signed_request_carries_a_verifiable_mac() {
        for algorithm in [
            TsigAlgorithm::HmacSha1,
            TsigAlgorithm::HmacSha256,
            TsigAlgorithm::HmacSha512,
        ] {
            let key = test_key(algorithm);
            let signed = sign(&key, &update(7), 1_700_000_000).expect("sign");
            assert_eq!(signed.mac.len(), algorithm.mac_len());
            let (message, at) = decode(&signed.bytes).expect("decode");
            let Some(RData::Tsig(tsig)) = message.additionals.last().map(|r| &r.data) else {
                panic!("no TSIG record");
            };
            assert_eq!(tsig.mac, signed.mac);
            assert_eq!(tsig.algorithm.to_string(), format!("{algorithm}."));
            // The MAC covers the message without its TSIG record, then the variables.
            let mut unsigned = signed.bytes[..at.expect("position")].to_vec();
            unsigned[11] = 0;
            let mut hasher = key.hasher();
            hasher.update(&unsigned);
            hasher.update(&variables(&key.name, tsig));
            assert!(hasher.verify(&signed.mac));
        }
    }

    #[test]
    fn answers_verify_in_a_chain_and_tampering_is_caught() {
        let key = test_key(TsigAlgorithm::HmacSha256);
        let now = 1_700_000_000;
        let signed = sign(&key, &update(9), now).expect("sign");
        let (first, first_mac) = answer(&key, &signed.mac, true, 9, now);
        let (second, _) = answer(&key, &first_mac, false, 9, now + 1);

        let mut verifier = Verifier::new(&key, &signed.mac);
        assert_eq!(check(&mut verifier, &first, now), Ok(true));
        assert_eq!(check(&mut verifier, &second, now), Ok(true));

        // The second answer signed as if it came first does not chain.
        let (unchained, _) = answer(&key, &signed.mac, false, 9, now);
        let mut verifier = Verifier::new(&key, &signed.mac);
        assert_eq!(check(&mut verifier, &first, now), Ok(true));
        assert_eq!(check(&mut verifier, &unchained, now), Err(Rejected::BadMac));

        // One changed bit of the address.
        let mut altered = first.clone();
        let ip = altered
            .windows(4)
            .position(|w| w == [203, 0, 113, 10])
            .expect("address in the answer");
        altered[ip + 3] ^= 1;
        let mut verifier = Verifier::new(&key, &signed.mac);
        assert_eq!(check(&mut verifier, &altered, now), Err(Rejected::BadMac));

        // Another secret under the same name.
        let other = TsigKey::new("kokoa-key", TsigAlgorithm::HmacSha256, "b3RoZXI=").expect("key");
        let mut verifier = Verifier::new(&other, &signed.mac);
        assert_eq!(check(&mut verifier, &first, now), Err(Rejected::BadMac));

        // Another algorithm.
        let sha512 = test_key(TsigAlgorithm::HmacSha512);
        let mut verifier = Verifier::new(&sha512, &signed.mac);
        assert!(matches!(
            check(&mut verifier, &first, now),
            Err(Rejected::OtherKey(_))
        ));

        // Ten minutes later than our clock.
        let mut verifier = Verifier::new(&key, &signed.mac);
        assert_eq!(
            check(&mut verifier, &first, now + 600),
            Err(Rejected::BadTime { skew: 600 })
        );
    }

    #[test]
    fn unsigned_answers_in_a_stream_are_part_of_the_next_mac() {
        let key = test_key(TsigAlgorithm::HmacSha256);
        let now = 1_700_000_000;
        let signed = sign(&key, &update(3), now).expect("sign");
        let (first, first_mac) = answer(&key, &signed.mac, true, 3, now);
        let mut plain = update(3);
        plain.flags |= 1 << 15;
        let plain = plain.encode().expect("encode");
        // The server's MAC over the unsigned answer and the next one.
        let (mut last, _) = answer(&key, &first_mac, false, 3, now);
        let (message, at) = decode(&last).expect("decode");
        let RData::Tsig(mut tsig) = message.additionals[0].data.clone() else {
            panic!("no TSIG");
        };
        let mut hasher = key.hasher();
        hasher.update_mac(&first_mac);
        hasher.update(&plain);
        let mut body = last[..at.expect("position")].to_vec();
        body[11] = 0;
        hasher.update(&body);
        hasher.update(&timers(&tsig));
        tsig.mac = hasher.finish();
        let mut resigned = message;
        resigned.additionals[0].data = RData::Tsig(tsig);
        last = resigned.encode().expect("encode");

        let mut verifier = Verifier::new(&key, &signed.mac);
        assert_eq!(check(&mut verifier, &first, now), Ok(true));
        assert_eq!(check(&mut verifier, &plain, now), Ok(false));
        assert_eq!(check(&mut verifier, &last, now), Ok(true));

        let mut verifier = Verifier::new(&key, &signed.mac);
        assert_eq!(check(&mut verifier, &first, now), Ok(true));
        for _ in 0..MAX_UNSIGNED {
            assert_eq!(check(&mut verifier, &plain, now), Ok(false));
        }
        assert_eq!(
            check(&mut verifier, &plain, now),
            Err(Rejected::TooManyUnsigned)
        );
    }

    #[test]
    fn a_server_error_in_the_tsig_record_is_reported() {
        let key = test_key(TsigAlgorithm::HmacSha256);
        let signed = sign(&key, &update(5), 1_700_000_000).expect("sign");
        let (message, _) = decode(&signed.bytes).expect("decode");
        let mut refused = message;
        refused.flags = (1 << 15) | u16::from(OPCODE_UPDATE) << 11 | Rcode::NOTAUTH.0;
        if let RData::Tsig(tsig) = &mut refused.additionals[0].data {
            tsig.error = Rcode::BADKEY;
            tsig.mac.clear();
        }
        let bytes = refused.encode().expect("encode");
        let mut verifier = Verifier::new(&key, &signed.mac);
        assert_eq!(
            check(&mut verifier, &bytes, 1_700_000_000),
            Err(Rejected::Server(Rcode::BADKEY))
        );
        assert_eq!(Rejected::Server(Rcode::BADKEY).to_string(), "BADKEY");
    }

    #[test]
    fn keys_are_checked_and_never_show_their_secret() {
        let error = TsigKey::new("kokoa-key", TsigAlgorithm::default(), "not base64!!")
            .expect_err("bad secret");
        assert!(
            error.to_string().contains("kokoa-key. is not base64"),
            "{error}"
        );
        assert!(!error.to_string().contains("not base64!!"), "{error}");
        let error =
            TsigKey::new("bad key", TsigAlgorithm::default(), "c2VjcmV0").expect_err("bad name");
        assert!(error.to_string().contains("\"bad key\""), "{error}");
        assert!(TsigKey::new("k", TsigAlgorithm::default(), "").is_err());
        let key = test_key(TsigAlgorithm::HmacSha256);
        assert!(!format!("{key:?}").contains("a29rb2Et"));
        assert_eq!(
            "HMAC-SHA512.".parse::<TsigAlgorithm>().ok(),
            Some(TsigAlgorithm::HmacSha512)
        );
        let error = "hmac-md5".parse::<TsigAlgorithm>().expect_err("md5");
        assert!(error.to_string().contains("\"hmac-md5\""), "{error}");
    }
}
