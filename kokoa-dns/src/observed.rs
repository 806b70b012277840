//! [`Observed`]: a provider that reports each of its calls (operation, duration, outcome)
//! to a function, for metrics; otherwise the provider it wraps.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use kokoa_core::{DnsName, Hostname};

use crate::{
    DnsProvider, Error, HealthCheckSpec, ProviderRecord, RecordId, RecordSpec, Zone,
    driver::RateLimit,
};

/// One call to a provider, as [`Observed`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The provider's [`name`](DnsProvider::name).
    pub provider: &'static str,
    /// `list_zones`, `find_zone`, `list_records`, `create_record`, `update_record`,
    /// `delete_record` or `enable_health_check`.
    pub operation: &'static str,
    /// How long it took.
    pub duration: Duration,
    /// Whether it succeeded.
    pub ok: bool,
}

/// Wraps a provider and tells `observe` about each call it makes.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// use std::sync::{Arc, Mutex};
/// use kokoa_core::Hostname;
/// use kokoa_dns::{DnsProvider, MemoryProvider, Observed, Zone};
///
/// let zone = Zone { id: "z1".into(), name: Hostname::parse("hoge.com")? };
/// let calls = Arc::new(Mutex::new(Vec::new()));
/// let seen = Arc::clone(&calls);
/// let provider = Observed::new(Arc::new(MemoryProvider::new([zone.clone()])), move |call| {
///     seen.lock().unwrap().push((call.operation, call.ok))
/// });
/// provider.list_records(&zone, None).await?;
/// assert!(provider.find_zone(&Hostname::parse("fuga.net")?).await.is_err());
/// assert_eq!(*calls.lock().unwrap(), [("list_records", true), ("find_zone", false)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Observed {
    inner: Arc<dyn DnsProvider>,
    observe: Box<dyn Fn(Call) + Send + Sync>,
}

impl fmt::Debug for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Observed {
    /// `inner`, reporting each call to `observe` once it ends.
    pub fn new(
        inner: Arc<dyn DnsProvider>,
        observe: impl Fn(Call) + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            observe: Box::new(observe),
        }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let result = call.await;
        (self.observe)(Call {
            provider: self.inner.name(),
            operation,
            duration: started.elapsed(),
            ok: result.is_ok(),
        });
        result
    }
}

#[async_trait]
impl DnsProvider for Observed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        self.inner.rate_limit()
    }

    async fn list_zones(&self) -> Result<Vec<Zone>, Error> {
        self.timed("list_zones", self.inner.list_zones()).await
    }

    async fn find_zone(&self, name: &Hostname) -> Result<Zone, Error> {
        self.timed("find_zone", self.inner.find_zone(name)).await
    }

    async fn list_records(
        &self,
        zone: &Zone,
        name: Option<&DnsName>,
    ) -> Result<Vec<ProviderRecord>, Error> {
        self.timed("list_records", self.inner.list_records(zone, name))
            .await
    }

    async fn create_record(&self, zone: &Zone, spec: &RecordSpec) -> Result<RecordId, Error> {
        self.timed("create_record", self.inner.create_record(zone, spec))
            .await
    }

    async fn update_record(
        &self,
        zone: &Zone,
        id: &RecordId,
        spec: &RecordSpec,
    ) -> Result<RecordId, Error> {
        self.timed("update_record", self.inner.update_record(zone, id, spec))
            .await
    }

    async fn delete_record(&self, zone: &Zone, id: &RecordId) -> Result<(), Error> {
        self.timed("delete_record", self.inner.delete_record(zone, id))
            .await
    }

    async fn enable_health_check(
        &self,
        zone: &Zone,
        id: &RecordId,
        check: &HealthCheckSpec,
    ) -> Result<(), Error> {
        self.timed(
            "enable_health_check",
            self.inner.enable_health_check(zone, id, check),
        )
        .await
    }
}
