use clap::Parser;

use super::*;

#[derive(Parser)]
struct T {
    #[command(flatten)]
    a: InitArgs,
}

fn args(extra: &[&str]) -> InitArgs {
    let mut v = vec!["t"];
    v.extend_from_slice(extra);
    T::parse_from(v).a
}

#[test]
fn rules_in_order() {
    let a = args(&[
        "--skip-inbound-ports",
        "22,8081",
        "--skip-outbound-ports",
        "5432",
        "--skip-cidrs",
        "10.1.2.3/16,fd00:1::5/64",
        "--proxy-uid",
        "2102",
    ]);
    let rendered: Vec<String> = chain_rules(&a, Family::V4)
        .iter()
        .map(|r| r.render("iptables"))
        .collect();
    assert_eq!(
        rendered,
        [
            "iptables -t nat -A VIGIL_INBOUND -p tcp -m multiport --dports 22,4191,8081 -j RETURN",
            "iptables -t nat -A VIGIL_INBOUND -p tcp -j REDIRECT --to-ports 4143",
            "iptables -t nat -A VIGIL_OUTBOUND -m owner --uid-owner 2102 -j RETURN",
            "iptables -t nat -A VIGIL_OUTBOUND -o lo -j RETURN",
            "iptables -t nat -A VIGIL_OUTBOUND -d 127.0.0.0/8 -j RETURN",
            "iptables -t nat -A VIGIL_OUTBOUND -d 10.1.0.0/16 -j RETURN",
            "iptables -t nat -A VIGIL_OUTBOUND -p tcp -m multiport --dports 5432 -j RETURN",
            "iptables -t nat -A VIGIL_OUTBOUND -p tcp -j REDIRECT --to-ports 4140",
        ]
    );
}

#[test]
fn ipv6_rules_mirror_ipv4_with_their_own_loopback_and_cidrs() {
    let a = args(&["--skip-cidrs", "10.1.2.3/16,fd00:1::5/64,2001:db8::/32"]);
    let rendered: Vec<String> = chain_rules(&a, Family::V6)
        .iter()
        .map(|r| r.render("ip6tables"))
        .collect();
    assert_eq!(
        rendered,
        [
            "ip6tables -t nat -A VIGIL_INBOUND -p tcp -m multiport --dports 4191 -j RETURN",
            "ip6tables -t nat -A VIGIL_INBOUND -p tcp -j REDIRECT --to-ports 4143",
            "ip6tables -t nat -A VIGIL_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
            "ip6tables -t nat -A VIGIL_OUTBOUND -o lo -j RETURN",
            "ip6tables -t nat -A VIGIL_OUTBOUND -d ::1/128 -j RETURN",
            "ip6tables -t nat -A VIGIL_OUTBOUND -d fd00:1::/64 -j RETURN",
            "ip6tables -t nat -A VIGIL_OUTBOUND -d 2001:db8::/32 -j RETURN",
            "ip6tables -t nat -A VIGIL_OUTBOUND -p tcp -j REDIRECT --to-ports 4140",
        ]
    );
}

#[test]
fn routable_ipv6_means_global_scope_and_not_loopback() {
    let table = "\
00000000000000000000000000000001 01 80 10 80       lo
fe80000000000000b0c1fffffe2a3b4c 02 40 20 80     eth0
fd000000000000000000000000000002 02 40 00 80     eth0
";
    assert_eq!(
        parse_if_inet6(table),
        ["fd00::2".parse::<Ipv6Addr>().unwrap()]
    );
    let v4_cluster = "\
00000000000000000000000000000001 01 80 10 80       lo
fe80000000000000b0c1fffffe2a3b4c 02 40 20 80     eth0
";
    assert!(parse_if_inet6(v4_cluster).is_empty());
}

#[test]
fn ipv6_on_fails_without_ip6tables_and_off_never_runs_it() {
    let on = args(&["--dry-run", "--ipv6", "on"]);
    let shown = run(&on).unwrap();
    assert!(
        shown
            .iter()
            .any(|l| l.starts_with("ip6tables -t nat -N VIGIL_INBOUND"))
    );
    let off = args(&["--dry-run", "--ipv6", "off"]);
    assert!(
        !run(&off)
            .unwrap()
            .iter()
            .any(|l| l.starts_with("ip6tables"))
    );
    let missing = args(&[
        "--ipv6",
        "on",
        "--iptables",
        "true",
        "--ip6tables",
        "/nonexistent/ip6tables",
    ]);
    let err = run(&missing).unwrap_err();
    assert!(
        matches!(err, InitError::NotFound(ref b) if b.contains("ip6tables")),
        "{err}"
    );
}

#[test]
fn many_ports_are_split_for_multiport() {
    let ports: Vec<String> = (1..=20).map(|p| p.to_string()).collect();
    let a = args(&["--skip-outbound-ports", &ports.join(",")]);
    let n = chain_rules(&a, Family::V4)
        .iter()
        .filter(|r| {
            r.0.contains(&"multiport".to_string()) && r.0.contains(&OUTBOUND_CHAIN.to_string())
        })
        .count();
    assert_eq!(n, 2);
}

#[test]
fn dry_run_prints_and_runs_nothing() {
    let a = args(&["--dry-run", "--iptables", "/nonexistent/iptables"]);
    let shown = run(&a).unwrap();
    assert!(shown.iter().any(|l| l.contains("-N VIGIL_INBOUND")));
    assert!(
        shown
            .last()
            .unwrap()
            .contains("-C OUTPUT -p tcp -j VIGIL_OUTBOUND")
    );
}

#[test]
fn missing_binary_is_a_clear_error() {
    let a = args(&["--iptables", "/nonexistent/iptables"]);
    let err = run(&a).unwrap_err();
    assert!(matches!(err, InitError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("install iptables"));
}
