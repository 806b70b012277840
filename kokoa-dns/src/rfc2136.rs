//! Dynamic updates (RFC 2136) signed with TSIG (RFC 8945), for BIND, Knot, PowerDNS and any
//! other server that takes them.
//!
//! Records are read with a zone transfer (AXFR) and written with UPDATE messages, both over
//! TCP, every request signed with the [`TsigKey`] and every answer's signature verified
//! (an answer that is not signed, or whose MAC does not verify, is not believed). Only A,
//! AAAA, CNAME and single-string TXT records of class IN are listed.
//!
//! Servers keep record sets, not records: a record id is `name|type|value`, as for the
//! PowerDNS provider, e.g. `app.hoge.com|A|203.0.113.10`. An update deletes the old value
//! and adds the new one in one message, so it happens entirely or not at all. As RFC 2136
//! defines, deleting a value that is not there succeeds and changes nothing, and a set has
//! one TTL: writing a value with a new TTL sets it for the whole set.
//!
//! A server silently ignores an add that would put a CNAME and other records at one name
//! (RFC 2136 §3.4.2.2) and still answers NOERROR. So every add carries prerequisites
//! (§2.4) under which it cannot be ignored: no CNAME at the name for an A, AAAA or TXT
//! record; the name unused, or holding this very CNAME, for a CNAME. When they are not met
//! the server changes nothing and the call fails with [`Error::Conflict`] naming the
//! record.
//!
//! The server must allow the key to update and to transfer the zone: with PowerDNS,
//! `dnsupdate=yes`, `allow-dnsupdate-from=` the control plane's address, and the zone
//! metadata `TSIG-ALLOW-DNSUPDATE` and `TSIG-ALLOW-AXFR` naming the key; with BIND,
//! `allow-update { key NAME; };` and `allow-transfer { key NAME; };` in the zone.
//!
//! ```
//! use kokoa_core::Hostname;
//! use kokoa_dns::{DnsProvider, rfc2136::{Rfc2136Provider, TsigAlgorithm, TsigKey}};
//!
//! let key = TsigKey::new("kokoa-key", TsigAlgorithm::HmacSha256, "c2VjcmV0LWJ5dGVz")?;
//! let provider = Rfc2136Provider::new("127.0.0.1:53".parse()?, key, [Hostname::parse("hoge.com")?]);
//! assert_eq!(provider.name(), "rfc2136");
//! assert!(!format!("{provider:?}").contains("c2VjcmV0"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use kokoa_core::{DnsName, Hostname, RecordData, RecordType};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

use crate::{
    DnsProvider, Error, ProviderRecord, RecordId, RecordSpec, Zone,
    rrset::{parse_id, record_id},
};

mod tsig;
pub mod wire;

use tsig::{Rejected, Verifier, sign};
pub use tsig::{TsigAlgorithm, TsigKey};
use wire::{
    CLASS_IN, CLASS_NONE, Message, Name, OPCODE_QUERY, OPCODE_UPDATE, Question, RData, Rcode,
    Record, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_AXFR, TYPE_CNAME, TYPE_SOA, TYPE_TXT,
};

const NAME: &str = "rfc2136";
/// How long connecting, sending and each answer may take, unless set otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the messages of one zone transfer.
const MAX_TRANSFER_MESSAGES: usize = 10_000;
/// Bound on the records of one zone transfer.
const MAX_TRANSFER_RECORDS: usize = 1_000_000;

/// A failure described in words, carried in [`Error::Other`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

fn config_error(message: String) -> Error {
    Error::Other {
        provider: NAME,
        source: Box::new(Failure(message)),
    }
}

/// A DNS server that takes TSIG-signed dynamic updates for the zones it is given.
// Debug shows the server, zones and key name: `TsigKey` never prints its secret.
#[derive(Debug)]
pub struct Rfc2136Provider {
    server: SocketAddr,
    zones: Vec<Hostname>,
    key: TsigKey,
    timeout: Duration,
    next_id: AtomicU16,
}

