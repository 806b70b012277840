//! The device: a TUN interface, one UDP socket, the peers' WireGuard sessions, and three
//! threads moving packets (interface to network, network to interface, timers).

use std::{
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket},
    sync::{Arc, Mutex, PoisonError, RwLock},
    thread,
    time::{Duration, Instant, SystemTime},
};

use boringtun::noise::{
    Packet, Tunn, TunnResult, handshake::parse_handshake_anon, rate_limiter::RateLimiter,
};
use ipnet::IpNet;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::{
    recv,
    tun::Tun,
    uapi::{self, DeviceState, PeerSet, PeerState, Refused, Set},
};

/// Largest IP packet a TUN interface hands over, plus WireGuard's 32 bytes of overhead.
const BUFFER: usize = 65_535 + 32;
/// Handshakes per second a peer may ask for before cookies are required.
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// How often the timers run: boringtun wants at least every 250 ms.
const TICK: Duration = Duration::from_millis(250);
/// How long the receiving thread blocks before it looks for a new socket.
const RECV_WAIT: Duration = Duration::from_secs(1);

/// One peer: what the configuration says, and its session behind its own lock.
struct PeerEntry {
    public_key: [u8; 32],
    /// 24-bit index: the top bits of every session index boringtun hands out for it.
    index: u32,
    allowed_ips: Vec<IpNet>,
    preshared_key: Option<Zeroizing<[u8; 32]>>,
    keepalive: u16,
    session: Mutex<Session>,
}

struct Session {
    /// `None` until the device has a private key.
    tunn: Option<Tunn>,
    endpoint: Option<SocketAddr>,
}

struct State {
    private_key: Option<StaticSecret>,
    listen_port: u16,
    fwmark: u32,
    socket: Arc<UdpSocket>,
    /// Whether `socket` is an IPv6 socket that also carries IPv4 (as mapped addresses).
    dual_stack: bool,
    rate_limiter: Option<Arc<RateLimiter>>,
    peers: Vec<PeerEntry>,
    next_index: u32,
}

/// A running userspace WireGuard interface.
pub(crate) struct Device {
    tun: Tun,
    state: RwLock<State>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Binds the UDP socket: IPv6 and IPv4 together where the host has IPv6, else IPv4 only.
fn bind(port: u16) -> io::Result<(UdpSocket, bool)> {
    match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port)) {
        Ok(socket) => Ok((socket, true)),
        Err(_) => UdpSocket::bind(("0.0.0.0", port)).map(|s| (s, false)),
    }
}

/// Marks the socket's packets with `fwmark` (`SO_MARK`; 0 clears it), for policy routing.
fn mark(socket: &UdpSocket, fwmark: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: SO_MARK takes a u32 by pointer and length; the descriptor is ours.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&raw const fwmark).cast(),
            size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The address as the peer is known: IPv4-mapped IPv6 addresses as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

impl State {
    fn send(&self, packet: &[u8], to: SocketAddr) {
        let to = match to {
            SocketAddr::V4(v4) if self.dual_stack => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => to,
        };
        // A full socket buffer or an unreachable peer loses this packet only; WireGuard and
        // the transport above retransmit.
        let _ = self.socket.send_to(packet, to);
    }

    /// The peer whose allowed IPs hold `dst` most specifically.
    fn route(&self, dst: IpAddr) -> Option<&PeerEntry> {
        let mut best: Option<(&PeerEntry, u8)> = None;
        for peer in &self.peers {
            for net in &peer.allowed_ips {
                if net.contains(&dst) && best.is_none_or(|(_, len)| net.prefix_len() > len) {
                    best = Some((peer, net.prefix_len()));
                }
            }
        }
        best.map(|(peer, _)| peer)
    }

    /// The peer a session index (from a response, cookie or data packet) belongs to.
    fn by_index(&self, receiver_idx: u32) -> Option<&PeerEntry> {
        self.peers.iter().find(|p| p.index == receiver_idx >> 8)
    }

    fn new_tunn(&self, peer: &PeerEntry) -> Option<Tunn> {
        let private = self.private_key.clone()?;
        Some(Tunn::new(
            private,
            PublicKey::from(peer.public_key),
            peer.preshared_key.as_deref().copied(),
            (peer.keepalive != 0).then_some(peer.keepalive),
            peer.index,
            self.rate_limiter.clone(),
        ))
    }

