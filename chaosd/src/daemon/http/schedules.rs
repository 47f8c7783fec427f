//! The `/v1/schedules` routes: add, list, show, pause, resume and remove schedules.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path as UrlPath, State},
    http::StatusCode,
    routing::{get, post},
};

use super::{ApiError, ApiJson, PeerCred};
use crate::{
    api::schedule::{ScheduleInfo, ScheduleRequest},
    daemon::schedules::{ScheduleError, Schedules},
    scenario::probes::RunAs,
};

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        let status = match &e {
            ScheduleError::BadCron { .. }
            | ScheduleError::NeverFires { .. }
            | ScheduleError::Invalid(_) => StatusCode::BAD_REQUEST,
            ScheduleError::NotFound { .. } => StatusCode::NOT_FOUND,
            ScheduleError::Db(_) => {
                let error_id = format!("{:08x}", rand::random::<u32>());
                tracing::error!(error_id, "schedule request failed: {e}");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "internal error {error_id}; the daemon's log has the cause under error_id={error_id}"
                    ),
                );
            }
        };
        ApiError::new(status, e.to_string())
    }
}

pub fn routes(schedules: Arc<Schedules>) -> Router {
    Router::new()
        .route("/v1/schedules", get(list).post(add))
        .route("/v1/schedules/{id}", get(show).delete(remove))
        .route("/v1/schedules/{id}/pause", post(pause))
        .route("/v1/schedules/{id}/resume", post(resume))
        .with_state(schedules)
}

/// Database work runs off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ScheduleError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

async fn add(
    State(s): State<Arc<Schedules>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    ApiJson(req): ApiJson<ScheduleRequest>,
) -> Result<(StatusCode, Json<ScheduleInfo>), ApiError> {
    let owner = RunAs {
        uid: peer.uid,
        gid: peer.gid,
    };
    let info = blocking(move || s.add(req, owner)).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn list(State(s): State<Arc<Schedules>>) -> Result<Json<Vec<ScheduleInfo>>, ApiError> {
    Ok(Json(blocking(move || s.list()).await?))
}

async fn show(
    State(s): State<Arc<Schedules>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    Ok(Json(blocking(move || s.get(&id)).await?))
}

async fn remove(
    State(s): State<Arc<Schedules>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    Ok(Json(blocking(move || s.remove(&id)).await?))
}

async fn pause(
    State(s): State<Arc<Schedules>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    Ok(Json(blocking(move || s.set_paused(&id, true)).await?))
}

async fn resume(
    State(s): State<Arc<Schedules>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    Ok(Json(blocking(move || s.set_paused(&id, false)).await?))
}
