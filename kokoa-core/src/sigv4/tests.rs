//! The examples AWS documents, reproduced byte for byte, and the encoding rules as
//! properties.

use proptest::prelude::*;

use super::*;

const KEY_ID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn at(rfc3339: &str) -> Timestamp {
    rfc3339.parse().unwrap()
}

fn credentials() -> Credentials {
    Credentials::new(KEY_ID, SECRET)
}

#[test]
fn the_documented_signing_key_derivation() {
    // "Examples of how to derive a signing key for Signature Version 4": every step.
    let date_key = hmac(format!("AWS4{SECRET}").as_bytes(), b"20120215");
    assert_eq!(
        hex::encode(date_key.as_ref()),
        "969fbb94feb542b71ede6f87fe4d5fa29c789342b0f407474670f0c2489e0a0d"
    );
    let region_key = hmac(date_key.as_ref(), b"us-east-1");
    assert_eq!(
        hex::encode(region_key.as_ref()),
        "69daa0209cd9c5ff5c8ced464a696fd4252e981430b10e3d3fd8e2f197d7a70c"
    );
    let service_key = hmac(region_key.as_ref(), b"iam");
    assert_eq!(
        hex::encode(service_key.as_ref()),
        "f72cfd46f26bc4643f06a11eabb6c0ba18780c19a8da0c31ace671265e3c87fa"
    );
    assert_eq!(
        hex::encode(signing_key(SECRET, "20120215", "us-east-1", "iam").as_ref()),
        "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
    );
    // The key of the IAM ListUsers example below.
    assert_eq!(
        hex::encode(signing_key(SECRET, "20150830", "us-east-1", "iam").as_ref()),
        "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
    );
}

