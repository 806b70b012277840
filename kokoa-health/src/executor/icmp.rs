//! One ICMP (or ICMPv6) echo request and its reply.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::OwnedFd,
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use rustix::net::{Protocol, SocketFlags, SocketType, ipproto};
use tokio::net::UdpSocket;

use super::{
    Progress,
    net::{family, plain, socket_in},
};

/// The socket types tried in order: an unprivileged "ping socket" (allowed by
/// `net.ipv4.ping_group_range`, which also covers ICMPv6), then a raw socket.
const KINDS: [SocketType; 2] = [SocketType::DGRAM, SocketType::RAW];

/// Sends one echo request to `ip` (from inside `netns` if given) and waits for its reply;
/// the caller bounds the wait.
pub(super) async fn echo(
    ip: IpAddr,
    netns: Option<&str>,
    progress: &mut Progress,
) -> Result<(), String> {
    let (socket, kind) = open(ip, netns)?;
    // tokio's UDP socket is a datagram socket on any file descriptor: sendto and recvfrom
    // work the same on ICMP sockets, without unsafe registration of the descriptor.
    let socket = UdpSocket::from_std(std::net::UdpSocket::from(socket))
        .map_err(|e| format!("cannot poll an ICMP socket: {}", plain(&e)))?;
    let token = token();
    let request = Echo::request(ip, &token);
    let inside = netns
        .map(|ns| format!(" in network namespace {ns}"))
        .unwrap_or_default();
    progress.doing(format_args!("waiting for an echo reply from {ip}{inside}"));
    socket
        .send_to(&request.bytes, SocketAddr::new(ip, 0))
        .await
        .map_err(|e| format!("cannot send an echo request to {ip}{inside}: {}", plain(&e)))?;
    let mut buffer = [0u8; 1500];
    loop {
        let (length, _) = socket
            .recv_from(&mut buffer)
            .await
            .map_err(|e| format!("no echo reply from {ip}{inside}: {}", plain(&e)))?;
        if is_reply(ip, kind, &buffer[..length], &request) {
            return Ok(());
        }
    }
}

fn protocol(ip: IpAddr) -> Protocol {
    if ip.is_ipv4() {
        ipproto::ICMP
    } else {
        ipproto::ICMPV6
    }
}

fn open(ip: IpAddr, netns: Option<&str>) -> Result<(OwnedFd, SocketType), String> {
    let mut refused = None;
    for kind in KINDS {
        let opened = match netns {
            Some(netns) => socket_in(netns, family(ip), kind, Some(protocol(ip))),
            None => rustix::net::socket_with(
                family(ip),
                kind,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                Some(protocol(ip)),
            )
            .map_err(io::Error::from),
        };
        match opened {
            Ok(socket) => return Ok((socket, kind)),
            // EACCES (ping sockets not allowed) and EPERM (no CAP_NET_RAW) alike.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => refused = Some(e),
            Err(e) => return Err(format!("cannot open an ICMP socket: {}", plain(&e))),
        }
    }
    Err(format!(
        "cannot open an ICMP socket ({}): run the checker as root or with CAP_NET_RAW, or allow its group in net.ipv4.ping_group_range",
        refused.map(|e| plain(&e)).unwrap_or_default()
    ))
}

/// 16 bytes no other request of this process (or, very likely, of another) carries.
fn token() -> [u8; 16] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let mut token = [0u8; 16];
    token[..8].copy_from_slice(&count.to_be_bytes());
    token[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    token[12..].copy_from_slice(&nanos.to_be_bytes());
    token
}

/// An echo request as sent.
#[derive(Debug)]
struct Echo {
    bytes: Vec<u8>,
}

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

