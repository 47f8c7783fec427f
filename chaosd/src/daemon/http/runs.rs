//! The `/v1/runs` routes: start, list, follow and abort scenario runs.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path as UrlPath, Query, State},
    http::StatusCode,
    routing::get,
};
use serde::Deserialize;

use super::{ApiError, ApiJson, PeerCred};
use crate::scenario::{
    probes::RunAs,
    report::Report,
    runs::{RunError, Runs},
    wire::{EventsPage, RunInfo, RunRequest},
};

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        let status = match &e {
            RunError::Invalid { .. } => StatusCode::BAD_REQUEST,
            RunError::NotFound { .. } => StatusCode::NOT_FOUND,
            RunError::NotFinished { .. } | RunError::Busy { .. } => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The `/v1/runs` routes.
pub fn routes(runs: Arc<Runs>) -> Router {
    Router::new()
        .route("/v1/runs", get(list).post(start))
        .route("/v1/runs/{id}", get(info).delete(abort))
        .route("/v1/runs/{id}/events", get(events))
        .route("/v1/runs/{id}/report", get(report))
        .with_state(runs)
}

async fn start(
    State(runs): State<Arc<Runs>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    ApiJson(req): ApiJson<RunRequest>,
) -> Result<(StatusCode, Json<RunInfo>), ApiError> {
    let run_as = RunAs {
        uid: peer.uid,
        gid: peer.gid,
    };
    Ok((StatusCode::CREATED, Json(runs.start(req, run_as)?)))
}

async fn list(State(runs): State<Arc<Runs>>) -> Json<Vec<RunInfo>> {
    Json(runs.list())
}

async fn info(
    State(runs): State<Arc<Runs>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<RunInfo>, ApiError> {
    Ok(Json(runs.get(&id)?.info()))
}

async fn abort(
    State(runs): State<Arc<Runs>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<RunInfo>, ApiError> {
    let run = runs.get(&id)?;
    run.request_abort("aborted on request");
    Ok(Json(run.info()))
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait_ms: u64,
}

async fn events(
    State(runs): State<Arc<Runs>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let run = runs.get(&id)?;
    Ok(Json(
        run.events_after(q.after, Duration::from_millis(q.wait_ms))
            .await,
    ))
}

async fn report(
    State(runs): State<Arc<Runs>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Report>, ApiError> {
    let run = runs.get(&id)?;
    let report = run.report().ok_or(RunError::NotFinished { id })?;
    Ok(Json((*report).clone()))
}
