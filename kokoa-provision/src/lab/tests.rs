use proptest::prelude::*;

use super::*;

fn config(dir: &Path) -> LabConfig {
    LabConfig {
        hub_netns: "kl-hub".into(),
        bridge: "br0".into(),
        network: "10.99.0.0/24".parse().unwrap(),
        first_address: "10.99.0.30".parse().unwrap(),
        last_address: "10.99.0.60".parse().unwrap(),
        gateway: Some("10.99.0.1".parse().unwrap()),
        dir: dir.to_owned(),
        edge_binary: "/bin/sh".into(),
        nginx_binary: "/bin/sh".into(),
        wireguard: "wireguard-go".into(),
        netns_prefix: "kl-vps-".into(),
        regions: vec![Name::parse("lab-a").unwrap()],
    }
}

#[test]
fn configs_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(dir.path());
    good.check().unwrap();
    let bad = |change: fn(&mut LabConfig), field: &str| {
        let mut c = good.clone();
        change(&mut c);
        let err = c.check().unwrap_err().to_string();
        assert!(err.starts_with(&format!("invalid {field} ")), "{err}");
    };
    bad(|c| c.netns_prefix = "much-too-long-".into(), "netns_prefix");
    bad(|c| c.netns_prefix = "../".into(), "netns_prefix");
    bad(|c| c.hub_netns = "..".into(), "hub_netns");
    bad(|c| c.hub_netns = "a/b".into(), "hub_netns");
    bad(|c| c.bridge = "a-bridge-name-too-long".into(), "bridge");
    bad(|c| c.wireguard = "wireguard-go; reboot".into(), "wireguard");
    bad(
        |c| c.first_address = "10.99.1.30".parse().unwrap(),
        "address range",
    );
    bad(
        |c| c.first_address = "10.99.0.0".parse().unwrap(),
        "address range",
    );
    bad(
        |c| c.last_address = "10.99.0.255".parse().unwrap(),
        "address range",
    );
    bad(
        |c| c.last_address = "10.99.0.29".parse().unwrap(),
        "address range",
    );
    bad(
        |c| c.gateway = Some("10.99.0.40".parse().unwrap()),
        "gateway",
    );
    bad(
        |c| c.gateway = Some("10.98.0.1".parse().unwrap()),
        "gateway",
    );
    bad(|c| c.regions.clear(), "regions");
    bad(|c| c.dir = "relative".into(), "dir");
    bad(
        |c| c.edge_binary = "/no/such/kokoa-edge".into(),
        "edge_binary",
    );
    bad(|c| c.nginx_binary = "nginx".into(), "nginx_binary");
}

#[test]
fn configs_read_from_json_refuse_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(dir.path());
    let json = serde_json::to_value(&good).unwrap();
    assert_eq!(json["network"], "10.99.0.0/24");
    assert_eq!(
        serde_json::from_value::<LabConfig>(json.clone()).unwrap(),
        good
    );
    let mut unknown = json;
    unknown["size"] = "big".into();
    let err = serde_json::from_value::<LabConfig>(unknown).unwrap_err();
    assert!(err.to_string().contains("unknown field `size`"), "{err}");
}

#[test]
fn a_new_provisioner_reports_an_interrupted_bring_up_as_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host {
        address: "10.99.0.30".parse().unwrap(),
        region: Name::parse("lab-a").unwrap(),
        name: Name::parse("edge-lab-a-01").unwrap(),
        node_id: EdgeNodeId::parse("edg_1").unwrap(),
        agent: None,
        stopped: None,
        destroying: false,
        tags: vec![],
        idempotency_key: None,
        supervisor: None,
    };
    let id = InstanceId::parse("kl-vps-0").unwrap();
    let state = State {
        next: 1,
        instances: BTreeMap::from([(id.clone(), host)]),
    };
    fs::write(
        dir.path().join("state.json"),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
    let lab = LabProvisioner::new(config(dir.path())).unwrap();
    let state = lab.inner.lock().unwrap().state;
    assert_eq!(state.next, 1);
    let stopped = state.instances[&id].stopped.as_deref().unwrap();
    assert!(stopped.contains("cut short"), "{stopped}");
}

