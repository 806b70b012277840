//! The lab provider against real network namespaces: a bridge in a hub namespace and a
//! probe host on it, both made by the test, and a stand-in `kokoa-edge` (a shell script)
//! that records how it was started — its arguments and environment from `/proc/$$`, its
//! network namespace, its mounts — then sleeps as the agent would run. Everything the
//! tests make is removed when they end, also when they fail. Needs root.

use std::{
    fs,
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use kokoa_core::{EdgeNodeId, Name};
use kokoa_provision::{
    AgentSource, EdgeBootstrap, Error, IdempotencyKey, InstanceConfig, InstanceId, InstanceStatus,
    Provisioner, Secret,
    lab::{LabConfig, LabProvisioner},
    render_user_data,
};
use tempfile::TempDir;

const STAND_IN: &str = r#"#!/bin/sh
# Stand-in for kokoa-edge: records how it was started, then plays its part.
command=$1
state=
previous=
for arg in "$@"; do
    if [ "$previous" = --state-dir ]; then state=$arg; fi
    previous=$arg
done
mkdir -p "$state"
tr '\0' '\n' </proc/$$/cmdline >"$state/$command.argv"
tr '\0' '\n' </proc/$$/environ >"$state/$command.env"
ip netns identify $$ >"$state/$command.netns"
case $command in
enroll)
    if [ "$KOKOA_ENROLL_TOKEN" = kk_enr_refused ]; then
        echo "stand-in: the control plane refused the enrollment token (HTTP 401)" >&2
        exit 3
    fi
    echo "stand-in: enrolled"
    ;;
run)
    echo $$ >"$state/run.pid"
    grep ' /run/wireguard ' /proc/self/mounts >"$state/run.mounts"
    # Like nginx, which leaves the agent's process group when it daemonizes.
    setsid sleep 300 </dev/null >/dev/null 2>&1 &
    echo $! >"$state/daemon.pid"
    exec sleep 300
    ;;
esac
"#;

const TOKEN: &str = "kk_enr_lab_secret_4f2a";
const NETWORK: &str = "10.98.0.0/24";
const PROBE: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

fn ip(args: &[&str]) -> String {
    run("ip", args).unwrap_or_else(|e| panic!("{e}"))
}

/// The test's network: a hub namespace with bridge `br0` and a probe host at 10.98.0.2,
/// all named `kt<tag>…`. Dropping it removes every namespace of that tag (instances
/// included) and the processes in them.
struct Net {
    tag: String,
    hub: String,
    probe: String,
    dir: TempDir,
    stand_in: PathBuf,
}

