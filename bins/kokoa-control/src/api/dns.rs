//! `/api/v1/dns`: the zones the DNS manager keeps records in, the records it made, the
//! plan of what it would change, and the records to set by hand (SPEC §8.1).

use axum::{Json, extract::State, http::StatusCode};
use kokoa_core::{DnsZone, DnsZoneId, Hostname, Name, Timestamp};
use kokoa_runtime::seal::{SealedJson, seal_json};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{ApiJson, ApiPath, path_id, valid};
use crate::{
    auth::{Admin, Reader},
    error::{ApiError, ErrorBody},
    runtime::dns::{self, Outcome, ZoneError},
    state::AppState,
};

/// Longest and shortest TTL accepted, in seconds.
const TTL_RANGE: std::ops::RangeInclusive<u32> = 1..=86_400;

/// `POST /api/v1/dns/zones`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ZoneRequest {
    /// The zone apex, e.g. `hoge.com`.
    #[schema(example = "hoge.com")]
    pub name: String,
    /// `cloudflare`, `route53`, `google`, `powerdns`, `rfc2136`, `digitalocean` or
    /// `manual`.
    #[schema(example = "powerdns")]
    pub provider: String,
    /// TTL of the records the manager makes, in seconds (default 30: clients move off a
    /// removed edge within half a minute).
    #[schema(minimum = 1, maximum = 86400, example = 30)]
    pub ttl: Option<u32>,
    /// The provider's settings that are not secret, e.g. `{"url": "http://127.0.0.1:8081"}`
    /// for PowerDNS or `{"base_url": …}` to reach another API endpoint.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    /// The provider's credentials, stored encrypted and never shown: `{"api_token"}`
    /// (Cloudflare), `{"access_key_id", "secret_access_key", "session_token"?}` (Route53),
    /// `{"service_account": "<the key file's JSON>"}` (Google), `{"api_key"}` (PowerDNS),
    /// `{"secret": "<base64>"}` (RFC 2136, with settings `server`, `key_name` and
    /// `algorithm`), `{"token"}` (DigitalOcean).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub credentials: Map<String, Value>,
}

/// A zone as the API shows it: never its credentials.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ZoneView {
    /// Its id.
    #[schema(value_type = String)]
    pub id: DnsZoneId,
    /// The apex.
    #[schema(value_type = String)]
    pub name: Hostname,
    /// The provider.
    #[schema(value_type = String)]
    pub provider: Name,
    /// The provider's id of the zone.
    pub provider_zone_id: Option<String>,
    /// TTL of the managed records.
    pub ttl: u32,
    /// The settings that are not secret.
    #[schema(value_type = Object)]
    pub settings: Value,
    /// Whether credentials are stored.
    pub has_credentials: bool,
    /// When it was added.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// `GET /api/v1/dns/zones`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ZoneList {
    /// Every zone, by name.
    pub zones: Vec<ZoneView>,
}

/// A record the DNS manager made.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DnsRecordView {
    /// Its id in Kokoa.
    pub id: String,
    /// The name.
    pub hostname: String,
    /// `A` or `AAAA`.
    #[serde(rename = "type")]
    pub record_type: String,
    /// The address.
    pub value: String,
    /// The zone it is in.
    pub zone: Option<String>,
    /// The provider.
    pub provider: String,
    /// The provider's id of the record.
    pub provider_record_id: Option<String>,
    /// The edge it points at.
    pub edge_node_id: Option<String>,
    /// When it was made.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// `GET /api/v1/dns/records`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DnsRecordList {
    /// Every record the manager owns, by host name.
    pub records: Vec<DnsRecordView>,
}

/// `GET /api/v1/dns/plan`, `POST /api/v1/dns/reconcile`, `GET /api/v1/dns/instructions`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DnsOutcome {
    /// Per managed zone: `zone`, `provider`, `changes` (`action`, `record`, `reason`),
    /// `failed`, `error`.
    #[schema(value_type = Vec<Object>)]
    pub zones: Vec<dns::ZoneOutcome>,
    /// Host names whose records a person sets: `hostname`, `zone`, `records` (zone file
    /// lines).
    #[schema(value_type = Vec<Object>)]
    pub manual: Vec<dns::ManualName>,
}

