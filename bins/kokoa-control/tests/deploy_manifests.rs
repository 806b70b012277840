//! The deployment files agree with each other and with this binary, as a deployer would check
//! them by hand before applying them:
//!
//! - `packaging/oci/image.env`: the image's user, data directory and listen address, which
//!   `scripts/oci-image` builds the image from;
//! - `packaging/compose/compose.yaml` (and its `.env.example`): two control planes and
//!   PostgreSQL 16;
//! - `packaging/kubernetes/*.yaml`: namespace, Secret template, Deployment, Service,
//!   PodDisruptionBudget and the kustomization listing them.
//!
//! Every `--flag` and `KOKOA_*` variable these files pass must be one that
//! `kokoa-control SUBCOMMAND --help` of this very binary lists (clap prints `[env: KOKOA_…]`),
//! so a renamed flag or a flag not implemented yet fails here, not at a deployer's first
//! start. Each test gathers every problem it finds and reports them all, each naming the file
//! and the offending value.
//!
//! `DEPLOY_MANIFESTS_BINARY=PATH` checks against another build of `kokoa-control` instead,
//! such as the static release binary that `scripts/oci-image` puts in the image.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use serde::Deserialize as _;
use serde_norway::Value;

const NAMESPACE: &str = "kokoa-system";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const IMAGE_ENV: &str = "packaging/oci/image.env";
const COMPOSE: &str = "packaging/compose/compose.yaml";
const COMPOSE_ENV: &str = "packaging/compose/.env.example";
const KUBERNETES: &str = "packaging/kubernetes";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = workspace().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every YAML document of a file, with `<<:` merge keys applied (Compose uses them).
fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            let mut value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{relative}: cannot apply merge keys: {e}"));
            value
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// Problems found so far; [`Problems::finish`] fails the test listing all of them.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            let problem = problem();
            if !self.0.contains(&problem) {
                self.0.push(problem);
            }
        }
    }

    fn finish(self, what: &str) {
        if !self.0.is_empty() {
            let mut message = format!("{what}: {} problem(s)\n", self.0.len());
            for problem in &self.0 {
                let _ = writeln!(message, "  - {problem}");
            }
            panic!("{message}");
        }
    }
}

/// A scalar as text (`8443` and `"8443"` alike); `None` for anything else.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| items.iter().filter_map(text).collect())
        .unwrap_or_default()
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .map(|mapping| {
            mapping
                .iter()
                .filter_map(|(k, v)| Some((text(k)?, text(v).unwrap_or_default())))
                .collect()
        })
        .unwrap_or_default()
}

/// `packaging/oci/image.env`: `KEY=VALUE` lines.
struct ImageEnv {
    values: BTreeMap<String, String>,
}

impl ImageEnv {
    fn load() -> Self {
        let values = read(IMAGE_ENV)
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (key, value) = line
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{IMAGE_ENV}: not KEY=VALUE: {line:?}"));
                (key.to_owned(), value.to_owned())
            })
            .collect();
        Self { values }
    }

    fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("{IMAGE_ENV} does not set {key}"))
    }

    /// The variables the image's environment holds.
    fn kokoa_env(&self) -> impl Iterator<Item = (&String, &String)> {
        self.values.iter().filter(|(k, _)| k.starts_with("KOKOA_"))
    }

    fn data_dir(&self) -> &str {
        self.get("KOKOA_DATA_DIR")
    }

    /// The container port: the port of `KOKOA_LISTEN`.
    fn port(&self) -> u16 {
        let listen = self.get("KOKOA_LISTEN");
        listen
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or_else(|| panic!("{IMAGE_ENV}: KOKOA_LISTEN={listen} has no port"))
    }

    fn uid(&self) -> u64 {
        self.get("IMAGE_UID")
            .parse()
            .expect("IMAGE_UID is a number")
    }

    fn image(&self) -> String {
        format!("{}:{VERSION}", self.get("IMAGE_NAME"))
    }
}

