//! Secrets at rest (SPEC §10.1, §10.3): the database never holds a bearer token in plain
//! text, in any encoding a reader would try, and no WireGuard private key reaches the
//! control plane at all (nodes make their own; payloads carry public keys only).

mod common;

use std::io::Read as _;

use base64::Engine as _;
use common::{Backend, Server, backends};
use reqwest::Method;
use serde_json::{Value, json};

/// Every form of `secret` worth looking for in raw bytes: the text, and for base64 keys
/// the raw 32 bytes and their hex.
fn forms(secret: &str) -> Vec<Vec<u8>> {
    let mut all = vec![secret.as_bytes().to_vec()];
    if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(secret) {
        all.push(hex::encode(&raw).into_bytes());
        all.push(raw);
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn no_token_is_stored_in_plain_text_and_no_private_key_is_handed_out() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let origin = s.origin("home-server").await;
        let id = origin["id"].as_str().unwrap();
        let (edge_id, edge_credential) = s.enrolled_edge(None).await;
        let origin_credential = s.enrolled_origin(id).await;

        let mut secrets = vec![
            s.admin.clone(),
            s.viewer.clone(),
            edge_credential.clone(),
            origin_credential.clone(),
        ];
        let (_, config) = s
            .call(
                Method::GET,
                "/api/v1/edge-nodes/me/config",
                Some(&edge_credential),
                None,
            )
            .await;
        assert_eq!(config["tunnels"].as_array().unwrap().len(), 1, "{config}");
        assert!(!config.to_string().contains("private"), "{config}");
        let (_, own) = s
            .call(
                Method::GET,
                "/api/v1/origins/me/config",
                Some(&origin_credential),
                None,
            )
            .await;
        assert!(
            !own["wg0_conf"].as_str().unwrap().contains("PrivateKey"),
            "{own}"
        );
        let bundle = s
            .send(
                Method::GET,
                &format!("/api/v1/origins/{id}/config"),
                Some(&s.admin),
                None,
                &[],
            )
            .await
            .bytes()
            .await
            .unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bundle[..]));
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().ends_with("credentials.json") {
                let mut text = String::new();
                entry.read_to_string(&mut text).unwrap();
                let credentials: Value = serde_json::from_str(&text).unwrap();
                secrets.push(credentials["enrollment_token"].as_str().unwrap().to_owned());
            }
        }
        let tokens = s
            .admin(
                Method::POST,
                "/api/v1/tokens",
                Some(json!({"name": "ci"})),
                201,
            )
            .await;
        secrets.push(tokens["token"].as_str().unwrap().to_owned());
        assert_eq!(secrets.len(), 6);
        let edge = s
            .admin(
                Method::GET,
                &format!("/api/v1/edge-nodes/{edge_id}"),
                None,
                200,
            )
            .await;

        let stored: Vec<u8> = match &backend {
            // The database file and its write-ahead log, byte for byte.
            Backend::Sqlite => std::fs::read_dir(s.dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("kokoa.db")
                })
                .flat_map(|p| std::fs::read(p).unwrap())
                .collect(),
            // Every table's text.
            Backend::Postgres(_) => s.pg.as_ref().unwrap().dump().into_bytes(),
        };
        assert!(
            contains(&stored, id.as_bytes()),
            "the stored data was found at all"
        );
        assert!(
            contains(
                &stored,
                edge["wireguard_public_key"].as_str().unwrap().as_bytes()
            ),
            "public keys are stored as text, so secrets would be visible the same way"
        );
        for secret in &secrets {
            for form in forms(secret) {
                assert!(
                    !contains(&stored, &form),
                    "[{backend}] a secret ({:.10}…) is stored in plain text",
                    secret
                );
            }
        }
    }
}