    /// Carries out a parsed `set=1`: the device first, then each peer in order.
    fn apply(&mut self, set: Set) -> io::Result<()> {
        if let Some(port) = set.listen_port
            && (port != self.listen_port || port == 0)
        {
            let (socket, dual_stack) = bind(port)?;
            self.listen_port = socket.local_addr()?.port();
            self.socket = Arc::new(socket);
            self.dual_stack = dual_stack;
        }
        let previous_mark = self.fwmark;
        if let Some(fwmark) = set.fwmark {
            self.fwmark = fwmark;
        }
        // A new socket has no mark; only a mark set now or before needs the call.
        if self.fwmark != 0 || previous_mark != 0 {
            mark(&self.socket, self.fwmark)?;
        }
        if set.replace_peers {
            self.peers.clear();
        }
        let mut rekeyed = false;
        if let Some(key) = set.private_key {
            let unchanged = match (&key, &self.private_key) {
                (Some(new), Some(old)) => **new == old.to_bytes(),
                (None, None) => true,
                _ => false,
            };
            if !unchanged {
                self.private_key = key.map(|k| StaticSecret::from(*k));
                self.rate_limiter = self
                    .private_key
                    .as_ref()
                    .map(|k| Arc::new(RateLimiter::new(&PublicKey::from(k), HANDSHAKE_RATE_LIMIT)));
                for i in 0..self.peers.len() {
                    let tunn = self.new_tunn(&self.peers[i]);
                    lock(&self.peers[i].session).tunn = tunn;
                }
            }
            rekeyed = !unchanged;
        }
        for change in set.peers {
            self.apply_peer(change);
        }
        if rekeyed {
            // The sessions of the old key are gone, here and not yet at the peers, which
            // keep sending into them: a handshake with the new key now, not at the next
            // packet this side happens to send (which might be a keepalive 25 s away).
            for peer in &self.peers {
                self.initiate(&mut lock(&peer.session));
            }
        }
        Ok(())
    }

    /// Starts a handshake with the peer of `session` unless one is under way, where the peer
    /// is known to be.
    fn initiate(&self, session: &mut Session) {
        let mut out = [0u8; 256];
        let endpoint = session.endpoint;
        if let (Some(tunn), Some(to)) = (session.tunn.as_mut(), endpoint)
            && let TunnResult::WriteToNetwork(wire) =
                tunn.format_handshake_initiation(&mut out, false)
        {
            self.send(wire, to);
        }
    }

    fn apply_peer(&mut self, change: PeerSet) {
        let at = self
            .peers
            .iter()
            .position(|p| p.public_key == change.public_key);
        if change.remove {
            if let Some(i) = at {
                self.peers.remove(i);
            }
            return;
        }
        let i = match at {
            Some(i) => i,
            None if change.update_only => return,
            None => {
                self.next_index = (self.next_index + 1) & 0x00ff_ffff;
                self.peers.push(PeerEntry {
                    public_key: change.public_key,
                    index: self.next_index,
                    allowed_ips: Vec::new(),
                    preshared_key: None,
                    keepalive: 0,
                    session: Mutex::new(Session {
                        tunn: None,
                        endpoint: None,
                    }),
                });
                self.peers.len() - 1
            }
        };
        let peer = &mut self.peers[i];
        let mut renew = lock(&peer.session).tunn.is_none();
        if let Some(psk) = change.preshared_key {
            renew |= psk.as_deref() != peer.preshared_key.as_deref();
            peer.preshared_key = psk;
        }
        if let Some(keepalive) = change.keepalive {
            renew |= keepalive != peer.keepalive;
            peer.keepalive = keepalive;
        }
        if let Some(endpoint) = change.endpoint {
            lock(&peer.session).endpoint = Some(canonical(endpoint));
        }
        if change.replace_allowed_ips {
            peer.allowed_ips.clear();
        }
        for net in &change.allowed_ips {
            if !peer.allowed_ips.contains(net) {
                peer.allowed_ips.push(*net);
            }
        }
        // An address belongs to one peer: the one that named it last.
        for (j, other) in self.peers.iter_mut().enumerate() {
            if j != i {
                other
                    .allowed_ips
                    .retain(|n| !change.allowed_ips.contains(n));
            }
        }
        if renew {
            let tunn = self.new_tunn(&self.peers[i]);
            lock(&self.peers[i].session).tunn = tunn;
        }
    }

