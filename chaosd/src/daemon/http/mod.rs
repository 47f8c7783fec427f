//! The HTTP/1.1 + JSON API on a Unix socket, and the peer check in front of it.
//!
//! Every connection's peer credentials (SO_PEERCRED) are checked: root, or a member of the
//! socket's group, may use the API; everyone else gets 403.

pub mod body;
pub mod runs;
pub mod schedules;

use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, chown},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        ConnectInfo, FromRequest, Path as UrlPath, Query, Request, State, connect_info::Connected,
    },
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    serve::IncomingStream,
};
use serde::Deserialize;
use tokio::net::UnixListener;

use crate::{
    api::{DryRunInfo, ErrorBody, FaultInfo, FaultState, InjectRequest, StatusInfo},
    engine::registry::Registry,
    error::{Error, FaultError},
};

/// An API error as the client sees it: 4xx carry the reason; 5xx are logged here in full.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What the client is told.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Request(crate::error::RequestError::Unsupported { .. })
            | Error::Fault(FaultError::Refused(crate::error::RequestError::Unsupported {
                ..
            })) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Request(_) => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Ending { .. } => StatusCode::CONFLICT,
            Error::ApplyTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Worker { .. } | Error::RevertFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Fault(FaultError::Capacity { .. }) => StatusCode::CONFLICT,
            Error::Fault(FaultError::Refused(_)) => StatusCode::BAD_REQUEST,
            Error::Fault(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            // The cause stays in the log; the caller gets an id to find it by.
            let error_id = format!("{:08x}", rand::random::<u32>());
            tracing::error!(error_id, "request failed: {e:#}");
            return ApiError::new(
                status,
                format!(
                    "internal error {error_id}; the daemon's log has the cause under error_id={error_id}"
                ),
            );
        }
        if status.is_server_error() {
            tracing::warn!("request failed: {e}");
        }
        ApiError::new(status, format!("{e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// `Json` whose rejections (malformed JSON, wrong fields) come back as `{"error": ..}`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !body::is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid request body: expected a request with `Content-Type: application/json`",
            ));
        }
        let body = Bytes::from_request(req, state).await.map_err(|r| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {}", r.body_text()),
            )
        })?;
        body::decode_json(&body).map(ApiJson)
    }
}

/// The credentials of a connection's peer, taken when it connected.
#[derive(Clone, Copy, Debug)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for PeerCred {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(c) => PeerCred {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            // Unknown peers are treated as nobody and refused.
            Err(_) => PeerCred {
                uid: u32::MAX,
                gid: u32::MAX,
                pid: None,
            },
        }
    }
}

/// Who may use the API besides root.
#[derive(Clone, Debug)]
pub struct Access {
    /// The socket's group, when the configured one exists on this host.
    pub group: Option<AccessGroup>,
}

/// A group whose members may use the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessGroup {
    pub gid: u32,
    pub name: String,
}

impl Access {
    /// Root, and the members of `group_name` if that group exists.
    pub fn for_group(group_name: &str) -> Access {
        let group = nix::unistd::Group::from_name(group_name)
            .ok()
            .flatten()
            .map(|g| AccessGroup {
                gid: g.gid.as_raw(),
                name: g.name,
            });
        Access { group }
    }

    pub fn allows(&self, peer: &PeerCred) -> bool {
        if peer.uid == 0 {
            return true;
        }
        let Some(group) = &self.group else {
            return false;
        };
        peer.gid == group.gid
            || peer
                .pid
                .is_some_and(|pid| supplementary_groups(pid).contains(&group.gid))
    }

    /// Whether the user `uid` may use the API, when only the uid is known (a loopback TCP
    /// peer of the remote listener): root, or a user whose primary or supplementary groups
    /// include the group.
    pub fn allows_uid(&self, uid: u32) -> bool {
        if uid == 0 {
            return true;
        }
        let Some(group) = &self.group else {
            return false;
        };
        let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
            return false;
        };
        let Ok(name) = std::ffi::CString::new(user.name) else {
            return false;
        };
        user.gid.as_raw() == group.gid
            || nix::unistd::getgrouplist(&name, user.gid)
                .is_ok_and(|gs| gs.iter().any(|g| g.as_raw() == group.gid))
    }

    /// Why `peer` is refused: names the group only when there is one to join.
    pub fn refusal(&self, peer: &PeerCred) -> String {
        match &self.group {
            Some(g) => format!(
                "uid {} may not use chaosd: only root and members of group {} (gid {}) may; \
                 ask an administrator to add you to it, then log in again",
                peer.uid, g.name, g.gid
            ),
            None => format!(
                "uid {} may not use chaosd: only root may, since the group set as daemon.group \
                 in the daemon's config does not exist on this host",
                peer.uid
            ),
        }
    }
}

fn supplementary_groups(pid: i32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

async fn check_peer(
    State(access): State<Access>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    req: Request,
    next: Next,
) -> Response {
    if access.allows(&peer) {
        return next.run(req).await;
    }
    tracing::warn!(uid = peer.uid, pid = ?peer.pid, "refused an unauthorised peer");
    ApiError::new(StatusCode::FORBIDDEN, access.refusal(&peer)).into_response()
}

/// The API routes; tests drive this with `tower::ServiceExt::oneshot`.
pub fn router(registry: Arc<Registry>) -> Router {
    fault_routes(registry).fallback(|| async {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no such route; the API lives under /v1",
        )
    })
}

/// The fault routes (inject, list, show, recover, dry run), status, capabilities and
/// metrics, with no fallback: the socket's API and the remote listener both serve these.
pub fn fault_routes(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/v1/faults",
            get(list_faults).post(inject).delete(recover_all),
        )
        .route("/v1/faults/dry-run", post(dry_run))
        .route("/v1/faults/{id}", get(get_fault).delete(recover))
        .route("/v1/status", get(status))
        .route("/v1/capabilities", get(capabilities))
        .route("/metrics", get(metrics))
        .with_state(registry)
}

