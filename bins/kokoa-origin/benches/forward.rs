//! The origin agent's forwarder against the forwarders a user would reach for instead,
//! side by side over loopback: the app asked directly, the forwarder with each relay
//! (`splice`, `copy`), `socat` (a process per connection) and an nginx `stream` proxy (one
//! worker). Three loads:
//!
//! - keep-alive: 50 connections each asking one small HTTP request after the other;
//! - new connections: 50 loops each opening a connection per request;
//! - bulk: one connection downloading 1 GiB.
//!
//! Figures and their ratio to socat are printed; nothing is asserted. Run with
//! `cargo bench -p kokoa-origin --bench forward`. `socat` and nginx's stream module
//! (Debian: `apt-get install socat libnginx-mod-stream`) are skipped with a note when
//! missing. The forwarder runs on a runtime of its own with one worker thread, as a single
//! nginx worker does.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use kokoa_origin::{Forwarder, Relay};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const CONNECTIONS: usize = 50;
const RUN: Duration = Duration::from_secs(5);
const BULK: u64 = 1 << 30;
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
const BULK_REQUEST: &[u8] = b"GET /bulk HTTP/1.1\r\nHost: bench\r\n\r\n";
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// The app: answers every request on a connection with `ANSWER`, or with `BULK` bytes for
/// `/bulk`.
async fn app(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut pending = Vec::new();
            loop {
                let Ok(n) = stream.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    let bulk = pending.starts_with(b"GET /bulk");
                    pending.drain(..end + 4);
                    let sent = if bulk {
                        send_bulk(&mut stream).await
                    } else {
                        stream.write_all(ANSWER).await
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

async fn send_bulk(stream: &mut TcpStream) -> std::io::Result<()> {
    stream
        .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {BULK}\r\n\r\n").as_bytes())
        .await?;
    let chunk = vec![b'x'; 1 << 16];
    let mut left = BULK;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

/// Sends `request` and reads one answer of `ANSWER`'s length.
async fn ask(stream: &mut TcpStream, request: &[u8]) -> std::io::Result<()> {
    stream.write_all(request).await?;
    let mut buf = [0u8; ANSWER.len()];
    stream.read_exact(&mut buf).await?;
    Ok(())
}

/// Requests per second and median latency over `CONNECTIONS` kept-alive connections.
async fn keep_alive(target: SocketAddr) -> (f64, Duration) {
    let deadline = Instant::now() + RUN;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(target).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let mut times = Vec::new();
            while Instant::now() < deadline {
                let at = Instant::now();
                ask(&mut stream, REQUEST).await.expect("answer");
                times.push(at.elapsed());
            }
            times
        }));
    }
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await.expect("task"));
    }
    times.sort();
    (
        times.len() as f64 / RUN.as_secs_f64(),
        times[times.len() / 2],
    )
}

/// Connections per second, one request each, `CONNECTIONS` at a time.
async fn new_connections(target: SocketAddr) -> f64 {
    let deadline = Instant::now() + RUN;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let mut stream = TcpStream::connect(target).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                ask(&mut stream, REQUEST).await.expect("answer");
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("task");
    }
    total as f64 / RUN.as_secs_f64()
}

/// MB/s of one 1 GiB download.
async fn bulk(target: SocketAddr) -> f64 {
    let mut stream = TcpStream::connect(target).await.expect("connect");
    let start = Instant::now();
    stream.write_all(BULK_REQUEST).await.expect("request");
    let mut buf = vec![0u8; 1 << 16];
    let mut header = Vec::new();
    // The header, then exactly BULK bytes.
    let mut body = loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the body");
        header.extend_from_slice(&buf[..n]);
        if let Some(end) = header.windows(4).position(|w| w == b"\r\n\r\n") {
            break (header.len() - end - 4) as u64;
        }
    };
    while body < BULK {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed after {body} bytes");
        body += n as u64;
    }
    BULK as f64 / 1e6 / start.elapsed().as_secs_f64()
}

