//! DNS messages on the wire (RFC 1035 §4): the header, names, resource records with the data
//! types the RFC 2136 provider reads and writes, and TSIG records (RFC 8945 §4.2).
//!
//! Decoding is strict: every field must fit, compression pointers must point strictly
//! backwards (so no input loops), names stay within 255 bytes, record data must fill its
//! declared length exactly and nothing may follow the last record. Encoding never
//! compresses, and refuses data that does not fit its record type, so any message that
//! encodes decodes back to an equal message.
//!
//! ```
//! use kokoa_dns::rfc2136::wire::{CLASS_IN, Message, Name, OPCODE_UPDATE, Question, TYPE_SOA};
//!
//! let mut update = Message::new(0x1234, OPCODE_UPDATE);
//! update.questions.push(Question { name: Name::parse("hoge.com")?, kind: TYPE_SOA, class: CLASS_IN });
//! let bytes = update.encode()?;
//! assert_eq!(&bytes[..4], &[0x12, 0x34, 0x28, 0x00]);
//! assert_eq!(Message::decode(&bytes)?, update);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

use kokoa_core::{DnsName, Hostname};

/// Type A: an IPv4 address.
pub const TYPE_A: u16 = 1;
/// Type CNAME: a canonical name.
pub const TYPE_CNAME: u16 = 5;
/// Type SOA: start of a zone of authority.
pub const TYPE_SOA: u16 = 6;
/// Type TXT: text strings.
pub const TYPE_TXT: u16 = 16;
/// Type AAAA: an IPv6 address.
pub const TYPE_AAAA: u16 = 28;
/// Type TSIG: a transaction signature.
pub const TYPE_TSIG: u16 = 250;
/// Query type AXFR: a whole zone.
pub const TYPE_AXFR: u16 = 252;
/// Type ANY: every type; in an UPDATE prerequisite, any record of the name (RFC 2136 §2.4).
pub const TYPE_ANY: u16 = 255;
/// Class IN: the Internet.
pub const CLASS_IN: u16 = 1;
/// Class NONE: in an UPDATE, deletes the one record with this data (RFC 2136 §2.5.4).
pub const CLASS_NONE: u16 = 254;
/// Class ANY: in an UPDATE, deletes a record set or name; the class of TSIG records.
pub const CLASS_ANY: u16 = 255;
/// Opcode QUERY, also used for zone transfers.
pub const OPCODE_QUERY: u8 = 0;
/// Opcode UPDATE (RFC 2136).
pub const OPCODE_UPDATE: u8 = 5;

/// Longest name on the wire, its final root label included (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;
/// Longest label.
const MAX_LABEL: usize = 63;
/// Longest message: its length must fit the two-byte prefix of DNS over TCP.
pub const MAX_MESSAGE: usize = 65_535;
/// Largest 48-bit time.
const MAX_TIME: u64 = (1 << 48) - 1;

const QR: u16 = 1 << 15;
const TC: u16 = 1 << 9;