impl Echo {
    fn request(ip: IpAddr, token: &[u8; 16]) -> Self {
        let kind = if ip.is_ipv4() {
            ECHO_REQUEST_V4
        } else {
            ECHO_REQUEST_V6
        };
        // Identifier and sequence come from the token; a ping socket replaces the
        // identifier with its own, which is why replies are matched on the payload.
        let mut bytes = vec![kind, 0, 0, 0, token[14], token[15], token[6], token[7]];
        bytes.extend_from_slice(token);
        if ip.is_ipv4() {
            let sum = checksum(&bytes);
            bytes[2..4].copy_from_slice(&sum.to_be_bytes());
        } // The kernel computes ICMPv6 checksums (they cover the addresses).
        Self { bytes }
    }

    fn sequence(&self) -> &[u8] {
        &self.bytes[6..8]
    }

    fn payload(&self) -> &[u8] {
        &self.bytes[8..]
    }
}

/// Whether `packet`, as received on a socket of `kind`, is the reply to `request`. A raw
/// IPv4 socket delivers the IP header too, and every ICMP packet of the host (our own
/// request included, on loopback); ping and ICMPv6 sockets deliver the ICMP message only.
fn is_reply(ip: IpAddr, kind: SocketType, packet: &[u8], request: &Echo) -> bool {
    let message = if ip.is_ipv4() && kind == SocketType::RAW {
        let header = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
        packet.get(header..).unwrap_or_default()
    } else {
        packet
    };
    let reply = if ip.is_ipv4() {
        ECHO_REPLY_V4
    } else {
        ECHO_REPLY_V6
    };
    message.len() == request.bytes.len()
        && message[0] == reply
        && message[6..8] == *request.sequence()
        && message[8..] == *request.payload()
}

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| {
            u32::from(u16::from_be_bytes([
                pair[0],
                pair.get(1).copied().unwrap_or(0),
            ]))
        })
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

    fn reply_to(request: &Echo, reply_type: u8) -> Vec<u8> {
        let mut reply = request.bytes.clone();
        reply[0] = reply_type;
        reply
    }

    #[test]
    fn the_checksum_of_a_request_verifies() {
        let request = Echo::request(V4, &[7; 16]);
        // A correct checksum makes the sum over the whole message 0.
        assert_eq!(checksum(&request.bytes), 0);
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }

    #[test]
    fn replies_are_matched_on_a_ping_socket() {
        let request = Echo::request(V4, &token());
        let mut reply = reply_to(&request, ECHO_REPLY_V4);
        reply[4..6].copy_from_slice(&[0xab, 0xcd]); // the kernel's identifier
        assert!(is_reply(V4, SocketType::DGRAM, &reply, &request));
        assert!(
            !is_reply(V4, SocketType::DGRAM, &request.bytes, &request),
            "a request is no reply"
        );
        let other = Echo::request(V4, &token());
        assert!(!is_reply(
            V4,
            SocketType::DGRAM,
            &reply_to(&other, ECHO_REPLY_V4),
            &request
        ));
    }

    #[test]
    fn replies_are_matched_after_the_ip_header_on_a_raw_socket() {
        let request = Echo::request(V4, &token());
        let mut packet = vec![
            0x46, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1, 0, 0, 0, 0,
        ];
        packet.extend(reply_to(&request, ECHO_REPLY_V4));
        assert!(is_reply(V4, SocketType::RAW, &packet, &request));
        assert!(!is_reply(V4, SocketType::RAW, &packet[4..], &request));
        assert!(!is_reply(V4, SocketType::RAW, &[], &request));
    }

    #[test]
    fn icmpv6_replies_have_no_header_and_their_own_type() {
        let request = Echo::request(V6, &token());
        assert_eq!(request.bytes[0], ECHO_REQUEST_V6);
        assert!(is_reply(
            V6,
            SocketType::RAW,
            &reply_to(&request, ECHO_REPLY_V6),
            &request
        ));
        assert!(!is_reply(
            V6,
            SocketType::RAW,
            &reply_to(&request, ECHO_REPLY_V4),
            &request
        ));
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(token(), token());
    }
}
