use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    date_time_ymd,
};

use super::*;

fn host(name: &str) -> Hostname {
    Hostname::parse(name).unwrap()
}

fn at(rfc3339: &str) -> Timestamp {
    Timestamp::parse_rfc3339(rfc3339).unwrap()
}

fn named(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A root, an intermediate it signed and a leaf the intermediate signed, valid through
/// 2025, plus the leaf's key.
struct Pki {
    root: String,
    intermediate: String,
    leaf: String,
    leaf_key: KeyPair,
}

impl Pki {
    fn new(names: &[&str], leaf_key: KeyPair) -> Self {
        let ca_params = |cn: &str| {
            let mut params = CertificateParams::default();
            params.distinguished_name = named(cn);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
        };
        let root =
            CertifiedIssuer::self_signed(ca_params("Test Root"), KeyPair::generate().unwrap())
                .unwrap();
        let intermediate = CertifiedIssuer::signed_by(
            ca_params("Test Intermediate"),
            KeyPair::generate().unwrap(),
            &root,
        )
        .unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut leaf_params = CertificateParams::new(names).unwrap();
        leaf_params.not_before = date_time_ymd(2025, 1, 1);
        leaf_params.not_after = date_time_ymd(2026, 1, 1);
        let leaf = leaf_params.signed_by(&leaf_key, &intermediate).unwrap();
        Self {
            root: root.pem(),
            intermediate: intermediate.pem(),
            leaf: leaf.pem(),
            leaf_key,
        }
    }

    fn chain(&self) -> String {
        format!("{}{}", self.leaf, self.intermediate)
    }

    fn key(&self) -> String {
        self.leaf_key.serialize_pem()
    }
}

fn pki(names: &[&str]) -> Pki {
    Pki::new(names, KeyPair::generate().unwrap())
}

#[test]
fn a_good_upload_is_accepted_with_its_names_dates_and_issuer() {
    let pki = pki(&["app.hoge.com", "www.hoge.com"]);
    let cert = parse_manual(
        &pki.chain(),
        &pki.key(),
        &host("www.hoge.com"),
        at("2025-06-01T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(
        cert.domains,
        [host("app.hoge.com"), host("www.hoge.com")].into()
    );
    assert_eq!(cert.issuer, "CN=Test Intermediate");
    assert_eq!(cert.not_before, at("2025-01-01T00:00:00Z"));
    assert_eq!(cert.not_after, at("2026-01-01T00:00:00Z"));
    assert_eq!(cert.chain_pem, pki.chain());
    assert_eq!(cert.key_pem.expose_secret(), pki.key());
}

#[test]
fn the_chain_may_end_with_its_root() {
    let pki = pki(&["app.hoge.com"]);
    let chain = format!("{}{}", pki.chain(), pki.root);
    assert!(IssuedCertificate::from_pem(&chain, &pki.key()).is_ok());
}

#[test]
fn an_rsa_key_is_matched_too() {
    let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    let pki = Pki::new(&["app.hoge.com"], key);
    assert!(IssuedCertificate::from_pem(&pki.chain(), &pki.key()).is_ok());
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_the_certificate() {
    let pki = pki(&["app.hoge.com"]);
    let other = KeyPair::generate().unwrap().serialize_pem();
    let err = IssuedCertificate::from_pem(&pki.chain(), &other).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("must come first"), "{err}");
}

#[test]
fn a_chain_in_the_wrong_order_is_refused() {
    let pki = pki(&["app.hoge.com"]);
    let reversed = format!("{}{}", pki.intermediate, pki.leaf);
    let err = IssuedCertificate::from_pem(&reversed, &pki.key()).unwrap_err();
    let Error::ChainOrder {
        position, subject, ..
    } = &err
    else {
        panic!("expected a chain order error, got {err:?}");
    };
    assert_eq!((*position, subject.as_str()), (1, "CN=Test Intermediate"));
    // A leaf followed by a foreign intermediate is just as wrong.
    let foreign = Pki::new(&["app.hoge.com"], KeyPair::generate().unwrap());
    let mixed = format!("{}{}", pki.leaf, foreign.intermediate);
    assert!(matches!(
        IssuedCertificate::from_pem(&mixed, &pki.key()),
        Err(Error::ChainOrder { position: 1, .. })
    ));
}

#[test]
fn unreadable_chains_and_keys_say_what_is_wrong() {
    let pki = pki(&["app.hoge.com"]);
    let cases = [
        ("", "no \"-----BEGIN CERTIFICATE-----\" block"),
        ("hello", "no \"-----BEGIN CERTIFICATE-----\" block"),
        (
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            "PEM block 1 cannot be read",
        ),
        (
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
            "certificate 1 is not X.509",
        ),
    ];
    for (chain, expected) in cases {
        let err = IssuedCertificate::from_pem(chain, &pki.key()).unwrap_err();
        assert!(err.to_string().contains(expected), "{chain:?}: {err}");
    }
    let with_key = format!("{}{}", pki.leaf, pki.key());
    let err = IssuedCertificate::from_pem(&with_key, &pki.key()).unwrap_err();
    assert!(
        err.to_string().contains("PEM block 2 is a \"PRIVATE KEY\""),
        "{err}"
    );

    let err = IssuedCertificate::from_pem(&pki.chain(), "not a key").unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err:?}");
    let err = IssuedCertificate::from_pem(&pki.chain(), &pki.leaf).unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err:?}");
}