impl Rfc2136Provider {
    /// The server at `server` (e.g. `192.0.2.53:53`), signing with `key`, for the zones
    /// whose apexes are `zones`. Each network step may take [`DEFAULT_TIMEOUT`].
    pub fn new(
        server: SocketAddr,
        key: TsigKey,
        zones: impl IntoIterator<Item = Hostname>,
    ) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self {
            server,
            zones: zones.into_iter().collect(),
            key,
            timeout: DEFAULT_TIMEOUT,
            next_id: AtomicU16::new(seed as u16),
        }
    }

    /// Lets connecting, sending and each answer take up to `timeout` instead.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Writes `spec` to `zone`, first deleting `old` if given, in one UPDATE that the
    /// server either applies or refuses: each of [`attempts`] is tried until one is applied
    /// or its prerequisites are unmet for the last time.
    async fn write(
        &self,
        zone: &Zone,
        old: Option<(&DnsName, &RecordData)>,
        spec: &RecordSpec,
    ) -> Result<(), Error> {
        inside(zone, &spec.name)?;
        let mut updates = Vec::new();
        if let Some((name, data)) = old {
            inside(zone, name)?;
            updates.push(remove(name, data)?);
        }
        updates.push(add(spec)?);
        let attempts = attempts(old, spec)?;
        let last = attempts.len() - 1;
        for (index, attempt) in attempts.into_iter().enumerate() {
            match self
                .update(zone, attempt.prerequisites, updates.clone())
                .await
            {
                Err(Error::Conflict { .. }) if index < last => {}
                Err(Error::Conflict { provider, detail }) => {
                    return Err(Error::Conflict {
                        provider,
                        detail: format!("{detail}: {spec} not written: {}", attempt.unmet),
                    });
                }
                other => return other,
            }
        }
        Ok(())
    }

    /// Sends an UPDATE of `zone` with `prerequisites` and `updates` and checks its answer.
    async fn update(
        &self,
        zone: &Zone,
        prerequisites: Vec<Record>,
        updates: Vec<Record>,
    ) -> Result<(), Error> {
        let call = format!("UPDATE {} at {}", zone.name, self.server);
        let mut request = Message::new(self.id(), OPCODE_UPDATE);
        request.questions.push(Question {
            name: Name::from_hostname(&zone.name),
            kind: TYPE_SOA,
            class: CLASS_IN,
        });
        request.answers = prerequisites;
        request.authorities = updates;
        let (mut stream, mut verifier) = self.send(&call, &request).await?;
        let bytes = self.receive(&call, &mut stream).await?;
        let (_, signed) = self.answer(&call, &bytes, &request, &mut verifier)?;
        if !signed {
            return Err(self.unsigned(&call));
        }
        Ok(())
    }

    /// The records of `zone`, from a zone transfer.
    async fn transfer(&self, zone: &Zone) -> Result<Vec<Record>, Error> {
        let call = format!("AXFR {} from {}", zone.name, self.server);
        let apex = Name::from_hostname(&zone.name);
        let mut request = Message::new(self.id(), OPCODE_QUERY);
        request.questions.push(Question {
            name: apex.clone(),
            kind: TYPE_AXFR,
            class: CLASS_IN,
        });
        let (mut stream, mut verifier) = self.send(&call, &request).await?;
        let mut records = Vec::new();
        let mut soas = 0;
        for index in 0..MAX_TRANSFER_MESSAGES {
            let bytes = self.receive(&call, &mut stream).await?;
            let (message, signed) = self.answer(&call, &bytes, &request, &mut verifier)?;
            if index == 0 && !signed {
                return Err(self.unsigned(&call));
            }
            for record in message.answers {
                if soas == 2 {
                    return Err(self.malformed(&call, "records follow the closing SOA record"));
                }
                if record.kind == TYPE_SOA {
                    if soas == 0 && !record.name.eq_ignore_case(&apex) {
                        return Err(self.malformed(&call, "the SOA record is not the zone's"));
                    }
                    soas += 1;
                } else if soas == 0 {
                    return Err(
                        self.malformed(&call, "the transfer does not start with an SOA record")
                    );
                } else if records.len() == MAX_TRANSFER_RECORDS {
                    return Err(self.malformed(&call, "more than 1000000 records"));
                } else {
                    records.push(record);
                }
            }
            if soas == 2 {
                if !signed {
                    return Err(self.unsigned(&call));
                }
                return Ok(records);
            }
        }
        Err(self.malformed(&call, "more than 10000 messages"))
    }

    fn id(&self) -> u16 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Signs `request`, connects and sends it; returns the connection and the verifier of
    /// its answers.
    async fn send(
        &self,
        call: &str,
        request: &Message,
    ) -> Result<(TcpStream, Verifier<'_>), Error> {
        let signed = sign(&self.key, request, now())
            .map_err(|e| config_error(format!("{call}: cannot encode the request: {e}")))?;
        let length = u16::try_from(signed.bytes.len())
            .map_err(|_| config_error(format!("{call}: the request is too long")))?;
        let mut stream = self
            .step(call, "connecting", TcpStream::connect(self.server))
            .await?;
        let mut framed = length.to_be_bytes().to_vec();
        framed.extend_from_slice(&signed.bytes);
        self.step(call, "sending", stream.write_all(&framed))
            .await?;
        Ok((stream, Verifier::new(&self.key, &signed.mac)))
    }

    /// Reads one length-prefixed message.
    async fn receive(&self, call: &str, stream: &mut TcpStream) -> Result<Vec<u8>, Error> {
        let mut length = [0; 2];
        self.step(call, "reading the answer", stream.read_exact(&mut length))
            .await?;
        let mut bytes = vec![0; usize::from(u16::from_be_bytes(length))];
        self.step(call, "reading the answer", stream.read_exact(&mut bytes))
            .await?;
        Ok(bytes)
    }

    /// Runs one network step under the timeout; failures are transient.
    async fn step<T>(
        &self,
        call: &str,
        what: &str,
        step: impl Future<Output = std::io::Result<T>>,
    ) -> Result<T, Error> {
        match timeout(self.timeout, step).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(Error::Transient {
                provider: NAME,
                detail: format!("{call}: {what}: {error}"),
            }),
            Err(_) => Err(Error::Transient {
                provider: NAME,
                detail: format!(
                    "{call}: {what}: no answer within {} s",
                    self.timeout.as_secs_f64()
                ),
            }),
        }
    }

    /// Decodes and checks one answer to `request`: its id and opcode, its signature, its
    /// response code. Returns it and whether it was signed.
    fn answer(
        &self,
        call: &str,
        bytes: &[u8],
        request: &Message,
        verifier: &mut Verifier<'_>,
    ) -> Result<(Message, bool), Error> {
        let (message, last_at) = wire::decode(bytes)
            .map_err(|e| self.malformed(call, &format!("the answer is not a DNS message: {e}")))?;
        if message.id != request.id
            || !message.is_response()
            || message.opcode() != request.opcode()
        {
            return Err(self.malformed(call, "the answer does not match the request"));
        }
        let signed = verifier
            .check(bytes, &message, last_at, now())
            .map_err(|rejected| {
                let detail = match rejected {
                    Rejected::Server(error) => format!(
                        "{call}: the server refused the TSIG key {}: {error}",
                        self.key.name()
                    ),
                    other => format!("{call}: {other} (TSIG key {})", self.key.name()),
                };
                Error::Auth {
                    provider: NAME,
                    detail,
                }
            })?;
        match message.rcode() {
            Rcode::NOERROR => Ok((message, signed)),
            rcode => Err(self.refused(call, rcode)),
        }
    }

    /// The error for an answer with `rcode`.
    fn refused(&self, call: &str, rcode: Rcode) -> Error {
        let key = self.key.name();
        let provider = NAME;
        match rcode {
            Rcode::NOTAUTH => Error::Auth {
                provider,
                detail: format!(
                    "{call}: NOTAUTH: the server is not authoritative for the zone or did not accept the TSIG key {key}"
                ),
            },
            Rcode::REFUSED => Error::Auth {
                provider,
                detail: format!(
                    "{call}: REFUSED: check that the server knows the TSIG key {key} with this secret and allows it for the zone, and that it takes requests from this address"
                ),
            },
            Rcode::NXDOMAIN | Rcode::NOTZONE => Error::NotFound {
                provider,
                detail: format!("{call}: {rcode}: the zone or name is not on the server"),
            },
            Rcode::SERVFAIL => Error::Transient {
                provider,
                detail: format!("{call}: SERVFAIL"),
            },
            Rcode::YXDOMAIN | Rcode::YXRRSET | Rcode::NXRRSET => Error::Conflict {
                provider,
                detail: format!("{call}: {rcode}"),
            },
            Rcode::NOTIMP => config_error(format!(
                "{call}: NOTIMP: the server does not take this request; enable dynamic updates and zone transfers (PowerDNS: dnsupdate=yes)"
            )),
            other => config_error(format!("{call}: the server answered {other}")),
        }
    }

    fn unsigned(&self, call: &str) -> Error {
        Error::Auth {
            provider: NAME,
            detail: format!(
                "{call}: the answer is not signed, so it cannot be trusted; check that the server has the TSIG key {}",
                self.key.name()
            ),
        }
    }

    fn malformed(&self, call: &str, what: &str) -> Error {
        config_error(format!("{call}: {what}"))
    }
}

