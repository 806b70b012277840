use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;

fn wg0() -> InterfaceName {
    InterfaceName::new("wg0").unwrap()
}

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn renders_the_documented_ruleset() {
    let rules = Rules::new(
        wg0(),
        "10.0.1.1".parse().unwrap(),
        ips(&["10.0.1.11", "10.0.1.10"]),
        BTreeSet::from([8080, 8000]),
    )
    .unwrap();
    assert_eq!(
        rules.render(),
        "\
# Kokoa Proxy origin agent: what may arrive through the WireGuard interface wg0.
# Replaced as a whole at each configuration change; do not edit.
table inet kokoa
delete table inet kokoa
table inet kokoa {
\tchain tunnel_in {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tiifname != \"wg0\" accept
\t\tct state established,related accept
\t\tip saddr { 10.0.1.10, 10.0.1.11 } ip daddr 10.0.1.1 tcp dport { 80, 8000, 8080 } accept
\t\tip saddr { 10.0.1.10, 10.0.1.11 } ip daddr 10.0.1.1 icmp type echo-request accept
\t\tdrop
\t}
}
"
    );
}

#[test]
fn the_redirect_sends_the_declared_ports_to_loopback_not_the_agents_own() {
    let rules = Rules::new(
        wg0(),
        "10.0.1.1".parse().unwrap(),
        ips(&["10.0.1.10"]),
        BTreeSet::from([8080, 8000]),
    )
    .unwrap()
    .redirecting(Ipv4Addr::LOCALHOST)
    .unwrap();
    assert_eq!(rules.redirect(), Some(Ipv4Addr::LOCALHOST));
    let text = rules.render();
    assert!(
        text.ends_with(
            "\t\tdrop\n\t}\n\tchain tunnel_redirect {\n\
             \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t\tiifname \"wg0\" ip saddr { 10.0.1.10 } ip daddr 10.0.1.1 tcp dport { 8000, 8080 } \
             dnat ip to 127.0.0.1\n\t}\n}\n"
        ),
        "{text}"
    );
    // Nothing to redirect: no chain (nft refuses an empty set).
    for (edges, ports) in [
        (ips(&[]), BTreeSet::from([8080])),
        (ips(&["10.0.1.10"]), BTreeSet::new()),
    ] {
        let text = Rules::new(wg0(), "10.0.1.1".parse().unwrap(), edges, ports)
            .unwrap()
            .redirecting(Ipv4Addr::LOCALHOST)
            .unwrap()
            .render();
        assert!(!text.contains("dnat"), "{text}");
    }
    let err = Rules::new(wg0(), "fd00::1".parse().unwrap(), ips(&[]), BTreeSet::new())
        .unwrap()
        .redirecting(Ipv4Addr::LOCALHOST)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fd00::1"), "{err}");
}

#[test]
fn without_edges_everything_new_is_dropped() {
    let rules = Rules::new(
        wg0(),
        "10.0.1.1".parse().unwrap(),
        BTreeSet::new(),
        BTreeSet::from([8080]),
    )
    .unwrap();
    let text = rules.render();
    assert!(!text.contains("saddr"), "{text}");
    assert!(text.contains("\t\tdrop\n"), "{text}");
}

#[test]
fn ipv6_tunnels_use_ip6_and_icmpv6() {
    let rules = Rules::new(
        wg0(),
        "fd00::1".parse().unwrap(),
        ips(&["fd00::10"]),
        BTreeSet::new(),
    )
    .unwrap();
    let text = rules.render();
    assert!(
        text.contains("ip6 saddr { fd00::10 } ip6 daddr fd00::1 tcp dport { 80 } accept"),
        "{text}"
    );
    assert!(text.contains("icmpv6 type echo-request accept"), "{text}");
}

