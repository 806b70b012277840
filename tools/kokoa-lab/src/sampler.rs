//! The DNS sampler of `check --chaos`: a background task that asks the lab's PowerDNS for
//! the A records of every host name every 100 ms and keeps what the chaos steps assert on —
//! when a name that had records answered none, when each edge address was last served,
//! and any address served twice for one name.
//!
//! It speaks DNS itself over UDP (one small query per name, no `dig` process ten times a
//! second per name), and is bounded: it stops after [`LIMIT`] at the latest.

use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use tokio::{net::UdpSocket, sync::watch, task::JoinHandle};

/// How often every name is asked.
pub const EVERY: Duration = Duration::from_millis(100);
/// The sampler stops by itself after this long.
pub const LIMIT: Duration = Duration::from_secs(30 * 60);
/// How long one answer may take.
const ANSWER_WITHIN: Duration = Duration::from_millis(500);
/// The most sightings kept per address (at 10 a second, over 25 minutes).
const MAX_SIGHTINGS: usize = 15_000;
/// The most problems of one kind kept.
const MAX_PROBLEMS: usize = 1_000;

/// A stretch of time during which a name that had records answered none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Empty {
    /// The host name.
    pub name: String,
    /// The first empty answer.
    pub from: SystemTime,
    /// The next answer with records (`None`: still empty at the last sample).
    pub to: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct Record {
    /// When each round began; its index is the round's number.
    rounds: Vec<SystemTime>,
    /// Rounds completed.
    samples: u64,
    /// Names that answered with records at least once: only they can lose them.
    published: HashSet<String>,
    /// Empty stretches, the open ones with `to: None`.
    empties: Vec<Empty>,
    /// (round, when) of each answer holding the address.
    sightings: HashMap<Ipv4Addr, Vec<(u64, SystemTime)>>,
    /// (when, name, address) of an address answered twice for one name.
    duplicates: Vec<(SystemTime, String, Ipv4Addr)>,
    /// Queries without an answer.
    unanswered: u64,
}

impl Record {
    fn note(&mut self, at: SystemTime, name: &str, answer: Option<Vec<Ipv4Addr>>) {
        let Some(addresses) = answer else {
            self.unanswered += 1;
            return;
        };
        let open = self
            .empties
            .iter_mut()
            .rev()
            .find(|e| e.name == name && e.to.is_none());
        if addresses.is_empty() {
            if self.published.contains(name) && open.is_none() && self.empties.len() < MAX_PROBLEMS
            {
                self.empties.push(Empty {
                    name: name.to_owned(),
                    from: at,
                    to: None,
                });
            }
            return;
        }
        if let Some(open) = open {
            open.to = Some(at);
        }
        self.published.insert(name.to_owned());
        let mut once = HashSet::new();
        for address in addresses {
            if !once.insert(address) && self.duplicates.len() < MAX_PROBLEMS {
                self.duplicates.push((at, name.to_owned(), address));
            }
            let round = self.rounds.len().saturating_sub(1) as u64;
            let seen = self.sightings.entry(address).or_default();
            if seen.len() < MAX_SIGHTINGS {
                seen.push((round, at));
            }
        }
    }
}

/// The running sampler; dropping it stops it.
#[derive(Debug)]
pub struct Sampler {
    names: Arc<Mutex<Vec<String>>>,
    record: Arc<Mutex<Record>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Sampler {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sampler {
    /// Starts asking `server` for the A records of `names`.
    pub async fn start(server: SocketAddr, names: Vec<String>) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(match server {
            SocketAddr::V4(_) => "0.0.0.0:0",
            SocketAddr::V6(_) => "[::]:0",
        })
        .await?;
        socket.connect(server).await?;
        let names = Arc::new(Mutex::new(names));
        let record = Arc::new(Mutex::new(Record::default()));
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn({
            let (names, record) = (Arc::clone(&names), Arc::clone(&record));
            async move {
                let started = Instant::now();
                let mut tick = tokio::time::interval(EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut id: u16 = 1;
                while started.elapsed() < LIMIT {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopped.changed() => return,
                    }
                    let asked: Vec<String> = lock(&names).clone();
                    {
                        let mut record = lock(&record);
                        if record.rounds.len() < MAX_SIGHTINGS * 2 {
                            record.rounds.push(SystemTime::now());
                        }
                    }
                    for name in asked {
                        id = id.wrapping_add(1);
                        let answer = ask(&socket, id, &name).await;
                        let at = SystemTime::now();
                        lock(&record).note(at, &name, answer);
                    }
                    lock(&record).samples += 1;
                }
            }
        });
        Ok(Self {
            names,
            record,
            stop,
            task,
        })
    }

