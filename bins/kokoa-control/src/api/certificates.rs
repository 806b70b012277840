//! `/api/v1/certificates`: the certificates the SSL manager keeps, manual uploads, forced
//! renewals and the renewal setting; and the endpoint an edge fetches its PEMs from.

use std::fmt;

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use kokoa_core::{
    Certificate, CertificateId, CertificateMode, CertificateSource, ContentHash, Timestamp,
};
use kokoa_store::seal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, ApiPath, path_id};
use crate::{
    auth::{Admin, EdgeAgent, Reader},
    error::{ApiError, ErrorBody},
    payload,
    runtime::certs::{self, CertState, RenewalSetting},
    state::AppState,
};

/// A certificate and its state.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CertificateView {
    /// Its id.
    #[schema(value_type = String)]
    pub id: CertificateId,
    /// The names it covers.
    #[schema(value_type = Vec<String>)]
    pub names: Vec<kokoa_core::Hostname>,
    /// `acme`, `manual` or `cloudflare_origin_ca`.
    #[schema(value_type = String, example = "acme")]
    pub source: CertificateSource,
    /// `http-01`, `dns-01` (ACME) or `manual`.
    #[schema(value_type = String, example = "http-01")]
    pub method: CertificateMode,
    /// Its issuer's name, once issued.
    pub issuer: Option<String>,
    /// Start of validity.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub not_before: Option<Timestamp>,
    /// End of validity.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub not_after: Option<Timestamp>,
    /// The next renewal (or, before the first issue, the next attempt).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_renewal: Option<Timestamp>,
    /// Failed orders in a row.
    pub failures: u32,
    /// Why the last order failed.
    pub last_error: Option<String>,
    /// `valid`, `pending`, `failed` or `expired`.
    #[schema(value_type = String, example = "valid")]
    pub status: CertState,
    /// Whole days until expiry.
    pub days_left: Option<i64>,
    /// SHA-256 of the chain, as edges compare it.
    #[schema(value_type = Option<String>)]
    pub sha256: Option<ContentHash>,
}

impl CertificateView {
    fn of(c: Certificate, now: Timestamp) -> Self {
        Self {
            status: certs::status(&c, now),
            days_left: certs::days_left(&c, now),
            id: c.id,
            names: c.names.into_iter().collect(),
            source: c.source,
            method: c.method,
            issuer: c.issuer,
            not_before: c.not_before,
            not_after: c.not_after,
            next_renewal: c.next_renewal,
            failures: c.failures,
            last_error: c.last_error,
            sha256: c.sha256,
        }
    }
}

/// `GET /api/v1/certificates`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CertificateList {
    /// Every certificate, by names.
    pub certificates: Vec<CertificateView>,
}

/// `POST /api/v1/certificates`: a certificate chain and its key, in PEM.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadRequest {
    /// The chain, the server's own certificate first.
    pub certificate_pem: String,
    /// Its private key (not encrypted).
    pub private_key_pem: String,
}

impl fmt::Debug for UploadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadRequest")
            .field("private_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A certificate's PEMs, for the edge that serves it.
#[derive(Serialize, ToSchema)]
pub(crate) struct EdgeCertificate {
    /// The name the edge's configuration refers to it by.
    pub name: String,
    /// SHA-256 of `chain_pem`.
    #[schema(value_type = String)]
    pub sha256: ContentHash,
    /// The chain.
    pub chain_pem: String,
    /// The private key.
    pub private_key_pem: String,
}

impl fmt::Debug for EdgeCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeCertificate")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .field("private_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Every certificate with its state.
#[utoipa::path(
    get,
    path = "/api/v1/certificates",
    tag = "certificates",
    security(("bearer" = [])),
    responses((status = 200, description = "Every certificate, by names", body = CertificateList))
)]
pub(super) async fn list_certificates(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Json<CertificateList>, ApiError> {
    let now = Timestamp::now();
    let certificates = state
        .store()
        .list_certificates()
        .await?
        .into_iter()
        .map(|c| CertificateView::of(c, now))
        .collect();
    Ok(Json(CertificateList { certificates }))
}

/// Uploads a certificate: the chain must parse and be in order, the key must belong to it,
/// and it must be valid now. Replaces an earlier upload for the same names; edges serving
/// one of its names get it with their next configuration.
#[utoipa::path(
    post,
    path = "/api/v1/certificates",
    tag = "certificates",
    request_body = UploadRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Stored", body = CertificateView),
        (status = 409, description = "An ACME certificate covers exactly these names", body = ErrorBody),
    )
)]
pub(super) async fn upload_certificate(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<UploadRequest>,
) -> Result<(StatusCode, Json<CertificateView>), ApiError> {
    let now = Timestamp::now();
    let parsed =
        kokoa_acme::IssuedCertificate::from_pem(&body.certificate_pem, &body.private_key_pem)
            .map_err(|e| ApiError::invalid(upload_field(&e), e))?;
    let Some(first) = parsed.domains.iter().next().cloned() else {
        return Err(ApiError::invalid(
            "certificate_pem",
            "the certificate names no DNS host name in its subject alternative names",
        ));
    };
    // The library's checks of an upload: it covers its names and is valid now.
    let checked =
        kokoa_acme::parse_manual(&body.certificate_pem, &body.private_key_pem, &first, now)
            .map_err(|e| ApiError::invalid(upload_field(&e), e))?;
    let store = state.store();
    let existing = store
        .list_certificates()
        .await?
        .into_iter()
        .find(|c| c.names == checked.domains);
    let (id, created_at) = match existing {
        Some(c) if c.source == CertificateSource::Manual => (c.id, c.created_at),
        Some(c) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "certificate {} ({}) already covers exactly these names; switch its routes \
                     to \"certificate\": \"manual\" first",
                    c.id,
                    c.source.as_str()
                ),
            ));
        }
        None => (CertificateId::new(), now),
    };
    let mut cert = Certificate {
        id,
        names: checked.domains.clone(),
        source: CertificateSource::Manual,
        method: CertificateMode::Manual,
        issuer: None,
        not_before: None,
        not_after: None,
        sha256: None,
        chain_pem: None,
        next_renewal: None,
        failures: 0,
        last_error: None,
        created_at,
        updated_at: now,
    };
    certs::record_issued(&mut cert, &checked, checked.not_after, now);
    cert.next_renewal = None;
    let sealed = state.master_key().seal(
        checked.key_pem.expose_secret(),
        &seal::certificate_key_context(&cert.id),
    );
    store.put_certificate(&cert, Some(&sealed)).await?;
    state.notify_changed();
    tracing::info!(certificate = %cert.id, names = ?cert.names, "certificate uploaded");
    Ok((StatusCode::CREATED, Json(CertificateView::of(cert, now))))
}

