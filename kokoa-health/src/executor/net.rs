//! Name resolution, TCP connections and sockets opened inside a network namespace.

use std::{
    fs::File,
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsFd, OwnedFd},
    path::PathBuf,
};

use rustix::{
    net::{AddressFamily, Protocol, SocketFlags, SocketType},
    thread::LinkNameSpaceType,
};
use tokio::net::{TcpSocket, TcpStream};

use super::Progress;

/// The IP address written in `host` (`203.0.113.7`, `::1` or `[::1]`), if it is one.
pub(super) fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

async fn resolve(
    host: &str,
    port: u16,
    progress: &mut Progress,
) -> Result<Vec<SocketAddr>, String> {
    if let Some(ip) = ip_literal(host) {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    progress.doing(format_args!("resolving {host}"));
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addresses.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    Ok(addresses)
}

/// The first address of `host`.
pub(super) async fn resolve_one(host: &str, progress: &mut Progress) -> Result<IpAddr, String> {
    Ok(resolve(host, 0, progress).await?[0].ip())
}

/// Connects to `host:port`, or to `address:port` when given; each address `host` resolves
/// to is tried in turn.
pub(super) async fn connect(
    host: &str,
    port: u16,
    address: Option<IpAddr>,
    netns: Option<&str>,
    progress: &mut Progress,
) -> Result<TcpStream, String> {
    let addresses = match address {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => resolve(host, port, progress).await?,
    };
    let inside = netns
        .map(|ns| format!(" from network namespace {ns}"))
        .unwrap_or_default();
    let mut last_error = String::new();
    for address in addresses {
        progress.doing(format_args!("connecting to {address}{inside}"));
        let socket = match netns {
            None if address.is_ipv4() => TcpSocket::new_v4(),
            None => TcpSocket::new_v6(),
            Some(netns) => socket_in(netns, family(address.ip()), SocketType::STREAM, None)
                .map(|fd| TcpSocket::from_std_stream(std::net::TcpStream::from(fd))),
        };
        let connected = match socket {
            Ok(socket) => socket.connect(address).await,
            Err(error) => Err(error),
        };
        match connected {
            Ok(stream) => return Ok(stream),
            Err(error) => {
                last_error = format!("cannot connect to {address}{inside}: {}", plain(&error))
            }
        }
    }
    Err(last_error)
}

pub(super) fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    }
}

/// Opens a non-blocking socket inside network namespace `netns` (a name under `/run/netns`
/// or a path); it stays in that namespace for its whole life.
pub(super) fn socket_in(
    netns: &str,
    family: AddressFamily,
    kind: SocketType,
    protocol: Option<Protocol>,
) -> io::Result<OwnedFd> {
    let path = if netns.contains('/') {
        PathBuf::from(netns)
    } else {
        PathBuf::from("/run/netns").join(netns)
    };
    let namespace = File::open(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot open network namespace {}: {}",
                path.display(),
                plain(&e)
            ),
        )
    })?;
    // setns changes the namespace of the calling thread only, so a thread that exits right
    // after opening the socket does it: no runtime thread ever changes namespace. It lives
    // for two system calls.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                rustix::thread::move_into_link_name_space(
                    namespace.as_fd(),
                    Some(LinkNameSpaceType::Network),
                )
                .map_err(|e| {
                    io::Error::new(
                        io::Error::from(e).kind(),
                        format!(
                            "cannot enter network namespace {} ({e}; it takes CAP_SYS_ADMIN)",
                            path.display()
                        ),
                    )
                })?;
                Ok(rustix::net::socket_with(
                    family,
                    kind,
                    SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                    protocol,
                )?)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

/// An I/O error without the ` (os error 111)` suffix.
pub(super) fn plain(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}