/// The binary whose `--help` the files are checked against: this crate's, or the one
/// `DEPLOY_MANIFESTS_BINARY` names (e.g. the release build that goes into the image).
fn binary() -> PathBuf {
    std::env::var_os("DEPLOY_MANIFESTS_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_kokoa-control")),
        PathBuf::from,
    )
}

/// What `kokoa-control SUBCOMMAND --help` lists.
struct Help {
    subcommand: String,
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
}

impl Help {
    fn of(subcommand: &str) -> Self {
        let binary = binary();
        let output = Command::new(&binary)
            .args([subcommand, "--help"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        assert!(
            output.status.success(),
            "`kokoa-control {subcommand} --help` failed (is {subcommand:?} a subcommand?): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).expect("help is UTF-8");
        // The examples after the options name other subcommands' flags: options only.
        let options = text.split("\nExamples:").next().unwrap_or_default();
        let mut flags = BTreeSet::new();
        let mut env = BTreeSet::new();
        for line in options.lines() {
            let line = line.trim_start();
            if line.starts_with('-') {
                for word in line.split([' ', ',', '=']) {
                    if let Some(name) = word.strip_prefix("--")
                        && !name.is_empty()
                    {
                        flags.insert(format!("--{name}"));
                    }
                }
            }
            for (_, rest) in line
                .match_indices("[env: ")
                .map(|(i, _)| line.split_at(i + 6))
            {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                env.insert(name);
            }
        }
        assert!(
            flags.contains("--data-dir") && env.contains("KOKOA_DATA_DIR"),
            "could not read flags and variables from `kokoa-control {subcommand} --help`:\n{text}"
        );
        Self {
            subcommand: subcommand.to_owned(),
            flags,
            env,
        }
    }

    /// Checks `args` (the subcommand first) and the variables `env`, set by `source`.
    fn check(&self, problems: &mut Problems, source: &str, args: &[String], env: &[String]) {
        for arg in args.iter().skip(1) {
            if let Some(flag) = arg.strip_prefix("--") {
                let flag = format!("--{}", flag.split('=').next().unwrap_or_default());
                problems.check(self.flags.contains(&flag), || {
                    format!(
                        "{source}: passes {flag}, which `kokoa-control {} --help` does not list \
                         (missing flag {flag} in this binary; it knows {})",
                        self.subcommand,
                        self.flags.iter().cloned().collect::<Vec<_>>().join(" ")
                    )
                });
            }
        }
        for name in env.iter().filter(|name| name.starts_with("KOKOA_")) {
            problems.check(self.env.contains(name), || {
                format!(
                    "{source}: sets {name}, which `kokoa-control {} --help` does not list as \
                     [env: {name}] (missing in this binary; it reads {})",
                    self.subcommand,
                    self.env.iter().cloned().collect::<Vec<_>>().join(" ")
                )
            });
        }
    }
}

/// The subcommand and arguments a container runs: `args` after the image's ENTRYPOINT, or
/// the image's CMD (`serve`) when none are given.
fn container_args(command: &Value) -> Vec<String> {
    let args = strings(command);
    if args.is_empty() {
        vec!["serve".to_owned()]
    } else {
        args
    }
}

// ---------------------------------------------------------------------------------------
// The image

#[test]
fn image_env_agrees_with_the_binary_and_the_build_script() {
    let image = ImageEnv::load();
    let mut problems = Problems::default();
    let serve = Help::of("serve");
    let names: Vec<String> = image.kokoa_env().map(|(k, _)| k.clone()).collect();
    serve.check(&mut problems, IMAGE_ENV, &["serve".to_owned()], &names);
    let data_dir = image.data_dir();
    problems.check(data_dir.starts_with('/'), || {
        format!("{IMAGE_ENV}: KOKOA_DATA_DIR={data_dir} is not an absolute path")
    });
    let listen = image.get("KOKOA_LISTEN");
    problems.check(listen.starts_with("0.0.0.0:") || listen.starts_with("[::]:"), || {
        format!("{IMAGE_ENV}: KOKOA_LISTEN={listen} does not listen on every address of the container")
    });
    problems.check(image.uid() != 0 && image.get("IMAGE_GID") != "0", || {
        format!("{IMAGE_ENV}: the image's user must not be root")
    });
    // The build script takes these values from image.env, nothing from itself.
    let script = read("scripts/oci-image");
    for needle in [
        "packaging/oci/image.env",
        r#"--entrypoint '["/usr/bin/kokoa-control"]'"#,
        r#"--cmd '["serve"]'"#,
        "--user \"$USER_ID:$GROUP_ID\"",
        "--port \"$PORT/tcp\"",
        "org.opencontainers.image.version=$VERSION",
        "org.opencontainers.image.source=",
    ] {
        problems.check(script.contains(needle), || {
            format!("scripts/oci-image: no longer contains {needle:?}")
        });
    }
    for literal in ["8443", "65532", "/var/lib/kokoa-control"] {
        problems.check(
            !script
                .lines()
                .filter(|line| !line.trim_start().starts_with('#'))
                .any(|line| line.contains(literal)),
            || format!("scripts/oci-image: hard-codes {literal}; take it from {IMAGE_ENV}"),
        );
    }
    problems.finish("image.env and scripts/oci-image");
}

// ---------------------------------------------------------------------------------------
// Docker Compose

struct ComposeService<'a> {
    name: String,
    spec: &'a Value,
}

impl ComposeService<'_> {
    fn image(&self) -> String {
        text(&self.spec["image"]).unwrap_or_default()
    }

    fn environment(&self) -> BTreeMap<String, String> {
        match &self.spec["environment"] {
            Value::Sequence(items) => items
                .iter()
                .filter_map(text)
                .map(|item| match item.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (item, String::new()),
                })
                .collect(),
            other => string_map(other),
        }
    }