    /// Also asks for `name` from now on.
    pub fn add(&self, name: &str) {
        let mut names = lock(&self.names);
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }

    /// The names asked for.
    pub fn names(&self) -> Vec<String> {
        lock(&self.names).clone()
    }

    /// How many rounds it asked, and how many queries got no answer.
    pub fn counts(&self) -> (u64, u64) {
        let record = lock(&self.record);
        (record.samples, record.unanswered)
    }

    /// The empty stretches that overlap `from`..`to`, and how long, in total, some name
    /// answered empty within it (an open stretch counts up to `to`).
    pub fn empties(&self, from: SystemTime, to: SystemTime) -> (Vec<Empty>, Duration) {
        let record = lock(&self.record);
        let mut found = Vec::new();
        let mut total = Duration::ZERO;
        for empty in &record.empties {
            let end = empty.to.unwrap_or(to).min(to);
            let start = empty.from.max(from);
            if empty.from <= to && empty.to.is_none_or(|t| t >= from) {
                total += end.duration_since(start).unwrap_or_default();
                found.push(empty.clone());
            }
        }
        (found, total)
    }

    /// The last time any name answered `address`.
    pub fn last_seen(&self, address: Ipv4Addr) -> Option<SystemTime> {
        lock(&self.record)
            .sightings
            .get(&address)
            .and_then(|s| s.last().map(|(_, at)| *at))
    }

    /// How many answers held `address` after `after`.
    pub fn seen_after(&self, address: Ipv4Addr, after: SystemTime) -> usize {
        lock(&self.record)
            .sightings
            .get(&address)
            .map_or(0, |s| s.iter().filter(|(_, t)| *t > after).count())
    }

    /// Addresses answered twice for one name within `from`..`to`.
    pub fn duplicates(&self, from: SystemTime, to: SystemTime) -> Vec<(String, Ipv4Addr)> {
        lock(&self.record)
            .duplicates
            .iter()
            .filter(|(at, _, _)| *at >= from && *at <= to)
            .map(|(_, name, address)| (name.clone(), *address))
            .collect()
    }

    /// When PowerDNS stopped answering `address` for every name, if it has by now: the
    /// start of the first round after its last sighting, once that round is complete (not
    /// before `since`).
    pub fn gone_since(&self, address: Ipv4Addr, since: SystemTime) -> Option<SystemTime> {
        let record = lock(&self.record);
        let (round, _) = record.sightings.get(&address)?.last().copied()?;
        let next = usize::try_from(round + 1).ok()?;
        (record.samples > round + 1)
            .then(|| record.rounds.get(next).copied())
            .flatten()
            .map(|start| start.max(since))
    }
}

/// Asks `socket`'s server for `name`'s A records; `None` when no answer came.
async fn ask(socket: &UdpSocket, id: u16, name: &str) -> Option<Vec<Ipv4Addr>> {
    let query = query(id, name)?;
    socket.send(&query).await.ok()?;
    let mut buffer = [0u8; 1500];
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let n = tokio::time::timeout(left, socket.recv(&mut buffer))
            .await
            .ok()?
            .ok()?;
        // An answer to an earlier query that timed out is skipped.
        if let Ok(Some(addresses)) = parse_answer(id, &buffer[..n]) {
            return Some(addresses);
        }
    }
}

/// A DNS query for `name`'s A records (RFC 1035 §4), `None` for a name that cannot be
/// encoded.
pub fn query(id: u16, name: &str) -> Option<Vec<u8>> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    // Flags 0 (a plain query, no recursion: PowerDNS answers with authority); one question.
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        q.push(u8::try_from(label.len()).ok()?);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    // QTYPE A, QCLASS IN.
    q.extend_from_slice(&[0, 1, 0, 1]);
    Some(q)
}