/// The field an upload error is about.
fn upload_field(e: &kokoa_acme::Error) -> &'static str {
    match e {
        kokoa_acme::Error::InvalidKey { .. } | kokoa_acme::Error::KeyMismatch { .. } => {
            "private_key_pem"
        }
        _ => "certificate_pem",
    }
}

/// Orders an ACME certificate again now (on the leader only).
#[utoipa::path(
    post,
    path = "/api/v1/certificates/{id}/renew",
    tag = "certificates",
    params(("id" = String, Path, description = "Certificate id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The order is placed now", body = CertificateView),
        (status = 404, description = "Unknown certificate", body = ErrorBody),
        (status = 409, description = "An uploaded certificate, or this control plane does not lead", body = ErrorBody),
    )
)]
pub(super) async fn renew_certificate(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<CertificateView>), ApiError> {
    let id: CertificateId = path_id("certificate", &id)?;
    let store = state.store();
    let mut cert = store.get_certificate(&id).await?;
    if cert.source == CertificateSource::Manual {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "certificate {id} is {}: only ACME and Origin CA certificates are renewed here; \
                 upload a new one",
                cert.source.as_str()
            ),
        ));
    }
    if !state.leader().is_leader() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_leader",
            format!(
                "this control plane ({}) does not lead; only the leader orders certificates: \
                 send the request to it",
                state.leader().instance()
            ),
        ));
    }
    let now = Timestamp::now();
    cert.next_renewal = Some(now);
    cert.updated_at = now;
    store.put_certificate(&cert, None).await?;
    state.wakers().everywhere(&state);
    Ok((StatusCode::ACCEPTED, Json(CertificateView::of(cert, now))))
}

/// The renewal setting in force: `renew_days_before` of the configuration, or the one set
/// here.
#[utoipa::path(
    get,
    path = "/api/v1/certificates/settings",
    tag = "certificates",
    security(("bearer" = [])),
    responses((status = 200, description = "The setting", body = RenewalSetting))
)]
pub(super) async fn get_settings(
    State(state): State<AppState>,
    _: Reader,
) -> Result<Json<RenewalSetting>, ApiError> {
    Ok(Json(RenewalSetting {
        renew_days_before: certs::renew_days_before(&state).await,
    }))
}

/// Changes `renew_days_before` for every control plane on this database, and replans
/// every issued ACME certificate by it at once: a number larger than a certificate's
/// remaining lifetime renews it now.
#[utoipa::path(
    put,
    path = "/api/v1/certificates/settings",
    tag = "certificates",
    request_body = RenewalSetting,
    security(("bearer" = [])),
    responses((status = 200, description = "The new setting", body = RenewalSetting))
)]
pub(super) async fn put_settings(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<RenewalSetting>,
) -> Result<Json<RenewalSetting>, ApiError> {
    if body.renew_days_before > 3650 {
        return Err(ApiError::invalid(
            "renew_days_before",
            format!(
                "{} days is more than ten years; give at most 3650",
                body.renew_days_before
            ),
        ));
    }
    certs::set_renew_days_before(&state, body.renew_days_before).await?;
    tracing::info!(
        renew_days_before = body.renew_days_before,
        "renewal setting changed"
    );
    Ok(Json(body))
}

/// The chain and key of a certificate in the calling edge's configuration. Answers 404 for
/// any other certificate, and is never cached.
#[utoipa::path(
    get,
    path = "/api/v1/edge-nodes/me/certificates/{name}",
    tag = "agents",
    params(("name" = String, Path, description = "The certificate's name in the edge configuration")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The PEMs", body = EdgeCertificate),
        (status = 404, description = "Not a certificate of this edge", body = ErrorBody),
    )
)]
pub(super) async fn edge_certificate(
    State(state): State<AppState>,
    EdgeAgent(edge): EdgeAgent,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let unknown = || ApiError::not_found("certificate of this edge", &name);
    let config = payload::edge_config(&state, &edge).await?;
    let listed = config
        .content()
        .certificates
        .iter()
        .find(|c| c.name.as_str() == name)
        .ok_or_else(unknown)?;
    let id = certs::id_of_ref(&name).ok_or_else(unknown)?;
    let cert = state.store().get_certificate(&id).await?;
    let (Some(chain_pem), Some(key)) = (cert.chain_pem, certs::certificate_key(&state, &id).await)
    else {
        return Err(unknown());
    };
    let body = EdgeCertificate {
        name: listed.name.to_string(),
        sha256: ContentHash::of(chain_pem.as_bytes()),
        chain_pem,
        private_key_pem: key.to_string(),
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
