//! Forwarding over loopback: 127.0.0.2 stands in for the origin's tunnel address, 127.0.0.3
//! and 127.0.0.4 for an edge and for a stranger.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpSocket,
};

use super::*;

const TUNNEL_IP: &str = "127.0.0.2";
const EDGE: &str = "127.0.0.3";
const STRANGER: &str = "127.0.0.4";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An echo service on 127.0.0.1; returns its port and the number of connections it got.
async fn echo_service() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (port, accepted)
}

async fn connect_from(source: &str, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(source), 0)).unwrap();
    socket
        .connect(SocketAddr::new(ip(TUNNEL_IP), port))
        .await
        .unwrap()
}

/// Sends `ping` and returns what came back within `wait` (empty: closed or nothing).
async fn exchange(stream: &mut TcpStream, wait: Duration) -> Vec<u8> {
    if stream.write_all(b"ping").await.is_err() {
        return Vec::new();
    }
    let mut buf = [0u8; 4];
    match tokio::time::timeout(wait, stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) => buf.to_vec(),
        _ => Vec::new(),
    }
}

fn forwarder(max: usize, port: u16, allowed: &[&str]) -> Forwarder {
    let forwarder = Forwarder::new(ip("127.0.0.1"), max);
    let failed = forwarder.set(
        ip(TUNNEL_IP),
        &BTreeSet::from([port]),
        allowed.iter().map(|a| ip(a)).collect(),
    );
    assert!(failed.is_empty(), "{failed:?}");
    forwarder
}

#[tokio::test]
async fn forwards_connections_from_edges_and_closes_others_at_once() {
    let (port, accepted) = echo_service().await;
    let _forwarder = forwarder(16, port, &[EDGE]);

    let mut edge = connect_from(EDGE, port).await;
    assert_eq!(exchange(&mut edge, Duration::from_secs(2)).await, b"ping");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    let mut stranger = connect_from(STRANGER, port).await;
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), stranger.read(&mut buf))
        .await
        .expect("a refused connection is closed at once, not left hanging");
    assert!(matches!(read, Ok(0) | Err(_)), "the stranger read {read:?}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "nothing reached the service"
    );
}

#[tokio::test]
async fn follows_changes_of_edges_and_ports() {
    let (port, _) = echo_service().await;
    let forwarder = forwarder(16, port, &[EDGE]);

    // The edge is replaced by another one: the old address loses access.
    assert!(
        forwarder
            .set(
                ip(TUNNEL_IP),
                &BTreeSet::from([port]),
                BTreeSet::from([ip(STRANGER)])
            )
            .is_empty()
    );
    let mut new_edge = connect_from(STRANGER, port).await;
    assert_eq!(
        exchange(&mut new_edge, Duration::from_secs(2)).await,
        b"ping"
    );
    let mut old_edge = connect_from(EDGE, port).await;
    assert!(
        exchange(&mut old_edge, Duration::from_millis(500))
            .await
            .is_empty()
    );

    // The route goes away: nothing listens any more.
    assert!(
        forwarder
            .set(
                ip(TUNNEL_IP),
                &BTreeSet::new(),
                BTreeSet::from([ip(STRANGER)])
            )
            .is_empty()
    );
    assert!(forwarder.listening().is_empty());
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(STRANGER), 0)).unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        socket.connect(SocketAddr::new(ip(TUNNEL_IP), port)),
    )
    .await
    .expect("connect ends");
    assert!(refused.is_err(), "the listener is closed");
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let (port, _) = echo_service().await;
    let _forwarder = forwarder(1, port, &[EDGE]);

    let mut first = connect_from(EDGE, port).await;
    assert_eq!(exchange(&mut first, Duration::from_secs(2)).await, b"ping");
    // The only permit is taken: the second connection waits in the backlog.
    let mut second = connect_from(EDGE, port).await;
    assert!(
        exchange(&mut second, Duration::from_millis(300))
            .await
            .is_empty()
    );
    drop(first);
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), second.read_exact(&mut buf))
        .await
        .expect("served once the first connection closed")
        .unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn reports_a_listener_it_cannot_open() {
    let taken = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let forwarder = Forwarder::new(ip("127.0.0.1"), 4);
    let failed = forwarder.set(ip(TUNNEL_IP), &BTreeSet::from([port]), BTreeSet::new());
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, SocketAddr::new(ip(TUNNEL_IP), port));
    assert_eq!(failed[0].1.kind(), io::ErrorKind::AddrInUse);
    drop(taken);
    assert!(
        forwarder
            .set(ip(TUNNEL_IP), &BTreeSet::from([port]), BTreeSet::new())
            .is_empty(),
        "retried once the port is free"
    );
}

/// Both relays carry a large transfer each way intact, pass a half close on, and both
/// directions end when the service closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_relay_moves_bulk_data_both_ways_and_passes_half_closes_on() {
    // The service: reads everything until the client's half close, then answers with the
    // byte count and a checksum of what it read followed by 3 MB of its own, and closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                stream.read_to_end(&mut got).await.unwrap();
                let sum: u64 = got.iter().map(|b| u64::from(*b)).sum();
                stream
                    .write_all(format!("{} {sum}\n", got.len()).as_bytes())
                    .await
                    .unwrap();
                let answer: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
                stream.write_all(&answer).await.unwrap();
            });
        }
    });
    for relay in [Relay::Copy, Relay::Splice, Relay::Kernel] {
        let forwarder = Forwarder::new(ip("127.0.0.1"), 8).with_relay(relay);
        // The previous relay's listener closes when the runtime next polls its aborted
        // task, so the port may still be taken for a moment: retry, bounded.
        let mut failed = Vec::new();
        for _ in 0..100 {
            failed = forwarder.set(
                ip(TUNNEL_IP),
                &BTreeSet::from([port]),
                BTreeSet::from([ip(EDGE)]),
            );
            if failed.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(failed.is_empty(), "{relay:?}: {failed:?}");
        let mut stream = connect_from(EDGE, port).await;
        let sent: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
        let expected_sum: u64 = sent.iter().map(|b| u64::from(*b)).sum();
        stream.write_all(&sent).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut back))
            .await
            .expect("the relay ends with the service")
            .unwrap();
        let line_end = back.iter().position(|b| *b == b'\n').unwrap();
        assert_eq!(
            std::str::from_utf8(&back[..line_end]).unwrap(),
            format!("{} {expected_sum}", sent.len()),
            "{relay:?}: what the service read"
        );
        let answer = &back[line_end + 1..];
        assert_eq!(answer.len(), 3_000_000, "{relay:?}");
        assert!(
            answer
                .iter()
                .enumerate()
                .all(|(i, b)| *b == (i % 251) as u8),
            "{relay:?}: the answer arrived changed"
        );
        forwarder.stop();
    }
}

#[test]
fn relays_are_named_on_the_command_line() {
    assert_eq!("copy".parse::<Relay>(), Ok(Relay::Copy));
    assert_eq!("splice".parse::<Relay>(), Ok(Relay::Splice));
    assert_eq!("kernel".parse::<Relay>(), Ok(Relay::Kernel));
    assert_eq!(Relay::default(), Relay::Kernel);
    for relay in [Relay::Copy, Relay::Splice, Relay::Kernel] {
        assert_eq!(relay.to_string().parse::<Relay>(), Ok(relay));
    }
    let error = "zero-copy".parse::<Relay>().unwrap_err();
    assert!(error.contains("\"zero-copy\""), "{error}");
}