/// Why bytes are not a DNS message, or a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ends inside a field.
    #[error("the message ends at byte {0}, inside a field")]
    Truncated(usize),
    /// Bytes follow the last record the header counts.
    #[error("{0} bytes follow the last record")]
    TrailingBytes(usize),
    /// A message longer than 65 535 bytes.
    #[error("a message of {0} bytes is longer than DNS allows (65535)")]
    TooLong(usize),
    /// A compression pointer that does not point strictly backwards.
    #[error("the compression pointer at byte {0} does not point backwards")]
    BadPointer(usize),
    /// A compression pointer where none is allowed (in TSIG data).
    #[error("a compressed name at byte {0}, where names must not be compressed")]
    Compressed(usize),
    /// A label type other than a plain label or a pointer.
    #[error("unsupported label type {kind:#04x} at byte {at}")]
    LabelType {
        /// The label's first byte.
        kind: u8,
        /// Where it is.
        at: usize,
    },
    /// A name of more than 255 bytes, or a label of more than 63 or none.
    #[error("invalid name: {0}")]
    BadName(&'static str),
    /// Record data that does not parse as its type, or does not fill its length.
    #[error("the data of the type {kind} record at byte {at} is malformed")]
    BadData {
        /// The record type.
        kind: u16,
        /// Where the data starts.
        at: usize,
    },
    /// A field too large for its wire encoding, or data that does not fit its type.
    #[error("cannot encode: {0}")]
    Unencodable(&'static str),
}

/// A response code: the header's four bits, or a TSIG error (RFC 8945 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rcode(pub u16);

impl Rcode {
    /// No error.
    pub const NOERROR: Self = Self(0);
    /// The server could not read the request.
    pub const FORMERR: Self = Self(1);
    /// The server failed.
    pub const SERVFAIL: Self = Self(2);
    /// The name does not exist.
    pub const NXDOMAIN: Self = Self(3);
    /// The server does not implement the request.
    pub const NOTIMP: Self = Self(4);
    /// The server refuses, by policy.
    pub const REFUSED: Self = Self(5);
    /// A name exists that should not (UPDATE prerequisite).
    pub const YXDOMAIN: Self = Self(6);
    /// A record set exists that should not (UPDATE prerequisite).
    pub const YXRRSET: Self = Self(7);
    /// A record set that should exist does not (UPDATE prerequisite).
    pub const NXRRSET: Self = Self(8);
    /// Not authoritative for the zone, or the TSIG signature was not accepted.
    pub const NOTAUTH: Self = Self(9);
    /// A name is not in the zone.
    pub const NOTZONE: Self = Self(10);
    /// TSIG: the signature does not verify.
    pub const BADSIG: Self = Self(16);
    /// TSIG: the key is not known.
    pub const BADKEY: Self = Self(17);
    /// TSIG: the time signed is outside the fudge.
    pub const BADTIME: Self = Self(18);
    /// TSIG: the MAC was truncated too far.
    pub const BADTRUNC: Self = Self(22);

    fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            6 => "YXDOMAIN",
            7 => "YXRRSET",
            8 => "NXRRSET",
            9 => "NOTAUTH",
            10 => "NOTZONE",
            16 => "BADSIG",
            17 => "BADKEY",
            18 => "BADTIME",
            22 => "BADTRUNC",
            _ => return None,
        })
    }
}

/// The mnemonic, e.g. `BADKEY`, or `RCODE 12` for codes without one.
impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "RCODE {}", self.0),
        }
    }
}

/// A domain name: up to 127 labels of 1–63 bytes, at most 255 bytes on the wire.
///
/// Labels keep the case they were given; [`Name::eq_ignore_case`] compares as DNS does.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Name {
    labels: Vec<Vec<u8>>,
}

impl Name {
    /// The root, `.`.
    pub fn root() -> Self {
        Self::default()
    }

    /// The name of `labels`, leftmost first, without the root.
    pub fn from_labels(labels: Vec<Vec<u8>>) -> Result<Self, WireError> {
        if labels.iter().any(Vec::is_empty) {
            return Err(WireError::BadName("empty label"));
        }
        if labels.iter().any(|l| l.len() > MAX_LABEL) {
            return Err(WireError::BadName("label longer than 63 bytes"));
        }
        let name = Self { labels };
        if name.wire_len() > MAX_NAME {
            return Err(WireError::BadName("longer than 255 bytes"));
        }
        Ok(name)
    }

    /// Parses dotted text such as `kokoa-key` or `hoge.com.` (the final dot is optional).
    /// Labels hold letters, digits, `-`, `_` and `*`; there are no escapes.
    pub fn parse(text: &str) -> Result<Self, WireError> {
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return Err(WireError::BadName("empty"));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_*.".contains(&b))
        {
            return Err(WireError::BadName(
                "only letters, digits, '-', '_', '*' and dots are allowed",
            ));
        }
        Self::from_labels(text.split('.').map(|l| l.as_bytes().to_vec()).collect())
    }

    /// The name of a host name.
    pub fn from_hostname(name: &Hostname) -> Self {
        // A Hostname has 1–63 byte labels and at most 253 characters: always a valid name.
        Self {
            labels: name
                .as_str()
                .split('.')
                .map(|l| l.as_bytes().to_vec())
                .collect(),
        }
    }

    /// The name of a DNS owner name, such as `_acme-challenge.app.hoge.com`.
    pub fn from_dns_name(name: &DnsName) -> Self {
        // A DnsName has 1–63 byte labels and at most 253 characters: always a valid name.
        Self {
            labels: name
                .as_str()
                .split('.')
                .map(|l| l.as_bytes().to_vec())
                .collect(),
        }
    }

    /// The DNS name this is, if it is one (letters, digits, `-`, `_`, a leading `*`).
    pub fn to_dns_name(&self) -> Option<DnsName> {
        let labels: Vec<&str> = self
            .labels
            .iter()
            .map(|l| std::str::from_utf8(l).ok())
            .collect::<Option<_>>()?;
        DnsName::parse(&labels.join(".")).ok()
    }

    /// The labels, leftmost first.
    pub fn labels(&self) -> &[Vec<u8>] {
        &self.labels
    }