impl From<Outcome> for DnsOutcome {
    fn from(o: Outcome) -> Self {
        Self {
            zones: o.zones,
            manual: o.manual,
        }
    }
}

fn zone_view(zone: DnsZone, has_credentials: bool) -> ZoneView {
    ZoneView {
        id: zone.id,
        name: zone.name,
        provider: zone.provider,
        provider_zone_id: zone.provider_zone_id,
        ttl: zone.ttl,
        settings: zone.settings,
        has_credentials,
        created_at: zone.created_at,
    }
}

fn zone_error(e: ZoneError) -> ApiError {
    match e {
        ZoneError::Config(message) => ApiError::invalid("settings", message),
        ZoneError::Provider(e @ kokoa_dns::Error::Auth { .. }) => {
            ApiError::invalid("credentials", e)
        }
        ZoneError::Provider(e) => ApiError::invalid("name", e),
        ZoneError::Store(e) => e.into(),
    }
}

/// Adds a zone. The provider is asked for the zone at once, so wrong credentials or a
/// zone the account does not hold are refused here (422), not discovered later.
#[utoipa::path(
    post,
    path = "/api/v1/dns/zones",
    tag = "dns",
    request_body = ZoneRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Added", body = ZoneView),
        (status = 409, description = "The zone is there already", body = ErrorBody),
    )
)]
pub(super) async fn create_zone(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<ZoneRequest>,
) -> Result<(StatusCode, Json<ZoneView>), ApiError> {
    let name = valid("name", Hostname::parse(&body.name))?;
    if name.is_wildcard() {
        return Err(ApiError::invalid(
            "name",
            format!("{name} is a wildcard; a zone is named by its apex, like \"hoge.com\""),
        ));
    }
    let provider = valid("provider", Name::parse(&body.provider))?;
    if !kokoa_dns::PROVIDER_KINDS.contains(&provider.as_str()) {
        return Err(ApiError::invalid(
            "provider",
            format!(
                "unknown DNS provider {:?}; use one of {}",
                provider.as_str(),
                kokoa_dns::PROVIDER_KINDS.join(", ")
            ),
        ));
    }
    let ttl = body.ttl.unwrap_or(kokoa_dns::DEFAULT_TTL);
    if !TTL_RANGE.contains(&ttl) {
        return Err(ApiError::invalid(
            "ttl",
            format!("TTL {ttl} is outside 1-86400 seconds"),
        ));
    }
    let mut zone = DnsZone {
        id: DnsZoneId::new(),
        name,
        provider,
        provider_zone_id: None,
        settings: Value::Object(body.settings),
        ttl,
        created_at: Timestamp::now(),
    };
    if let Some(provider) = dns::build_provider(&zone, &body.credentials).map_err(zone_error)? {
        let found = provider
            .find_zone(&zone.name)
            .await
            .map_err(|e| zone_error(e.into()))?;
        zone.provider_zone_id = Some(found.id);
    }
    let sealed = (!body.credentials.is_empty()).then(|| {
        seal_json(
            state.master_key(),
            SealedJson::Zone(&zone.id),
            &body.credentials,
        )
    });
    state
        .store()
        .create_dns_zone(&zone, sealed.as_ref())
        .await
        .map_err(|e| ApiError::from(e).with_field("name"))?;
    tracing::info!(zone = %zone.name, provider = %zone.provider, "DNS zone added");
    state.wakers().everywhere(&state);
    Ok((StatusCode::CREATED, Json(zone_view(zone, sealed.is_some()))))
}

