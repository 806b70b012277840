//! The cross-platform userspace control protocol that `wg` speaks over
//! `/var/run/wireguard/NAME.sock`: `get=1` answers the device's state as `key=value` lines,
//! `set=1` changes it. Keys are lowercase hex; every answer ends with `errno=N` and an empty
//! line. Pure parsing and formatting, so it is tested without a socket.

use std::{fmt::Write as _, net::SocketAddr, time::SystemTime};

use ipnet::IpNet;
use zeroize::Zeroizing;

/// `errno` values `wg` turns into its messages.
pub(crate) const EINVAL: i32 = 22;
pub(crate) const EPROTO: i32 = 71;

/// One `set=1` request, parsed whole before anything is changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Set {
    /// `Some(None)`: the key is removed (all-zero key).
    pub private_key: Option<Option<Zeroizing<[u8; 32]>>>,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub replace_peers: bool,
    pub peers: Vec<PeerSet>,
}

/// The lines of one peer, from its `public_key=` to the next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PeerSet {
    pub public_key: [u8; 32],
    pub remove: bool,
    pub update_only: bool,
    /// `Some(None)`: no preshared key (all zero).
    pub preshared_key: Option<Option<Zeroizing<[u8; 32]>>>,
    pub endpoint: Option<SocketAddr>,
    pub keepalive: Option<u16>,
    pub replace_allowed_ips: bool,
    pub allowed_ips: Vec<IpNet>,
}