/// IAM `ListUsers` by GET, the example of "Create a canonical request" and the tasks after.
fn list_users() -> Request<'static> {
    Request {
        method: "GET",
        host: "iam.amazonaws.com",
        path: "/",
        query: &[("Version", "2010-05-08"), ("Action", "ListUsers")],
        headers: &[(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        ..Request::default()
    }
}

#[test]
fn the_documented_list_users_example() {
    let request = list_users();
    let (headers, signed) = canonical_headers(&[
        request.headers[0],
        ("host", request.host),
        ("x-amz-date", "20150830T123600Z"),
    ]);
    let canonical = format!(
        "GET\n{}\n{}\n{headers}\n{signed}\n{EMPTY_SHA256}",
        canonical_path(request.path),
        canonical_query(request.query)
    );
    assert_eq!(
        canonical,
        "GET\n/\nAction=ListUsers&Version=2010-05-08\n\
         content-type:application/x-www-form-urlencoded; charset=utf-8\n\
         host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
         content-type;host;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hex::encode(Sha256::digest(canonical.as_bytes())),
        "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
    );
    let signed = sign(
        &credentials(),
        "us-east-1",
        "iam",
        at("2015-08-30T12:36:00Z"),
        &request,
    );
    assert_eq!(
        signed.get("authorization"),
        Some(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        )
    );
    let names: Vec<_> = signed.iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["authorization", "x-amz-date"]);
    assert_eq!(format!("{signed:?}"), r#"["authorization", "x-amz-date"]"#);
}

#[test]
fn the_documented_list_users_post_example() {
    // The older example with the parameters in a form body ("Signed Signature Version 4
    // Requests Examples").
    let request = Request {
        method: "POST",
        host: "iam.amazonaws.com",
        path: "/",
        headers: &[(
            "Content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        payload: Payload::Bytes(b"Action=ListUsers&Version=2010-05-08"),
        ..Request::default()
    };
    let signed = sign(
        &credentials(),
        "us-east-1",
        "iam",
        at("2011-09-09T23:36:00Z"),
        &request,
    );
    assert_eq!(
        signed.get("authorization"),
        Some(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20110909/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=ced6826de92d2bdeed8f846f0bf508e8559e98e4b0199114b84c54174deb456c"
        )
    );
    // The same body given by its hash signs the same.
    let hash: [u8; 32] = Sha256::digest(b"Action=ListUsers&Version=2010-05-08").into();
    let by_hash = Request {
        payload: Payload::Sha256(hash),
        ..request
    };
    let again = sign(
        &credentials(),
        "us-east-1",
        "iam",
        at("2011-09-09T23:36:00Z"),
        &by_hash,
    );
    assert_eq!(again.get("authorization"), signed.get("authorization"));
}

/// One case of AWS's Signature Version 4 test suite: host `example.amazonaws.com`,
/// service `service`, `us-east-1`, 2015-08-30T12:36:00Z.
struct Case {
    name: &'static str,
    request: Request<'static>,
    signed_headers: &'static str,
    signature: &'static str,
}

fn suite_request(method: &'static str, path: &'static str) -> Request<'static> {
    Request {
        method,
        host: "example.amazonaws.com",
        path,
        ..Request::default()
    }
}

#[test]
fn the_signature_test_suite() {
    let get = |path| suite_request("GET", path);
    let post = |path| suite_request("POST", path);
    let cases = [
        Case {
            name: "get-vanilla",
            request: get("/"),
            signed_headers: "host;x-amz-date",
            signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        },
        Case {
            name: "get-unreserved",
            request: get("/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
            signed_headers: "host;x-amz-date",
            signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
        },
        Case {
            name: "get-utf8",
            request: get("/ሴ"),
            signed_headers: "host;x-amz-date",
            signature: "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        },
        Case {
            name: "get-space-unnormalized",
            request: get("/example space/"),
            signed_headers: "host;x-amz-date",
            signature: "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
        },
        Case {
            name: "get-vanilla-query-order-key-case",
            request: Request {
                query: &[("Param2", "value2"), ("Param1", "value1")],
                ..get("/")
            },
            signed_headers: "host;x-amz-date",
            signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        },
        Case {
            name: "get-vanilla-query-order-encoded",
            request: Request {
                query: &[("Param-3", "Value3"), ("Param", "Value2"), ("ሴ", "Value1")],
                ..get("/")
            },
            signed_headers: "host;x-amz-date",
            signature: "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac",
        },
        Case {
            name: "get-vanilla-query-unreserved",
            request: Request {
                query: &[(
                    "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                    "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                )],
                ..get("/")
            },
            signed_headers: "host;x-amz-date",
            signature: "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
        },
        Case {
            name: "get-vanilla-utf8-query",
            request: Request {
                query: &[("ሴ", "bar")],
                ..get("/")
            },
            signed_headers: "host;x-amz-date",
            signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
        },
        Case {
            name: "get-header-key-duplicate",
            request: Request {
                headers: &[
                    ("My-Header1", "value2"),
                    ("My-Header1", "value2"),
                    ("My-Header1", "value1"),
                ],
                ..get("/")
            },
            signed_headers: "host;my-header1;x-amz-date",
            signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        },
        Case {
            name: "get-header-value-order",
            request: Request {
                headers: &[
                    ("My-Header1", "value4"),
                    ("My-Header1", "value1"),
                    ("My-Header1", "value3"),
                    ("My-Header1", "value2"),
                ],
                ..get("/")
            },
            signed_headers: "host;my-header1;x-amz-date",
            signature: "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
        },
        Case {
            name: "get-header-value-trim",
            request: Request {
                headers: &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
                ..get("/")
            },
            signed_headers: "host;my-header1;my-header2;x-amz-date",
            signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        },
        Case {
            name: "post-vanilla",
            request: post("/"),
            signed_headers: "host;x-amz-date",
            signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        },
        Case {
            name: "post-vanilla-query",
            request: Request {
                query: &[("Param1", "value1")],
                ..post("/")
            },
            signed_headers: "host;x-amz-date",
            signature: "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
        },
        Case {
            name: "post-header-value-case",
            request: Request {
                headers: &[("My-Header1", "VALUE1")],
                ..post("/")
            },
            signed_headers: "host;my-header1;x-amz-date",
            signature: "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
        },
        Case {
            name: "post-x-www-form-urlencoded",
            request: Request {
                headers: &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Content-Length", "13"),
                ],
                payload: Payload::Bytes(b"Param1=value1"),
                content_sha256_header: true,
                ..post("/")
            },
            signed_headers: "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
            signature: "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
        },
    ];
    for case in cases {
        let signed = sign(
            &credentials(),
            "us-east-1",
            "service",
            at("2015-08-30T12:36:00Z"),
            &case.request,
        );
        let expected = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders={}, Signature={}",
            case.signed_headers, case.signature
        );
        assert_eq!(
            signed.get("authorization"),
            Some(expected.as_str()),
            "{}",
            case.name
        );
    }
}

#[test]
fn a_session_token_is_sent_and_signed() {
    // The suite's get-vanilla-with-session-token.
    let credentials = credentials()
        .with_session_token("6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267");
    let signed = sign(
        &credentials,
        "us-east-1",
        "service",
        at("2015-08-30T12:36:00Z"),
        &suite_request("GET", "/"),
    );
    assert_eq!(
        signed.get("authorization"),
        Some(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date;x-amz-security-token, \
             Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
        )
    );
    assert_eq!(
        signed.get("x-amz-security-token"),
        Some("6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267")
    );
    assert!(!format!("{signed:?} {credentials:?}").contains("6e86291e"));
}

#[test]
fn content_sha256_is_added_only_when_asked() {
    let request = Request {
        payload: Payload::Bytes(b"Param1=value1"),
        ..suite_request("POST", "/")
    };
    let time = at("2015-08-30T12:36:00Z");
    let plain = sign(&credentials(), "us-east-1", "service", time, &request);
    assert_eq!(plain.get("x-amz-content-sha256"), None);
    let with = Request {
        content_sha256_header: true,
        ..request
    };
    let signed = sign(&credentials(), "us-east-1", "service", time, &with);
    assert_eq!(
        signed.get("x-amz-content-sha256"),
        Some("9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e")
    );
}

#[test]
fn encoding_details() {
    assert_eq!(uri_encode("", false), "");
    assert_eq!(uri_encode("a+b=c&d", false), "a%2Bb%3Dc%26d");
    assert_eq!(uri_encode("é", false), "%C3%A9");
    // A path that is already percent-encoded is encoded again, as non-S3 services expect.
    assert_eq!(canonical_path("/a%20b"), "/a%2520b");
    assert_eq!(canonical_path(""), "/");
    assert_eq!(canonical_query(&[]), "");
    assert_eq!(squeeze("  a \t b  "), "a \t b");
    assert_eq!(amz_date(at("2025-01-21T10:30:00Z")), "20250121T103000Z");
}

fn as_refs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}

fn percent_decode(encoded: &str) -> Vec<u8> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

proptest! {
    #[test]
    fn encoding_keeps_only_unreserved_characters_and_decodes_back(
        input in "\\PC{0,40}",
        keep_slash in any::<bool>(),
    ) {
        let encoded = uri_encode(&input, keep_slash);
        let mut rest = encoded.as_str();
        while let Some(c) = rest.chars().next() {
            if c == '%' {
                let hex = &rest[1..3];
                prop_assert!(hex.chars().all(|h| h.is_ascii_digit() || ('A'..='F').contains(&h)), "{}", encoded);
                rest = &rest[3..];
            } else {
                prop_assert!(c.is_ascii_alphanumeric() || "-_.~".contains(c) || (keep_slash && c == '/'), "{}", encoded);
                rest = &rest[1..];
            }
        }
        prop_assert_eq!(percent_decode(&encoded), input.as_bytes());
        // Nothing that is already canonical changes.
        if input.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)) {
            prop_assert_eq!(&encoded, &input);
        }
    }

    #[test]
    fn the_canonical_query_is_sorted_and_ignores_the_order_given(
        (pairs, shuffled) in proptest::collection::vec(("\\PC{0,8}", "\\PC{0,8}"), 0..6)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
    ) {
        let query = canonical_query(&as_refs(&pairs));
        prop_assert_eq!(&query, &canonical_query(&as_refs(&shuffled)));
        let parts: Vec<(&str, &str)> = if query.is_empty() {
            vec![]
        } else {
            query.split('&').map(|p| p.split_once('=').unwrap()).collect()
        };
        prop_assert_eq!(parts.len(), pairs.len());
        prop_assert!(parts.windows(2).all(|w| w[0] <= w[1]), "{}", query);
    }

    #[test]
    fn header_order_and_name_case_do_not_change_the_signature(
        values in proptest::collection::vec("[ -~]{0,12}", 1..4),
        upper in any::<bool>(),
    ) {
        let names = ["x-one", "x-two", "x-three"];
        let forward: Vec<(String, String)> = names.iter().zip(&values)
            .map(|(n, v)| (if upper { n.to_uppercase() } else { (*n).to_owned() }, v.clone()))
            .collect();
        let backward: Vec<(String, String)> = forward.iter().rev().cloned().collect();
        let sign_with = |headers: &[(String, String)]| {
            let refs = as_refs(headers);
            let request = Request { headers: &refs, ..suite_request("GET", "/") };
            sign(&credentials(), "us-east-1", "service", at("2015-08-30T12:36:00Z"), &request)
                .get("authorization")
                .map(str::to_owned)
        };
        prop_assert_eq!(sign_with(&forward), sign_with(&backward));
    }
}
