//! The tiny HTTP app each origin runs: it tells who answered and what the edge sent.

use std::{net::SocketAddr, path::PathBuf};

use axum::{
    Router,
    extract::{
        ConnectInfo,
        ws::{Message, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode},
    routing::get,
};

use crate::Error;

/// The body the app answers with: `app=<name> host=<Host> xff=<X-Forwarded-For>
/// proto=<X-Forwarded-Proto>` (a missing header shows as `-`).
pub fn describe(name: &str, headers: &HeaderMap) -> String {
    let header = |key: &str| {
        headers
            .get(key)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    format!(
        "app={name} host={} xff={} proto={}\n",
        header("host"),
        header("x-forwarded-for"),
        header("x-forwarded-proto")
    )
}

/// The app's routes: `/health` answers `ok` (its service check), `/ready` answers `ready`,
/// or 503 while `down_file` exists (its origin agent's application URL: the lab makes the
/// application fail while its port and service check stay up), `/conn` the address the
/// request's connection comes from (`app=<name> peer=<address>`: connections reused by a
/// proxy show the same one), `/ws` a WebSocket answering each text message `m` with
/// `app=<name> echo=m`, every other path [`describe`]s the request.
pub fn router(name: String, down_file: Option<PathBuf>) -> Router {
    let (conn_name, ws_name) = (name.clone(), name.clone());
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        // A page that always fails: the lab counts 5xx answers by host name with it.
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "failing on purpose\n") }),
        )
        .route(
            "/conn",
            get(
                move |ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    format!("app={conn_name} peer={peer}\n")
                },
            ),
        )
        .route(
            "/ws",
            get(move |ws: WebSocketUpgrade| async move {
                ws.on_upgrade(move |mut socket| async move {
                    while let Some(Ok(message)) = socket.recv().await {
                        let Message::Text(text) = message else {
                            continue;
                        };
                        let answer = format!("app={ws_name} echo={}", text.as_str());
                        if socket.send(Message::Text(answer.into())).await.is_err() {
                            return;
                        }
                    }
                })
            }),
        )
        .route(
            "/ready",
            get(move || {
                let down = down_file.as_ref().is_some_and(|f| f.exists());
                async move {
                    if down {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    } else {
                        (StatusCode::OK, "ready\n")
                    }
                }
            }),
        )
        .fallback(move |headers: HeaderMap| {
            let body = describe(&name, &headers);
            async move { body }
        })
}

/// Serves the app called `name` on `listen` until `shutdown` completes.
pub async fn serve(
    name: String,
    listen: SocketAddr,
    down_file: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Io {
            action: "listen on",
            path: listen.to_string().into(),
            source,
        })?;
    let app = router(name, down_file).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Io {
            action: "serve on",
            path: listen.to_string().into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_who_it_is_and_what_the_edge_sent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let down_file = tempfile::NamedTempFile::new().unwrap();
        let server = tokio::spawn(serve(
            "origin-a".into(),
            address,
            Some(down_file.path().to_owned()),
            async {
                let _ = stopped.await;
            },
        ));
        let client = reqwest::Client::new();
        let mut body = None;
        for _ in 0..50 {
            let sent = client
                .get(format!("http://{address}/some/path"))
                .header("host", "app.hoge.test")
                .header("x-forwarded-for", "10.99.0.100")
                .header("x-forwarded-proto", "https")
                .send()
                .await;
            if let Ok(answer) = sent {
                body = Some(answer.text().await.unwrap());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            body.as_deref(),
            Some("app=origin-a host=app.hoge.test xff=10.99.0.100 proto=https\n")
        );
        let health = client
            .get(format!("http://{address}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(health.text().await.unwrap(), "ok\n");
        let conn = client
            .get(format!("http://{address}/conn"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(conn.starts_with("app=origin-a peer=127.0.0.1:"), "{conn}");
        let ready = |client: reqwest::Client| async move {
            let r = client
                .get(format!("http://{address}/ready"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        assert_eq!(ready(client.clone()).await, (503, "not ready\n".into()));
        let path = down_file.path().to_owned();
        down_file.close().unwrap();
        assert!(!path.exists());
        assert_eq!(ready(client.clone()).await, (200, "ready\n".into()));
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn missing_headers_show_as_dashes() {
        assert_eq!(
            describe("origin-b", &HeaderMap::new()),
            "app=origin-b host=- xff=- proto=-\n"
        );
    }
}