#[async_trait]
impl DnsProvider for Rfc2136Provider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn list_zones(&self) -> Result<Vec<Zone>, Error> {
        Ok(self
            .zones
            .iter()
            .map(|name| Zone {
                id: name.to_string(),
                name: name.clone(),
            })
            .collect())
    }

    async fn list_records(
        &self,
        zone: &Zone,
        name: Option<&DnsName>,
    ) -> Result<Vec<ProviderRecord>, Error> {
        let records = self.transfer(zone).await?;
        Ok(records
            .iter()
            .filter_map(|record| {
                let owner = record.name.to_dns_name()?;
                if name.is_some_and(|n| n != &owner) {
                    return None;
                }
                let data = record_data(record)?;
                Some(ProviderRecord {
                    id: record_id(&owner, &data),
                    spec: RecordSpec {
                        name: owner,
                        data,
                        ttl: record.ttl,
                    },
                })
            })
            .collect())
    }

    async fn create_record(&self, zone: &Zone, spec: &RecordSpec) -> Result<RecordId, Error> {
        self.write(zone, None, spec).await?;
        Ok(record_id(&spec.name, &spec.data))
    }

    async fn update_record(
        &self,
        zone: &Zone,
        id: &RecordId,
        spec: &RecordSpec,
    ) -> Result<RecordId, Error> {
        let (name, old) = parse_id(NAME, id)?;
        self.write(zone, Some((&name, &old)), spec).await?;
        Ok(record_id(&spec.name, &spec.data))
    }

    async fn delete_record(&self, zone: &Zone, id: &RecordId) -> Result<(), Error> {
        let (name, data) = parse_id(NAME, id)?;
        inside(zone, &name)?;
        self.update(zone, Vec::new(), vec![remove(&name, &data)?])
            .await
    }
}

