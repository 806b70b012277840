//! `http`, `https` and `end_to_end` checks: one `GET` on a fresh connection.

use std::pin::pin;

use http_body_util::{BodyExt, Empty};
use hyper::{
    Request, Uri,
    body::Bytes,
    header::{ACCEPT, CONNECTION, HOST, USER_AGENT},
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Progress, net, tls::Tls};
use crate::CheckConfig;

/// How much of a body is read to look for `expected_body`.
const BODY_LIMIT: usize = 64 * 1024;

pub(super) async fn get(
    tls: &Tls,
    check: &CheckConfig,
    progress: &mut Progress,
) -> Result<(), String> {
    let url = check.url.as_deref().unwrap_or_default();
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("url {url:?} is not a URL: {e}"))?;
    let secure = uri.scheme_str() == Some("https");
    let authority = uri
        .authority()
        .ok_or_else(|| format!("url {url:?} names no host"))?;
    let host = authority.host();
    let port = authority
        .port_u16()
        .unwrap_or(if secure { 443 } else { 80 });
    let host_header = match authority.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(HOST, host_header)
        .header(
            USER_AGENT,
            concat!("kokoa-health/", env!("CARGO_PKG_VERSION")),
        )
        .header(ACCEPT, "*/*")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build a request for {url:?}: {e}"))?;

    let tcp = net::connect(host, port, check.address, check.netns.as_deref(), progress).await?;
    if secure {
        let stream = tls
            .handshake(tcp, host, check.verify_certificate, progress)
            .await?;
        progress.doing(format_args!("waiting for the answer to GET {url}"));
        exchange(stream, request, url, check).await
    } else {
        progress.doing(format_args!("waiting for the answer to GET {url}"));
        exchange(tcp, request, url, check).await
    }
}

/// Sends `request` over `stream` and judges the answer by `check`.
async fn exchange<S>(
    stream: S,
    request: Request<Empty<Bytes>>,
    url: &str,
    check: &CheckConfig,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let failed = |what: &str, e: hyper::Error| format!("GET {url}: {what}: {e}");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed("cannot start HTTP", e))?;
    let expected = check.expected_status;
    let below = check.any_status_below;
    let wanted = check.expected_body.as_deref().map(str::as_bytes);
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed("no answer", e))?;
        let status = response.status().as_u16();
        match below {
            Some(limit) if status >= limit => {
                return Err(format!(
                    "GET {url}: expected a status below {limit}, got {status}"
                ));
            }
            None if status != expected => {
                return Err(format!(
                    "GET {url}: expected status {expected}, got {status}"
                ));
            }
            _ => {}
        }
        let Some(wanted) = wanted.filter(|w| !w.is_empty()) else {
            return Ok(());
        };
        let mut body = response.into_body();
        let mut read = Vec::new();
        while read.len() < BODY_LIMIT {
            match body.frame().await {
                None => break,
                Some(Err(e)) => return Err(failed("cannot read the body", e)),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = BODY_LIMIT - read.len();
                        read.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
            }
        }
        if read.windows(wanted.len()).any(|window| window == wanted) {
            return Ok(());
        }
        let limit = if read.len() >= BODY_LIMIT {
            " (searched the first 64 KiB)"
        } else {
            ""
        };
        Err(format!(
            "GET {url}: body does not contain {:?}{limit}",
            String::from_utf8_lossy(wanted)
        ))
    };
    // The connection must be driven while the answer is read; it may end first (the server
    // closes after answering), and then the answer is complete or has failed.
    let mut exchange = pin!(exchange);
    let mut connection = pin!(connection);
    tokio::select! {
        result = &mut exchange => result,
        _ = &mut connection => exchange.await,
    }
}
