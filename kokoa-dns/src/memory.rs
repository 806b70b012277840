//! A provider that keeps records in memory: for tests, examples and dry runs.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard, PoisonError},
};

use async_trait::async_trait;
use kokoa_core::DnsName;

use crate::{DnsProvider, Error, ProviderRecord, RecordId, RecordSpec, Zone};

/// An in-memory [`DnsProvider`] with fixed zones. Ids are `mem-1`, `mem-2`, ...
///
/// Like a real provider it refuses a record identical to an existing one
/// ([`Error::Conflict`]) and answers [`Error::NotFound`] for unknown zones and ids.
#[derive(Debug, Default)]
pub struct MemoryProvider {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    zones: Vec<Zone>,
    records: BTreeMap<String, BTreeMap<RecordId, RecordSpec>>,
    next_id: u64,
}

const NAME: &str = "memory";

impl MemoryProvider {
    /// A provider holding `zones`, all empty.
    pub fn new(zones: impl IntoIterator<Item = Zone>) -> Self {
        let zones: Vec<Zone> = zones.into_iter().collect();
        let records = zones
            .iter()
            .map(|z| (z.id.clone(), BTreeMap::new()))
            .collect();
        Self {
            state: Mutex::new(State {
                zones,
                records,
                next_id: 0,
            }),
        }
    }

    /// Every record of `zone`, whoever made it.
    pub fn records(&self, zone: &Zone) -> Vec<ProviderRecord> {
        self.lock()
            .records
            .get(&zone.id)
            .into_iter()
            .flatten()
            .map(|(id, spec)| ProviderRecord {
                id: id.clone(),
                spec: spec.clone(),
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written map: every change is
        // a single insert or remove.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn zone(&mut self, zone: &Zone) -> Result<&mut BTreeMap<RecordId, RecordSpec>, Error> {
        self.records
            .get_mut(&zone.id)
            .ok_or_else(|| Error::NotFound {
                provider: NAME,
                detail: format!("zone {} ({})", zone.name, zone.id),
            })
    }
}

fn no_record(id: &RecordId) -> Error {
    Error::NotFound {
        provider: NAME,
        detail: format!("record {id}"),
    }
}

fn refuse_duplicate<'a>(
    mut records: impl Iterator<Item = (&'a RecordId, &'a RecordSpec)>,
    spec: &RecordSpec,
) -> Result<(), Error> {
    match records.find(|(_, r)| r.name == spec.name && r.data == spec.data) {
        Some((id, _)) => Err(Error::Conflict {
            provider: NAME,
            detail: format!("record {id} already holds {spec}"),
        }),
        None => Ok(()),
    }
}

#[async_trait]
impl DnsProvider for MemoryProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn list_zones(&self) -> Result<Vec<Zone>, Error> {
        Ok(self.lock().zones.clone())
    }

    async fn list_records(
        &self,
        zone: &Zone,
        name: Option<&DnsName>,
    ) -> Result<Vec<ProviderRecord>, Error> {
        let mut state = self.lock();
        Ok(state
            .zone(zone)?
            .iter()
            .filter(|(_, spec)| name.is_none_or(|name| &spec.name == name))
            .map(|(id, spec)| ProviderRecord {
                id: id.clone(),
                spec: spec.clone(),
            })
            .collect())
    }

    async fn create_record(&self, zone: &Zone, spec: &RecordSpec) -> Result<RecordId, Error> {
        let mut state = self.lock();
        state.next_id += 1;
        let id = RecordId::new(format!("mem-{}", state.next_id));
        let records = state.zone(zone)?;
        refuse_duplicate(records.iter(), spec)?;
        records.insert(id.clone(), spec.clone());
        Ok(id)
    }

    async fn update_record(
        &self,
        zone: &Zone,
        id: &RecordId,
        spec: &RecordSpec,
    ) -> Result<RecordId, Error> {
        let mut state = self.lock();
        let records = state.zone(zone)?;
        if !records.contains_key(id) {
            return Err(no_record(id));
        }
        refuse_duplicate(records.iter().filter(|(other, _)| *other != id), spec)?;
        records.insert(id.clone(), spec.clone());
        Ok(id.clone())
    }

    async fn delete_record(&self, zone: &Zone, id: &RecordId) -> Result<(), Error> {
        let mut state = self.lock();
        match state.zone(zone)?.remove(id) {
            Some(_) => Ok(()),
            None => Err(no_record(id)),
        }
    }
}