fn inside(zone: &Zone, name: &DnsName) -> Result<(), Error> {
    if zone.contains(name) {
        Ok(())
    } else {
        Err(Error::OutsideZone {
            name: name.clone(),
            zone: zone.name.clone(),
        })
    }
}

/// Seconds since the Unix epoch, for TSIG.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The type and data of `data` on the wire.
fn wire_data(data: &RecordData) -> Result<(u16, RData), Error> {
    Ok(match data {
        RecordData::A(ip) => (TYPE_A, RData::A(*ip)),
        RecordData::Aaaa(ip) => (TYPE_AAAA, RData::Aaaa(*ip)),
        RecordData::Cname(target) => (TYPE_CNAME, RData::Cname(Name::from_hostname(target))),
        // At most 255 bytes (kokoa-core checks): one character string.
        RecordData::Txt(text) => (
            TYPE_TXT,
            RData::Txt(vec![text.as_str().as_bytes().to_vec()]),
        ),
        other => {
            return Err(config_error(format!(
                "{} records are not supported",
                other.record_type()
            )));
        }
    })
}

/// The update that adds `spec` (RFC 2136 §2.5.1).
fn add(spec: &RecordSpec) -> Result<Record, Error> {
    let (kind, data) = wire_data(&spec.data)?;
    Ok(Record {
        name: Name::from_dns_name(&spec.name),
        kind,
        class: CLASS_IN,
        ttl: spec.ttl,
        data,
    })
}

/// The update that deletes the value `data` from the set `name` (RFC 2136 §2.5.4).
fn remove(name: &DnsName, data: &RecordData) -> Result<Record, Error> {
    let (kind, data) = wire_data(data)?;
    Ok(Record {
        name: Name::from_dns_name(name),
        kind,
        class: CLASS_NONE,
        ttl: 0,
        data,
    })
}

/// One UPDATE to try: its prerequisites (RFC 2136 §2.4), and what it means when the server
/// finds them unmet.
#[derive(Debug)]
struct Attempt {
    prerequisites: Vec<Record>,
    unmet: String,
}

/// The prerequisite "`name` holds no `kind` record" (§2.4.3), or with [`TYPE_ANY`] "no
/// record at all" (§2.4.5).
fn absent(name: &DnsName, kind: u16) -> Record {
    Record {
        name: Name::from_dns_name(name),
        kind,
        class: CLASS_NONE,
        ttl: 0,
        data: RData::Empty,
    }
}

