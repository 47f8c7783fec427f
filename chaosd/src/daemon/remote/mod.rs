//! The remote listener (`[remote]` in the config; off by default): a TCP port with mutual
//! TLS that serves
//! - the routes Chaos Mesh's PhysicalMachineChaos controller calls on chaos-mesh/chaosd:
//!   `POST /api/attack/{network,stress,disk,process,clock,http,...}`,
//!   `DELETE /api/attack/{uid}`, `GET /api/system/health` (`wire` for the bodies, `mapping` for
//!   what each becomes);
//! - chaosd's own fault routes (`/v1/faults`, `/v1/faults/{id}`, `/v1/faults/dry-run`,
//!   `/v1/status`, `/v1/capabilities`, `/metrics`) for remote clients such as the Chaos
//!   Toolkit extension. Runs and schedules stay on the socket: scenarios run commands.
//!
//! Chaos Mesh sends no duration: it ends an attack with a DELETE. Each attack's faults get
//! `remote.max_duration` as their deadline, so an attack whose DELETE never comes still ends.
//! Every mutation is audited like the socket's, with the client certificate's subject.

pub mod attacks;
pub mod mapping;
pub mod tls;
pub mod wire;

use std::{path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{ConnectInfo, Path as UrlPath, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio::sync::Mutex;

use self::{
    attacks::{Attack, Attacks},
    mapping::{LiveHost, MapError},
    tls::{RemoteListener, RemotePeer, TlsSetupError},
    wire::{AttackAnswer, ErrorAnswer, Health},
};
use crate::{
    api::InjectRequest,
    config::RemoteListen,
    daemon::{
        audit::{Caller, History},
        http::ApiError,
    },
    engine::registry::Registry,
    error::Error,
};

/// What the remote routes share.
pub struct RemoteState {
    pub registry: Arc<Registry>,
    /// Held across an attack's inject or recover, so a uid is never applied twice at once.
    pub attacks: Mutex<Attacks>,
    /// The deadline of an attack's faults.
    pub max_duration: Duration,
    /// The cgroup2 mount, for the process and clock attacks' lookups.
    pub mount: PathBuf,
}

/// An error answer in chaos-mesh/chaosd's shape (`{"error": true, "message": ..}`).
#[derive(Debug)]
pub struct RemoteError {
    status: StatusCode,
    message: String,
}

impl RemoteError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        RemoteError {
            status,
            message: message.into(),
        }
    }
}

impl From<MapError> for RemoteError {
    fn from(e: MapError) -> Self {
        RemoteError::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<Error> for RemoteError {
    fn from(e: Error) -> Self {
        let api = ApiError::from(e);
        RemoteError::new(api.status(), api.message())
    }
}

impl IntoResponse for RemoteError {
    fn into_response(self) -> Response {
        let code = match self.status {
            StatusCode::NOT_FOUND => "error.api.resource_not_found",
            s if s.is_server_error() => "error.api.internal_server_error",
            _ => "error.api.invalid_request",
        };
        (
            self.status,
            Json(ErrorAnswer {
                error: true,
                message: self.message.clone(),
                code: code.into(),
                full_text: format!("{code}: {}", self.message),
            }),
        )
            .into_response()
    }
}

/// The remote routes; tests drive this with `oneshot` (with a `RemotePeer` connect info).
pub fn router(state: Arc<RemoteState>) -> Router {
    let chaos_mesh = Router::new()
        .route("/api/attack/{route}", post(attack).delete(recover))
        .route("/api/system/health", get(health))
        .route("/api/system/version", get(version))
        .with_state(Arc::clone(&state));
    chaos_mesh
        .merge(crate::daemon::http::fault_routes(Arc::clone(
            &state.registry,
        )))
        .fallback(|| async {
            RemoteError::new(
                StatusCode::NOT_FOUND,
                "no such route here: Chaos Mesh's /api/attack/{network,stress,disk,process,clock}, \
                 DELETE /api/attack/{uid} and /api/system/health, and chaosd's /v1/faults, \
                 /v1/status and /v1/capabilities",
            )
        })
}

/// Audits every mutation with the client's certificate subject (see `crate::daemon::audit`).
async fn audit(
    State(history): State<Arc<History>>,
    ConnectInfo(peer): ConnectInfo<RemotePeer>,
    req: Request,
    next: Next,
) -> Response {
    let caller = Caller {
        uid: peer.uid.unwrap_or(u32::MAX),
        pid: None,
        peer: Some(peer.describe()),
    };
    crate::daemon::audit::record(history, caller, req, next).await
}

async fn health() -> Json<Health> {
    Json(Health {
        status: 0,
        message: String::new(),
    })
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({"version": env!("CARGO_PKG_VERSION"), "server": "chaosd (Rust)"}))
}

/// A uid as Chaos Mesh makes them (a UUID), or anything URL- and file-safe up to 128 bytes.
fn check_uid(uid: &str) -> Result<(), RemoteError> {
    let ok = !uid.is_empty()
        && uid.len() <= 128
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RemoteError::new(
            StatusCode::BAD_REQUEST,
            format!("uid {uid:?}: letters, digits, '-', '_' and '.' only, at most 128"),
        ))
    }
}