/// The A records of an answer to query `id`: `Ok(None)` when it answers another query,
/// an error when it is damaged or a failure (other than "no such name", which is empty).
pub fn parse_answer(id: u16, message: &[u8]) -> Result<Option<Vec<Ipv4Addr>>, String> {
    let u16_at = |at: usize| -> Result<u16, String> {
        message
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated".to_owned())
    };
    if u16_at(0)? != id {
        return Ok(None);
    }
    let flags = u16_at(2)?;
    if flags & 0x8000 == 0 {
        return Err("not an answer".into());
    }
    match flags & 0x000f {
        0 | 3 => {}
        rcode => return Err(format!("answered with rcode {rcode}")),
    }
    let (questions, answers) = (u16_at(4)?, u16_at(6)?);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(message, at)? + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..answers {
        at = skip_name(message, at)?;
        let (kind, class, length) = (u16_at(at)?, u16_at(at + 2)?, usize::from(u16_at(at + 8)?));
        at += 10;
        let data = message.get(at..at + length).ok_or("truncated")?;
        if kind == 1 && class == 1 && length == 4 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += length;
    }
    Ok(Some(addresses))
}

/// The position after the (possibly compressed) name at `at`.
fn skip_name(message: &[u8], mut at: usize) -> Result<usize, String> {
    loop {
        let length = *message.get(at).ok_or("truncated name")?;
        match length {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => return Ok(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to `query` with `records` A records, the name compressed as PowerDNS does.
    fn answer(query: &[u8], rcode: u8, records: &[[u8; 4]]) -> Vec<u8> {
        let mut m = query.to_vec();
        m[2] = 0x84;
        m[3] = rcode;
        m[7] = u8::try_from(records.len()).unwrap();
        for r in records {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
            m.extend_from_slice(r);
        }
        m
    }

    #[test]
    fn a_query_encodes_the_name_and_its_answer_decodes() {
        let q = query(0x1234, "app.hoge.test").unwrap();
        assert_eq!(&q[..2], &[0x12, 0x34]);
        assert_eq!(&q[12..16], b"\x03app");
        assert_eq!(q.len(), 12 + 15 + 4);
        let a = answer(&q, 0, &[[10, 99, 0, 11], [10, 99, 0, 12]]);
        assert_eq!(
            parse_answer(0x1234, &a).unwrap(),
            Some(vec![
                Ipv4Addr::new(10, 99, 0, 11),
                Ipv4Addr::new(10, 99, 0, 12)
            ])
        );
        assert_eq!(parse_answer(0x1235, &a).unwrap(), None);
        assert_eq!(
            parse_answer(0x1234, &answer(&q, 3, &[])).unwrap(),
            Some(vec![])
        );
        assert!(parse_answer(0x1234, &answer(&q, 2, &[])).is_err());
        assert!(parse_answer(0x1234, &a[..a.len() - 2]).is_err());
        assert!(query(1, "a..b").is_none());
    }

    #[test]
    fn a_name_that_loses_its_records_is_an_empty_stretch() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let a = Ipv4Addr::new(10, 99, 0, 11);
        let mut r = Record {
            rounds: vec![t(0)],
            ..Record::default()
        };
        // Not yet published: empty answers do not count.
        r.note(t(1), "new.hoge.test", Some(vec![]));
        r.note(t(2), "new.hoge.test", Some(vec![a, a]));
        r.note(t(3), "new.hoge.test", Some(vec![]));
        r.note(t(4), "new.hoge.test", Some(vec![]));
        r.note(t(5), "new.hoge.test", None);
        r.note(t(6), "new.hoge.test", Some(vec![a]));
        assert_eq!(
            r.empties,
            vec![Empty {
                name: "new.hoge.test".into(),
                from: t(3),
                to: Some(t(6))
            }]
        );
        assert_eq!(r.unanswered, 1);
        assert_eq!(r.duplicates, vec![(t(2), "new.hoge.test".into(), a)]);
        assert_eq!(r.sightings[&a], vec![(0, t(2)), (0, t(2)), (0, t(6))]);
    }
}