/// The prerequisite "the CNAME set of `name` is exactly `target`" (§2.4.2).
fn cname_is(name: &DnsName, target: &Hostname) -> Record {
    Record {
        name: Name::from_dns_name(name),
        kind: TYPE_CNAME,
        class: CLASS_IN,
        ttl: 0,
        data: RData::Cname(Name::from_hostname(target)),
    }
}

/// The UPDATEs to try, in order, to write `spec` after deleting `old`, each with
/// prerequisites under which the server cannot ignore the add: a name holds either one
/// CNAME or other records (RFC 2136 §3.4.2.2), and an add that breaks this is dropped
/// with a NOERROR answer.
fn attempts(
    old: Option<(&DnsName, &RecordData)>,
    spec: &RecordSpec,
) -> Result<Vec<Attempt>, Error> {
    let name = &spec.name;
    let replaced = old.filter(|(old_name, _)| *old_name == name);
    Ok(match (replaced, &spec.data) {
        // Deleting this CNAME frees the name for anything.
        (Some((_, RecordData::Cname(target))), _) => vec![Attempt {
            prerequisites: vec![cname_is(name, target)],
            unmet: format!("{name} no longer holds only the CNAME {target} that it replaces"),
        }],
        (Some((_, data)), RecordData::Cname(_)) => {
            return Err(Error::Conflict {
                provider: NAME,
                detail: format!(
                    "{spec} cannot replace the {} record {name} in one update: a CNAME must be its name's only record, and an update cannot check that no other record is left; delete the record, then create the CNAME",
                    data.record_type()
                ),
            });
        }
        (None, RecordData::Cname(target)) => vec![
            Attempt {
                prerequisites: vec![absent(name, TYPE_ANY)],
                unmet: format!("{name} holds records"),
            },
            // Creating it again only sets its TTL.
            Attempt {
                prerequisites: vec![cname_is(name, target)],
                unmet: format!(
                    "{name} holds other records or another CNAME, and a CNAME must be its name's only record (RFC 2136 §3.4.2.2); delete them first or choose another name"
                ),
            },
        ],
        _ => vec![Attempt {
            prerequisites: vec![absent(name, TYPE_CNAME)],
            unmet: format!(
                "{name} holds a CNAME record, and a name with a CNAME holds no other record (RFC 2136 §3.4.2.2); delete the CNAME first or choose another name"
            ),
        }],
    })
}