/// Lists the zones.
#[utoipa::path(
    get,
    path = "/api/v1/dns/zones",
    tag = "dns",
    security(("bearer" = [])),
    responses((status = 200, description = "The zones", body = ZoneList))
)]
pub(super) async fn list_zones(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Json<ZoneList>, ApiError> {
    let store = state.store();
    let mut zones = Vec::new();
    for zone in store.list_dns_zones().await? {
        let has = store.dns_zone_credentials(&zone.id).await?.is_some();
        zones.push(zone_view(zone, has));
    }
    Ok(Json(ZoneList { zones }))
}

/// Removes a zone. The records the manager made in it are deleted at the provider first;
/// while that fails the zone stays (409).
#[utoipa::path(
    delete,
    path = "/api/v1/dns/zones/{id}",
    tag = "dns",
    params(("id" = String, Path, description = "DNS zone id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "Unknown zone", body = ErrorBody),
        (status = 409, description = "Its records could not all be removed", body = ErrorBody),
    )
)]
pub(super) async fn delete_zone(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id: DnsZoneId = path_id("DNS zone", &id)?;
    let zone = state.store().get_dns_zone(&id).await?;
    dns::remove_zone_records(&state, &zone)
        .await
        .map_err(|e| match e {
            ZoneError::Store(e) => ApiError::from(e),
            other => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "the records made in zone {} could not be removed: {other}; try again",
                    zone.name
                ),
            ),
        })?;
    state.store().delete_dns_zone(&id).await?;
    tracing::info!(zone = %zone.name, "DNS zone removed");
    Ok(StatusCode::NO_CONTENT)
}

/// The records the DNS manager made and owns.
#[utoipa::path(
    get,
    path = "/api/v1/dns/records",
    tag = "dns",
    security(("bearer" = [])),
    responses((status = 200, description = "The records", body = DnsRecordList))
)]
pub(super) async fn list_records(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Json<DnsRecordList>, ApiError> {
    let store = state.store();
    let zones = store.list_dns_zones().await?;
    let records = store
        .list_dns_records(None)
        .await?
        .into_iter()
        .map(|r| DnsRecordView {
            id: r.id.to_string(),
            hostname: r.hostname.to_string(),
            record_type: r.data.record_type().to_string(),
            value: r.data.value(),
            zone: r
                .zone_id
                .as_ref()
                .and_then(|z| zones.iter().find(|zone| &zone.id == z))
                .map(|z| z.name.to_string()),
            provider: r.provider.to_string(),
            provider_record_id: r.provider_record_id,
            edge_node_id: r.edge_node_id.map(|e| e.to_string()),
            created_at: r.created_at,
        })
        .collect();
    Ok(Json(DnsRecordList { records }))
}

/// What a reconciliation would change now (a dry run; nothing is changed), and the
/// records to set by hand.
#[utoipa::path(
    get,
    path = "/api/v1/dns/plan",
    tag = "dns",
    security(("bearer" = [])),
    responses((status = 200, description = "The plan", body = DnsOutcome))
)]
pub(super) async fn plan(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Json<DnsOutcome>, ApiError> {
    Ok(Json(dns::reconcile(&state, true).await?.into()))
}

/// Reconciles every zone now and answers with what changed. Only the leader changes DNS
/// (SPEC §11): another control plane answers 409.
#[utoipa::path(
    post,
    path = "/api/v1/dns/reconcile",
    tag = "dns",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What changed", body = DnsOutcome),
        (status = 409, description = "This control plane is not the leader", body = ErrorBody),
    )
)]
pub(super) async fn reconcile(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<DnsOutcome>, ApiError> {
    if !state.leader().is_leader() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_leader",
            "this control plane is not the leader, which alone changes DNS; ask the leader, \
             or wait: the leader reconciles every minute and on every change",
        ));
    }
    Ok(Json(dns::reconcile(&state, false).await?.into()))
}

/// The records a person must set for the host names outside the managed zones.
#[utoipa::path(
    get,
    path = "/api/v1/dns/instructions",
    tag = "dns",
    security(("bearer" = [])),
    responses((status = 200, description = "The records to set by hand", body = DnsOutcome))
)]
pub(super) async fn instructions(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Json<DnsOutcome>, ApiError> {
    Ok(Json(DnsOutcome {
        zones: Vec::new(),
        manual: dns::instructions(&state).await?,
    }))
}