/// Only `/metrics`, for the optional loopback TCP listener (no peer check is possible there).
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "only /metrics is served here") })
        .with_state(registry)
}

/// Prometheus exposition of the faults (see [`crate::engine::metrics`]).
async fn metrics(State(r): State<Arc<Registry>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::engine::metrics::CONTENT_TYPE,
        )],
        r.metrics_text().await,
    )
}

/// Serves [`metrics_router`] on `addr` (already checked to be loopback) until aborted.
pub async fn serve_metrics_tcp(
    addr: std::net::SocketAddr,
    registry: Arc<Registry>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics_listen {addr}"))?;
    tracing::info!(%addr, "serving /metrics over TCP");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, metrics_router(registry)).await {
            tracing::error!("metrics listener stopped: {e}");
        }
    }))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

async fn list_faults(
    State(r): State<Arc<Registry>>,
    Query(q): Query<ListQuery>,
) -> Json<Vec<FaultInfo>> {
    Json(r.list(q.all).await)
}

async fn inject(
    State(r): State<Arc<Registry>>,
    ApiJson(req): ApiJson<InjectRequest>,
) -> Result<(StatusCode, Json<FaultInfo>), ApiError> {
    Ok((StatusCode::CREATED, Json(r.inject(req).await?)))
}

async fn dry_run(
    State(r): State<Arc<Registry>>,
    ApiJson(req): ApiJson<InjectRequest>,
) -> Result<Json<DryRunInfo>, ApiError> {
    Ok(Json(r.dry_run(&req).await?))
}

async fn get_fault(
    State(r): State<Arc<Registry>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<FaultInfo>, ApiError> {
    Ok(Json(r.get(&id).await?))
}

async fn recover(
    State(r): State<Arc<Registry>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<FaultInfo>, ApiError> {
    Ok(Json(r.recover(&id).await?))
}

async fn recover_all(State(r): State<Arc<Registry>>) -> Json<Vec<FaultInfo>> {
    Json(r.recover_all(FaultState::Recovered).await)
}

#[derive(Deserialize)]
struct CapabilitiesQuery {
    /// Probe only this kind's programs (`?kind=io.errno`); every group without it.
    kind: Option<String>,
}

/// What this host supports: each program group is loaded once, on the first ask that needs it
/// (see `capabilities`). The table lists every kind; with `?kind=` only that kind's row is
/// sure to be probed.
async fn capabilities(
    State(r): State<Arc<Registry>>,
    Query(q): Query<CapabilitiesQuery>,
) -> Json<crate::faults::capabilities::CapabilitiesInfo> {
    Json(r.capabilities(q.kind.as_deref()).await)
}

async fn status(State(r): State<Arc<Registry>>) -> Json<StatusInfo> {
    Json(r.status().await)
}

/// Binds the socket: removes a stale one, sets mode 0660 and the group if it exists, else 0600.
pub fn bind(path: &Path, group_name: &str) -> anyhow::Result<(UnixListener, Access)> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!(
            "another chaosd is already listening on {}; stop it first or pass --socket",
            path.display()
        );
    }
    match fs::remove_file(path) {
        Ok(()) => tracing::info!(socket = %path.display(), "removed a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale socket {}", path.display()));
        }
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    let access = Access::for_group(group_name);
    let group = access.group.as_ref().map(|g| g.gid);
    let mode = if let Some(gid) = group {
        chown(path, Some(0), Some(gid)).with_context(|| format!("chown {}", path.display()))?;
        0o660
    } else {
        0o600
    };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    tracing::info!(socket = %path.display(), mode = format!("{mode:o}"), group = group_name, group_exists = group.is_some(), "listening");
    Ok((listener, access))
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    access: Access,
    registry: Arc<Registry>,
    runs: Arc<crate::scenario::runs::Runs>,
    history: Arc<crate::daemon::audit::History>,
    schedules: Arc<crate::daemon::schedules::Schedules>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The audit layer is outside the peer check, so refused peers are recorded too.
    let app = router(registry)
        .merge(runs::routes(runs))
        .merge(schedules::routes(schedules))
        .merge(crate::daemon::audit::routes(Arc::clone(&history)))
        .layer(middleware::from_fn_with_state(access, check_peer))
        .layer(middleware::from_fn_with_state(
            history,
            crate::daemon::audit::record_mutations,
        ));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<PeerCred>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("serving the API")
}

/// Removes the socket file when dropped.
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_is_root_or_group() {
        let peer = |uid, gid| PeerCred {
            uid,
            gid,
            pid: None,
        };
        let access = Access {
            group: Some(AccessGroup {
                gid: 1234,
                name: "chaosd".into(),
            }),
        };
        assert!(access.allows(&peer(0, 0)));
        assert!(access.allows(&peer(1000, 1234)));
        assert!(!access.allows(&peer(1000, 1000)));
        assert!(!Access { group: None }.allows(&peer(1000, 1000)));
    }

    #[test]
    fn refusal_names_the_group_only_when_it_exists() {
        let nobody = PeerCred {
            uid: 65534,
            gid: 65534,
            pid: None,
        };
        let with = Access {
            group: Some(AccessGroup {
                gid: 1234,
                name: "chaosd".into(),
            }),
        }
        .refusal(&nobody);
        assert!(
            with.contains("uid 65534") && with.contains("group chaosd (gid 1234)"),
            "{with}"
        );
        let without = Access { group: None }.refusal(&nobody);
        assert!(without.contains("only root may"), "{without}");
        assert!(!without.contains("members"), "{without}");
    }
}