/// The value of a transferred record, when the model holds it.
fn record_data(record: &Record) -> Option<RecordData> {
    if record.class != CLASS_IN {
        return None;
    }
    match &record.data {
        RData::A(ip) => Some(RecordData::A(*ip)),
        RData::Aaaa(ip) => Some(RecordData::Aaaa(*ip)),
        RData::Cname(target) => target.to_hostname().map(RecordData::Cname),
        RData::Txt(strings) => match strings.as_slice() {
            [text] => RecordData::parse(RecordType::Txt, std::str::from_utf8(text).ok()?).ok(),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Hostname {
        Hostname::parse(name).expect("test name")
    }

    #[test]
    fn records_go_to_the_wire_and_back() {
        for data in [
            RecordData::A([203, 0, 113, 10].into()),
            RecordData::Aaaa("2001:db8::1".parse().expect("address")),
            RecordData::Cname(host("edge.hoge.com")),
            RecordData::Txt(kokoa_core::TxtText::new("v=kokoa token").unwrap()),
        ] {
            let spec = RecordSpec {
                name: host("app.hoge.com").into(),
                data: data.clone(),
                ttl: 30,
            };
            let record = add(&spec).expect("supported type");
            assert_eq!(record.class, CLASS_IN);
            assert_eq!(record_data(&record), Some(data.clone()));
            let removal = remove(&spec.name, &data).expect("supported type");
            assert_eq!((removal.class, removal.ttl), (CLASS_NONE, 0));
            // Class NONE records are updates, not zone content.
            assert_eq!(record_data(&removal), None);
        }
        let split = Record {
            name: Name::parse("txt.hoge.com").expect("name"),
            kind: TYPE_TXT,
            class: CLASS_IN,
            ttl: 30,
            data: RData::Txt(vec![b"a".to_vec(), b"b".to_vec()]),
        };
        assert_eq!(record_data(&split), None);
    }

    fn at(name: &str, data: RecordData) -> RecordSpec {
        RecordSpec {
            name: DnsName::parse(name).expect("test name"),
            data,
            ttl: 30,
        }
    }

    /// `(class, type, data)` of each prerequisite of each attempt.
    fn shapes(attempts: &[Attempt]) -> Vec<Vec<(u16, u16, RData)>> {
        attempts
            .iter()
            .map(|attempt| {
                attempt
                    .prerequisites
                    .iter()
                    .map(|p| {
                        assert_eq!(
                            (p.ttl, p.name.to_dns_name()),
                            (0, DnsName::parse("x.hoge.com").ok())
                        );
                        (p.class, p.kind, p.data.clone())
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_add_carries_prerequisites_under_which_it_cannot_be_ignored() {
        let a = RecordData::A([203, 0, 113, 10].into());
        let cname = RecordData::Cname(host("edge.hoge.com"));
        let wire_target = RData::Cname(Name::parse("edge.hoge.com").expect("name"));
        let old_target = RData::Cname(Name::parse("old.hoge.com").expect("name"));
        let name = DnsName::parse("x.hoge.com").expect("name");
        let elsewhere = DnsName::parse("y.hoge.com").expect("name");
        let old_cname = RecordData::Cname(host("old.hoge.com"));
        let no_cname = vec![vec![(CLASS_NONE, TYPE_CNAME, RData::Empty)]];

        // A, AAAA, TXT: no CNAME at the name, whatever they replace elsewhere.
        for data in [
            a.clone(),
            RecordData::Txt(kokoa_core::TxtText::new("t").unwrap()),
        ] {
            let spec = at("x.hoge.com", data);
            assert_eq!(shapes(&attempts(None, &spec).expect("plan")), no_cname);
            let old = Some((&elsewhere, &old_cname));
            assert_eq!(shapes(&attempts(old, &spec).expect("plan")), no_cname);
            let old = Some((&name, &a));
            assert_eq!(shapes(&attempts(old, &spec).expect("plan")), no_cname);
        }
        // A CNAME: the name unused, else holding exactly this CNAME already.
        let spec = at("x.hoge.com", cname);
        assert_eq!(
            shapes(&attempts(None, &spec).expect("plan")),
            [
                vec![(CLASS_NONE, TYPE_ANY, RData::Empty)],
                vec![(CLASS_IN, TYPE_CNAME, wire_target)]
            ]
        );
        // Replacing the name's CNAME: it must still be that CNAME.
        for spec in [spec.clone(), at("x.hoge.com", a.clone())] {
            let old = Some((&name, &old_cname));
            assert_eq!(
                shapes(&attempts(old, &spec).expect("plan")),
                [vec![(CLASS_IN, TYPE_CNAME, old_target.clone())]]
            );
        }
        // An A record cannot become a CNAME in one update.
        let error = attempts(Some((&name, &a)), &spec).expect_err("refused");
        assert!(matches!(error, Error::Conflict { .. }), "{error}");
        assert!(
            error.to_string().contains(
                "x.hoge.com. 30 IN CNAME edge.hoge.com. cannot replace the A record x.hoge.com"
            ),
            "{error}"
        );
    }

    proptest::proptest! {
        /// Whatever can be written can be listed and deleted: every TXT value kokoa-core
        /// takes goes to the wire, the zone transfer reads it back and its id names it.
        #[test]
        fn what_can_be_written_can_be_listed_and_deleted(text in "(?s).{0,260}|[ -~]{0,300}") {
            if let Ok(text) = kokoa_core::TxtText::new(text) {
                let spec = at("x.hoge.com", RecordData::Txt(text));
                let record = add(&spec).expect("a TXT record goes to the wire");
                proptest::prop_assert_eq!(record_data(&record), Some(spec.data.clone()));
                let id = record_id(&spec.name, &spec.data);
                proptest::prop_assert_eq!(parse_id(NAME, &id).expect("its id"), (spec.name, spec.data));
            }
        }
    }

    #[test]
    fn names_outside_the_zone_are_refused_before_anything_is_sent() {
        let zone = Zone {
            id: "hoge.com".into(),
            name: host("hoge.com"),
        };
        let error = inside(&zone, &host("app.fuga.com").into()).expect_err("outside");
        assert!(matches!(error, Error::OutsideZone { .. }), "{error}");
        assert!(inside(&zone, &host("app.hoge.com").into()).is_ok());
        let challenge = DnsName::parse("_acme-challenge.app.hoge.com").expect("name");
        assert!(inside(&zone, &challenge).is_ok());
    }
}