    fn snapshot(&self) -> DeviceState {
        let now = SystemTime::now();
        DeviceState {
            private_key: self
                .private_key
                .as_ref()
                .map(|k| Zeroizing::new(k.to_bytes())),
            listen_port: self.listen_port,
            fwmark: self.fwmark,
            peers: self
                .peers
                .iter()
                .map(|p| {
                    let session = lock(&p.session);
                    let (since, tx, rx) = session.tunn.as_ref().map_or((None, 0, 0), |t| {
                        let (since, tx, rx, ..) = t.stats();
                        (since, tx, rx)
                    });
                    PeerState {
                        public_key: p.public_key,
                        preshared_key: p.preshared_key.clone(),
                        endpoint: session.endpoint,
                        last_handshake: since.and_then(|s| now.checked_sub(s)),
                        rx_bytes: rx as u64,
                        tx_bytes: tx as u64,
                        keepalive: p.keepalive,
                        allowed_ips: p.allowed_ips.clone(),
                    }
                })
                .collect(),
        }
    }
}

impl Device {
    /// Creates interface `name` with no key and no peers, listening on a random port.
    pub(crate) fn create(name: &crate::InterfaceName) -> io::Result<Self> {
        let tun = Tun::create(name)?;
        let (socket, dual_stack) = bind(0)?;
        Ok(Self {
            tun,
            state: RwLock::new(State {
                private_key: None,
                listen_port: socket.local_addr()?.port(),
                fwmark: 0,
                socket: Arc::new(socket),
                dual_stack,
                rate_limiter: None,
                peers: Vec::new(),
                next_index: 0,
            }),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer to `get=1`.
    pub(crate) fn get(&self) -> Zeroizing<String> {
        uapi::format_get(&self.read().snapshot())
    }

    /// Carries out a parsed `set=1`; a refusal carries the `errno` to answer.
    pub(crate) fn set(&self, set: Set) -> Result<(), Refused> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.apply(set).map_err(|e| Refused {
            errno: e.raw_os_error().unwrap_or(uapi::EINVAL),
            why: e.to_string(),
        })
    }

    /// Starts the packet threads. Returns when the interface is gone (deleted), with the
    /// error its read gave.
    pub(crate) fn run(self: &Arc<Self>) -> io::Error {
        let inbound = Arc::clone(self);
        thread::spawn(move || inbound.network_to_interface());
        let timers = Arc::clone(self);
        thread::spawn(move || timers.timers());
        self.interface_to_network()
    }

    /// Packets the host sends into the interface: encrypted to the peer that owns the
    /// destination address.
    fn interface_to_network(&self) -> io::Error {
        let mut packet = vec![0u8; BUFFER];
        let mut out = vec![0u8; BUFFER];
        loop {
            let n = match self.tun.read(&mut packet) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return e,
            };
            let Some(dst) = Tunn::dst_address(&packet[..n]) else {
                continue;
            };
            let state = self.read();
            let Some(peer) = state.route(dst) else {
                continue;
            };
            let mut session = lock(&peer.session);
            let endpoint = session.endpoint;
            let Some(tunn) = session.tunn.as_mut() else {
                continue;
            };
            if let TunnResult::WriteToNetwork(wire) = tunn.encapsulate(&packet[..n], &mut out)
                && let Some(to) = endpoint
            {
                state.send(wire, to);
            }
        }
    }

    /// Datagrams from the network: handshakes answered, data decrypted into the interface
    /// when its source address belongs to the peer that sent it.
    fn network_to_interface(&self) {
        let mut batch = recv::Batch::new();
        let mut out = vec![0u8; BUFFER];
        let mut socket = Arc::clone(&self.read().socket);
        let _ = socket.set_read_timeout(Some(RECV_WAIT));
        loop {
            let Ok(count) = batch.receive(&socket) else {
                // A timeout, or the socket was replaced: take the current one.
                let current = Arc::clone(&self.read().socket);
                if !Arc::ptr_eq(&current, &socket) {
                    socket = current;
                    let _ = socket.set_read_timeout(Some(RECV_WAIT));
                }
                continue;
            };
            let state = self.read();
            for i in 0..count {
                let (datagram, from) = batch.get(i);
                self.receive(&state, datagram, canonical(from), &mut out);
            }
        }
    }

    /// One datagram from the network.
    fn receive(&self, state: &State, datagram: &[u8], from: SocketAddr, out: &mut [u8]) {
        let Some(limiter) = state.rate_limiter.as_ref() else {
            return;
        };
        let Ok(packet) = Tunn::parse_incoming_packet(datagram) else {
            return;
        };
        let peer = match &packet {
            Packet::HandshakeInit(init) => {
                // The MACs (and, under load, a cookie) before the costly part.
                match limiter.verify_packet(Some(from.ip()), datagram, out) {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        state.send(cookie, from);
                        return;
                    }
                    Err(_) => return,
                }
                let Some(private) = state.private_key.as_ref() else {
                    return;
                };
                parse_handshake_anon(private, &PublicKey::from(private), init)
                    .ok()
                    .and_then(|half| {
                        state
                            .peers
                            .iter()
                            .find(|p| p.public_key == half.peer_static_public)
                    })
            }
            Packet::HandshakeResponse(p) => state.by_index(p.receiver_idx),
            Packet::PacketCookieReply(p) => state.by_index(p.receiver_idx),
            Packet::PacketData(p) => state.by_index(p.receiver_idx),
        };
        let Some(peer) = peer else {
            return;
        };
        let is_data = matches!(packet, Packet::PacketData(_));
        let mut session = lock(&peer.session);
        let Some(tunn) = session.tunn.as_mut() else {
            return;
        };
        let mut flush = false;
        match tunn.decapsulate(Some(from.ip()), datagram, out) {
            TunnResult::Done => {}
            TunnResult::Err(_) => {
                // Data this side cannot open (its sessions were replaced: a new key, a
                // restart) keeps failing until a handshake: start one, towards where
                // the peer was last authenticated, never towards this unproven sender.
                if is_data {
                    state.initiate(&mut session);
                }
                return;
            }
            TunnResult::WriteToNetwork(wire) => {
                state.send(wire, from);
                flush = true;
            }
            TunnResult::WriteToTunnelV4(inner, src) => {
                if peer.owns(IpAddr::V4(src)) {
                    let _ = self.tun.write(inner);
                }
            }
            TunnResult::WriteToTunnelV6(inner, src) => {
                if peer.owns(IpAddr::V6(src)) {
                    let _ = self.tun.write(inner);
                }
            }
        }
        if flush {
            // Packets queued while the handshake was under way.
            while let TunnResult::WriteToNetwork(wire) = tunn.decapsulate(None, &[], out) {
                state.send(wire, from);
            }
        }
        // The peer is where its last authenticated packet came from (roaming).
        session.endpoint = Some(from);
    }

    /// Handshake retries, rekeying and keepalives of every peer; the handshake rate
    /// limiter's count is reset every second.
    fn timers(&self) {
        let mut out = vec![0u8; BUFFER];
        let mut reset = Instant::now();
        loop {
            thread::sleep(TICK);
            let state = self.read();
            if reset.elapsed() >= Duration::from_secs(1) {
                if let Some(limiter) = &state.rate_limiter {
                    limiter.reset_count();
                }
                reset = Instant::now();
            }
            for peer in &state.peers {
                let mut session = lock(&peer.session);
                let endpoint = session.endpoint;
                let Some(tunn) = session.tunn.as_mut() else {
                    continue;
                };
                if let TunnResult::WriteToNetwork(wire) = tunn.update_timers(&mut out)
                    && let Some(to) = endpoint
                {
                    state.send(wire, to);
                }
            }
        }
    }
}

impl PeerEntry {
    fn owns(&self, src: IpAddr) -> bool {
        self.allowed_ips.iter().any(|n| n.contains(&src))
    }
}
