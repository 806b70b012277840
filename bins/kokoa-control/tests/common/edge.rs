//! Stand-in edges for tests that run the control plane's duties: an HTTPS `/health` that
//! answers 200 (with a self-signed certificate, as an edge's fallback one is), and an agent
//! that reports ready and sends heartbeats like `kokoa-edge`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt as _, net::TcpListener, task::JoinHandle};

/// A TLS acceptor with a self-signed certificate (the edge's fallback certificate is one).
fn acceptor() -> tokio_rustls::TlsAcceptor {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["fallback.invalid".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(tls))
}

/// Answers every HTTPS request on `address` with `200 ok`, until aborted.
pub async fn health_server(address: SocketAddr) -> JoinHandle<()> {
    let listener = TcpListener::bind(address)
        .await
        .expect("bind the edge address");
    let tls = acceptor();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                if let Ok(mut stream) = tls.accept(tcp).await {
                    let mut request = [0u8; 2048];
                    let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut request).await;
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                        )
                        .await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    })
}

/// What an edge's agent tells the control plane: ready once, then a heartbeat every
/// 500 ms with every tunnel up and the configuration it serves.
pub fn agent(base: String, id: String, credential: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let _ = client
            .post(format!("{base}/api/v1/edge-nodes/{id}/ready"))
            .bearer_auth(&credential)
            .send()
            .await;
        loop {
            let config: Value = match client
                .get(format!("{base}/api/v1/edge-nodes/me/config"))
                .bearer_auth(&credential)
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            let tunnels: Vec<Value> = config["tunnels"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| json!({"origin_id": t["origin_id"], "interface": "kk0", "status": "up"}))
                .collect();
            let _ = client
                .post(format!("{base}/api/v1/heartbeat"))
                .bearer_auth(&credential)
                .json(
                    &json!({"node_id": id, "status": "healthy", "tunnels": tunnels,
                              "config_hash": config["config_hash"]}),
                )
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}