/// A forwarder that runs as a separate program, stopped on drop.
struct External(Child);

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn socat(listen: SocketAddr, app: SocketAddr) -> Option<External> {
    let child = Command::new("socat")
        .arg(format!(
            "TCP-LISTEN:{},bind={},fork,reuseaddr,backlog=1024",
            listen.port(),
            listen.ip()
        ))
        .arg(format!("TCP:{app},nodelay"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(External(child))
}

const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

fn nginx_stream(dir: &Path, listen: SocketAddr, app: SocketAddr) -> Option<External> {
    if !Path::new(STREAM_MODULE).exists() {
        return None;
    }
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "load_module {STREAM_MODULE};\n\
             worker_processes 1;\ndaemon off;\nmaster_process off;\n\
             pid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             stream {{ server {{ listen {listen} backlog=1024; proxy_pass {app}; }} }}\n",
            dir = dir.display()
        ),
    )
    .ok()?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(External(child))
}

/// Waits until `addr` accepts connections.
async fn ready(addr: SocketAddr) -> bool {
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

struct Row {
    name: &'static str,
    keep_alive: (f64, Duration),
    new_connections: f64,
    bulk: f64,
}

async fn measure(name: &'static str, target: SocketAddr) -> Row {
    let keep_alive = keep_alive(target).await;
    let new_connections = new_connections(target).await;
    let bulk = bulk(target).await;
    Row {
        name,
        keep_alive,
        new_connections,
        bulk,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("app port");
    let app_addr = listener.local_addr().expect("address");
    tokio::spawn(app(listener));
    let port = app_addr.port();
    let at = |last: u8| SocketAddr::new(IpAddr::from([127, 0, 0, last]), port);

    let mut rows = vec![measure("direct to the app", app_addr).await];
    // The forwarder listens on 127.0.0.N:PORT and forwards to 127.0.0.1:PORT.
    for (relay, last, name) in [
        (Relay::Splice, 2, "kokoa forwarder, splice"),
        (Relay::Copy, 3, "kokoa forwarder, copy"),
    ] {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("forwarder runtime");
        let forwarder = Forwarder::new(app_addr.ip(), 4096).with_relay(relay);
        // Its listeners are spawned on its own runtime.
        let failed = {
            let _on = runtime.enter();
            forwarder.set(
                at(last).ip(),
                &BTreeSet::from([port]),
                BTreeSet::from([IpAddr::from([127, 0, 0, 1])]),
            )
        };
        assert!(failed.is_empty(), "{failed:?}");
        assert!(ready(at(last)).await, "the forwarder does not listen");
        rows.push(measure(name, at(last)).await);
        forwarder.stop();
        runtime.shutdown_background();
    }
    match socat(at(4), app_addr) {
        Some(_running) if ready(at(4)).await => rows.push(measure("socat (fork)", at(4)).await),
        _ => println!("socat skipped: not installed (apt-get install socat)"),
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    match nginx_stream(dir.path(), at(5), app_addr) {
        Some(_running) if ready(at(5)).await => {
            rows.push(measure("nginx stream, 1 worker", at(5)).await);
        }
        _ => println!(
            "nginx stream skipped: no {STREAM_MODULE} (apt-get install libnginx-mod-stream)"
        ),
    }

    let base = rows.iter().find(|r| r.name.starts_with("socat"));
    let ratio = |value: f64, of: fn(&Row) -> f64| {
        base.map_or_else(String::new, |b| format!(" ({:.2}x)", value / of(b)))
    };
    println!(
        "{:<26} {:>22} {:>9} {:>22} {:>20}",
        "path", "keep-alive req/s", "p50", "new conn/s", "bulk MB/s"
    );
    for row in &rows {
        println!(
            "{:<26} {:>22} {:>9} {:>22} {:>20}",
            row.name,
            format!(
                "{:.0}{}",
                row.keep_alive.0,
                ratio(row.keep_alive.0, |r| r.keep_alive.0)
            ),
            format!("{:.2} ms", row.keep_alive.1.as_secs_f64() * 1e3),
            format!(
                "{:.0}{}",
                row.new_connections,
                ratio(row.new_connections, |r| r.new_connections)
            ),
            format!("{:.0}{}", row.bulk, ratio(row.bulk, |r| r.bulk)),
        );
    }
    println!("(ratios against socat; 2 client tasks share the machine with every forwarder)");
}
