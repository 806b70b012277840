//! The modules of SPEC §8, switched on or off at run time for every control plane on one
//! database, and what each reports about itself.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Mutex, PoisonError},
};

use kokoa_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Runtime;

/// The modules of SPEC §8, each switched on or off at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Module {
    /// Keeps the A/AAAA records of the healthy edges (§8.1).
    DnsManager,
    /// Creates and destroys edge VPSes (§8.2).
    EdgeProvisioner,
    /// Obtains, renews and distributes certificates (§8.3).
    SslManager,
    /// Checks edges and origins and acts on the results (§8.4).
    HealthChecker,
    /// Traffic statistics from the edges' heartbeats (§8.5).
    MetricsCollector,
    /// Outbound traffic through the edges (§8.6); not part of this build.
    OutboundRouter,
}

impl Module {
    /// Every module, in the order the spec lists them.
    pub const ALL: [Module; 6] = [
        Self::DnsManager,
        Self::EdgeProvisioner,
        Self::SslManager,
        Self::HealthChecker,
        Self::MetricsCollector,
        Self::OutboundRouter,
    ];

    /// The name used in the API and the configuration, e.g. `dns_manager`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DnsManager => "dns_manager",
            Self::EdgeProvisioner => "edge_provisioner",
            Self::SslManager => "ssl_manager",
            Self::HealthChecker => "health_checker",
            Self::MetricsCollector => "metrics_collector",
            Self::OutboundRouter => "outbound_router",
        }
    }

    /// Whether this build has the module at all.
    pub fn available(self) -> bool {
        !matches!(self, Self::OutboundRouter)
    }

    /// The module called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a module reports about itself (the Settings > Modules page, SPEC §8).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModuleStatus {
    /// The provider(s) in use, e.g. `powerdns` or `pebble, lab`.
    pub provider: Option<String>,
    /// Whether its last call to the outside world worked; `None` before the first.
    pub connected: Option<bool>,
    /// One line about its runtime, e.g. the last error.
    pub detail: Option<String>,
    /// What it handles, e.g. `{"zones": 2, "records": 8}`.
    pub counts: BTreeMap<String, u64>,
}

/// The switches and reported states of the modules. The switches live in the store, so
/// every control plane on one database sees the same; a switched-off module does nothing
/// from its next step on.
#[derive(Debug, Default)]
pub struct Modules {
    defaults: BTreeMap<Module, bool>,
    status: Mutex<BTreeMap<Module, ModuleStatus>>,
}

/// Where the switches are kept.
const SWITCHES: (&str, &str) = ("settings", "modules");

impl Modules {
    /// Modules with their switches' defaults (from the configuration file): available
    /// modules are on unless said otherwise.
    pub fn new(defaults: BTreeMap<Module, bool>) -> Self {
        Self {
            defaults,
            status: Mutex::default(),
        }
    }

    fn default_for(&self, module: Module) -> bool {
        module.available() && self.defaults.get(&module).copied().unwrap_or(true)
    }

    /// Every module's switch.
    pub async fn switches(&self, runtime: &Runtime) -> BTreeMap<Module, bool> {
        let stored: BTreeMap<Module, bool> = match runtime
            .store()
            .kv_get(SWITCHES.0, SWITCHES.1, Timestamp::now())
            .await
        {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring unreadable module switches");
                BTreeMap::new()
            }),
            Ok(None) => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the module switches; using the defaults");
                BTreeMap::new()
            }
        };
        Module::ALL
            .into_iter()
            .map(|m| {
                let on = m.available() && stored.get(&m).copied().unwrap_or(self.default_for(m));
                (m, on)
            })
            .collect()
    }

    /// Whether `module` is on.
    pub async fn enabled(&self, runtime: &Runtime, module: Module) -> bool {
        self.switches(runtime).await[&module]
    }

    /// Switches `module` on or off for every control plane on this database.
    pub async fn set(
        &self,
        runtime: &Runtime,
        module: Module,
        on: bool,
    ) -> Result<(), kokoa_core::Error> {
        let mut switches = self.switches(runtime).await;
        switches.insert(module, on);
        let text = serde_json::to_string(&switches).map_err(|e| {
            kokoa_core::Error::Storage(format!("cannot write module switches: {e}").into())
        })?;
        runtime
            .store()
            .kv_put(SWITCHES.0, SWITCHES.1, &text, None)
            .await
    }

    /// What `module` last reported.
    pub fn status(&self, module: Module) -> ModuleStatus {
        self.lock().get(&module).cloned().unwrap_or_default()
    }

    /// Records what `module` reports.
    pub fn report(&self, module: Module, update: impl FnOnce(&mut ModuleStatus)) {
        update(self.lock().entry(module).or_default());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Module, ModuleStatus>> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
