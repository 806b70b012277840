//! `/api/v1/modules`: the modules of SPEC §8, their state, and their switches.

use std::collections::BTreeMap;

use axum::{Json, extract::State};
use kokoa_core::Severity;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, ApiPath};
use crate::{
    auth::{Admin, Reader},
    error::{ApiError, ErrorBody},
    events::kinds,
    runtime::Module,
    state::AppState,
};

/// One module as the Settings > Modules page shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ModuleView {
    /// `dns_manager`, `edge_provisioner`, `ssl_manager`, `health_checker`,
    /// `metrics_collector` or `outbound_router`.
    pub name: String,
    /// Whether it is switched on.
    pub enabled: bool,
    /// Whether this build has it at all.
    pub available: bool,
    /// The provider(s) it uses.
    pub provider: Option<String>,
    /// Whether its last call to the outside world worked; absent before the first.
    pub connected: Option<bool>,
    /// One line about its state, e.g. the last error.
    pub detail: Option<String>,
    /// What it handles, e.g. `{"zones": 2}` or `{"running_checks": 12}`.
    pub counts: BTreeMap<String, u64>,
}

/// `GET /api/v1/modules`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ModuleList {
    /// Every module, in the spec's order.
    pub modules: Vec<ModuleView>,
}

/// `PUT /api/v1/modules/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModuleSwitch {
    /// On or off.
    pub enabled: bool,
}

async fn view(state: &AppState, module: Module, enabled: bool) -> ModuleView {
    let status = state.modules().status(module);
    ModuleView {
        name: module.as_str().to_owned(),
        enabled,
        available: module.available(),
        provider: status.provider,
        connected: status.connected,
        detail: if module.available() {
            status.detail
        } else {
            Some("not part of this build".to_owned())
        },
        counts: status.counts,
    }
}

/// Every module with its switch and what it reports.
#[utoipa::path(
    get,
    path = "/api/v1/modules",
    tag = "system",
    security(("bearer" = [])),
    responses((status = 200, description = "The modules", body = ModuleList))
)]
pub(super) async fn list_modules(State(state): State<AppState>, _: Reader) -> Json<ModuleList> {
    let switches = state.modules().switches(&state).await;
    let mut modules = Vec::new();
    for (module, enabled) in switches {
        modules.push(view(&state, module, enabled).await);
    }
    Json(ModuleList { modules })
}

/// Switches a module on or off, for every control plane on this database, without a
/// restart: a module switched off does nothing from its next step on.
#[utoipa::path(
    put,
    path = "/api/v1/modules/{name}",
    tag = "system",
    params(("name" = String, Path, description = "Module name, e.g. dns_manager")),
    request_body = ModuleSwitch,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The module now", body = ModuleView),
        (status = 404, description = "Unknown module", body = ErrorBody),
    )
)]
pub(super) async fn set_module(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<ModuleSwitch>,
) -> Result<Json<ModuleView>, ApiError> {
    let module = Module::parse(&name).ok_or_else(|| ApiError::not_found("module", &name))?;
    if body.enabled && !module.available() {
        return Err(ApiError::invalid(
            "enabled",
            format!("module {module} is not part of this build and cannot be switched on"),
        ));
    }
    state.modules().set(&state, module, body.enabled).await?;
    let word = if body.enabled { "on" } else { "off" };
    state
        .events()
        .emit(
            kinds::MODULE_CHANGED,
            Severity::Info,
            Some(module.as_str()),
            format!("module {module} switched {word} by {}", caller.name()),
            serde_json::json!({"module": module, "enabled": body.enabled}),
        )
        .await;
    state.wakers().everywhere(&state);
    Ok(Json(view(&state, module, body.enabled).await))
}
