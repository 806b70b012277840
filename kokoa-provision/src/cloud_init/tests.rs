use std::{fs, os::unix::fs::PermissionsExt as _, path::Path, process::Command};

use proptest::prelude::*;
use serde_norway::Value;

use super::*;

/// SHA-256 of `agent binary\n`, what the stub `curl` below downloads.
const STUB_AGENT_SHA256: &str = "1417c96533d92318c917029bb378ef886b399e2d7d27d1e87744944f24e766f5";

fn download(url: &str, sha256: &str) -> EdgeBootstrap {
    EdgeBootstrap {
        control_plane_url: "https://control.example.net/".into(),
        node_id: EdgeNodeId::parse("edg_1").unwrap(),
        enrollment_token: Secret::new("kk_enr_5f1e"),
        agent: AgentSource::Download {
            url: url.into(),
            sha256: sha256.into(),
        },
        ca_pin: None,
    }
}

fn package() -> EdgeBootstrap {
    EdgeBootstrap {
        agent: AgentSource::Package {
            name: "kokoa-edge".into(),
        },
        ..download("https://x.example.net/a", STUB_AGENT_SHA256)
    }
}

/// The user data parsed back: the document, and each written file's path → (mode, content).
fn parse(user_data: &Secret) -> (Value, Vec<(String, String, String)>) {
    let text = user_data.expose();
    assert!(text.starts_with("#cloud-config\n"), "{text}");
    let doc: Value = serde_norway::from_str(text).unwrap();
    let files = doc["write_files"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["permissions"].as_str().unwrap().to_owned(),
                f["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (doc, files)
}

fn runcmd(doc: &Value) -> Vec<Vec<String>> {
    serde_norway::from_value(doc["runcmd"].clone()).unwrap()
}

#[test]
fn downloads_checks_and_enrolls() {
    let url = "https://downloads.example.net/kokoa-edge?sig=a1+b2&exp=9";
    let user_data = render_user_data(&download(url, &STUB_AGENT_SHA256.to_uppercase())).unwrap();
    let (doc, files) = parse(&user_data);
    let keys: Vec<&str> = doc
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(keys, ["write_files", "runcmd"]);
    assert_eq!(
        files[0],
        (
            CONF_PATH.to_owned(),
            "0600".to_owned(),
            format!(
                "https://control.example.net\nedg_1\nkk_enr_5f1e\ndownload\n{url}\n{STUB_AGENT_SHA256}\n\n"
            )
        )
    );
    assert_eq!(
        files[1],
        (
            SCRIPT_PATH.to_owned(),
            "0755".to_owned(),
            BOOTSTRAP_SCRIPT.to_owned()
        )
    );
    assert_eq!(
        files[2],
        (
            UNIT_PATH.to_owned(),
            "0644".to_owned(),
            AGENT_UNIT.to_owned()
        )
    );
    assert!(AGENT_UNIT.contains("ExecStart=kokoa-edge run\n"));
    // nginx and WireGuard must outlive an agent restart on a provisioned edge too.
    assert!(AGENT_UNIT.contains("\nKillMode=process\n"));
    assert_eq!(runcmd(&doc), [[SCRIPT_PATH, CONF_PATH]]);

    // The steps of SPEC §8.2 / §12, in order.
    let steps = [
        "apt-get install -y --no-install-recommends wireguard-tools nginx",
        "systemctl disable --now nginx.service",
        "sha256sum -c -",
        "install -m 0755 \"$download\" /usr/local/bin/kokoa-edge",
        "KOKOA_ENROLL_TOKEN=$token kokoa-edge enroll --control-plane \"$control_plane\"",
        "systemctl enable --now kokoa-edge.service",
        "http://127.0.0.1/health",
    ];
    let mut rest = BOOTSTRAP_SCRIPT;
    for step in steps {
        let at = rest
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} missing or out of order"));
        rest = &rest[at + step.len()..];
    }
}

#[test]
fn a_package_brings_its_own_unit() {
    let (doc, files) = parse(&render_user_data(&package()).unwrap());
    let paths: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(paths, [CONF_PATH, SCRIPT_PATH]);
    assert!(
        files[0].2.ends_with("\npackage\nkokoa-edge\n\n\n"),
        "{}",
        files[0].2
    );
    assert_eq!(runcmd(&doc), [[SCRIPT_PATH, CONF_PATH]]);
}

#[test]
fn unsafe_values_are_refused() {
    let err = |b: &EdgeBootstrap| render_user_data(b).unwrap_err().to_string();
    let mut b = package();
    b.control_plane_url = "ftp://control.example.net".into();
    assert_eq!(
        err(&b),
        "invalid control_plane_url \"ftp://control.example.net\": expected an https:// URL: the VPS sends its token there"
    );
    b.control_plane_url = "http://control.example.net".into();
    assert!(
        err(&b).contains(
            "plain http:// is accepted only for an IP address in a loopback or private range"
        ),
        "{}",
        err(&b)
    );
    for bad in [
        "https://",
        "https:///x",
        "https://c.example.net/a b",
        "https://c.example.net/\"",
        "https://c.example.net/$(reboot)",
        "https://c.example.net/\n- [reboot]",
        "https://c.example.net/?x=1",
    ] {
        b.control_plane_url = bad.into();
        assert!(err(&b).starts_with("invalid control_plane_url"), "{bad:?}");
    }
    let mut b = package();
    b.enrollment_token = Secret::new("kk_enr_x\"\nruncmd: [reboot]");
    let message = err(&b);
    assert_eq!(
        message,
        "invalid enrollment_token \"<hidden>\": expected 1-512 characters of A-Z, a-z, 0-9 and -._~+/="
    );
    let b = download("https://d.example.net/a", "abc");
    assert!(err(&b).starts_with("invalid agent sha256 \"abc\""));
    let b = download("https://d.example.net/a;reboot", STUB_AGENT_SHA256);
    assert!(err(&b).starts_with("invalid agent url"));
    let b = download("http://10.0.0.5/kokoa-edge", STUB_AGENT_SHA256);
    assert_eq!(
        err(&b),
        "invalid agent url \"http://10.0.0.5/kokoa-edge\": expected an https:// URL"
    );
    let mut b = package();
    b.agent = AgentSource::Package {
        name: "-oAPT::x".into(),
    };
    assert!(err(&b).starts_with("invalid agent package \"-oAPT::x\""));
}

#[test]
fn plain_http_only_to_private_ip_literals() {
    let accepts = |url: &str| {
        let mut b = package();
        b.control_plane_url = url.into();
        render_user_data(&b).is_ok()
    };
    for good in [
        "http://10.99.0.1:8080",
        "http://127.0.0.1",
        "http://127.8.9.10:1/",
        "http://172.16.0.1",
        "http://172.31.255.254:65535/kokoa",
        "http://192.168.1.10:8080",
        "http://100.64.0.1",
        "http://100.127.255.255",
        "http://[::1]:8080",
        "http://[fd00::1]",
        "http://[fdab:cdef::1]:9000/api",
        "https://control.example.net",
        "https://203.0.113.10",
    ] {
        assert!(accepts(good), "{good} should be accepted");
    }
    for bad in [
        "http://control.example.net",
        "http://localhost:8080",
        "http://203.0.113.10",
        "http://8.8.8.8",
        "http://172.32.0.1",
        "http://100.128.0.1",
        "http://169.254.1.1",
        "http://0.0.0.0",
        "http://010.0.0.1",
        "http://10.1",
        "http://10.0.0.1.example.net",
        "http://10.0.0.1:",
        "http://10.0.0.1:0",
        "http://10.0.0.1:65536",
        "http://10.0.0.1:80:80",
        "http://[::1",
        "http://[fe80::1]",
        "http://[fc00::1]",
        "http://[2001:db8::1]",
        "http://[::ffff:10.0.0.1]",
        "http://::1",
    ] {
        assert!(!accepts(bad), "{bad} should be refused");
    }
}

/// Writes `name` in `bin`: a stub that logs its arguments to `$LOG`, or a link to the
/// real tool.
fn stub(bin: &Path, name: &str) {
    const STUB: &str = r#"#!/bin/sh
name=${0##*/}
line=$name
for arg in "$@"; do line="$line $arg"; done
if [ "$name" = kokoa-edge ]; then line="$line (token ${KOKOA_ENROLL_TOKEN:-unset})"; fi
# The commands of a pipeline start together: read all of the input before logging, so the
# command feeding it has logged its line first and the log keeps the script's order.
input=
previous=
for arg in "$@"; do
    if [ "$name" = curl ] && [ "$previous" = -K ] && [ "$arg" = - ]; then
        while IFS= read -r part; do input="$input  stdin: $part
"; done
    fi
    previous=$arg
done
printf '%s\n%s' "$line" "$input" >>"$LOG"
case $name in
curl)
    previous=
    for arg in "$@"; do
        if [ "$previous" = -o ] && [ "$arg" != /dev/null ]; then printf 'agent binary\n' >"$arg"; fi
        previous=$arg
    done
    ;;
jq) printf '%s\n' 'header = "Authorization: Bearer kk_node_test"' ;;
esac
"#;
    let path = bin.join(name);
    fs::write(&path, STUB).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// What a run of the bootstrap script did.
struct Run {
    succeeded: bool,
    /// The commands it ran, one per line, with the download's random name as `<tmp>`.
    log: String,
    /// Files left in its temporary directory.
    leftovers: usize,
}

/// Runs the bootstrap script of `bootstrap` with every system-changing command replaced
/// by a stub.
fn run_bootstrap(bootstrap: &EdgeBootstrap) -> Run {
    let (_, files) = parse(&render_user_data(bootstrap).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let tmp = dir.path().join("tmp");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&tmp).unwrap();
    for name in [
        "apt-get",
        "systemctl",
        "curl",
        "jq",
        "install",
        "kokoa-edge",
    ] {
        stub(&bin, name);
    }
    // Harmless tools the script needs for real; nothing else is on its PATH, so a command
    // without a stub fails instead of changing this machine.
    for name in ["mktemp", "sha256sum", "rm"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{name} not found; apt-get install -y coreutils"));
        std::os::unix::fs::symlink(real, bin.join(name)).unwrap();
    }
    let conf = dir.path().join("bootstrap.conf");
    fs::write(&conf, &files[0].2).unwrap();
    let script = dir.path().join("bootstrap");
    fs::write(&script, &files[1].2).unwrap();
    let log = dir.path().join("log");
    let output = Command::new("/bin/sh")
        .arg(&script)
        .arg(&conf)
        .env_clear()
        .env("PATH", &bin)
        .env("LOG", &log)
        .env("TMPDIR", &tmp)
        .output()
        .expect("/bin/sh runs");
    let log = fs::read_to_string(&log).unwrap_or_default();
    // The download's temporary name is random.
    let prefix = tmp.to_string_lossy().into_owned();
    let log = log
        .lines()
        .map(|line| {
            line.split(' ')
                .map(|w| if w.starts_with(&prefix) { "<tmp>" } else { w })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n");
    Run {
        succeeded: output.status.success(),
        log,
        leftovers: fs::read_dir(&tmp).unwrap().count(),
    }
}

#[test]
fn the_script_runs_every_step_in_order() {
    let url = "https://downloads.example.net/kokoa-edge";
    let run = run_bootstrap(&download(url, STUB_AGENT_SHA256));
    assert!(run.succeeded, "{}", run.log);
    assert_eq!(run.leftovers, 0, "the download is cleaned up");
    let expected = [
        "apt-get update",
        "apt-get install -y --no-install-recommends wireguard-tools nginx curl ca-certificates",
        "systemctl disable --now nginx.service",
        &format!("curl -fsSL --proto =https --retry 5 --max-time 600 -o <tmp> {url}"),
        "install -m 0755 <tmp> /usr/local/bin/kokoa-edge",
        "kokoa-edge enroll --control-plane https://control.example.net (token kk_enr_5f1e)",
        "systemctl daemon-reload",
        "systemctl enable --now kokoa-edge.service",
        "curl -fsS --retry 60 --retry-delay 5 --retry-all-errors --max-time 5 -o /dev/null http://127.0.0.1/health",
    ];
    assert_eq!(run.log, expected.join("\n"));
}

#[test]
fn a_pinned_control_plane_is_enrolled_with_its_pin() {
    let pin = format!("sha256:{}", "0a".repeat(32));
    let run = run_bootstrap(&EdgeBootstrap {
        ca_pin: Some(pin.clone()),
        ..package()
    });
    assert!(run.succeeded, "{}", run.log);
    let enroll = format!(
        "kokoa-edge enroll --control-plane https://control.example.net --ca-pin {pin} (token kk_enr_5f1e)"
    );
    assert!(run.log.lines().any(|line| line == enroll), "{}", run.log);

    // The agent from the control plane itself: its CA is not the system's, the checksum
    // vouches for the binary. From anywhere else, the system's CAs as always.
    for (url, insecure) in [
        ("https://control.example.net/downloads/kokoa-edge", true),
        ("https://downloads.example.net/kokoa-edge", false),
    ] {
        let run = run_bootstrap(&EdgeBootstrap {
            ca_pin: Some(pin.clone()),
            ..download(url, STUB_AGENT_SHA256)
        });
        assert!(run.succeeded, "{}", run.log);
        let curl = format!(
            "curl -fsSL {}--proto =https --retry 5 --max-time 600 -o <tmp> {url}",
            if insecure { "--insecure " } else { "" }
        );
        assert!(run.log.lines().any(|line| line == curl), "{}", run.log);
    }
}

#[test]
fn a_binary_with_the_wrong_checksum_never_runs() {
    let Run { succeeded, log, .. } =
        run_bootstrap(&download("https://d.example.net/a", &"0".repeat(64)));
    assert!(!succeeded);
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("curl -fsSL"),
        "stops after the download:\n{log}"
    );
    assert!(
        !log.contains("kokoa-edge enroll") && !log.contains("install -m"),
        "{log}"
    );
}

#[test]
fn a_package_is_installed_with_apt() {
    let Run { succeeded, log, .. } = run_bootstrap(&package());
    assert!(succeeded, "{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines[3],
        "apt-get install -y --no-install-recommends kokoa-edge"
    );
    assert!(lines[4].starts_with("kokoa-edge enroll"), "{log}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the values, the user data is either refused or parses back to exactly the
    /// files and command it should have: no value can add a key, a file or a command.
    #[test]
    fn no_value_escapes_its_scalar(
        token in prop_oneof!["[A-Za-z0-9._~+/=-]{1,40}", "(?s).{0,40}"],
        path in prop_oneof!["[a-z0-9/._~%-]{0,30}", "(?s).{0,30}"],
    ) {
        let mut b = package();
        b.enrollment_token = Secret::new(token.clone());
        b.control_plane_url = format!("https://control.example.net/{path}");
        let Ok(user_data) = render_user_data(&b) else {
            return Ok(());
        };
        let (doc, files) = parse(&user_data);
        prop_assert_eq!(doc.as_mapping().unwrap().len(), 2);
        prop_assert_eq!(files.len(), 2);
        let lines: Vec<&str> = files[0].2.lines().collect();
        prop_assert_eq!(lines.len(), 7);
        prop_assert_eq!(lines[0], b.control_plane_url.trim_end_matches('/'));
        prop_assert_eq!(lines[2], token.as_str());
        prop_assert_eq!(&files[1].2, BOOTSTRAP_SCRIPT);
        prop_assert_eq!(runcmd(&doc), [[SCRIPT_PATH, CONF_PATH]]);
    }
}

#[test]
fn the_ca_pin_is_written_checked_and_read_back() {
    let pin = format!("sha256:{}", "AB".repeat(32));
    let b = EdgeBootstrap {
        ca_pin: Some(pin.clone()),
        ..package()
    };
    let user_data = render_user_data(&b).unwrap();
    let (_, files) = parse(&user_data);
    let conf = &files
        .iter()
        .find(|(path, _, _)| path == "/etc/kokoa-edge/bootstrap.conf")
        .unwrap()
        .2;
    assert!(
        conf.ends_with(&format!("\n{}\n", pin.to_lowercase())),
        "{conf}"
    );
    let parsed = EdgeBootstrap::from_user_data(&user_data).unwrap();
    assert_eq!(parsed.ca_pin, Some(pin.to_lowercase()));

    for bad in ["sha256:ab", "md5:00", &format!("sha256:{}", "g".repeat(64))] {
        let err = render_user_data(&EdgeBootstrap {
            ca_pin: Some(bad.into()),
            ..package()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(bad) && err.contains("ca_pin"), "{err}");
    }
    let err = render_user_data(&EdgeBootstrap {
        control_plane_url: "http://10.99.0.1:8080".into(),
        ca_pin: Some(pin),
        ..package()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("a CA pin is for an https:// control plane"),
        "{err}"
    );
}

#[test]
fn user_data_is_read_back() {
    let url = "https://downloads.example.net/kokoa-edge?sig=a1+b2&exp=9";
    let b = download(url, &STUB_AGENT_SHA256.to_uppercase());
    let parsed = EdgeBootstrap::from_user_data(&render_user_data(&b).unwrap()).unwrap();
    // As rendered: no trailing '/', the checksum in lower case.
    let expected = EdgeBootstrap {
        control_plane_url: "https://control.example.net".into(),
        ..download(url, STUB_AGENT_SHA256)
    };
    assert_eq!(parsed, expected);
    let b = package();
    let parsed = EdgeBootstrap::from_user_data(&render_user_data(&b).unwrap()).unwrap();
    assert_eq!(parsed.agent, b.agent);
    assert_eq!(parsed.enrollment_token.expose(), "kk_enr_5f1e");
}

#[test]
fn malformed_user_data_is_refused() {
    let good = render_user_data(&package()).unwrap();
    let good = good.expose();
    let conf =
        r#"content: "https://control.example.net\nedg_1\nkk_enr_5f1e\npackage\nkokoa-edge\n\n\n""#;
    assert!(good.contains(conf), "{good}");
    let changed = |from: &str, to: &str| good.replacen(from, to, 1);
    for (what, text) in [
        ("empty", String::new()),
        ("only the header", "#cloud-config\n".to_owned()),
        ("another command", format!("{good}  - [reboot]\n")),
        (
            "another file",
            changed(
                "runcmd:\n",
                "  - path: \"/root/.ssh/authorized_keys\"\n    content: \"ssh-ed25519 AAAA\"\nruncmd:\n",
            ),
        ),
        (
            "an eighth value",
            changed("kokoa-edge\\n\\n\\n\"", "kokoa-edge\\n\\n\\nx\\n\""),
        ),
        (
            "six values",
            changed("kokoa-edge\\n\\n\\n\"", "kokoa-edge\\n\\n\""),
        ),
        (
            "no last newline",
            changed("kokoa-edge\\n\\n\\n\"", "kokoa-edge\\n\\n\\nx\""),
        ),
        ("another source", changed("\\npackage\\n", "\\nscript\\n")),
        (
            "a package with a checksum",
            changed("kokoa-edge\\n\\n\\n\"", "kokoa-edge\\nab\\n\\n\""),
        ),
        (
            "a bad pin",
            changed("kokoa-edge\\n\\n\\n\"", "kokoa-edge\\n\\nsha256:00\\n\""),
        ),
        ("a bad node id", changed("\\nedg_1\\n", "\\nedg 1\\n")),
        ("a bad token", changed("kk_enr_5f1e", "kk_enr_5f1e;reboot")),
        (
            "a single-quoted scalar",
            changed(conf, &conf.replace('"', "'")),
        ),
        ("CRLF line ends", good.replace('\n', "\r\n")),
        ("an edited script", changed("set -eu\n", "set -u\n")),
        (
            "another comment",
            changed("# Kokoa Proxy edge edg_1", "# Kokoa Proxy edge edg_2"),
        ),
    ] {
        assert_ne!(text, good, "{what}: the change did not apply");
        let err = EdgeBootstrap::from_user_data(&Secret::new(text))
            .expect_err(what)
            .to_string();
        assert!(
            !err.contains("kk_enr_5f1e"),
            "{what}: the token is shown: {err}"
        );
        assert!(err.starts_with("invalid "), "{what}: {err}");
    }
}

/// Valid values, in the form [`render_user_data`] writes them back.
fn valid_bootstrap() -> impl Strategy<Value = EdgeBootstrap> {
    let control_plane = prop_oneof![
        (
            "[a-z0-9]{1,12}(\\.[a-z0-9-]{1,12}){0,2}",
            proptest::option::of(1u16..),
            "(/[A-Za-z0-9._~%-]{1,10}){0,3}",
        )
            .prop_map(|(host, port, path)| {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("https://{host}{port}{path}")
            }),
        (any::<[u8; 3]>(), 1u16..)
            .prop_map(|([b, c, d], port)| format!("http://10.{b}.{c}.{d}:{port}")),
        (any::<[u8; 2]>(), 1u16..)
            .prop_map(|([c, d], port)| format!("http://192.168.{c}.{d}:{port}/cp")),
        Just("http://[fd00::1]:8080".to_owned()),
    ];
    let agent = prop_oneof![
        (
            "https://[a-z]{1,10}\\.example\\.net/[A-Za-z0-9._~/?=&+%-]{0,40}",
            "[0-9a-f]{64}",
        )
            .prop_map(|(url, sha256)| AgentSource::Download { url, sha256 }),
        "[a-z0-9][a-z0-9+.-]{1,40}".prop_map(|name| AgentSource::Package { name }),
    ];
    (
        control_plane,
        "[A-Za-z0-9_-]{1,64}",
        "[A-Za-z0-9._~+/=-]{1,100}",
        agent,
        proptest::option::of("[0-9a-f]{64}"),
    )
        .prop_map(
            |(control_plane_url, node, token, agent, pin)| EdgeBootstrap {
                ca_pin: pin
                    .filter(|_| control_plane_url.starts_with("https://"))
                    .map(|digits| format!("sha256:{digits}")),
                control_plane_url,
                node_id: EdgeNodeId::parse(&node).unwrap(),
                enrollment_token: Secret::new(token),
                agent,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn reading_back_inverts_rendering(b in valid_bootstrap()) {
        let user_data = render_user_data(&b).unwrap();
        prop_assert_eq!(EdgeBootstrap::from_user_data(&user_data).unwrap(), b);
    }

    /// One character removed, added or replaced anywhere: refused, unless the result is
    /// itself exactly the rendering of other valid values (e.g. another token).
    #[test]
    fn changed_user_data_is_refused(
        b in valid_bootstrap(),
        at in any::<prop::sample::Index>(),
        change in 0..3u8,
        c in any::<char>(),
    ) {
        let mut chars: Vec<char> = render_user_data(&b).unwrap().expose().chars().collect();
        let i = at.index(chars.len());
        match change {
            0 => { chars.remove(i); }
            1 => chars.insert(i, c),
            _ => chars[i] = c,
        }
        let changed: String = chars.into_iter().collect();
        if let Ok(parsed) = EdgeBootstrap::from_user_data(&Secret::new(changed.clone())) {
            let again = render_user_data(&parsed).unwrap();
            prop_assert_eq!(again.expose(), changed.as_str());
        }
    }

    #[test]
    fn arbitrary_text_is_refused(text in "(?s).{0,300}") {
        prop_assert!(EdgeBootstrap::from_user_data(&Secret::new(text)).is_err());
    }
}

/// The unit a provisioned edge gets is the packaged one (`packaging/systemd/`), byte for
/// byte: one unit, whichever way the agent is installed.
#[test]
fn the_cloud_init_unit_is_the_packaged_unit() {
    let packaged =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/kokoa-edge.service");
    let packaged = fs::read_to_string(&packaged)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", packaged.display()));
    assert_eq!(
        AGENT_UNIT, packaged,
        "copy packaging/systemd/kokoa-edge.service to kokoa-provision/src/cloud_init/"
    );
}
