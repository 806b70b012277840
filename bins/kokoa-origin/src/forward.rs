//! Built-in TCP forwarding: what arrives through the tunnel at `<tunnel IP>:<port>` goes to
//! the service at `127.0.0.1:<port>`.
//!
//! Only the edges' tunnel addresses may connect: a connection from any other source is
//! closed at once, before anything is read or forwarded. WireGuard's `AllowedIPs` already
//! admits only the edges into the tunnel; this check also holds if the listening address
//! is reachable some other way.
//!
//! Connections are bounded: one permit of a shared semaphore per connection, taken before
//! accepting, so at the limit new connections wait in the kernel's backlog rather than
//! exhausting file descriptors.
//!
//! On Linux the default, [`Relay::Kernel`], has the agent's firewall table redirect the
//! edges' connections to `127.0.0.1` (see [`Rules::redirecting`]): they never reach these
//! listeners, which serve while the redirect is not installed (no firewall, an IPv6 tunnel).
//! The bytes of the connections that do are moved by [`Relay::Splice`] on Linux (in the
//! kernel, through a pipe per direction) and by [`Relay::Copy`] (through a buffer in this
//! process) elsewhere or when asked (`kokoa-origin run --relay copy`).
//!
//! [`Rules::redirecting`]: crate::Rules::redirecting

use std::{
    collections::{BTreeSet, HashMap},
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinHandle,
};

/// Default limit of connections forwarded at the same time.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How a forwarded connection's bytes are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// Forwarded by the kernel (nftables `dnat`) where the firewall is installed and the
    /// tunnel is IPv4; [`Relay::Splice`] for what reaches the listeners. Linux only.
    #[cfg(target_os = "linux")]
    Kernel,
    /// Read into a buffer of this process and written out again: works everywhere.
    Copy,
    /// `splice(2)` through a pipe: the bytes stay in the kernel. Linux only.
    #[cfg(target_os = "linux")]
    Splice,
}

impl Default for Relay {
    /// [`Relay::Kernel`] on Linux, [`Relay::Copy`] elsewhere.
    fn default() -> Self {
        #[cfg(target_os = "linux")]
        return Self::Kernel;
        #[cfg(not(target_os = "linux"))]
        return Self::Copy;
    }
}

impl std::fmt::Display for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Copy => "copy",
            #[cfg(target_os = "linux")]
            Self::Kernel => "kernel",
            #[cfg(target_os = "linux")]
            Self::Splice => "splice",
        })
    }
}

impl std::str::FromStr for Relay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "copy" => Ok(Self::Copy),
            #[cfg(target_os = "linux")]
            "kernel" => Ok(Self::Kernel),
            #[cfg(target_os = "linux")]
            "splice" => Ok(Self::Splice),
            other => Err(format!(
                "unknown relay {other:?}: use \"kernel\" or \"splice\" (Linux), or \"copy\""
            )),
        }
    }
}

/// The forwarding listeners of this origin.
#[derive(Debug)]
pub struct Forwarder {
    target: IpAddr,
    relay: Relay,
    allowed: Arc<RwLock<BTreeSet<IpAddr>>>,
    permits: Arc<Semaphore>,
    listeners: Mutex<HashMap<SocketAddr, JoinHandle<()>>>,
}

impl Forwarder {
    /// A forwarder to services on `target` (127.0.0.1 in production), with at most
    /// `max_connections` at once.
    pub fn new(target: IpAddr, max_connections: usize) -> Self {
        Self {
            target,
            relay: Relay::default(),
            allowed: Arc::default(),
            permits: Arc::new(Semaphore::new(max_connections)),
            listeners: Mutex::default(),
        }
    }

    /// The same, moving bytes with `relay`.
    pub fn with_relay(mut self, relay: Relay) -> Self {
        self.relay = relay;
        self
    }

    /// How connections move.
    pub fn relay(&self) -> Relay {
        self.relay
    }

    /// Where connections go (port unchanged).
    pub fn target(&self) -> IpAddr {
        self.target
    }

    /// Listens on `listen:port` for each of `ports` and admits connections only from
    /// `allowed`. Listeners no longer wanted are closed (their open connections finish);
    /// the ones that exist are kept. Must run inside a tokio runtime.
    ///
    /// Returns the listeners that could not be opened, e.g. while the tunnel address is
    /// not configured yet or when another proxy holds the port; calling again retries them.
    pub fn set(
        &self,
        listen: IpAddr,
        ports: &BTreeSet<u16>,
        allowed: BTreeSet<IpAddr>,
    ) -> Vec<(SocketAddr, io::Error)> {
        *self.allowed.write().unwrap_or_else(PoisonError::into_inner) = allowed;
        let wanted: BTreeSet<SocketAddr> =
            ports.iter().map(|p| SocketAddr::new(listen, *p)).collect();
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|addr, task| {
            let keep = wanted.contains(addr) && !task.is_finished();
            if !keep {
                task.abort();
                tracing::info!(%addr, "stopped forwarding");
            }
            keep
        });
        let mut failed = Vec::new();
        for addr in wanted {
            if listeners.contains_key(&addr) {
                continue;
            }
            match bind(addr) {
                Ok(listener) => {
                    let target = SocketAddr::new(self.target, addr.port());
                    tracing::info!(%addr, %target, "forwarding");
                    let task = tokio::spawn(accept_loop(
                        listener,
                        target,
                        self.relay,
                        Arc::clone(&self.allowed),
                        Arc::clone(&self.permits),
                    ));
                    listeners.insert(addr, task);
                }
                Err(e) => failed.push((addr, e)),
            }
        }
        failed
    }

    /// The addresses listened on.
    pub fn listening(&self) -> BTreeSet<SocketAddr> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// Closes every listener.
    pub fn stop(&self) {
        for (_, task) in self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
        {
            task.abort();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: Relay,
    allowed: Arc<RwLock<BTreeSet<IpAddr>>>,
    permits: Arc<Semaphore>,
) {
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Per-connection failures (reset before accept, out of descriptors): keep
                // serving; a short pause keeps a persistent failure from spinning.
                tracing::warn!(listen = ?listener.local_addr().ok(), error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = allowed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&peer.ip());
        if !admitted {
            tracing::debug!(%peer, "refused a connection from outside the tunnel's edges");
            drop(stream);
            continue;
        }
        tokio::spawn(async move {
            if let Err(e) = relay(stream, target, mode).await {
                tracing::debug!(%peer, %target, error = %e, "forwarded connection ended");
            }
            drop(permit);
        });
    }
}

async fn relay(mut inbound: TcpStream, target: SocketAddr, mode: Relay) -> io::Result<()> {
    let mut outbound = TcpStream::connect(target).await?;
    // Small request/response exchanges dominate; do not let Nagle delay them.
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    match mode {
        Relay::Copy => {
            tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
        }
        #[cfg(target_os = "linux")]
        Relay::Kernel | Relay::Splice => {
            splice::relay(&inbound, &outbound).await?;
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
mod splice;
#[cfg(test)]
mod tests;
