//! `/api/v1/events`: the log of what the control plane did and why, as a list and as a
//! live stream (Server-Sent Events), and `/api/v1/internal/events` where modules report
//! theirs (SPEC §8.7).

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::sse::{Event as SseEvent, KeepAlive, Sse},
};
use futures_util::{Stream, stream};
use kokoa_core::{Event, EventFilter, EventKind, Severity};
use serde_json::Value;

use super::{ApiJson, ApiQuery, EventAccepted, EventList, EventQuery, EventRequest};
use crate::{
    auth::{Admin, Reader},
    error::ApiError,
    state::AppState,
};

/// Most events one request lists.
const MAX_LIMIT: u32 = 1000;
/// How often a stream looks in the store for events recorded by another control plane on
/// the same database; events of this one arrive at once.
const STREAM_RESCAN: Duration = Duration::from_secs(2);
/// Events a stream reads from the store at a time.
const STREAM_BATCH: u32 = 100;

/// Turns the query into a filter, refusing values that cannot match anything.
fn filter(query: EventQuery) -> Result<EventFilter, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit {limit} is outside 1-{MAX_LIMIT}"),
        ));
    }
    if let Some(kind) = query.kind.as_deref().filter(|k| *k != "*") {
        // A type, or the start of types followed by `*` (`edge.*`).
        EventKind::parse(kind.strip_suffix('*').unwrap_or(kind))
            .map_err(|e| ApiError::invalid("type", e))?;
    }
    let min_severity = query
        .severity
        .as_deref()
        .map(|s| {
            serde_json::from_value::<Severity>(Value::String(s.to_owned())).map_err(|_| {
                ApiError::invalid(
                    "severity",
                    format!("unknown severity {s:?}: use \"info\", \"warning\" or \"critical\""),
                )
            })
        })
        .transpose()?;
    Ok(EventFilter {
        after: query.after,
        before: query.before,
        kind: query.kind,
        subject: query.subject,
        min_severity,
        limit,
    })
}

/// Lists events, newest first; with `after`, the ones after that number, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "system",
    params(EventQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "The events", body = EventList))
)]
pub(super) async fn list_events(
    State(state): State<AppState>,
    _: Reader,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Json<EventList>, ApiError> {
    let filter = filter(query)?;
    Ok(Json(EventList {
        events: state.store().list_events(&filter).await?,
    }))
}

/// Follows the event log live, as Server-Sent Events: `id` is the event's number, `event`
/// its type, `data` the event as JSON. A client that reconnects with `Last-Event-ID` (or
/// `?after=`) first gets what it missed; without either, it starts with the next event.
#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    tag = "system",
    params(EventQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "A stream of events; the data of each is one event as JSON", content_type = "text/event-stream", body = Object))
)]
pub(super) async fn stream_events(
    State(state): State<AppState>,
    _: Reader,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let mut filter = filter(query)?;
    filter.limit = STREAM_BATCH;
    // Subscribed before reading where the log ends, so nothing recorded in between is lost.
    let rx = state.events().subscribe();
    let after = match last_event_id.or(filter.after) {
        Some(after) => after,
        None => state
            .store()
            .list_events(&EventFilter {
                limit: 1,
                ..EventFilter::default()
            })
            .await?
            .first()
            .map_or(0, |e| e.id),
    };
    filter.after = Some(after);
    let follower = Follower {
        state,
        rx,
        filter,
        queue: VecDeque::new(),
    };
    let events = stream::unfold(follower, |mut f| async move {
        let event = f.next().await?;
        let sse = SseEvent::default()
            .id(event.id.to_string())
            .event(event.kind.as_str())
            .json_data(&event)
            .unwrap_or_else(|_| SseEvent::default().comment("unserialisable event"));
        Some((Ok(sse), f))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The state of one live stream.
struct Follower {
    state: AppState,
    rx: tokio::sync::broadcast::Receiver<Event>,
    filter: EventFilter,
    queue: VecDeque<Event>,
}

impl Follower {
    /// The next event to send, or `None` when the server shuts down.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                self.filter.after = Some(event.id);
                return Some(event);
            }
            match self.state.store().list_events(&self.filter).await {
                Ok(events) if !events.is_empty() => {
                    self.queue.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "event stream cannot read the store"),
            }
            tokio::select! {
                // A new event (or a lag, which means there are several): read the store.
                _ = self.rx.recv() => {}
                () = tokio::time::sleep(STREAM_RESCAN) => {}
                () = self.state.shutting_down() => return None,
            }
        }
    }
}

/// Accepts a module's event, e.g. `{"type":"dns.record.added","data":{…}}`, and records
/// it like the control plane's own. Optional `severity`, `subject` and `message`.
#[utoipa::path(
    post,
    path = "/api/v1/internal/events",
    tag = "system",
    request_body = EventRequest,
    security(("bearer" = [])),
    responses((status = 202, description = "Accepted", body = EventAccepted))
)]
pub(super) async fn post_event(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(event): ApiJson<EventRequest>,
) -> Result<(StatusCode, Json<EventAccepted>), ApiError> {
    let kind = EventKind::parse(&event.kind).map_err(|e| ApiError::invalid("type", e))?;
    let severity = match event.severity.as_deref() {
        None => Severity::Info,
        Some(s) => serde_json::from_value(Value::String(s.to_owned())).map_err(|_| {
            ApiError::invalid(
                "severity",
                format!("unknown severity {s:?}: use \"info\", \"warning\" or \"critical\""),
            )
        })?,
    };
    let message = event
        .message
        .unwrap_or_else(|| format!("{kind} reported by {}", caller.name()));
    let recorded = state
        .events()
        .emit(
            kind.as_str(),
            severity,
            event.subject.as_deref(),
            message,
            Value::Object(event.data),
        )
        .await
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the event could not be recorded; the control plane's log has the details",
            )
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(EventAccepted {
            message: "Event accepted".into(),
            id: recorded.id,
        }),
    ))
}