    /// The host name this is, if it is one (letters, digits, `-`, a leading `*` label).
    pub fn to_hostname(&self) -> Option<Hostname> {
        let plain = self.labels.iter().all(|label| {
            label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-*".contains(b))
        });
        if !plain {
            return None;
        }
        let labels: Vec<&str> = self
            .labels
            .iter()
            .map(|l| std::str::from_utf8(l).ok())
            .collect::<Option<_>>()?;
        Hostname::parse(&labels.join(".")).ok()
    }

    /// Whether both are the same name, ignoring ASCII case as DNS does.
    pub fn eq_ignore_case(&self, other: &Self) -> bool {
        self.labels.len() == other.labels.len()
            && self
                .labels
                .iter()
                .zip(&other.labels)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
    }

    fn wire_len(&self) -> usize {
        self.labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1
    }

    /// Appends the uncompressed wire form; `lowercase` gives the canonical form of
    /// RFC 4034 §6.2 that TSIG signs.
    pub(crate) fn write(&self, out: &mut Vec<u8>, lowercase: bool) {
        for label in &self.labels {
            out.push(label.len() as u8); // at most 63, checked on construction
            if lowercase {
                out.extend(label.iter().map(u8::to_ascii_lowercase));
            } else {
                out.extend_from_slice(label);
            }
        }
        out.push(0);
    }
}

/// Dotted text with a final dot; bytes that are not printable, `.` and `\` are written as
/// `\DDD`, so a name read from the network prints safely.
impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.labels.is_empty() {
            return f.write_str(".");
        }
        for label in &self.labels {
            for &b in label {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    write!(f, "{}", b as char)?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

/// An entry of the question section; in an UPDATE, the zone section (RFC 2136 §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name asked for, or the zone updated.
    pub name: Name,
    /// The type asked for (`SOA` in an UPDATE).
    pub kind: u16,
    /// The class.
    pub class: u16,
}

/// A resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The owner name.
    pub name: Name,
    /// The type, e.g. [`TYPE_A`].
    pub kind: u16,
    /// The class, e.g. [`CLASS_IN`].
    pub class: u16,
    /// Time to live in seconds.
    pub ttl: u32,
    /// The data.
    pub data: RData,
}

/// Record data, read according to the record's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    /// No data (length 0), as UPDATE uses to delete a record set or a name.
    Empty,
    /// An IPv4 address (type A).
    A(Ipv4Addr),
    /// An IPv6 address (type AAAA).
    Aaaa(Ipv6Addr),
    /// A target name (type CNAME).
    Cname(Name),
    /// One or more character strings of at most 255 bytes each (type TXT).
    Txt(Vec<Vec<u8>>),
    /// A transaction signature (type TSIG).
    Tsig(Tsig),
    /// The data of any other type, as bytes. Names in it may be compressed pointers into
    /// the message it came from.
    Other(Vec<u8>),
}

/// The data of a TSIG record (RFC 8945 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tsig {
    /// The algorithm, e.g. `hmac-sha256.`.
    pub algorithm: Name,
    /// Seconds since the Unix epoch, 48 bits.
    pub time_signed: u64,
    /// Seconds of clock difference allowed.
    pub fudge: u16,
    /// The message authentication code.
    pub mac: Vec<u8>,
    /// The message id when it was signed.
    pub original_id: u16,
    /// The TSIG error, e.g. [`Rcode::BADKEY`].
    pub error: Rcode,
    /// Other data (the server's time in a BADTIME answer).
    pub other: Vec<u8>,
}

/// A DNS message. In an UPDATE (RFC 2136 §2), the questions are the zone section, the
/// answers the prerequisites and the authorities the updates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The id that pairs an answer with its request.
    pub id: u16,
    /// The header flags: QR, opcode, AA, TC, RD, RA, Z, AD, CD and the response code.
    pub flags: u16,
    /// The question (zone) section.
    pub questions: Vec<Question>,
    /// The answer (prerequisite) section.
    pub answers: Vec<Record>,
    /// The authority (update) section.
    pub authorities: Vec<Record>,
    /// The additional section, where a TSIG record comes last.
    pub additionals: Vec<Record>,
}

impl Message {
    /// A request with `id` and `opcode`, every other flag clear and empty sections.
    pub fn new(id: u16, opcode: u8) -> Self {
        Self {
            id,
            flags: u16::from(opcode & 0x0f) << 11,
            ..Self::default()
        }
    }