fn new_uid() -> String {
    let r: u128 = rand::random();
    let h = format!("{r:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn answer(uid: &str, faults: &[String], message: &str) -> Json<AttackAnswer> {
    Json(AttackAnswer {
        status: 200,
        message: message.into(),
        uid: uid.into(),
        faults: faults.to_vec(),
    })
}

async fn attack(
    State(state): State<Arc<RemoteState>>,
    UrlPath(route): UrlPath<String>,
    body: Bytes,
) -> Result<Json<AttackAnswer>, RemoteError> {
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        RemoteError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))
    })?;
    if !value.is_object() {
        return Err(RemoteError::new(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object (an ExpInfo, flattened as Chaos Mesh sends it)",
        ));
    }
    let uid = match value.get("uid").and_then(|u| u.as_str()) {
        Some(u) if !u.is_empty() => u.to_string(),
        _ => new_uid(),
    };
    check_uid(&uid)?;
    let mut attacks = state.attacks.lock().await;
    if let Some(known) = attacks.get(&uid) {
        if known.route == route && known.body == value {
            // The controller retried an attack that was applied: the same answer again.
            return Ok(answer(&uid, &known.faults, "attack successfully"));
        }
        return Err(RemoteError::new(
            StatusCode::CONFLICT,
            format!(
                "uid {uid} is already an attack on this host (faults {}); DELETE \
                 /api/attack/{uid} first",
                known.faults.join(", ")
            ),
        ));
    }
    let host = LiveHost {
        mount: state.mount.clone(),
    };
    let (r, v) = (route.clone(), value.clone());
    // Name resolution and /proc walks block.
    let planned = tokio::task::spawn_blocking(move || mapping::plan(&r, v, &host))
        .await
        .map_err(|e| {
            RemoteError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("mapping the attack did not finish: {e}"),
            )
        })??;
    let duration = humantime::format_duration(state.max_duration).to_string();
    let mut faults: Vec<String> = Vec::new();
    for p in planned {
        let req = InjectRequest {
            fault: p.fault,
            targets: p.targets,
            duration: Some(duration.clone()),
        };
        match state.registry.inject(req).await {
            Ok(info) => faults.push(info.id),
            Err(e) => {
                // All or nothing: what this attack applied so far is reverted.
                for id in &faults {
                    if let Err(re) = state.registry.recover(id).await {
                        tracing::warn!(fault_id = %id, "rolling back a refused attack: {re}");
                    }
                }
                return Err(e.into());
            }
        }
    }
    let entry = Attack {
        route,
        body: value,
        faults: faults.clone(),
        deadline_unix: attacks::now_unix() + state.max_duration.as_secs(),
    };
    if let Err(e) = attacks.insert(uid.clone(), entry) {
        // Without the record a later DELETE could not find the faults: undo them.
        for id in &faults {
            let _ = state.registry.recover(id).await;
        }
        tracing::error!("recording attack {uid}: {e}");
        return Err(RemoteError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("recording the attack failed, so it was reverted: {e}"),
        ));
    }
    tracing::info!(uid, faults = ?faults, "chaos mesh attack applied");
    Ok(answer(&uid, &faults, "attack successfully"))
}

async fn recover(
    State(state): State<Arc<RemoteState>>,
    UrlPath(uid): UrlPath<String>,
) -> Result<Json<AttackAnswer>, RemoteError> {
    check_uid(&uid)?;
    let mut attacks = state.attacks.lock().await;
    let Some(attack) = attacks.get(&uid).cloned() else {
        return Err(RemoteError::new(
            StatusCode::NOT_FOUND,
            format!("no attack with uid {uid} on this host (never applied, or already recovered)"),
        ));
    };
    let mut ended_before: Vec<String> = Vec::new();
    for id in &attack.faults {
        match state.registry.recover(id).await {
            Ok(_) | Err(Error::Ending { .. }) => {}
            Err(Error::NotFound { .. }) => {
                let how = match state.registry.get(id).await {
                    Ok(info) => format!("{id} {}", info.state),
                    Err(_) => format!("{id} ended with a previous chaosd"),
                };
                ended_before.push(how);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Err(e) = attacks.remove(&uid) {
        tracing::warn!("forgetting attack {uid}: {e}");
    }
    let message = if ended_before.is_empty() {
        "attack recover successfully".to_string()
    } else {
        format!(
            "attack recover successfully; already ended: {}",
            ended_before.join(", ")
        )
    };
    Ok(answer(&uid, &attack.faults, &message))
}

/// Binds the listener, then serves until aborted; returns the bound address and the task.
pub async fn serve(
    listen: RemoteListen,
    registry: Arc<Registry>,
    history: Arc<History>,
    state_dir: &std::path::Path,
    mount: PathBuf,
    access: crate::daemon::http::Access,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), TlsSetupError> {
    let tls = listen.tls.as_ref().map(tls::server_config).transpose()?;
    let plain_access: tls::PlainAccess = Arc::new(move |uid| access.allows_uid(uid));
    let listener = RemoteListener::bind(listen.addr, tls, plain_access).await?;
    let addr = listener.local_addr();
    let state = Arc::new(RemoteState {
        registry,
        attacks: Mutex::new(Attacks::open(state_dir)),
        max_duration: listen.max_duration,
        mount,
    });
    let app = router(state).layer(middleware::from_fn_with_state(history, audit));
    tracing::info!(
        %addr,
        mutual_tls = listen.tls.is_some(),
        max_duration = %humantime::format_duration(listen.max_duration),
        "serving the remote listener (Chaos Mesh's /api/attack and chaosd's /v1/faults)"
    );
    let task = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<RemotePeer>(),
        )
        .await;
        if let Err(e) = served {
            tracing::error!("remote listener stopped: {e}");
        }
    });
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_checked_and_made_like_chaos_meshs() {
        assert!(check_uid("3f1c2d4e-0000-4000-8000-123456789abc").is_ok());
        assert!(check_uid("../x").is_err());
        assert!(check_uid("").is_err());
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert!(check_uid(&u).is_ok());
    }
}
