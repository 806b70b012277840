//! The lab's network: namespaces joined by a bridge, and the probes that look at it from
//! inside a namespace (curl, ping).

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use crate::{
    Error,
    plan::{self, BRIDGE, CONTROL_ADDRESS, HUB, NETWORK_LEN, ROOT_LINK},
    state::Ledger,
    supervisor::Spec,
};

/// Runs `spec` to completion; its standard output on success, else an error with its
/// standard error.
pub async fn run(spec: &Spec) -> Result<String, Error> {
    let command_line = || spec.command_line().join(" ");
    let out = spec.command().output().await.map_err(|e| Error::Command {
        command: command_line(),
        message: e.to_string(),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: command_line(),
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Runs `ip ARGS` in the root namespace.
pub async fn ip(args: &[&str]) -> Result<String, Error> {
    run(&Spec::root(
        std::iter::once("ip")
            .chain(args.iter().copied())
            .map(String::from)
            .collect(),
    ))
    .await
}

/// Builds the small Internet: the hub namespace with a bridge, one namespace per host with
/// a veth to the bridge and its address, and a veth from the root namespace carrying the
/// control plane's address. Each namespace and link is recorded before it is made.
pub async fn build(ledger: &mut Ledger) -> Result<(), Error> {
    ledger.record(|s| s.namespaces.push(HUB.to_owned()))?;
    ip(&["netns", "add", HUB]).await?;
    ip(&["-n", HUB, "link", "add", BRIDGE, "type", "bridge"]).await?;
    ip(&["-n", HUB, "link", "set", BRIDGE, "up"]).await?;
    ip(&["-n", HUB, "link", "set", "lo", "up"]).await?;

    ledger.record(|s| s.links.push(ROOT_LINK.to_owned()))?;
    ip(&[
        "link", "add", ROOT_LINK, "type", "veth", "peer", "name", "p-root", "netns", HUB,
    ])
    .await?;
    attach(HUB, "p-root").await?;
    let control = format!("{CONTROL_ADDRESS}/{NETWORK_LEN}");
    ip(&["addr", "add", &control, "dev", ROOT_LINK]).await?;
    ip(&["link", "set", ROOT_LINK, "up"]).await?;

    for host in plan::HOSTS {
        add_host(ledger, &host.netns(), &host.hub_port(), host.address).await?;
    }
    Ok(())
}

/// A host on the bridge: namespace `ns` (recorded before it is made) with `eth0` at
/// `address`, whose other end `port` is in the hub.
pub async fn add_host(
    ledger: &mut Ledger,
    ns: &str,
    port: &str,
    address: Ipv4Addr,
) -> Result<(), Error> {
    ledger.record(|s| s.namespaces.push(ns.to_owned()))?;
    ip(&["netns", "add", ns]).await?;
    // Created directly in the two namespaces, so no name is ever taken in the root one.
    ip(&[
        "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", HUB,
    ])
    .await?;
    attach(HUB, port).await?;
    let address = format!("{address}/{NETWORK_LEN}");
    ip(&["-n", ns, "addr", "add", &address, "dev", "eth0"]).await?;
    ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
    ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
    Ok(())
}

async fn attach(ns: &str, port: &str) -> Result<(), Error> {
    ip(&["-n", ns, "link", "set", port, "master", BRIDGE]).await?;
    ip(&["-n", ns, "link", "set", port, "up"]).await?;
    Ok(())
}

/// One HTTP answer seen by curl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code (0: no answer).
    pub status: u16,
    /// The body.
    pub body: String,
    /// How long the request took, curl's start included.
    pub elapsed: Duration,
}

impl Reply {
    /// Whether this is a 200 from the app on `origin` (its body starts `app=<origin> `).
    pub fn is_from(&self, origin: &str) -> bool {
        self.status == 200 && self.body.starts_with(&format!("app={origin} "))
    }

    /// The status and the time taken, with curl's own error when there was no answer
    /// (`0 after 0.04 s (curl: (56) Recv failure: Connection reset by peer)`), for reports.
    pub fn outcome(&self) -> String {
        let took = self.elapsed.as_secs_f64();
        match self.status {
            0 => format!("0 after {took:.2} s ({})", self.body),
            status => format!("{status} after {took:.2} s"),
        }
    }
}

/// `GET https://HOST/PATH` from the client namespace, sent to `edge` (as if DNS said so),
/// bounded by curl's `--max-time 5`. A connection failure is status 0, not an error.
pub async fn https_via(edge: Ipv4Addr, host: &str, path: &str) -> Result<Reply, Error> {
    curl_via(edge, host, path, &["-k".into()], "").await
}

/// curl from the client namespace for `https://HOST/PATH` sent to `edge`, with the TLS
/// options `tls`; `write_out` is printed after the body, then the status code on a line of
/// its own. The reply's body holds everything before that line (status 0: no answer, and
/// the body is curl's error).
pub(crate) async fn curl_via(
    edge: Ipv4Addr,
    host: &str,
    path: &str,
    tls: &[String],
    write_out: &str,
) -> Result<Reply, Error> {
    let client = plan::host("client").netns();
    // -sS: no progress meter, but curl's error, kept as the body of a reply without one.
    let mut argv: Vec<String> = ["curl", "-sS", "--max-time", "5"]
        .map(String::from)
        .to_vec();
    argv.extend_from_slice(tls);
    argv.extend([
        "--resolve".into(),
        format!("{host}:443:{edge}"),
        "-w".into(),
        format!("{write_out}\n%{{http_code}}"),
        format!("https://{host}{path}"),
    ]);
    let spec = Spec::netns(&client, argv);
    let started = Instant::now();
    let out = spec.command().output().await.map_err(|e| Error::Command {
        command: spec.command_line().join(" "),
        message: e.to_string(),
    })?;
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = code.trim().parse().unwrap_or(0);
    let error = String::from_utf8_lossy(&out.stderr);
    let body = if status == 0 && !error.trim().is_empty() {
        error.trim().to_owned()
    } else {
        body.to_owned()
    };
    Ok(Reply {
        status,
        body,
        elapsed,
    })
}

/// The curl command a person can paste to try `host` through `edge`.
pub fn curl_hint(edge: Ipv4Addr, host: &str) -> String {
    format!(
        "ip netns exec {} curl -k --resolve {host}:443:{edge} https://{host}/",
        plan::host("client").netns()
    )
}

/// Whether `ping -c1 -W1 target` from `ns` gets an answer; the round trip when it does.
pub async fn ping(ns: &str, target: Ipv4Addr) -> Option<Duration> {
    let argv = ["ping", "-n", "-c1", "-W1", &target.to_string()];
    let out = run(&Spec::netns(ns, argv.map(String::from).to_vec()))
        .await
        .ok()?;
    // "time=0.712 ms"
    let ms: f64 = out
        .split("time=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(ms / 1000.0))
}

/// Whether a TCP connection from `ns` to `target:port` is accepted (1 s to connect).
pub async fn tcp_connects(ns: &str, target: Ipv4Addr, port: u16) -> bool {
    // curl's exit code 7 is "could not connect" and 28 a timeout; any other ending (an
    // HTTP answer, or a peer that accepted and then spoke no HTTP) means it got through.
    let argv = [
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "--connect-timeout",
        "1",
        "--max-time",
        "2",
        &format!("http://{target}:{port}/"),
    ];
    let spec = Spec::netns(ns, argv.map(String::from).to_vec());
    match spec.command().output().await {
        Ok(out) => !matches!(out.status.code(), Some(7 | 28)),
        Err(_) => false,
    }
}

/// The lab app called `name`, served on `0.0.0.0:port` inside namespace `ns` until this is
/// dropped: a service the host exposes on every address without any route declaring it.
#[derive(Debug)]
pub struct Serving(tokio::task::JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts [`Serving`]: a thread moves into `ns` just to make the socket, which stays there.
pub fn serve_app_in(ns: &str, name: &str, port: u16) -> Result<Serving, Error> {
    let path = std::path::Path::new("/run/netns").join(ns);
    let listen = std::net::SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let io = |action| {
        let path = path.clone();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    let made = std::thread::spawn({
        let path = path.clone();
        move || {
            let ns = std::fs::File::open(&path)?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            let listener = std::net::TcpListener::bind(listen)?;
            listener.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(listener)
        }
    })
    .join()
    .map_err(|_| Error::Command {
        command: format!("listen on {listen} in {ns}"),
        message: "the thread panicked".into(),
    })?;
    let listener = tokio::net::TcpListener::from_std(made.map_err(io("listen inside"))?)
        .map_err(io("listen inside"))?;
    let app = crate::app::router(name.to_owned(), None);
    Ok(Serving(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })))
}

/// Adds a route in `ns` (used to play an attacker who sends packets for the tunnel
/// networks straight at an edge).
pub async fn add_route(ns: &str, network: &str, via: &[&str]) -> Result<(), Error> {
    let mut args = vec!["-n", ns, "route", "replace", network];
    args.extend_from_slice(via);
    ip(&args).await.map(drop)
}

/// The interface holding an address in `network/len` inside `ns` (an origin's tunnel).
pub async fn interface_in(ns: &str, network: Ipv4Addr, len: u8) -> Result<Option<String>, Error> {
    Ok(interfaces_in(ns, network, len).await?.into_iter().next())
}

/// Every interface holding an address in `network/len` inside `ns` (an edge's tunnels).
pub async fn interfaces_in(ns: &str, network: Ipv4Addr, len: u8) -> Result<Vec<String>, Error> {
    let out = ip(&["-n", ns, "-o", "-4", "addr", "show"]).await?;
    // "5: wg0    inet 10.0.2.1/24 scope global wg0\..."
    Ok(out
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let iface = words.nth(1)?;
            let address: Ipv4Addr = words.nth(1)?.split('/').next()?.parse().ok()?;
            plan::contains(network, len, address).then(|| iface.to_owned())
        })
        .collect())
}