    /// The opcode.
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0x0f) as u8
    }

    /// The response code of the header.
    pub fn rcode(&self) -> Rcode {
        Rcode(self.flags & 0x0f)
    }

    /// Whether this is an answer (QR set).
    pub fn is_response(&self) -> bool {
        self.flags & QR != 0
    }

    /// Whether the answer was truncated (TC set).
    pub fn is_truncated(&self) -> bool {
        self.flags & TC != 0
    }

    /// The wire form, names uncompressed.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let count = |n: usize| {
            u16::try_from(n).map_err(|_| WireError::Unencodable("more than 65535 entries"))
        };
        let mut out = Vec::with_capacity(512);
        out.extend(self.id.to_be_bytes());
        out.extend(self.flags.to_be_bytes());
        for n in [
            self.questions.len(),
            self.answers.len(),
            self.authorities.len(),
            self.additionals.len(),
        ] {
            out.extend(count(n)?.to_be_bytes());
        }
        for question in &self.questions {
            question.name.write(&mut out, false);
            out.extend(question.kind.to_be_bytes());
            out.extend(question.class.to_be_bytes());
        }
        for record in self
            .answers
            .iter()
            .chain(&self.authorities)
            .chain(&self.additionals)
        {
            record.write(&mut out)?;
        }
        if out.len() > MAX_MESSAGE {
            return Err(WireError::TooLong(out.len()));
        }
        Ok(out)
    }

    /// Reads a message.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode(bytes).map(|(message, _)| message)
    }
}

impl Record {
    fn write(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        self.name.write(out, false);
        out.extend(self.kind.to_be_bytes());
        out.extend(self.class.to_be_bytes());
        out.extend(self.ttl.to_be_bytes());
        let length_at = out.len();
        out.extend([0, 0]);
        let mismatch = || WireError::Unencodable("the data does not fit the record type");
        match (&self.data, self.kind) {
            (RData::Empty, _) => {}
            (RData::A(ip), TYPE_A) => out.extend(ip.octets()),
            (RData::Aaaa(ip), TYPE_AAAA) => out.extend(ip.octets()),
            (RData::Cname(target), TYPE_CNAME) => target.write(out, false),
            (RData::Txt(strings), TYPE_TXT) => {
                if strings.is_empty() {
                    return Err(WireError::Unencodable("a TXT record without strings"));
                }
                for string in strings {
                    let len = u8::try_from(string.len())
                        .map_err(|_| WireError::Unencodable("a TXT string over 255 bytes"))?;
                    out.push(len);
                    out.extend_from_slice(string);
                }
            }
            (RData::Tsig(tsig), TYPE_TSIG) => tsig.write(out)?,
            (RData::Other(bytes), kind) => {
                if bytes.is_empty()
                    || [TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_TXT, TYPE_TSIG].contains(&kind)
                {
                    return Err(mismatch());
                }
                out.extend_from_slice(bytes);
            }
            _ => return Err(mismatch()),
        }
        let length = u16::try_from(out.len() - length_at - 2)
            .map_err(|_| WireError::Unencodable("record data over 65535 bytes"))?;
        out[length_at..length_at + 2].copy_from_slice(&length.to_be_bytes());
        Ok(())
    }
}

impl Tsig {
    fn write(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let too_long = |_| WireError::Unencodable("a TSIG field over 65535 bytes");
        self.algorithm.write(out, false);
        if self.time_signed > MAX_TIME {
            return Err(WireError::Unencodable("a TSIG time beyond 48 bits"));
        }
        out.extend(&self.time_signed.to_be_bytes()[2..]);
        out.extend(self.fudge.to_be_bytes());
        out.extend(
            u16::try_from(self.mac.len())
                .map_err(too_long)?
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.mac);
        out.extend(self.original_id.to_be_bytes());
        out.extend(self.error.0.to_be_bytes());
        out.extend(
            u16::try_from(self.other.len())
                .map_err(too_long)?
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.other);
        Ok(())
    }
}

