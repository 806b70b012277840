//! The REST API (SPEC §6) and its OpenAPI document, generated from the handlers so the two
//! cannot drift apart.

use std::sync::OnceLock;

use axum::{Router, http::StatusCode};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, Content, RefOr, Response, ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, ErrorBody},
    state::AppState,
};

mod agent;
mod certificates;
mod conditional;
mod dns;
mod edges;
mod events;
mod extract;
mod modules;
mod origins;
mod routes;
mod system;
mod tokens;
mod traffic;
mod users;
mod views;

pub(crate) use edges::create_tunnel;
pub use extract::{ApiJson, ApiPath, ApiQuery, parse_json};
pub use tokens::issue_api_token;
pub(crate) use tokens::issue_enrollment;
pub use users::{create_user, reset_second_factor};
pub use views::*;

/// The name of the bearer security scheme in the OpenAPI document.
const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kokoa Proxy control plane",
        description = "Manage routes, origins and edge nodes; nodes enroll, pull their \
                       configuration and send heartbeats. Every /api/v1 endpoint except \
                       /api/v1/enroll and /api/v1/openapi.json needs `Authorization: Bearer`.",
    ),
    components(schemas(ErrorBody)),
    modifiers(&Conventions),
    tags(
        (name = "routes", description = "Published host names"),
        (name = "origins", description = "Private networks running services"),
        (name = "edge-nodes", description = "Internet-facing nodes"),
        (name = "agents", description = "Called by edge and origin agents"),
        (name = "tokens", description = "API tokens and node enrollment"),
        (name = "users", description = "People who sign in to the Web UI"),
        (name = "dns", description = "DNS zones and the records of the healthy edges"),
        (name = "certificates", description = "TLS certificates: ACME orders, uploads, renewal"),
        (name = "system", description = "Health, events and this document"),
    )
)]
struct ApiDoc;

/// Adds what every operation shares: the bearer scheme, and the error answers each kind
/// of operation can give (so they are documented once, here, rather than per handler).
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let error = |description: &str| -> RefOr<Response> {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(RefOr::Ref(openapi::Ref::from_schema_name(
                        "ErrorBody",
                    )))),
                )
                .build()
                .into()
        };
        for item in doc.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_body = op.request_body.is_some();
                let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let responses = &mut op.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description));
                };
                if has_body || has_params {
                    add("400", "Malformed JSON body or unreadable parameter");
                    add("422", "A field or parameter holds an invalid value");
                }
                if secured {
                    add("401", "Missing, unknown, revoked or expired bearer token");
                    add("403", "The token is valid but may not do this");
                }
                add("500", "Internal error (details in the control plane's log)");
            }
        }
    }
}

/// Turns a validation failure of a request field into 422 naming `field`.
fn valid<T>(field: &str, result: Result<T, kokoa_core::Error>) -> Result<T, ApiError> {
    result.map_err(|e| ApiError::invalid(field, e))
}

/// An id from the URL. One that is not even well formed cannot exist either, hence 404.
fn path_id<T: std::str::FromStr>(kind: &str, id: &str) -> Result<T, ApiError> {
    id.parse().map_err(|_| ApiError::not_found(kind, id))
}

/// The API's OpenAPI 3 document.
pub fn openapi() -> &'static openapi::OpenApi {
    static DOC: OnceLock<openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| build().1)
}

/// The router of the whole API and the Web UI ([`crate::ui`]), ready to serve. Serve it
/// with connection info (`into_make_service_with_connect_info::<SocketAddr>()`) so sign-in
/// attempts are limited per client address.
pub fn router(state: AppState) -> Router {
    build()
        .0
        .merge(crate::ui::routes())
        .route(
            "/downloads/SHA256SUMS",
            axum::routing::get(crate::downloads::sums),
        )
        .route(
            "/downloads/{name}",
            axum::routing::get(crate::downloads::file),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see /api/v1/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not accept that method; see /api/v1/openapi.json",
            )
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(axum::middleware::map_response(crate::ui::security_headers))
        .layer(axum::middleware::from_fn(crate::request_id::layer))
        .with_state(state)
}

fn build() -> (Router<AppState>, openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::health))
        .routes(routes!(system::ready))
        .routes(routes!(system::metrics))
        .routes(routes!(system::prometheus_targets))
        .routes(routes!(system::openapi_document))
        .routes(routes!(routes::create_route, routes::list_routes))
        .routes(routes!(
            routes::get_route,
            routes::update_route,
            routes::delete_route
        ))
        .routes(routes!(origins::create_origin, origins::list_origins))
        .routes(routes!(origins::get_origin, origins::delete_origin))
        .routes(routes!(origins::origin_bundle))
        .routes(routes!(origins::rotate_origin_key))
        .routes(routes!(origins::origin_edge_nodes))
        .routes(routes!(edges::create_edge, edges::list_edges))
        .routes(routes!(edges::get_edge, edges::delete_edge))
        .routes(routes!(edges::health_history))
        .routes(routes!(traffic::edge_traffic))
        .routes(routes!(traffic::route_traffic))
        .routes(routes!(edges::rotate_edge_keys))
        .routes(routes!(agent::enroll))
        .routes(routes!(agent::edge_own_config))
        .routes(routes!(agent::origin_own_config))
        .routes(routes!(agent::edge_bundle))
        .routes(routes!(agent::edge_ready))
        .routes(routes!(agent::heartbeat))
        .routes(routes!(agent::register_key))
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(tokens::create_enrollment))
        .routes(routes!(users::create, users::list))
        .routes(routes!(users::update, users::delete))
        .routes(routes!(users::reset_totp))
        .routes(routes!(events::post_event))
        .routes(routes!(events::list_events))
        .routes(routes!(events::stream_events))
        .routes(routes!(modules::list_modules))
        .routes(routes!(modules::set_module))
        .routes(routes!(dns::create_zone, dns::list_zones))
        .routes(routes!(dns::delete_zone))
        .routes(routes!(dns::list_records))
        .routes(routes!(dns::plan))
        .routes(routes!(dns::reconcile))
        .routes(routes!(dns::instructions))
        .routes(routes!(
            certificates::list_certificates,
            certificates::upload_certificate
        ))
        .routes(routes!(certificates::renew_certificate))
        .routes(routes!(
            certificates::get_settings,
            certificates::put_settings
        ))
        .routes(routes!(certificates::edge_certificate))
        .split_for_parts()
}
