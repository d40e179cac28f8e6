//! A command's requests to the running server (`lockstep audit`, `plan`, `approve`):
//! over HTTP to the config's `listen` address, with its admin token when one is set.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::config::Config;

/// How long a command waits to connect before it takes the server for stopped.
const CONNECT_WAIT: Duration = Duration::from_secs(1);

/// `METHOD path` on the running server with a JSON body (or none); its JSON answer,
/// or `None` when nothing listens at the configured address. An answer other than 2xx
/// is an error naming the status and the server's message.
pub fn call(
    config: &Config,
    method: hyper::Method,
    path_and_query: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<Option<serde_json::Value>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let addr = config.server.listen;
        let connect =
            tokio::time::timeout(CONNECT_WAIT, tokio::net::TcpStream::connect(addr)).await;
        if !matches!(connect, Ok(Ok(_))) {
            return Ok(None);
        }
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let uri = format!("http://{addr}{path_and_query}");
        let mut request = hyper::Request::builder().method(method).uri(&uri);
        if let Some(token) = &config.server.admin_token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(value) => {
                request = request.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(&value)?)
            }
            None => Bytes::new(),
        };
        let response = client
            .request(request.body(Full::new(body))?)
            .await
            .with_context(|| format!("request to {uri}"))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("the answer of {uri} is not JSON"))?;
        if !status.is_success() {
            let message = value["message"]
                .as_str()
                .map_or(value.to_string(), str::to_string);
            bail!("server at {addr} answered {status}: {message}");
        }
        Ok(Some(value))
    })
}

/// `call`, for a command that needs the server: "not running" is an error that says so.
pub fn call_running(
    config: &Config,
    method: hyper::Method,
    path_and_query: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    call(config, method, path_and_query, body)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no lockstep server answers at {} (the config's server.listen): start it with \
             `lockstep serve`, with the same --config",
            config.server.listen
        )
    })
}