/// Reads a message, and where its last additional record starts (a TSIG record is last,
/// and its MAC covers the bytes before it).
pub(crate) fn decode(bytes: &[u8]) -> Result<(Message, Option<usize>), WireError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLong(bytes.len()));
    }
    let mut r = Reader { bytes, pos: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    let counts = [r.u16()?, r.u16()?, r.u16()?, r.u16()?];
    let mut message = Message {
        id,
        flags,
        ..Message::default()
    };
    for _ in 0..counts[0] {
        message.questions.push(Question {
            name: r.name(true)?,
            kind: r.u16()?,
            class: r.u16()?,
        });
    }
    let mut last_additional = None;
    for (section, count) in [1, 2, 3].into_iter().zip(&counts[1..]) {
        for _ in 0..*count {
            if section == 3 {
                last_additional = Some(r.pos);
            }
            let record = r.record()?;
            match section {
                1 => message.answers.push(record),
                2 => message.authorities.push(record),
                _ => message.additionals.push(record),
            }
        }
    }
    if r.pos != bytes.len() {
        return Err(WireError::TrailingBytes(bytes.len() - r.pos));
    }
    Ok((message, last_additional))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(WireError::Truncated(self.bytes.len()))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A name at the current position; with `compressed`, pointers are followed, each to a
    /// position before the previous one, so reading always ends.
    fn name(&mut self, compressed: bool) -> Result<Name, WireError> {
        let mut labels = Vec::new();
        let mut wire_len = 1;
        let mut pos = self.pos;
        let mut limit = self.pos;
        let mut resume = None;
        loop {
            let at = pos;
            let first = *self
                .bytes
                .get(at)
                .ok_or(WireError::Truncated(self.bytes.len()))?;
            match first >> 6 {
                0 if first == 0 => {
                    pos = at + 1;
                    break;
                }
                0 => {
                    let len = usize::from(first);
                    let label = self
                        .bytes
                        .get(at + 1..at + 1 + len)
                        .ok_or(WireError::Truncated(self.bytes.len()))?;
                    wire_len += len + 1;
                    if wire_len > MAX_NAME {
                        return Err(WireError::BadName("longer than 255 bytes"));
                    }
                    labels.push(label.to_vec());
                    pos = at + 1 + len;
                }
                3 => {
                    if !compressed {
                        return Err(WireError::Compressed(at));
                    }
                    let second = *self
                        .bytes
                        .get(at + 1)
                        .ok_or(WireError::Truncated(self.bytes.len()))?;
                    let target = usize::from(first & 0x3f) << 8 | usize::from(second);
                    if target >= limit {
                        return Err(WireError::BadPointer(at));
                    }
                    resume.get_or_insert(at + 2);
                    limit = target;
                    pos = target;
                }
                _ => return Err(WireError::LabelType { kind: first, at }),
            }
        }
        self.pos = resume.unwrap_or(pos);
        Ok(Name { labels })
    }

    fn record(&mut self) -> Result<Record, WireError> {
        let name = self.name(true)?;
        let kind = self.u16()?;
        let class = self.u16()?;
        let ttl = self.u32()?;
        let length = usize::from(self.u16()?);
        let start = self.pos;
        let end = start + length;
        if end > self.bytes.len() {
            return Err(WireError::Truncated(self.bytes.len()));
        }
        self.pos = end;
        // The data is read within its declared length; pointers may still reach back into
        // the message before it.
        let mut data = Reader {
            bytes: &self.bytes[..end],
            pos: start,
        };
        let bad = WireError::BadData { kind, at: start };
        let parsed = if length == 0 {
            RData::Empty
        } else {
            data.data(kind, end).map_err(|_| bad.clone())?
        };
        if data.pos != end {
            return Err(bad);
        }
        Ok(Record {
            name,
            kind,
            class,
            ttl,
            data: parsed,
        })
    }

    /// Record data of type `kind` from here to `end`.
    fn data(&mut self, kind: u16, end: usize) -> Result<RData, WireError> {
        Ok(match kind {
            TYPE_A => {
                let mut octets = [0; 4];
                octets.copy_from_slice(self.take(4)?);
                RData::A(octets.into())
            }
            TYPE_AAAA => {
                let mut octets = [0; 16];
                octets.copy_from_slice(self.take(16)?);
                RData::Aaaa(octets.into())
            }
            TYPE_CNAME => RData::Cname(self.name(true)?),
            TYPE_TXT => {
                let mut strings = Vec::new();
                while self.pos < end {
                    let len = usize::from(self.u8()?);
                    strings.push(self.take(len)?.to_vec());
                }
                RData::Txt(strings)
            }
            TYPE_TSIG => RData::Tsig(self.tsig()?),
            _ => RData::Other(self.take(end - self.pos)?.to_vec()),
        })
    }

    fn tsig(&mut self) -> Result<Tsig, WireError> {
        let algorithm = self.name(false)?;
        let time = self.take(6)?;
        let time_signed = time.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let fudge = self.u16()?;
        let mac_len = usize::from(self.u16()?);
        let mac = self.take(mac_len)?.to_vec();
        let original_id = self.u16()?;
        let error = Rcode(self.u16()?);
        let other_len = usize::from(self.u16()?);
        let other = self.take(other_len)?.to_vec();
        Ok(Tsig {
            algorithm,
            time_signed,
            fudge,
            mac,
            original_id,
            error,
            other,
        })
    }
}

#[cfg(test)]
mod tests;