#[test]
fn refuses_mixed_families_and_port_zero_naming_the_value() {
    let err = Rules::new(
        wg0(),
        "10.0.1.1".parse().unwrap(),
        ips(&["fd00::10"]),
        BTreeSet::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("fd00::10") && err.contains("10.0.1.1"),
        "{err}"
    );
    let err = Rules::new(
        wg0(),
        "10.0.1.1".parse().unwrap(),
        BTreeSet::new(),
        BTreeSet::from([0]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("port 0"), "{err}");
}

#[test]
fn a_missing_nft_is_a_clear_error() {
    let firewall = Firewall::with_command(vec!["/nonexistent/nft".to_owned()]);
    let rules = Rules::new(
        wg0(),
        "10.0.1.1".parse().unwrap(),
        BTreeSet::new(),
        BTreeSet::new(),
    )
    .unwrap();
    let err = firewall.apply(&rules).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/nft not found"), "{err}");
    assert!(err.contains("nftables"), "{err}");
}

#[test]
fn nft_refusing_names_the_command_and_its_message() {
    // `false` stands in for an nft that refuses: no output, exit status 1.
    let firewall = Firewall::with_command(vec!["false".to_owned()]);
    let err = firewall.remove(&wg0()).unwrap_err().to_string();
    assert!(
        err.contains("false delete table inet kokoa failed"),
        "{err}"
    );
}

#[test]
fn state_reads_as_heartbeats_send_it() {
    let json = |state: FirewallState| serde_json::to_value(state).unwrap();
    assert_eq!(json(FirewallState::On), "on");
    assert_eq!(json(FirewallState::Off), "off");
    assert_eq!(
        json(FirewallState::Failed("nft not found".into())),
        "failed: nft not found"
    );
}

/// What a rendered ruleset admits, read back from its text: (sources, destination,
/// TCP ports, whether ping is admitted), from the rules that name a source; and every
/// other rule's text.
fn admitted(
    text: &str,
) -> (
    BTreeSet<IpAddr>,
    BTreeSet<IpAddr>,
    BTreeSet<u16>,
    bool,
    Vec<String>,
) {
    let braces = |rule: &str, after: &str| -> Vec<String> {
        let rest = &rule[rule.find(after).unwrap() + after.len()..];
        let inner = &rest[rest.find('{').unwrap() + 1..rest.find('}').unwrap()];
        inner.split(',').map(|s| s.trim().to_owned()).collect()
    };
    let (mut sources, mut to, mut ports, mut ping) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new(), false);
    let mut others = Vec::new();
    let chain = text
        .lines()
        .skip_while(|l| !l.contains("chain tunnel_in"))
        .skip(1)
        .map(str::trim)
        .take_while(|l| *l != "}");
    for rule in chain {
        if !rule.contains("saddr") {
            others.push(rule.to_owned());
            continue;
        }
        for ip in braces(rule, "saddr") {
            sources.insert(ip.parse().unwrap());
        }
        let daddr = rule.split("daddr ").nth(1).unwrap();
        to.insert(daddr.split_whitespace().next().unwrap().parse().unwrap());
        if rule.contains("tcp dport") {
            for port in braces(rule, "dport") {
                ports.insert(port.parse().unwrap());
            }
        } else {
            assert!(rule.ends_with("icmp type echo-request accept"), "{rule}");
            ping = true;
        }
    }
    (sources, to, ports, ping, others)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every edge and every declared port is admitted, port 80 and ping too, and nothing
    /// else: the only other rules pass what is not from the tunnel, pass established
    /// traffic and drop the rest. The text depends on the sets only, not on how they were
    /// built.
    #[test]
    fn admits_exactly_the_edges_to_the_declared_ports(
        tunnel in any::<u32>(),
        edges in proptest::collection::vec(any::<u32>(), 1..20),
        ports in proptest::collection::vec(1..=u16::MAX, 0..30),
    ) {
        let tunnel_ip = IpAddr::V4(Ipv4Addr::from(tunnel));
        let edge_set: BTreeSet<IpAddr> =
            edges.iter().map(|e| IpAddr::V4(Ipv4Addr::from(*e))).collect();
        let port_set: BTreeSet<u16> = ports.iter().copied().collect();
        let rules = Rules::new(wg0(), tunnel_ip, edge_set.clone(), port_set.clone()).unwrap();
        let text = rules.render();

        let (sources, to, admitted_ports, ping, others) = admitted(&text);
        prop_assert_eq!(sources, edge_set);
        prop_assert_eq!(to, BTreeSet::from([tunnel_ip]));
        let mut wanted = port_set;
        wanted.insert(APPLICATION_PORT);
        prop_assert_eq!(&admitted_ports, &wanted);
        prop_assert_eq!(rules.ports(), &wanted);
        prop_assert!(ping);
        prop_assert_eq!(
            others,
            [
                "type filter hook prerouting priority mangle; policy accept;",
                "iifname != \"wg0\" accept",
                "ct state established,related accept",
                "drop",
            ]
        );
        prop_assert_eq!(text.matches("accept").count(), 5);

        // Stable: built from the same values in another order, the text is the same.
        let reversed = Rules::new(
            wg0(),
            tunnel_ip,
            edges.iter().rev().map(|e| IpAddr::V4(Ipv4Addr::from(*e))).collect(),
            ports.iter().rev().copied().collect(),
        )
        .unwrap();
        prop_assert_eq!(reversed.render(), text);
    }
}