#[test]
fn names_must_cover_the_hostname_with_wildcards_one_level_deep() {
    let pki = pki(&["*.hoge.com"]);
    let now = at("2025-06-01T00:00:00Z");
    let check = |name: &str| parse_manual(&pki.chain(), &pki.key(), &host(name), now);
    assert!(check("app.hoge.com").is_ok());
    for name in ["hoge.com", "a.b.hoge.com", "app.fuga.com"] {
        let err = check(name).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("the certificate covers *.hoge.com, not {name}")
        );
    }
}

#[test]
fn a_certificate_without_dns_names_covers_nothing() {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name = named("app.hoge.com");
    let cert = params.self_signed(&key).unwrap();
    let parsed = IssuedCertificate::from_pem(&cert.pem(), &key.serialize_pem()).unwrap();
    assert!(parsed.domains.is_empty());
    let err = parse_manual(
        &cert.pem(),
        &key.serialize_pem(),
        &host("app.hoge.com"),
        Timestamp::now(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the certificate covers no DNS name, not app.hoge.com"
    );
}

#[test]
fn validity_is_checked_against_the_given_clock_inclusively() {
    let pki = pki(&["app.hoge.com"]);
    let check = |now: &str| parse_manual(&pki.chain(), &pki.key(), &host("app.hoge.com"), at(now));
    assert!(check("2025-01-01T00:00:00Z").is_ok());
    assert!(check("2026-01-01T00:00:00Z").is_ok());
    let err = check("2026-01-01T00:00:01Z").unwrap_err();
    assert_eq!(
        err.to_string(),
        "the certificate for app.hoge.com expired at 2026-01-01T00:00:00Z"
    );
    let err = check("2024-12-31T23:59:59Z").unwrap_err();
    assert_eq!(
        err.to_string(),
        "the certificate for app.hoge.com is not valid before 2025-01-01T00:00:00Z"
    );
}

#[test]
fn the_private_key_never_shows_in_debug_output() {
    let pki = pki(&["app.hoge.com"]);
    let cert = IssuedCertificate::from_pem(&pki.chain(), &pki.key()).unwrap();
    let debug = format!("{cert:?}");
    assert!(debug.contains("PrivateKeyPem(<redacted>)"), "{debug}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

/// A leaf signed by a CA whose key identifier is `key_id`, with serial number `serial`.
fn leaf_with(key_id: Vec<u8>, serial: &[u8]) -> IssuedCertificate {
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(key_id);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["app.hoge.com".into()]).unwrap();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
    params.use_authority_key_identifier_extension = true;
    let leaf = params.signed_by(&key, &ca).unwrap();
    IssuedCertificate::from_pem(&format!("{}{}", leaf.pem(), ca.pem()), &key.serialize_pem())
        .unwrap()
}

#[test]
fn the_ari_certificate_id_is_the_one_of_rfc_9773() {
    // RFC 9773 §4.1: keyIdentifier 69:88:5B:...:D4 and serial 0x87654321, whose DER
    // encoding needs a leading zero byte.
    let key_id = hex_bytes("69885b6b87464041e1b37b847ba0ae2cde01c8d4");
    let cert = leaf_with(key_id, &[0x00, 0x87, 0x65, 0x43, 0x21]);
    assert_eq!(
        cert.ari_certificate_id().unwrap(),
        "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    );
}

#[test]
fn the_ari_certificate_id_is_base64url_of_key_id_and_serial() {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    // Bytes that base64url spells with `-` and `_`, and no padding.
    let key_id = vec![0xfb, 0xff, 0xbf, 0x01, 0x02];
    let serial = [0x3e, 0xff, 0xfe, 0x10];
    let cert = leaf_with(key_id.clone(), &serial);
    let expected = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&key_id),
        URL_SAFE_NO_PAD.encode(serial)
    );
    assert_eq!(expected, "-_-_AQI.Pv_-EA");
    assert_eq!(cert.ari_certificate_id().unwrap(), expected);
}

#[test]
fn a_certificate_without_authority_key_id_has_no_ari_id() {
    let pki = pki(&["app.hoge.com"]);
    let cert = IssuedCertificate::from_pem(&pki.chain(), &pki.key()).unwrap();
    let err = cert.ari_certificate_id().unwrap_err();
    assert!(matches!(err, Error::NoCertificateId { .. }), "{err:?}");
    assert!(err.to_string().contains("app.hoge.com"), "{err}");
    assert!(
        err.to_string().contains("Authority Key Identifier"),
        "{err}"
    );
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