    fn is_control_plane(&self, image: &str) -> bool {
        self.image()
            .starts_with(image.split(':').next().unwrap_or_default())
            && container_args(&self.spec["command"])[0] == "serve"
            && self.spec["profiles"].is_null()
    }
}

/// `${NAME}`, `${NAME:?message}`, `${NAME:-default}` … in `value`.
fn interpolated(value: &str) -> Vec<String> {
    value
        .split("${")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn compose_file_has_two_control_planes_and_postgres_that_agree_with_the_image() {
    let image = ImageEnv::load();
    let documents = yaml_documents(COMPOSE);
    assert_eq!(documents.len(), 1, "{COMPOSE}: expected one YAML document");
    let compose = &documents[0];
    let mut problems = Problems::default();
    let services: Vec<ComposeService<'_>> = compose["services"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{COMPOSE}: no services"))
        .iter()
        .map(|(name, spec)| ComposeService {
            name: text(name).unwrap_or_default(),
            spec,
        })
        .collect();
    let find = |name: &str| services.iter().find(|s| s.name == name);

    // PostgreSQL 16, healthchecked (its image has a shell and pg_isready).
    let postgres: Vec<_> = services
        .iter()
        .filter(|s| s.image().starts_with("postgres"))
        .collect();
    problems.check(postgres.len() == 1, || {
        format!(
            "{COMPOSE}: expected one postgres service, found {}",
            postgres.len()
        )
    });
    for service in &postgres {
        problems.check(service.image() == "postgres:16", || {
            format!(
                "{COMPOSE}: service {} uses image {}, expected postgres:16",
                service.name,
                service.image()
            )
        });
        problems.check(!service.spec["healthcheck"].is_null(), || {
            format!(
                "{COMPOSE}: service {} has no healthcheck; the control planes wait for it",
                service.name
            )
        });
    }

    // Every kokoa-control service: the image of this version.
    let expected_image = image.image();
    for service in services
        .iter()
        .filter(|s| s.image().starts_with(image.get("IMAGE_NAME")))
    {
        problems.check(service.image() == expected_image, || {
            format!(
                "{COMPOSE}: service {} uses image {}, expected {expected_image} (the crate's version)",
                service.name,
                service.image()
            )
        });
    }

    let secrets = compose["secrets"].as_mapping();
    let master_key_path = format!("{}/master.key", image.data_dir());
    let control_planes: Vec<_> = services
        .iter()
        .filter(|s| s.is_control_plane(&expected_image))
        .collect();
    problems.check(control_planes.len() == 2, || {
        format!(
            "{COMPOSE}: expected 2 control planes (image {expected_image}, serve, no profile), found {}: {:?}",
            control_planes.len(),
            control_planes.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    });
    let mut host_ports = BTreeSet::new();
    for service in &control_planes {
        let name = &service.name;
        let env = service.environment();
        // The database: PostgreSQL, at the postgres service.
        let url = env.get("KOKOA_DATABASE_URL").cloned().unwrap_or_default();
        problems.check(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            || {
                format!(
                    "{COMPOSE}: service {name}: KOKOA_DATABASE_URL {url:?} is not a PostgreSQL URL"
                )
            },
        );
        let db_host = url
            .rsplit_once('@')
            .map(|(_, rest)| rest.split([':', '/']).next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        problems.check(postgres.iter().any(|p| p.name == db_host), || {
            format!("{COMPOSE}: service {name}: KOKOA_DATABASE_URL names host {db_host:?}, which is no postgres service")
        });
        problems.check(
            !service.spec["depends_on"][postgres.first().map_or("postgres", |p| p.name.as_str())]
                .is_null(),
            || format!("{COMPOSE}: service {name} does not depend on the postgres service"),
        );
        // The master key: a secret, at DATA_DIR/master.key.
        let mounted = service.spec["secrets"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|secret| {
                let source = text(&secret["source"])?;
                let target = text(&secret["target"])?;
                Some((source, target))
            })
            .find(|(_, target)| *target == master_key_path);
        match mounted {
            None => problems.0.push(format!(
                "{COMPOSE}: service {name} mounts no secret at {master_key_path} (the image's KOKOA_DATA_DIR/master.key)"
            )),
            Some((source, _)) => problems.check(
                secrets.is_some_and(|s| s.contains_key(source.as_str())),
                || format!("{COMPOSE}: service {name} mounts secret {source}, which the top-level secrets do not define"),
            ),
        }
        problems.check(!env.contains_key("KOKOA_DATA_DIR") || env["KOKOA_DATA_DIR"] == image.data_dir(), || {
            format!("{COMPOSE}: service {name} moves KOKOA_DATA_DIR away from the image's, where the master key is mounted")
        });
        // Ports: published to the image's port.
        let ports = strings(&service.spec["ports"]);
        problems.check(!ports.is_empty(), || {
            format!("{COMPOSE}: service {name} publishes no port")
        });
        for port in ports {
            let mut parts: Vec<&str> = port.split(':').collect();
            let container = parts.pop().unwrap_or_default().trim_end_matches("/tcp");
            problems.check(container == image.port().to_string(), || {
                format!(
                    "{COMPOSE}: service {name} publishes {port}: container port {container}, the image listens on {}",
                    image.port()
                )
            });
            let host = parts.pop().unwrap_or_default().to_owned();
            problems.check(host_ports.insert(host.clone()), || {
                format!("{COMPOSE}: service {name} publishes host port {host} twice")
            });
        }
        problems.check(service.spec["read_only"].as_bool() == Some(true), || {
            format!("{COMPOSE}: service {name} does not have a read-only root file system")
        });
    }

    // The init service writes the master key where the secret reads it.
    let init = services
        .iter()
        .find(|s| s.image() == expected_image && container_args(&s.spec["command"])[0] == "init");
    match init {
        None => problems
            .0
            .push(format!("{COMPOSE}: no service runs `init`")),
        Some(init) => {
            let data_volume = strings(&init.spec["volumes"]).into_iter().find_map(|v| {
                let (host, target) = v.split_once(':')?;
                (target.split(':').next() == Some(image.data_dir())).then(|| host.to_owned())
            });
            let key_file = compose["secrets"]["master_key"]["file"]
                .as_str()
                .unwrap_or_default();
            match data_volume {
                None => problems.0.push(format!(
                    "{COMPOSE}: service {} mounts nothing at {}: init's master.key would be lost",
                    init.name,
                    image.data_dir()
                )),
                Some(host) => problems.check(
                    key_file == format!("{}/master.key", host.trim_end_matches('/')),
                    || format!(
                        "{COMPOSE}: secret master_key reads {key_file:?}, but init writes {host}/master.key"
                    ),
                ),
            }
        }
    }
    problems.check(find("postgres").is_some(), || {
        format!("{COMPOSE}: no service named postgres")
    });

    // Every ${VARIABLE} has a line in .env.example.
    let example: BTreeSet<String> = read(COMPOSE_ENV)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .collect();
    for variable in interpolated(&read(COMPOSE)) {
        problems.check(example.contains(&variable), || {
            format!("{COMPOSE}: uses ${{{variable}}}, which {COMPOSE_ENV} does not set")
        });
    }
    problems.finish(COMPOSE);
}

#[test]
fn compose_flags_and_variables_exist_in_the_binary() {
    let image = ImageEnv::load();
    let documents = yaml_documents(COMPOSE);
    let mut problems = Problems::default();
    let mut checked = 0;
    for (name, spec) in documents[0]["services"].as_mapping().into_iter().flatten() {
        let name = text(name).unwrap_or_default();
        let service = ComposeService {
            name: name.clone(),
            spec,
        };
        if !service.image().starts_with(image.get("IMAGE_NAME")) {
            continue;
        }
        let args = container_args(&spec["command"]);
        let env: Vec<String> = service.environment().into_keys().collect();
        Help::of(&args[0]).check(
            &mut problems,
            &format!("{COMPOSE}: service {name}"),
            &args,
            &env,
        );
        checked += 1;
    }
    problems.check(checked >= 3, || {
        format!("{COMPOSE}: expected 3 kokoa-control services, checked {checked}")
    });
    problems.finish("compose.yaml against `kokoa-control --help`");
}

// ---------------------------------------------------------------------------------------
// Kubernetes

/// The manifests, by kind, with the file each came from.
struct Manifests {
    by_kind: BTreeMap<String, Vec<(String, Value)>>,
}

impl Manifests {
    fn load(problems: &mut Problems) -> Self {
        let kustomization = format!("{KUBERNETES}/kustomization.yaml");
        let listed: Vec<String> = strings(&yaml_documents(&kustomization)[0]["resources"]);
        let mut on_disk: Vec<String> = std::fs::read_dir(workspace().join(KUBERNETES))
            .expect("read packaging/kubernetes")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
            .collect();
        on_disk.sort();
        let mut sorted = listed;
        sorted.sort();
        problems.check(sorted == on_disk, || {
            format!("{kustomization}: lists {sorted:?}, the directory holds {on_disk:?}")
        });
        let mut by_kind: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
        for file in on_disk {
            let path = format!("{KUBERNETES}/{file}");
            for document in yaml_documents(&path) {
                let kind = text(&document["kind"]).unwrap_or_default();
                by_kind
                    .entry(kind)
                    .or_default()
                    .push((path.clone(), document));
            }
        }
        Self { by_kind }
    }

    /// The one object of `kind` (and its file), or a problem.
    fn one(&self, kind: &str, problems: &mut Problems) -> Option<(&str, &Value)> {
        let found = self
            .by_kind
            .get(kind)
            .map(Vec::as_slice)
            .unwrap_or_default();
        problems.check(found.len() == 1, || {
            format!("{KUBERNETES}: expected one {kind}, found {}", found.len())
        });
        found.first().map(|(file, value)| (file.as_str(), value))
    }
}

/// Does `selector` (label → value) select pods labelled `labels`?
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The container port `port` (a number or a port name) designates.
fn resolve_port(port: &Value, container: &Value) -> Option<u64> {
    if let Some(number) = port.as_u64() {
        return Some(number);
    }
    let name = port.as_str()?;
    container["ports"]
        .as_sequence()?
        .iter()
        .find(|p| p["name"].as_str() == Some(name))?["containerPort"]
        .as_u64()
}

#[test]
fn kubernetes_manifests_agree_with_each_other_and_the_image() {
    let image = ImageEnv::load();
    let mut problems = Problems::default();
    let manifests = Manifests::load(&mut problems);
    for (kind, objects) in &manifests.by_kind {
        for (file, object) in objects {
            let name = text(&object["metadata"]["name"]).unwrap_or_default();
            let namespace = if kind == "Namespace" {
                name.clone()
            } else {
                text(&object["metadata"]["namespace"]).unwrap_or_default()
            };
            problems.check(namespace == NAMESPACE, || {
                format!("{file}: {kind} {name} is in namespace {namespace:?}, expected {NAMESPACE}")
            });
        }
    }
    manifests.one("Namespace", &mut problems);
    let secret = manifests.one("Secret", &mut problems);
    let deployment = manifests.one("Deployment", &mut problems);
    let service = manifests.one("Service", &mut problems);
    let pdb = manifests.one("PodDisruptionBudget", &mut problems);
    let Some((file, deployment)) = deployment else {
        return problems.finish(KUBERNETES);
    };

    let spec = &deployment["spec"];
    problems.check(spec["replicas"].as_u64() == Some(2), || {
        format!("{file}: replicas {:?}, expected 2", spec["replicas"])
    });
    let pod = &spec["template"]["spec"];
    let pod_labels = string_map(&spec["template"]["metadata"]["labels"]);
    let match_labels = string_map(&spec["selector"]["matchLabels"]);
    problems.check(selects(&match_labels, &pod_labels), || {
        format!("{file}: selector {match_labels:?} does not select the pod labels {pod_labels:?}")
    });
    let containers = pod["containers"].as_sequence().cloned().unwrap_or_default();
    problems.check(containers.len() == 1, || {
        format!("{file}: expected one container, found {}", containers.len())
    });
    let Some(container) = containers.first() else {
        return problems.finish(KUBERNETES);
    };
    let container_name = text(&container["name"]).unwrap_or_default();
    let at = format!("{file}: container {container_name}");

    // The image of this crate's version.
    let expected_image = image.image();
    let container_image = text(&container["image"]).unwrap_or_default();
    let (image_name, image_tag) = container_image
        .rsplit_once(':')
        .unwrap_or((&container_image, ""));
    problems.check(
        image_tag == VERSION && image_name.rsplit('/').next() == Some(image.get("IMAGE_NAME")),
        || {
            format!(
                "{at}: image {container_image}, expected {expected_image} (the crate's version)"
            )
        },
    );

    // The port the image listens on, and probes on it over HTTPS.
    let port = u64::from(image.port());
    let container_ports: Vec<u64> = container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    problems.check(container_ports == [port], || {
        format!(
            "{at}: containerPort {container_ports:?}, the image listens on {port} ({IMAGE_ENV})"
        )
    });
    for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/health")] {
        let get = &container[probe]["httpGet"];
        problems.check(get["path"].as_str() == Some(path), || {
            format!("{at}: {probe} asks for {:?}, expected {path}", get["path"])
        });
        problems.check(get["scheme"].as_str() == Some("HTTPS"), || {
            format!("{at}: {probe} scheme {:?}, expected HTTPS (the control plane serves TLS by default)", get["scheme"])
        });
        let probed = resolve_port(&get["port"], container);
        problems.check(probed == Some(port), || {
            format!(
                "{at}: {probe} port {:?} is {probed:?}, expected the container port {port}",
                get["port"]
            )
        });
    }

    // Non-root, read-only, nothing more than needed.
    let pod_security = &pod["securityContext"];
    let security = &container["securityContext"];
    let either = |key: &str| {
        if security[key].is_null() {
            pod_security[key].clone()
        } else {
            security[key].clone()
        }
    };
    problems.check(either("runAsNonRoot").as_bool() == Some(true), || {
        format!("{at}: runAsNonRoot is not true")
    });
    problems.check(either("runAsUser").as_u64() == Some(image.uid()), || {
        format!(
            "{at}: runAsUser {:?}, the image's user is {}",
            either("runAsUser"),
            image.uid()
        )
    });
    problems.check(
        security["readOnlyRootFilesystem"].as_bool() == Some(true),
        || format!("{at}: readOnlyRootFilesystem is not true"),
    );
    problems.check(
        security["allowPrivilegeEscalation"].as_bool() == Some(false),
        || format!("{at}: allowPrivilegeEscalation is not false"),
    );
    problems.check(
        strings(&security["capabilities"]["drop"]) == ["ALL"],
        || format!("{at}: capabilities.drop is not [ALL]"),
    );
    for kind in ["requests", "limits"] {
        problems.check(
            container["resources"][kind]["memory"].as_str().is_some(),
            || format!("{at}: no memory in resources.{kind}"),
        );
    }

    // Spread across nodes.
    let anti = &pod["affinity"]["podAntiAffinity"];
    let terms: Vec<&Value> = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        .as_sequence()
        .into_iter()
        .flatten()
        .chain(
            anti["preferredDuringSchedulingIgnoredDuringExecution"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|weighted| &weighted["podAffinityTerm"]),
        )
        .collect();
    problems.check(
        terms.iter().any(|t| {
            t["topologyKey"].as_str() == Some("kubernetes.io/hostname")
                && selects(&string_map(&t["labelSelector"]["matchLabels"]), &pod_labels)
        }),
        || format!("{file}: no pod anti-affinity on kubernetes.io/hostname selecting the pod labels {pod_labels:?}"),
    );

    // Secrets: every key the Deployment uses exists in the Secret template.
    let (secret_file, secret_name, secret_keys) = match secret {
        Some((secret_file, secret)) => {
            let mut keys: BTreeSet<String> =
                string_map(&secret["stringData"]).into_keys().collect();
            keys.extend(string_map(&secret["data"]).into_keys());
            (
                secret_file,
                text(&secret["metadata"]["name"]).unwrap_or_default(),
                keys,
            )
        }
        None => ("", String::new(), BTreeSet::new()),
    };
    let check_key = |problems: &mut Problems, what: &str, name: &str, key: &str| {
        problems.check(name == secret_name && secret_keys.contains(key), || {
            format!(
                "{at}: {what} uses key {key:?} of Secret {name:?}; {secret_file} defines Secret \
                 {secret_name:?} with keys {secret_keys:?}"
            )
        });
    };
    let env: Vec<&Value> = container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .collect();
    for variable in &env {
        let reference = &variable["valueFrom"]["secretKeyRef"];
        if !reference.is_null() {
            check_key(
                &mut problems,
                &format!("env {}", text(&variable["name"]).unwrap_or_default()),
                reference["name"].as_str().unwrap_or_default(),
                reference["key"].as_str().unwrap_or_default(),
            );
        }
    }
    let env_value = |name: &str| {
        env.iter()
            .find(|v| v["name"].as_str() == Some(name))
            .and_then(|v| text(&v["value"]))
    };
    let data_dir = env_value("KOKOA_DATA_DIR").unwrap_or_else(|| image.data_dir().to_owned());
    let master_key = format!("{data_dir}/master.key");
    let mut master_key_mounted = false;
    for volume in pod["volumes"].as_sequence().into_iter().flatten() {
        let secret_volume = &volume["secret"];
        if secret_volume.is_null() {
            continue;
        }
        let volume_name = text(&volume["name"]).unwrap_or_default();
        let secret_of_volume = text(&secret_volume["secretName"]).unwrap_or_default();
        let items: Vec<(String, String)> = secret_volume["items"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|i| {
                (
                    text(&i["key"]).unwrap_or_default(),
                    text(&i["path"]).unwrap_or_default(),
                )
            })
            .collect();
        for (key, _) in &items {
            check_key(
                &mut problems,
                &format!("volume {volume_name}"),
                &secret_of_volume,
                key,
            );
        }
        for mount in container["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if mount["name"].as_str() != Some(&volume_name) {
                continue;
            }
            let path = text(&mount["mountPath"]).unwrap_or_default();
            let files: Vec<String> = match mount["subPath"].as_str() {
                // A subPath mount puts the one file at mountPath.
                Some(_) => vec![path.clone()],
                None => items.iter().map(|(_, p)| format!("{path}/{p}")).collect(),
            };
            master_key_mounted |= files.contains(&master_key);
        }
    }
    problems.check(master_key_mounted, || {
        format!("{at}: no Secret volume puts master.key at {master_key} (DATA_DIR/master.key)")
    });

    // --tls-name: the Service's DNS names are in the certificate.
    let args = container_args(&container["args"]);
    let tls_names: BTreeSet<&str> = args
        .windows(2)
        .filter(|pair| pair[0] == "--tls-name")
        .map(|pair| pair[1].as_str())
        .collect();

    // Service: selects the pods, targets the container port.
    if let Some((service_file, service)) = service {
        let service_name = text(&service["metadata"]["name"]).unwrap_or_default();
        let selector = string_map(&service["spec"]["selector"]);
        problems.check(selects(&selector, &pod_labels), || {
            format!("{service_file}: selector {selector:?} does not select the Deployment's pod labels {pod_labels:?}")
        });
        let ports: Vec<&Value> = service["spec"]["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .collect();
        problems.check(!ports.is_empty(), || format!("{service_file}: no ports"));
        for service_port in ports {
            let target = &service_port["targetPort"];
            let target = if target.is_null() {
                &service_port["port"]
            } else {
                target
            };
            let resolved = resolve_port(target, container);
            problems.check(resolved == Some(port), || {
                format!("{service_file}: targetPort {target:?} is {resolved:?}, expected the container port {port}")
            });
        }
        for dns in [
            format!("{service_name}.{NAMESPACE}.svc"),
            format!("{service_name}.{NAMESPACE}.svc.cluster.local"),
        ] {
            problems.check(tls_names.contains(dns.as_str()), || {
                format!("{at}: no --tls-name {dns} (the Service's DNS name) in args {args:?}")
            });
        }
    }

    // PodDisruptionBudget: one of two may go.
    if let Some((pdb_file, pdb)) = pdb {
        problems.check(pdb["spec"]["minAvailable"].as_u64() == Some(1), || {
            format!(
                "{pdb_file}: minAvailable {:?}, expected 1",
                pdb["spec"]["minAvailable"]
            )
        });
        let selector = string_map(&pdb["spec"]["selector"]["matchLabels"]);
        problems.check(selects(&selector, &pod_labels), || {
            format!("{pdb_file}: selector {selector:?} does not select the Deployment's pod labels {pod_labels:?}")
        });
    }
    problems.finish(KUBERNETES);
}

#[test]
fn kubernetes_flags_and_variables_exist_in_the_binary() {
    let mut problems = Problems::default();
    let manifests = Manifests::load(&mut problems);
    let mut checked = 0;
    for (file, deployment) in manifests.by_kind.get("Deployment").into_iter().flatten() {
        for container in deployment["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let at = format!(
                "{file}: container {}",
                text(&container["name"]).unwrap_or_default()
            );
            problems.check(container["command"].is_null(), || {
                format!("{at}: sets command, replacing the image's ENTRYPOINT")
            });
            let args = container_args(&container["args"]);
            let env: Vec<String> = container["env"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|v| text(&v["name"]))
                .collect();
            Help::of(&args[0]).check(&mut problems, &at, &args, &env);
            checked += 1;
        }
    }
    problems.check(checked == 1, || {
        format!("{KUBERNETES}: expected one container, checked {checked}")
    });
    problems.finish("Kubernetes manifests against `kokoa-control --help`");
}
