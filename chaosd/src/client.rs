//! A client for the daemon's API over its Unix socket (used by `chaosctl` and the tests).

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;
use tokio::net::UnixStream;

use crate::api::{
    DryRunInfo, ErrorBody, FaultInfo, InjectRequest, StatusInfo,
    capabilities::CapabilitiesInfo,
    history::HistoryEntry,
    schedule::{ScheduleInfo, ScheduleRequest},
};

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "cannot connect to chaosd at {path}: {source} (is the daemon running? `systemctl status chaosd`)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Api(String, StatusCode),
    #[error("talking to chaosd: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api(_, s) => Some(*s),
            _ => None,
        }
    }
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Client {
            socket: socket.as_ref().to_path_buf(),
        }
    }

    /// Sends one request on a fresh connection and returns the status and raw body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (status, bytes) = self.raw(method, path, body).await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Api(message, status));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("unexpected response: {e}")))
    }

    pub async fn inject(&self, req: &InjectRequest) -> Result<FaultInfo, ClientError> {
        self.call(Method::POST, "/v1/faults", Some(req)).await
    }

    /// What `inject` would act on; nothing changes.
    pub async fn dry_run(&self, req: &InjectRequest) -> Result<DryRunInfo, ClientError> {
        self.call(Method::POST, "/v1/faults/dry-run", Some(req))
            .await
    }

    pub async fn list(&self, include_ended: bool) -> Result<Vec<FaultInfo>, ClientError> {
        let path = if include_ended {
            "/v1/faults?all=true"
        } else {
            "/v1/faults"
        };
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn get(&self, id: &str) -> Result<FaultInfo, ClientError> {
        self.call(Method::GET, &format!("/v1/faults/{id}"), None::<&()>)
            .await
    }

    pub async fn recover(&self, id: &str) -> Result<FaultInfo, ClientError> {
        self.call(Method::DELETE, &format!("/v1/faults/{id}"), None::<&()>)
            .await
    }

    pub async fn recover_all(&self) -> Result<Vec<FaultInfo>, ClientError> {
        self.call(Method::DELETE, "/v1/faults", None::<&()>).await
    }

    pub async fn status(&self) -> Result<StatusInfo, ClientError> {
        self.call(Method::GET, "/v1/status", None::<&()>).await
    }

    /// The capability table (`chaosctl doctor`): probes every kind's programs.
    pub async fn capabilities(&self) -> Result<CapabilitiesInfo, ClientError> {
        self.call(Method::GET, "/v1/capabilities", None::<&()>)
            .await
    }

    /// One kind's row, probing only its programs.
    pub async fn capabilities_of(&self, kind: &str) -> Result<CapabilitiesInfo, ClientError> {
        let path = format!("/v1/capabilities?kind={kind}");
        self.call(Method::GET, &path, None::<&()>).await
    }

    pub async fn add_schedule(&self, req: &ScheduleRequest) -> Result<ScheduleInfo, ClientError> {
        self.call(Method::POST, "/v1/schedules", Some(req)).await
    }

    pub async fn schedules(&self) -> Result<Vec<ScheduleInfo>, ClientError> {
        self.call(Method::GET, "/v1/schedules", None::<&()>).await
    }

    /// One schedule with every kept fire.
    pub async fn schedule(&self, id: &str) -> Result<ScheduleInfo, ClientError> {
        self.call(Method::GET, &format!("/v1/schedules/{id}"), None::<&()>)
            .await
    }

    /// `verb` is `pause` or `resume`.
    pub async fn schedule_set(&self, id: &str, verb: &str) -> Result<ScheduleInfo, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/schedules/{id}/{verb}"),
            None::<&()>,
        )
        .await
    }

    pub async fn remove_schedule(&self, id: &str) -> Result<ScheduleInfo, ClientError> {
        self.call(Method::DELETE, &format!("/v1/schedules/{id}"), None::<&()>)
            .await
    }

    /// The newest `limit` audit records (`chaosctl history`).
    pub async fn history(&self, limit: u32) -> Result<Vec<HistoryEntry>, ClientError> {
        let path = format!("/v1/history?limit={limit}");
        self.call(Method::GET, &path, None::<&()>).await
    }
}
