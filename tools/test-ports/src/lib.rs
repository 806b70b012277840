//! Free ports on 127.0.0.1 for the servers a test starts after choosing their ports (nginx,
//! pebble, PowerDNS, a control plane).
//!
//! A port the kernel hands out for `bind(0)` and that the test closes at once goes back to
//! the pool: the next `bind(0)`, a listener of a test running in parallel, may get it before
//! the server binds it. These ports come from below Linux's ephemeral range (32768 and up),
//! which `bind(0)` never hands out, and none is handed out twice in one process.
//!
//! ```
//! let (a, b) = (test_ports::tcp(), test_ports::tcp());
//! assert_ne!(a, b);
//! assert!((20_000..32_000).contains(&a));
//! std::net::TcpListener::bind(("127.0.0.1", a))?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::{
    net::{Ipv4Addr, TcpListener, UdpSocket},
    sync::atomic::{AtomicU32, Ordering},
};

/// The ports handed out: 20000 up to 32000.
const FIRST: u16 = 20_000;
const COUNT: u32 = 12_000;

/// A port free for TCP on 127.0.0.1.
pub fn tcp() -> u16 {
    next(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
}

/// A port free for both TCP and UDP on 127.0.0.1, as a DNS server needs.
pub fn tcp_and_udp() -> u16 {
    next(|port| {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
    })
}

fn next(free: impl Fn(u16) -> bool) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Each process starts elsewhere in the range, so test programs run side by side
    // rarely meet.
    let offset = std::process::id() % (COUNT / 10) * 10;
    for _ in 0..1_000 {
        let n = offset + NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + u16::try_from(n % COUNT).expect("COUNT fits in u16");
        if free(port) {
            return port;
        }
    }
    panic!(
        "no free port in {FIRST}..{} on 127.0.0.1",
        u32::from(FIRST) + COUNT
    );
}
