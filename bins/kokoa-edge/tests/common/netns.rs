//! Network namespaces made by a test, and sockets bound inside them.

use std::{
    fs::{self, File},
    net::{SocketAddr, TcpListener},
    os::fd::AsFd as _,
    path::Path,
    process::Command,
};

/// Runs `ip ARGS`, panicking with its error output when it fails.
pub(crate) fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip runs (apt-get install -y --no-install-recommends iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespaces of one test, all named `<tag>…`; dropping this kills every process in
/// them and deletes them, also when the test fails.
pub(crate) struct Namespaces {
    pub(crate) tag: String,
}

impl Namespaces {
    /// `test` (two letters) and this process's id make the tag, so tests running at the
    /// same time never share a name; it stays short (8 bytes), as names of namespaces the
    /// lab provider makes from it must fit in an interface name. Fails unless run as root.
    pub(crate) fn new(test: &str) -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test makes network namespaces: run it as root"
        );
        let mut n = std::process::id() % 36u32.pow(4);
        let mut pid = String::new();
        for _ in 0..4 {
            pid.insert(0, char::from_digit(n % 36, 36).unwrap_or('0'));
            n /= 36;
        }
        let namespaces = Self {
            tag: format!("kt{test}{pid}"),
        };
        namespaces.clean();
        namespaces
    }

    /// Adds namespace `<tag><suffix>` with `lo` up; its name.
    pub(crate) fn add(&self, suffix: &str) -> String {
        let name = format!("{}{suffix}", self.tag);
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// The namespaces of this tag that exist now.
    pub(crate) fn existing(&self) -> Vec<String> {
        fs::read_dir("/run/netns")
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|name| name.starts_with(&self.tag))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn clean(&self) {
        for ns in self.existing() {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).output();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.clean();
    }
}

/// Binds each of `addresses` inside network namespace `ns` (non-blocking, ready for
/// Tokio): a thread moves into the namespace just to make the sockets, which stay there.
pub(crate) fn listen_in(ns: &str, addresses: &[SocketAddr]) -> Vec<TcpListener> {
    let path = Path::new("/run/netns").join(ns);
    let addresses = addresses.to_vec();
    std::thread::spawn(move || {
        let ns = File::open(&path).unwrap();
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns into the test's network namespace");
        addresses
            .into_iter()
            .map(|address| {
                let listener = TcpListener::bind(address)
                    .unwrap_or_else(|e| panic!("bind {address} in the namespace: {e}"));
                listener.set_nonblocking(true).unwrap();
                listener
            })
            .collect()
    })
    .join()
    .unwrap()
}

/// The requests a router answered, as `METHOD PATH STATUS CLIENT` (the product of the
/// `User-Agent`, e.g. `curl`, `kokoa-edge`).
#[derive(Clone, Default)]
pub(crate) struct Seen(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Seen {
    /// `router`, noting each request it answers.
    pub(crate) fn record(&self, router: axum::Router) -> axum::Router {
        let seen = self.clone();
        router.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let seen = seen.clone();
                async move {
                    let client = request
                        .headers()
                        .get(axum::http::header::USER_AGENT)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split('/').next())
                        .unwrap_or("-")
                        .to_owned();
                    let line = format!("{} {}", request.method(), request.uri().path());
                    let response = next.run(request).await;
                    let line = format!("{line} {} {client}", response.status().as_u16());
                    seen.0.lock().unwrap().push(line);
                    response
                }
            },
        ))
    }

    /// The requests so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}
