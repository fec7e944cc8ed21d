//! Table tests of allow-list parsing and matching, including the DNS-rebinding rule.

use std::net::IpAddr;

use super::*;

fn policy(entries: &[&str]) -> Policy {
    Policy::parse(entries).unwrap_or_else(|e| panic!("policy {entries:?}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn bad_entries_name_the_entry_and_the_problem() {
    let table: &[(&str, EntryProblem)] = &[
        ("api.example.com", EntryProblem::MissingPort),
        ("", EntryProblem::MissingPort),
        (":443", EntryProblem::EmptyHost),
        ("api.example.com:", EntryProblem::BadPort(String::new())),
        ("api.example.com:0", EntryProblem::BadPort("0".into())),
        ("api.example.com:65536", EntryProblem::BadPort("65536".into())),
        ("api.example.com:+443", EntryProblem::BadPort("+443".into())),
        ("api.example.com:https", EntryProblem::BadPort("https".into())),
        ("::1:443", EntryProblem::UnbracketedIpv6),
        ("[::1]", EntryProblem::MissingPort),
        ("[::1]443", EntryProblem::BadIpv6("[::1]443".into())),
        ("[::1:443", EntryProblem::BadIpv6("[::1:443".into())),
        ("[1.2.3.4]:443", EntryProblem::BadIpv6("[1.2.3.4]:443".into())),
        ("*:443", EntryProblem::BadWildcard),
        ("*.*.example.org:443", EntryProblem::BadWildcard),
        ("api.*.example.org:443", EntryProblem::BadWildcard),
        ("*example.org:443", EntryProblem::BadWildcard),
        ("*.10.0.0.1:443", EntryProblem::BadWildcard),
        ("127.1:80", EntryProblem::BadIpv4("127.1".into())),
        ("1.2.3.256:80", EntryProblem::BadIpv4("1.2.3.256".into())),
        ("2130706433:80", EntryProblem::BadIpv4("2130706433".into())),
        ("a.0x7f:80", EntryProblem::BadIpv4("a.0x7f".into())),
        ("api example.com:443", EntryProblem::BadName("api example.com".into())),
        ("-api.example.com:443", EntryProblem::BadName("-api.example.com".into())),
        ("api..example.com:443", EntryProblem::BadName("api..example.com".into())),
        ("api.example.com..:443", EntryProblem::BadName("api.example.com..".into())),
        ("http://api.example.com:443", EntryProblem::BadName("http://api.example.com".into())),
    ];
    for (entry, problem) in table {
        let err = Policy::parse(&["ok.example.com:1", entry]).expect_err(entry);
        assert_eq!(err, PolicyError { entry: entry.to_string(), problem: problem.clone() }, "{entry}");
    }
    let err = Policy::parse(&["api.example.com"]).expect_err("no port");
    assert_eq!(err.to_string(), r#""api.example.com": a port is required (HOST:PORT)"#);
}

#[test]
fn good_entries_parse() {
    let long_label = "a".repeat(63);
    let entries = [
        "api.example.com:443".to_string(),
        "API.Example.COM.:443".to_string(),
        "*.example.org:*".to_string(),
        "10.1.2.3:5432".to_string(),
        "[::1]:8080".to_string(),
        "[::ffff:10.0.0.1]:1".to_string(),
        "_srv.example.com:65535".to_string(),
        format!("{long_label}.com:80"),
        "localhost:80".to_string(),
    ];
    let p = Policy::parse(&entries).expect("valid entries");
    assert!(!p.is_empty());
    assert!(Policy::parse::<String>(&[]).expect("empty").is_empty());
}

#[test]
fn matching_table() {
    let p = policy(&[
        "api.example.com:443",
        "*.example.org:*",
        "10.1.2.3:5432",
        "[fd00::7]:8443",
        "127.0.0.1:9000",
        "[::ffff:192.0.2.1]:80",
    ]);
    let table: &[(&str, u16, bool)] = &[
        ("api.example.com", 443, true),
        ("API.EXAMPLE.com", 443, true),
        ("api.example.com.", 443, true),
        ("api.example.com", 80, false),
        ("example.com", 443, false),
        ("x.api.example.com", 443, false),
        ("evil-api.example.com", 443, false),
        ("api.example.com.evil.com", 443, false),
        ("a.example.org", 1, true),
        ("a.b.c.example.org", 65535, true),
        ("A.Example.Org.", 22, true),
        ("example.org", 443, false),
        ("badexample.org", 443, false),
        (".example.org", 443, false),
        ("10.1.2.3", 5432, true),
        ("10.1.2.3", 5433, false),
        ("::ffff:10.1.2.3", 5432, true),
        ("[::ffff:10.1.2.3]", 5432, true),
        ("[::ffff:a01:203]", 5432, true),
        ("fd00::7", 8443, true),
        ("[fd00::7]", 8443, true),
        ("[FD00:0::7]", 8443, true),
        ("fd00::8", 8443, false),
        ("127.0.0.1", 9000, true),
        ("[::ffff:127.0.0.1]", 9000, true),
        ("127.0.0.1", 9001, false),
        ("127.1", 9000, false),
        ("2130706433", 9000, false),
        ("localhost", 9000, false),
        ("::1", 9000, false),
        ("192.0.2.1", 80, true),
        ("", 443, false),
        ("api.example.com\0", 443, false),
        ("a b.example.org", 443, false),
    ];
    for (host, port, allowed) in table {
        assert_eq!(p.check(host, *port).is_ok(), *allowed, "{host}:{port}");
    }
}

#[test]
fn denial_messages() {
    let p = policy(&["api.example.com:443"]);
    let err = p.check("api.evil.com", 443).expect_err("denied");
    assert_eq!(err, DenyReason::NotAllowed { host: "api.evil.com".into(), port: 443 });
    assert_eq!(err.to_string(), "api.evil.com:443 is not in this VM's network allow-list");
    assert_eq!((err.host(), err.port()), ("api.evil.com", 443));
    let err = p.check("::1", 22).expect_err("denied");
    assert_eq!(err.to_string(), "[::1]:22 is not in this VM's network allow-list");
    let err = p.check_address("api.example.com", 443, ip("169.254.169.254")).expect_err("metadata");
    assert_eq!(
        err.to_string(),
        "api.example.com:443 resolves to 169.254.169.254, a link-local address (this includes cloud metadata), \
         which a name may not lead to (allow the address itself to reach it)"
    );
}

#[test]
fn names_may_not_resolve_to_restricted_addresses() {
    let p = policy(&["api.example.com:443", "*.corp.example:*"]);
    let table: &[(&str, bool)] = &[
        ("93.184.216.34", true),
        ("10.0.0.5", true),
        ("172.16.3.4", true),
        ("192.168.0.1", true),
        ("fd12::1", true),
        ("2606:2800:220:1::1", true),
        ("127.0.0.1", false),
        ("127.0.0.53", false),
        ("::1", false),
        ("::ffff:127.0.0.1", false),
        ("0.0.0.0", false),
        ("::", false),
        ("169.254.169.254", false),
        ("::ffff:169.254.169.254", false),
        ("fe80::1", false),
        ("224.0.0.251", false),
        ("ff02::fb", false),
        ("255.255.255.255", false),
    ];
    for (addr, allowed) in table {
        for host in ["api.example.com", "db.corp.example"] {
            let got = p.check_address(host, 443, ip(addr));
            assert_eq!(got.is_ok(), *allowed, "{host} -> {addr}: {got:?}");
            if let Err(reason) = got {
                assert!(matches!(reason, DenyReason::RestrictedAddress { .. }), "{reason:?}");
            }
        }
    }
}

#[test]
fn a_listed_restricted_ip_may_be_reached_by_name_on_its_port() {
    let p = policy(&["dev.internal.example:9000", "127.0.0.1:9000", "[::1]:9001"]);
    assert!(p.check_address("dev.internal.example", 9000, ip("127.0.0.1")).is_ok());
    assert!(p.check_address("dev.internal.example", 9000, ip("::ffff:127.0.0.1")).is_ok());
    // Listed for another port only.
    assert!(p.check_address("dev.internal.example", 9000, ip("::1")).is_err());
    assert!(p.check_address("dev.internal.example", 9000, ip("127.0.0.2")).is_err());
}

#[test]
fn ip_literal_destinations_are_their_own_address() {
    let p = policy(&["127.0.0.1:9000", "[::1]:9001"]);
    assert!(p.check("127.0.0.1", 9000).is_ok());
    assert!(p.check_address("127.0.0.1", 9000, ip("127.0.0.1")).is_ok());
    assert!(p.check("[::1]", 9001).is_ok());
    assert!(p.check_address("[::1]", 9001, ip("::1")).is_ok());
    assert!(p.check_address("::1", 9001, ip("::1")).is_ok());
}
