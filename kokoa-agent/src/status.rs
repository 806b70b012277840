//! The states a heartbeat reports.

use serde::Serialize;

/// Up or down: a tunnel, or a service behind an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Working.
    Up,
    /// Not working.
    Down,
}

/// A node's own judgement of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Serving its latest configuration with every tunnel (and service) up.
    Healthy,
    /// Serving, but a configuration was refused or failed to apply, or a tunnel (or
    /// service) is down.
    Degraded,
    /// Serving nothing: on an edge, nginx is not running.
    Unhealthy,
}