impl PeerSet {
    fn new(public_key: [u8; 32]) -> Self {
        Self {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// A refused request: the `errno` to answer and why (never holding a key).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub errno: i32,
    pub why: String,
}

fn refused(errno: i32, why: impl Into<String>) -> Refused {
    Refused {
        errno,
        why: why.into(),
    }
}

fn key(value: &str, name: &str) -> Result<Zeroizing<[u8; 32]>, Refused> {
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(value, &mut out[..])
        .map_err(|_| refused(EINVAL, format!("{name} is not 64 hex digits")))?;
    Ok(out)
}

/// `Some(key)`, or `None` for the all-zero key that means "none".
fn optional_key(value: &str, name: &str) -> Result<Option<Zeroizing<[u8; 32]>>, Refused> {
    let k = key(value, name)?;
    Ok((*k != [0u8; 32]).then_some(k))
}

fn flag(value: &str, name: &str) -> Result<bool, Refused> {
    match value {
        "true" => Ok(true),
        _ => Err(refused(
            EINVAL,
            format!("{name}={value:?}: only true is allowed"),
        )),
    }
}

fn number<T: std::str::FromStr>(value: &str, name: &str) -> Result<T, Refused> {
    value
        .parse()
        .map_err(|_| refused(EINVAL, format!("{name}={value:?} is not a valid number")))
}

/// Parses the lines after `set=1` (up to, not including, the empty line).
pub(crate) fn parse_set<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Set, Refused> {
    let mut set = Set::default();
    for line in lines {
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| refused(EPROTO, "a line without ="))?;
        if name == "public_key" {
            set.peers.push(PeerSet::new(*key(value, name)?));
            continue;
        }
        let Some(peer) = set.peers.last_mut() else {
            match name {
                "private_key" => set.private_key = Some(optional_key(value, name)?),
                "listen_port" => set.listen_port = Some(number(value, name)?),
                "fwmark" => set.fwmark = Some(number(value, name)?),
                "replace_peers" => set.replace_peers = flag(value, name)?,
                _ => return Err(refused(EPROTO, format!("unknown device key {name:?}"))),
            }
            continue;
        };
        match name {
            "remove" => peer.remove = flag(value, name)?,
            "update_only" => peer.update_only = flag(value, name)?,
            "preshared_key" => peer.preshared_key = Some(optional_key(value, name)?),
            "endpoint" => peer.endpoint = Some(number(value, name)?),
            "persistent_keepalive_interval" => peer.keepalive = Some(number(value, name)?),
            "replace_allowed_ips" => peer.replace_allowed_ips = flag(value, name)?,
            "allowed_ip" => peer.allowed_ips.push(
                value
                    .parse::<IpNet>()
                    .map_err(|_| refused(EINVAL, format!("allowed_ip={value:?}")))?
                    .trunc(),
            ),
            "protocol_version" if value == "1" => {}
            "protocol_version" => {
                return Err(refused(EPROTO, format!("protocol_version={value:?}")));
            }
            _ => return Err(refused(EPROTO, format!("unknown peer key {name:?}"))),
        }
    }
    Ok(set)
}

/// What `get=1` answers about the device.
pub(crate) struct DeviceState {
    pub private_key: Option<Zeroizing<[u8; 32]>>,
    pub listen_port: u16,
    pub fwmark: u32,
    pub peers: Vec<PeerState>,
}

/// What `get=1` answers about one peer.
pub(crate) struct PeerState {
    pub public_key: [u8; 32],
    pub preshared_key: Option<Zeroizing<[u8; 32]>>,
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub keepalive: u16,
    pub allowed_ips: Vec<IpNet>,
}

/// The answer to `get=1`, `errno=0` and the closing empty line included.
pub(crate) fn format_get(state: &DeviceState) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::new());
    let o = &mut *out;
    if let Some(k) = &state.private_key {
        let _ = writeln!(o, "private_key={}", hex::encode(&k[..]));
    }
    let _ = writeln!(o, "listen_port={}", state.listen_port);
    if state.fwmark != 0 {
        let _ = writeln!(o, "fwmark={}", state.fwmark);
    }
    for p in &state.peers {
        let _ = writeln!(o, "public_key={}", hex::encode(p.public_key));
        if let Some(k) = &p.preshared_key {
            let _ = writeln!(o, "preshared_key={}", hex::encode(&k[..]));
        }
        let _ = writeln!(o, "protocol_version=1");
        if let Some(e) = p.endpoint {
            let _ = writeln!(o, "endpoint={e}");
        }
        let since = p
            .last_handshake
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .unwrap_or_default();
        let _ = writeln!(o, "last_handshake_time_sec={}", since.as_secs());
        let _ = writeln!(o, "last_handshake_time_nsec={}", since.subsec_nanos());
        let _ = writeln!(o, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(o, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(o, "persistent_keepalive_interval={}", p.keepalive);
        for ip in &p.allowed_ips {
            let _ = writeln!(o, "allowed_ip={ip}");
        }
    }
    o.push_str("errno=0\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn k(b: u8) -> String {
        hex::encode([b; 32])
    }

    #[test]
    fn a_set_as_wg_setconf_sends_it_parses() {
        let text = format!(
            "private_key={}\nlisten_port=51820\nreplace_peers=true\npublic_key={}\n\
             replace_allowed_ips=true\nallowed_ip=10.0.1.1/32\nallowed_ip=10.0.2.0/24\n\
             endpoint=[2001:db8::1]:51820\npersistent_keepalive_interval=25\n\
             public_key={}\nremove=true",
            k(1),
            k(2),
            k(3)
        );
        let set = parse_set(text.lines()).unwrap();
        assert_eq!(set.private_key.unwrap().unwrap()[..], [1; 32]);
        assert_eq!(set.listen_port, Some(51820));
        assert!(set.replace_peers);
        assert_eq!(set.peers.len(), 2);
        let p = &set.peers[0];
        assert_eq!(p.public_key, [2; 32]);
        assert!(p.replace_allowed_ips && !p.remove);
        assert_eq!(
            p.allowed_ips,
            [
                "10.0.1.1/32".parse().unwrap(),
                "10.0.2.0/24".parse().unwrap()
            ]
        );
        assert_eq!(p.endpoint, Some("[2001:db8::1]:51820".parse().unwrap()));
        assert_eq!(p.keepalive, Some(25));
        assert!(set.peers[1].remove);
    }

    #[test]
    fn bad_lines_are_refused_with_the_errno_wg_expects() {
        let cases = [
            ("private_key=zz", EINVAL),
            ("listen_port=70000", EINVAL),
            ("nonsense", EPROTO),
            ("frobnicate=1", EPROTO),
            ("remove=true", EPROTO),
        ];
        for (line, errno) in cases {
            assert_eq!(parse_set([line]).unwrap_err().errno, errno, "{line}");
        }
        let peer = format!("public_key={}", k(2));
        for (line, errno) in [
            ("allowed_ip=10.0.0.1/33", EINVAL),
            ("endpoint=host:1", EINVAL),
            ("protocol_version=2", EPROTO),
            ("remove=yes", EINVAL),
        ] {
            assert_eq!(
                parse_set([&*peer, line]).unwrap_err().errno,
                errno,
                "{line}"
            );
        }
        // A refusal never repeats a key.
        let why = parse_set([&*format!("private_key={}x", k(7))])
            .unwrap_err()
            .why;
        assert!(!why.contains(&k(7)), "{why}");
    }

    #[test]
    fn the_all_zero_key_means_none() {
        let set = parse_set([&*format!("private_key={}", k(0))]).unwrap();
        assert_eq!(set.private_key, Some(None));
    }

    proptest! {
        /// What `get` prints, `set` reads back: the same keys, endpoints and addresses.
        #[test]
        fn get_output_reads_back_as_a_set(
            private in any::<[u8; 32]>(),
            port in any::<u16>(),
            peers in proptest::collection::vec(
                (any::<[u8; 32]>(), any::<Option<(std::net::IpAddr, u16)>>(), any::<u16>(),
                 proptest::collection::vec((any::<std::net::IpAddr>(), 0u8..=32), 0..4)),
                0..4,
            ),
        ) {
            let peers: Vec<PeerState> = peers.into_iter().map(|(public_key, endpoint, keepalive, ips)| PeerState {
                public_key,
                preshared_key: None,
                endpoint: endpoint.map(|(ip, port)| SocketAddr::new(ip, port)),
                last_handshake: None,
                rx_bytes: 1,
                tx_bytes: 2,
                keepalive,
                allowed_ips: ips.into_iter().map(|(ip, len)| {
                    let len = if ip.is_ipv4() { len } else { len * 4 };
                    IpNet::new(ip, len).unwrap().trunc()
                }).collect(),
            }).collect();
            let state = DeviceState {
                private_key: Some(Zeroizing::new(private)),
                listen_port: port,
                fwmark: 0,
                peers,
            };
            let text = format_get(&state);
            prop_assert!(text.ends_with("errno=0\n\n"));
            let lines = text.lines().take_while(|l| !l.is_empty()).filter(|l| {
                !l.starts_with("errno=") && !l.starts_with("last_handshake")
                    && !l.starts_with("tx_bytes") && !l.starts_with("rx_bytes")
            });
            let set = parse_set(lines).unwrap();
            let expected = (private != [0; 32]).then_some(private);
            prop_assert_eq!(set.private_key.unwrap().map(|k| *k), expected);
            prop_assert_eq!(set.listen_port, Some(port));
            prop_assert_eq!(set.peers.len(), state.peers.len());
            for (got, want) in set.peers.iter().zip(&state.peers) {
                prop_assert_eq!(got.public_key, want.public_key);
                prop_assert_eq!(got.endpoint, want.endpoint);
                prop_assert_eq!(got.keepalive, Some(want.keepalive));
                prop_assert_eq!(&got.allowed_ips, &want.allowed_ips);
            }
        }
    }
}
