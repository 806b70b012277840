//! TLS: the handshake, verification of the chain afterwards, and the `tls_certificate` check.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        Resumption, WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{WebPkiSupportedAlgorithms, aws_lc_rs},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};
use x509_parser::{certificate::X509Certificate, extensions::GeneralName};

use super::{Progress, net};
use crate::{CheckConfig, Error};

const DAY: i64 = 24 * 60 * 60;

/// The roots, a client configuration and the verifier built from them.
pub(super) struct Tls {
    roots: RootCertStore,
    connector: TlsConnector,
    /// `None` without roots: webpki refuses to build a verifier that trusts nothing.
    verifier: Option<Arc<WebPkiServerVerifier>>,
}

impl Tls {
    pub(super) fn new(roots: RootCertStore) -> Self {
        // One provider, named here: a program linking both of rustls' providers has no
        // process-wide default.
        let provider = Arc::new(aws_lc_rs::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone())
                .build()
                .ok();
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports rustls' default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(VerifiedAfterHandshake {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth();
        // Every check makes a full handshake, so it sees the certificate served now.
        config.resumption = Resumption::disabled();
        Self {
            roots,
            connector: TlsConnector::from(Arc::new(config)),
            verifier,
        }
    }

    pub(super) fn roots(&self) -> &RootCertStore {
        &self.roots
    }

    pub(super) fn root_count(&self) -> usize {
        self.roots.len()
    }

    /// Handshakes with SNI `host` (none for an IP address) and, if `verify`, verifies the
    /// chain for `host` before anything is sent over the connection; the days left are
    /// recorded in `progress` either way once verified.
    pub(super) async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        verify: bool,
        progress: &mut Progress,
    ) -> Result<TlsStream<TcpStream>, String> {
        let name = server_name(host)?;
        progress.doing(format_args!("in the TLS handshake with {host}"));
        let stream = self
            .connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host} failed: {e}"))?;
        if verify {
            let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
            self.verify(chain, host, &name, progress)?;
        }
        Ok(stream)
    }

    /// Verifies `chain` for `name` now; sets the days left of the end-entity certificate.
    fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        host: &str,
        name: &ServerName<'_>,
        progress: &mut Progress,
    ) -> Result<(), String> {
        let (end_entity, intermediates) = chain
            .split_first()
            .ok_or_else(|| format!("{host} sent no certificate"))?;
        let (_, certificate) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|e| format!("the certificate {host} sent cannot be read: {e}"))?;
        let now = SystemTime::now();
        let not_after = certificate.validity().not_after.timestamp();
        let days_left = (not_after - unix(now)) / DAY;
        progress.certificate_days_left = Some(days_left);
        let Some(verifier) = &self.verifier else {
            return Err(format!(
                "cannot verify the certificate of {host}: no trusted root certificates are configured"
            ));
        };
        verifier
            .verify_server_cert(
                end_entity,
                intermediates,
                name,
                &[],
                UnixTime::since_unix_epoch(since_epoch(now)),
            )
            .map(drop)
            .map_err(|error| describe(&error, host, &certificate))
    }
}

/// Accepts the chain during the handshake so that it can be verified afterwards with a
/// precise message ("expired 2 days ago"); the handshake signatures are still checked, so
/// the server proves it holds the key. Nothing is sent before [`Tls::verify`] has passed.
#[derive(Debug)]
struct VerifiedAfterHandshake {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for VerifiedAfterHandshake {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The `tls_certificate` check: handshake with `host:port`, verify, and require
/// `min_days_left` days of validity.
pub(super) async fn check_certificate(
    tls: &Tls,
    check: &CheckConfig,
    progress: &mut Progress,
) -> Result<(), String> {
    let host = check.host.as_deref().unwrap_or_default();
    let port = check.port.unwrap_or(443);
    let tcp = net::connect(host, port, check.address, check.netns.as_deref(), progress).await?;
    drop(tls.handshake(tcp, host, true, progress).await?);
    let days = progress.certificate_days_left.unwrap_or_default();
    let required = i64::from(check.min_days_left);
    if days < required {
        return Err(format!(
            "certificate for {host} expires in {}, fewer than the {required} required",
            days_phrase(days)
        ));
    }
    Ok(())
}

/// Adds every certificate of `pem` to `roots`.
pub(super) fn add_pem(roots: &mut RootCertStore, pem: &[u8]) -> Result<(), Error> {
    let mut added = 0;
    for (index, certificate) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let invalid = |reason: String| Error::InvalidRootCertificate { index, reason };
        let certificate = certificate.map_err(|e| invalid(e.to_string()))?;
        roots.add(certificate).map_err(|e| invalid(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(Error::InvalidRootCertificate {
            index: 0,
            reason: "no `BEGIN CERTIFICATE` block found".into(),
        });
    }
    Ok(())
}

fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned())
        .map_err(|_| format!("{host:?} is neither a DNS name nor an IP address"))
}

/// The message for a chain webpki refused, in the words of the person who reads it.
fn describe(error: &rustls::Error, host: &str, certificate: &X509Certificate<'_>) -> String {
    let rustls::Error::InvalidCertificate(error) = error else {
        return format!("certificate for {host} is invalid: {error}");
    };
    match error {
        CertificateError::ExpiredContext { time, not_after } => format!(
            "certificate for {host} expired {} ago, at {}",
            days_phrase((unix_secs(time) - unix_secs(not_after)) / DAY),
            rfc3339(unix_secs(not_after))
        ),
        CertificateError::NotValidYetContext { not_before, .. } => format!(
            "certificate for {host} is not valid before {}",
            rfc3339(unix_secs(not_before))
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "certificate for {host} names {}, not {host}",
                names(certificate)
            )
        }
        CertificateError::UnknownIssuer => format!(
            "certificate for {host} is not signed by a trusted root (issuer: {})",
            certificate.issuer()
        ),
        other => format!("certificate for {host} is invalid: {other}"),
    }
}

/// The names a certificate is for, from its subject alternative names.
fn names(certificate: &X509Certificate<'_>) -> String {
    let names: Vec<String> = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => ip_of(bytes).map(|ip| ip.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        "no name".to_owned()
    } else {
        names.join(", ")
    }
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn days_phrase(days: i64) -> String {
    match days {
        1 => "1 day".to_owned(),
        n => format!("{n} days"),
    }
}

fn since_epoch(time: SystemTime) -> Duration {
    time.duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn unix(time: SystemTime) -> i64 {
    i64::try_from(since_epoch(time).as_secs()).unwrap_or(i64::MAX)
}

fn unix_secs(time: &UnixTime) -> i64 {
    i64::try_from(time.as_secs()).unwrap_or(i64::MAX)
}

/// `2026-11-03T00:00:00Z` for a Unix time (proleptic Gregorian calendar, UTC).
fn rfc3339(secs: i64) -> String {
    let (days, rest) = (secs.div_euclid(DAY), secs.rem_euclid(DAY));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_are_written_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn pem_without_certificates_is_refused() {
        let mut roots = RootCertStore::empty();
        assert_eq!(
            add_pem(&mut roots, b"not a certificate")
                .unwrap_err()
                .to_string(),
            "trusted root certificate 0 of the PEM given is unusable: no `BEGIN CERTIFICATE` block found"
        );
    }

    #[test]
    fn hosts_become_server_names() {
        assert!(matches!(
            server_name("app.hoge.test"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("203.0.113.7"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(server_name("bad name!").is_err());
    }
}