#[test]
fn a_bring_up_whose_process_lives_is_not_cut_short() {
    let mut host = Host {
        address: "10.99.0.30".parse().unwrap(),
        region: Name::parse("lab-a").unwrap(),
        name: Name::parse("edge-lab-a-01").unwrap(),
        node_id: EdgeNodeId::parse("edg_1").unwrap(),
        agent: None,
        stopped: None,
        destroying: false,
        tags: vec![Name::parse("kokoa").unwrap()],
        idempotency_key: Some(IdempotencyKey::parse("kokoa-edge-01").unwrap()),
        supervisor: Process::of(std::process::id()),
    };
    assert!(!host.cut_short(), "this process is still bringing it up");
    let me = host.supervisor.unwrap();
    host.supervisor = Some(Process {
        start_time: me.start_time + 1,
        ..me
    });
    assert!(
        host.cut_short(),
        "a process of the same pid started later is another one"
    );
    host.stopped = Some("enroll failed".into());
    assert!(!host.cut_short(), "it stopped for a reason of its own");
    // Written by this version and read back; older state files lack the new fields.
    let json = serde_json::to_value(&host).unwrap();
    assert_eq!(json["idempotency_key"], "kokoa-edge-01");
    assert_eq!(json["tags"], serde_json::json!(["kokoa"]));
    let mut old = json;
    for field in ["tags", "idempotency_key", "supervisor"] {
        old.as_object_mut().unwrap().remove(field);
    }
    let read: Host = serde_json::from_value(old).unwrap();
    assert!(read.tags.is_empty() && read.idempotency_key.is_none() && read.supervisor.is_none());
}

#[test]
fn the_lock_keeps_holders_apart_and_writes_are_whole() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabProvisioner::new(config(dir.path())).unwrap();
    // Two provisioners over one directory, each counting up from many threads: without the
    // lock and the fresh read, counts would be lost.
    let other = LabProvisioner::new(config(dir.path())).unwrap();
    std::thread::scope(|scope| {
        for lab in [&lab, &other, &lab, &other] {
            scope.spawn(move || {
                for _ in 0..50 {
                    let mut locked = lab.inner.lock().unwrap();
                    locked.state.next += 1;
                    locked.save().unwrap();
                }
            });
        }
    });
    assert_eq!(other.inner.lock().unwrap().state.next, 200);
    assert!(dir.path().join("lock").exists());
    assert!(
        !dir.path().join("state.json.new").exists(),
        "the temporary file was renamed"
    );
    // Held, the lock keeps another open of the file out.
    let held = lab.inner.lock().unwrap();
    let probe = File::open(dir.path().join("lock")).unwrap();
    assert!(probe.try_lock().is_err(), "the lock is not held");
    drop(held);
    probe.try_lock().unwrap();
}

#[test]
fn another_process_holding_the_lock_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let lab = LabProvisioner::new(config(dir.path())).unwrap();
    let lock = dir.path().join("lock");
    // util-linux flock(1) takes the same flock(2) lock from another process.
    let busy = |lock: &Path| {
        std::process::Command::new("flock")
            .args(["--nonblock", "--conflict-exit-code", "9"])
            .arg(lock)
            .arg("true")
            .status()
            .expect("flock(1) runs: apt-get install -y util-linux")
            .code()
    };
    let held = lab.inner.lock().unwrap();
    assert_eq!(
        busy(&lock),
        Some(9),
        "another process got the lock while it was held"
    );
    drop(held);
    assert_eq!(busy(&lock), Some(0));

    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sleep", "0.5"])
        .spawn()
        .unwrap();
    // Until flock(1) holds it, the lock is free: wait for that.
    let started = Instant::now();
    while busy(&lock) != Some(9) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "flock(1) never took the lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let waited = Instant::now();
    let state = lab.inner.lock().unwrap().state;
    assert!(
        waited.elapsed() >= Duration::from_millis(200),
        "the state was read while another process held the lock ({:?})",
        waited.elapsed()
    );
    assert_eq!(state.next, 0);
    holder.wait().unwrap();
}

#[test]
fn a_damaged_state_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("state.json"), "{\"next\": ").unwrap();
    let err = LabProvisioner::new(config(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("state.json is damaged"), "{err}");
    assert!(err.contains("kl-vps-*"), "{err}");
}

#[test]
fn stat_fields_are_counted_after_the_command_name() {
    let line = "77 (a (b) c) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
    assert_eq!(parse_stat(line), Some(98765));
    assert_eq!(parse_stat(&line.replace(") S ", ") Z ")), None);
    assert_eq!(parse_stat("garbage"), None);
    let me = Process::of(std::process::id()).unwrap();
    assert!(me.alive());
    assert!(
        !Process {
            start_time: me.start_time + 1,
            ..me
        }
        .alive()
    );
}

proptest! {
    /// Addresses taken and given back in any order: a new one is always free and in the
    /// range, and none is left only when every one is taken.
    #[test]
    fn addresses_are_never_handed_out_twice(
        size in 1u32..40,
        steps in proptest::collection::vec(any::<(bool, prop::sample::Index)>(), 0..120),
    ) {
        let first = Ipv4Addr::new(10, 99, 0, 30);
        let last = Ipv4Addr::from(u32::from(first) + size - 1);
        let mut used = BTreeSet::new();
        for (take, which) in steps {
            if take || used.is_empty() {
                match free_address(first, last, &used) {
                    Some(a) => {
                        prop_assert!((first..=last).contains(&a));
                        prop_assert!(used.insert(a), "{} handed out twice", a);
                    }
                    None => prop_assert_eq!(used.len() as u32, size),
                }
            } else {
                let a = *used.iter().nth(which.index(used.len())).unwrap();
                used.remove(&a);
            }
        }
    }
}