impl Net {
    fn new(letter: char) -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "the lab provider's tests create network namespaces: run them as root"
        );
        for (tool, package) in [
            ("ip", "iproute2"),
            ("ping", "iputils-ping"),
            ("unshare", "util-linux"),
        ] {
            assert!(
                Command::new(tool).arg("-V").output().is_ok(),
                "{tool} not found: apt-get install -y --no-install-recommends {package}"
            );
        }
        // The pid in base 36 keeps names unique between test binaries, the letter between
        // the tests of this one, and the whole under 15 bytes (an interface name).
        let mut n = std::process::id() % 36u32.pow(4);
        let mut tag = String::new();
        for _ in 0..4 {
            tag.insert(0, char::from_digit(n % 36, 36).unwrap());
            n /= 36;
        }
        tag = format!("kt{tag}{letter}");
        let dir = tempfile::tempdir().unwrap();
        let stand_in = dir.path().join("kokoa-edge");
        fs::write(&stand_in, STAND_IN).unwrap();
        fs::set_permissions(&stand_in, fs::Permissions::from_mode(0o755)).unwrap();
        let net = Self {
            hub: format!("{tag}h"),
            probe: format!("{tag}p"),
            tag,
            dir,
            stand_in,
        };
        net.clean();
        let (hub, probe) = (net.hub.as_str(), net.probe.as_str());
        ip(&["netns", "add", hub]);
        ip(&["-n", hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", hub, "link", "set", "br0", "up"]);
        ip(&["netns", "add", probe]);
        ip(&[
            "link", "add", "eth0", "netns", probe, "type", "veth", "peer", "name", probe, "netns",
            hub,
        ]);
        ip(&["-n", hub, "link", "set", probe, "master", "br0"]);
        ip(&["-n", hub, "link", "set", probe, "up"]);
        ip(&[
            "-n",
            probe,
            "addr",
            "add",
            &format!("{PROBE}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", probe, "link", "set", "eth0", "up"]);
        ip(&["-n", probe, "link", "set", "lo", "up"]);
        net
    }

    fn config(&self, last: u8) -> LabConfig {
        LabConfig {
            hub_netns: self.hub.clone(),
            bridge: "br0".into(),
            network: NETWORK.parse().unwrap(),
            first_address: Ipv4Addr::new(10, 98, 0, 30),
            last_address: Ipv4Addr::new(10, 98, 0, last),
            gateway: Some(Ipv4Addr::new(10, 98, 0, 1)),
            dir: self.dir.path().join("vps"),
            edge_binary: self.stand_in.clone(),
            // The stand-in never runs it; any existing file will do.
            nginx_binary: "/bin/sh".into(),
            wireguard: "wireguard-go".into(),
            netns_prefix: format!("{}v", self.tag),
            regions: vec![Name::parse("lab-a").unwrap(), Name::parse("lab-b").unwrap()],
        }
    }

    /// Namespaces of this tag.
    fn namespaces(&self) -> Vec<String> {
        fs::read_dir("/run/netns")
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|name| name.starts_with(&self.tag))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn clean(&self) {
        for ns in self.namespaces() {
            if let Ok(pids) = run("ip", &["netns", "pids", &ns]) {
                for pid in pids.split_whitespace() {
                    let _ = run("kill", &["-9", pid]);
                }
            }
            let _ = run("ip", &["netns", "del", &ns]);
        }
    }

    /// Whether the probe host gets an answer from `address` (`tries` of a second each).
    fn pings(&self, address: Ipv4Addr, tries: usize) -> bool {
        (0..tries).any(|_| {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.probe,
                    "ping",
                    "-n",
                    "-c1",
                    "-W1",
                    &address.to_string(),
                ],
            )
            .is_ok()
        })
    }

    fn hub_has_port(&self, name: &str) -> bool {
        run("ip", &["-n", &self.hub, "link", "show", name])
            .is_ok_and(|out| out.contains("master br0"))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.clean();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn instance(region: &str, token: &str) -> InstanceConfig {
    let user_data = render_user_data(&EdgeBootstrap {
        control_plane_url: "http://10.98.0.1:8080".into(),
        node_id: EdgeNodeId::new(),
        enrollment_token: Secret::new(token),
        agent: AgentSource::Package {
            name: "kokoa-edge".into(),
        },
        ca_pin: None,
    })
    .unwrap();
    InstanceConfig {
        provider: Name::parse("lab").unwrap(),
        region: Name::parse(region).unwrap(),
        size: Name::parse("any").unwrap(),
        image: "debian-12".into(),
        ssh_key_id: None,
        user_data,
        name: Name::parse("edge-lab-a-01").unwrap(),
        tags: vec![],
        idempotency_key: None,
        address: None,
    }
}

/// Polls the instance's status every 20 ms until `want` says yes, for at most 10 s.
async fn status_until(
    lab: &LabProvisioner,
    id: &InstanceId,
    want: impl Fn(&InstanceStatus) -> bool,
) -> InstanceStatus {
    let started = Instant::now();
    loop {
        let status = lab.instance_status(id).await.unwrap();
        if want(&status) {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{id} is still {status} after 10 s; its log:\n{}",
            fs::read_to_string(lab.log_path(id)).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (20 ms polls, at most 10 s) until the stand-in has written `path`.
async fn wait_for_file(path: &Path) {
    let started = Instant::now();
    while !fs::read_to_string(path).is_ok_and(|text| text.ends_with('\n')) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} was not written within 10 s",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn running(address: Ipv4Addr) -> InstanceStatus {
    InstanceStatus::Running {
        ipv4: Some(address),
        ipv6: None,
    }
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Fields 5 and 6 of `/proc/PID/stat`: its process group and session.
fn group_and_session(pid: u32) -> (u32, u32) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<u32> = stat
        .rsplit_once(") ")
        .unwrap()
        .1
        .split(' ')
        .skip(2)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    (fields[0], fields[1])
}

/// Asserts that nothing of instance `id` is left: namespace, bridge port, processes, files.
fn assert_gone(net: &Net, id: &InstanceId, pids: &[u32], dir: &Path) {
    assert!(
        !Path::new("/run/netns").join(id.as_str()).exists(),
        "namespace {id} is left"
    );
    assert!(!net.hub_has_port(id.as_str()), "bridge port {id} is left");
    for &pid in pids {
        assert!(!alive(pid), "process {pid} of {id} is left");
    }
    assert!(!dir.exists(), "{} is left", dir.display());
}

#[test]
fn an_instance_is_a_namespace_on_the_bridge_with_the_edge_enrolled_and_running() {
    let net = Net::new('a');
    let rt = runtime();
    rt.block_on(async {
        let lab = LabProvisioner::new(net.config(31)).unwrap();
        assert_eq!(lab.name(), "lab");
        let created = lab.create_instance(&instance("lab-a", TOKEN)).await.unwrap();
        assert_eq!(created.status, InstanceStatus::Provisioning);
        let id = created.id;
        assert_eq!(id.as_str(), format!("{}v0", net.tag));
        let first = Ipv4Addr::new(10, 98, 0, 30);
        assert_eq!(status_until(&lab, &id, |s| s.address().is_some()).await, running(first));
        assert_eq!(lab.ssh_config(&id).await.unwrap().host, first);

        // On the bridge, with its address and route.
        assert!(net.pings(first, 3), "{first} does not answer the probe host");
        let addresses = ip(&["-n", id.as_str(), "-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(addresses.contains("inet 10.98.0.30/24"), "{addresses}");
        let routes = ip(&["-n", id.as_str(), "route"]);
        assert!(routes.contains("default via 10.98.0.1 dev eth0"), "{routes}");
        assert!(net.hub_has_port(id.as_str()));

        // Enrolled inside the namespace with the token in the environment only.
        let state = lab.config().dir.join(id.as_str()).join("state");
        let argv = lines(&state.join("enroll.argv"));
        assert_eq!(
            argv[1..],
            [
                net.stand_in.display().to_string(),
                "enroll".into(),
                "--control-plane".into(),
                "http://10.98.0.1:8080".into(),
                "--state-dir".into(),
                state.display().to_string(),
            ]
        );
        let mut env = lines(&state.join("enroll.env"));
        env.sort();
        assert_eq!(
            env,
            [
                format!("KOKOA_ENROLL_TOKEN={TOKEN}"),
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ]
        );
        assert_eq!(lines(&state.join("enroll.netns")), [id.as_str()]);

        // The agent: in the namespace, its own session, a private /run/wireguard, no token.
        wait_for_file(&state.join("daemon.pid")).await;
        let argv = lines(&state.join("run.argv"));
        assert_eq!(argv[2..4], ["run", "--state-dir"]);
        assert!(argv.contains(&"--wg-userspace".to_owned()), "{argv:?}");
        // PWD is the shell's, which sets up the mount namespace.
        assert_eq!(
            lines(&state.join("run.env")),
            [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                format!("PWD={}", state.parent().unwrap().display()),
            ]
        );
        assert_eq!(lines(&state.join("run.netns")), [id.as_str()]);
        let mounts = lines(&state.join("run.mounts"));
        assert!(mounts[0].starts_with("tmpfs /run/wireguard tmpfs"), "{mounts:?}");
        let agent: u32 = lines(&state.join("run.pid"))[0].parse().unwrap();
        let daemon: u32 = lines(&state.join("daemon.pid"))[0].parse().unwrap();
        assert_eq!(group_and_session(agent), (agent, agent));
        let cmdline = fs::read(format!("/proc/{agent}/cmdline")).unwrap();
        assert!(!String::from_utf8_lossy(&cmdline).contains(TOKEN));
        for file in [lab.log_path(&id), lab.config().dir.join("state.json")] {
            let text = fs::read_to_string(&file).unwrap();
            assert!(!text.contains(TOKEN), "the token is in {}", file.display());
        }
        let log = fs::read_to_string(lab.log_path(&id)).unwrap();
        assert!(log.contains("stand-in: enrolled"), "{log}");

        // A second instance takes the last address; a third finds none.
        let second = lab.create_instance(&instance("lab-b", TOKEN)).await.unwrap().id;
        let last = Ipv4Addr::new(10, 98, 0, 31);
        assert_eq!(status_until(&lab, &second, |s| s.address().is_some()).await, running(last));
        let err = lab.create_instance(&instance("lab-a", TOKEN)).await.unwrap_err();
        assert!(matches!(err, Error::Quota { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "lab: account limit reached: every address of 10.98.0.30-10.98.0.31 is taken (2 instances); \
             destroy one or widen the range; ask the provider to raise the limit, or place the edge \
             at another provider or region"
        );

        // Destroyed: nothing left, twice is fine, and the address is free again.
        let dir = lab.config().dir.join(id.as_str());
        lab.destroy_instance(&id).await.unwrap();
        assert_eq!(lab.instance_status(&id).await.unwrap(), InstanceStatus::Gone);
        assert_gone(&net, &id, &[agent, daemon], &dir);
        assert!(!net.pings(first, 1));
        lab.destroy_instance(&id).await.unwrap();
        let third = lab.create_instance(&instance("lab-a", TOKEN)).await.unwrap().id;
        assert_eq!(third.as_str(), format!("{}v2", net.tag), "ids are never reused");
        assert_eq!(status_until(&lab, &third, |s| s.address().is_some()).await, running(first));
        for id in [second, third] {
            lab.destroy_instance(&id).await.unwrap();
            assert_eq!(lab.instance_status(&id).await.unwrap(), InstanceStatus::Gone);
        }
        assert_eq!(net.namespaces().len(), 2, "only the hub and the probe are left: {:?}", net.namespaces());
    });
}

#[test]
fn a_later_provisioner_over_the_same_directory_finds_and_destroys_the_instances() {
    let net = Net::new('b');
    let config = net.config(40);
    // The first provisioner lives in a runtime of its own, dropped like a stopped process.
    let (id, agent) = runtime().block_on(async {
        let lab = LabProvisioner::new(config.clone()).unwrap();
        let id = lab
            .create_instance(&instance("lab-a", TOKEN))
            .await
            .unwrap()
            .id;
        status_until(&lab, &id, |s| s.address().is_some()).await;
        let pid = config.dir.join(id.as_str()).join("state/run.pid");
        wait_for_file(&pid).await;
        (id, lines(&pid)[0].parse::<u32>().unwrap())
    });
    assert!(
        alive(agent),
        "the agent outlives the provisioner, as a VPS would"
    );
    runtime().block_on(async {
        let lab = LabProvisioner::new(config.clone()).unwrap();
        let first = Ipv4Addr::new(10, 98, 0, 30);
        assert_eq!(lab.instance_status(&id).await.unwrap(), running(first));
        assert!(net.pings(first, 3));
        // Its counter goes on, and the address in use is not handed out again.
        let next = lab
            .create_instance(&instance("lab-b", TOKEN))
            .await
            .unwrap()
            .id;
        assert_eq!(next.as_str(), format!("{}v1", net.tag));
        let second = Ipv4Addr::new(10, 98, 0, 31);
        assert_eq!(
            status_until(&lab, &next, |s| s.address().is_some()).await,
            running(second)
        );

        let dir = config.dir.join(id.as_str());
        lab.destroy_instance(&id).await.unwrap();
        assert_eq!(
            lab.instance_status(&id).await.unwrap(),
            InstanceStatus::Gone
        );
        assert_gone(&net, &id, &[agent], &dir);
        lab.destroy_instance(&next).await.unwrap();
        let unknown = InstanceId::parse(&format!("{}v99", net.tag)).unwrap();
        assert_eq!(
            lab.instance_status(&unknown).await.unwrap(),
            InstanceStatus::Gone
        );
        lab.destroy_instance(&unknown).await.unwrap();
    });
    assert_eq!(net.namespaces().len(), 2, "{:?}", net.namespaces());
}

#[test]
fn a_failed_enrollment_shows_as_stopped_with_the_reason_in_the_log() {
    let net = Net::new('c');
    runtime().block_on(async {
        let lab = LabProvisioner::new(net.config(40)).unwrap();
        let id = lab
            .create_instance(&instance("lab-a", "kk_enr_refused"))
            .await
            .unwrap()
            .id;
        status_until(&lab, &id, |s| *s == InstanceStatus::Stopped).await;
        let log = fs::read_to_string(lab.log_path(&id)).unwrap();
        assert!(
            log.contains("refused the enrollment token (HTTP 401)"),
            "{log}"
        );
        assert!(
            log.contains("kokoa-edge enroll failed (exit status: 3)"),
            "{log}"
        );
        assert!(!lines(&lab.config().dir.join(id.as_str()).join("state/enroll.argv")).is_empty());
        lab.destroy_instance(&id).await.unwrap();
        assert_eq!(
            lab.instance_status(&id).await.unwrap(),
            InstanceStatus::Gone
        );
    });
    assert_eq!(net.namespaces().len(), 2, "{:?}", net.namespaces());
}

#[test]
fn requests_it_cannot_serve_are_refused_with_what_to_change() {
    let net = Net::new('d');
    runtime().block_on(async {
        let lab = LabProvisioner::new(net.config(40)).unwrap();
        let err = |config: InstanceConfig| {
            let lab = lab.clone();
            async move { lab.create_instance(&config).await.unwrap_err().to_string() }
        };
        assert_eq!(
            err(instance("nrt", TOKEN)).await,
            "lab: request refused: unknown region \"nrt\": this lab has lab-a, lab-b; check the region, size and image"
        );
        let mut other = instance("lab-a", TOKEN);
        other.provider = Name::parse("vultr").unwrap();
        assert!(err(other).await.contains("meant for another provider"));
        let mut with_address = instance("lab-a", TOKEN);
        with_address.address = Some("10.98.0.50".parse().unwrap());
        assert!(err(with_address).await.starts_with("invalid address \"10.98.0.50\""));
        let mut edited = instance("lab-a", TOKEN);
        edited.user_data = Secret::new(format!("{}  - [reboot]\n", edited.user_data.expose()));
        let message = err(edited).await;
        assert!(message.starts_with("invalid user_data \"<"), "{message}");
        assert!(!message.contains(TOKEN), "{message}");
    });
    assert_eq!(
        net.namespaces().len(),
        2,
        "nothing was made: {:?}",
        net.namespaces()
    );
    assert!(
        !net.dir
            .path()
            .join("vps")
            .join(format!("{}v0", net.tag))
            .exists()
    );
}

#[test]
fn a_timed_out_create_makes_exactly_one_instance_which_any_provisioner_finds_by_its_key() {
    let net = Net::new('e');
    let config = net.config(40);
    let tag = Name::parse("kokoa").unwrap();
    let key = |k: &str| IdempotencyKey::parse(k).unwrap();
    let key_a = key("kokoa-edge-3f9a0c5e1b2d4f6a8c0e2b4d6f8a0c2e");
    let key_b = key("kokoa-edge-7d1e4b9a2c6f8e0d3a5b7c9e1f2a4b6c");
    let keyed = |region: &str, name: &str, key: &IdempotencyKey| {
        let mut config = instance(region, TOKEN);
        config.name = Name::parse(name).unwrap();
        config.tags = vec![tag.clone()];
        config.idempotency_key = Some(key.clone());
        config
    };
    runtime().block_on(async {
        // Two control planes over one directory: the leader and the stand-by.
        let leader = LabProvisioner::new(config.clone()).unwrap();
        let standby = LabProvisioner::new(config.clone()).unwrap();

        let first = leader
            .create_instance(&keyed("lab-a", "edge-lab-a-01", &key_a))
            .await
            .unwrap()
            .id;
        for lab in [&leader, &standby] {
            let found = lab
                .find_instance(&tag, &key_a)
                .await
                .unwrap()
                .expect("found by its key");
            assert_eq!(found.id, first);
            assert_eq!(found.name.as_deref(), Some("edge-lab-a-01"));
            assert_eq!(found.idempotency_key.as_ref(), Some(&key_a));
        }
        assert_eq!(standby.find_instance(&tag, &key_b).await.unwrap(), None);
        let other_tag = Name::parse("someone-else").unwrap();
        assert_eq!(standby.list_instances(&other_tag).await.unwrap(), []);

        // The fault switch: the stand-by, now leading, creates; the instance is made, the
        // call answers as a provider that timed out, and the switch is used up.
        let fault = config.dir.join("faults/create-timeout");
        fs::create_dir_all(fault.parent().unwrap()).unwrap();
        fs::write(&fault, "").unwrap();
        let err = standby
            .create_instance(&keyed("lab-b", "edge-lab-b-01", &key_b))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Transient { .. }) && err.is_retryable(),
            "{err:?}"
        );
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(!fault.exists(), "the fault hits once");

        // Exactly one instance carries the key; the former leader finds it and it comes up.
        let listed = leader.list_instances(&tag).await.unwrap();
        let with_b: Vec<_> = listed
            .iter()
            .filter(|i| i.idempotency_key.as_ref() == Some(&key_b))
            .collect();
        assert_eq!(with_b.len(), 1, "{listed:?}");
        let second = leader
            .find_instance(&tag, &key_b)
            .await
            .unwrap()
            .expect("made")
            .id;
        assert_eq!(second, with_b[0].id);
        assert_eq!(
            status_until(&leader, &second, |s| s.address().is_some()).await,
            running(Ipv4Addr::new(10, 98, 0, 31))
        );
        assert_eq!(
            net.namespaces().len(),
            4,
            "hub, probe and two instances: {:?}",
            net.namespaces()
        );
        let mut ids: Vec<_> = listed.iter().map(|i| i.id.clone()).collect();
        ids.sort();
        assert_eq!(ids, [first.clone(), second.clone()]);
        let state = fs::read_to_string(config.dir.join("state.json")).unwrap();
        assert!(
            state.contains(key_b.as_str()) && !state.contains(TOKEN),
            "{state}"
        );

        // The switch is used up: the next create answers normally.
        let third = standby
            .create_instance(&keyed("lab-a", "edge-lab-a-02", &key("kokoa-edge-03")))
            .await
            .unwrap()
            .id;

        // Either provisioner destroys what the other made; nothing is left.
        for (lab, id) in [(&leader, &second), (&standby, &first), (&leader, &third)] {
            lab.destroy_instance(id).await.unwrap();
            assert_eq!(lab.instance_status(id).await.unwrap(), InstanceStatus::Gone);
        }
        assert_eq!(leader.list_instances(&tag).await.unwrap(), []);
        assert_eq!(standby.find_instance(&tag, &key_b).await.unwrap(), None);
    });
    assert_eq!(net.namespaces().len(), 2, "{:?}", net.namespaces());
}
