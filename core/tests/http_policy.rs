//! Behaviour of `integration_core::http_policy`: every non-public range is refused at its
//! boundaries, embedded IPv4 is seen through, URL tricks land on the host actually
//! contacted, allowlists match as documented and bad settings say what is wrong.

use std::net::IpAddr;

use integration_core::http_policy::{
    blocked_reason, parse_host_list, parse_network_list, HostPattern, Network, Policy, PolicyError,
    DEFAULT_MAX_RESPONSE_BYTES,
};
use url::Url;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn url(text: &str) -> Url {
    Url::parse(text).expect("test URL")
}

fn hosts(list: &str) -> Policy {
    Policy {
        allowed_hosts: parse_host_list(list).expect("test host list"),
        ..Policy::default()
    }
}

fn networks(list: &str) -> Policy {
    Policy {
        allowed_networks: parse_network_list(list).expect("test network list"),
        ..Policy::default()
    }
}

fn kind(result: Result<(), PolicyError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(e) => e.kind(),
    }
}

fn assert_reasons(cases: &[(&str, Option<&str>)]) {
    let mut wrong = Vec::new();
    for (addr, expected) in cases {
        let got = blocked_reason(ip(addr));
        if got != *expected {
            wrong.push(format!("{addr}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

const PUBLIC: Option<&str> = None;

#[test]
fn ipv4_ranges_are_judged_at_both_boundaries() {
    assert_reasons(&[
        ("0.0.0.0", Some("unspecified")),
        ("0.255.255.255", Some("unspecified")),
        ("1.0.0.0", PUBLIC),
        ("9.255.255.255", PUBLIC),
        ("10.0.0.0", Some("private")),
        ("10.255.255.255", Some("private")),
        ("11.0.0.0", PUBLIC),
        ("100.63.255.255", PUBLIC),
        ("100.64.0.0", Some("carrier-grade NAT")),
        ("100.127.255.255", Some("carrier-grade NAT")),
        ("100.128.0.0", PUBLIC),
        ("126.255.255.255", PUBLIC),
        ("127.0.0.0", Some("loopback")),
        ("127.0.0.1", Some("loopback")),
        ("127.255.255.255", Some("loopback")),
        ("128.0.0.0", PUBLIC),
        ("169.253.255.255", PUBLIC),
        ("169.254.0.0", Some("link-local")),
        ("169.254.169.253", Some("link-local")),
        ("169.254.255.255", Some("link-local")),
        ("169.255.0.0", PUBLIC),
        ("172.15.255.255", PUBLIC),
        ("172.16.0.0", Some("private")),
        ("172.31.255.255", Some("private")),
        ("172.32.0.0", PUBLIC),
        ("191.255.255.255", PUBLIC),
        ("192.0.0.0", Some("reserved")),
        ("192.0.0.255", Some("reserved")),
        ("192.0.1.0", PUBLIC),
        ("192.0.1.255", PUBLIC),
        ("192.0.2.0", Some("documentation")),
        ("192.0.2.255", Some("documentation")),
        ("192.0.3.0", PUBLIC),
        ("192.88.98.255", PUBLIC),
        ("192.88.99.0", Some("reserved")),
        ("192.88.99.255", Some("reserved")),
        ("192.88.100.0", PUBLIC),
        ("192.167.255.255", PUBLIC),
        ("192.168.0.0", Some("private")),
        ("192.168.255.255", Some("private")),
        ("192.169.0.0", PUBLIC),
        ("198.17.255.255", PUBLIC),
        ("198.18.0.0", Some("benchmarking")),
        ("198.19.255.255", Some("benchmarking")),
        ("198.20.0.0", PUBLIC),
        ("198.51.99.255", PUBLIC),
        ("198.51.100.0", Some("documentation")),
        ("198.51.100.255", Some("documentation")),
        ("198.51.101.0", PUBLIC),
        ("203.0.112.255", PUBLIC),
        ("203.0.113.0", Some("documentation")),
        ("203.0.113.255", Some("documentation")),
        ("203.0.114.0", PUBLIC),
        ("223.255.255.255", PUBLIC),
        ("224.0.0.0", Some("multicast")),
        ("239.255.255.255", Some("multicast")),
        ("240.0.0.0", Some("reserved")),
        ("255.255.255.254", Some("reserved")),
        ("255.255.255.255", Some("broadcast")),
        ("8.8.8.8", PUBLIC),
        ("1.1.1.1", PUBLIC),
    ]);
}

#[test]
fn cloud_metadata_endpoints_are_named_as_such() {
    assert_reasons(&[
        ("169.254.169.254", Some("cloud metadata")),
        ("169.254.170.2", Some("cloud metadata")),
        ("169.254.170.23", Some("cloud metadata")),
        ("100.100.100.200", Some("cloud metadata")),
        ("100.100.100.199", Some("carrier-grade NAT")),
        ("192.0.0.192", Some("cloud metadata")),
        ("168.63.129.16", Some("cloud metadata")),
        ("168.63.129.15", PUBLIC),
        ("168.63.129.17", PUBLIC),
        ("fd00:ec2::254", Some("cloud metadata")),
        ("fd00:ec2::23", Some("cloud metadata")),
        ("fd00:ec2::253", Some("unique local")),
        ("fd20:ce::254", Some("cloud metadata")),
        ("::ffff:169.254.169.254", Some("cloud metadata")),
        ("64:ff9b::a9fe:a9fe", Some("cloud metadata")),
    ]);
}

#[test]
fn ipv6_ranges_are_judged_at_both_boundaries() {
    assert_reasons(&[
        ("::", Some("unspecified")),
        ("::1", Some("loopback")),
        ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("reserved")),
        ("2000::", PUBLIC),
        ("2000::1", PUBLIC),
        ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", Some("reserved")),
        ("2001:200::", PUBLIC),
        ("2001:2::", Some("benchmarking")),
        ("2001:2:0:ffff:ffff:ffff:ffff:ffff", Some("benchmarking")),
        ("2001:2:1::", Some("reserved")),
        ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC),
        ("2001:db8::", Some("documentation")),
        (
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("documentation"),
        ),
        ("2001:db9::", PUBLIC),
        ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC),
        ("3fff::", Some("documentation")),
        (
            "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("documentation"),
        ),
        ("3fff:1000::", PUBLIC),
        ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC),
        ("4000::", Some("reserved")),
        ("100::1", Some("reserved")),
        ("5f00::1", Some("reserved")),
        ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("reserved")),
        ("fc00::", Some("unique local")),
        ("fd12:3456::1", Some("unique local")),
        (
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("unique local"),
        ),
        ("fe00::", Some("reserved")),
        ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("reserved")),
        ("fe80::", Some("link-local")),
        ("fe80::1", Some("link-local")),
        (
            "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("link-local"),
        ),
        ("fec0::", Some("site-local")),
        (
            "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("site-local"),
        ),
        ("ff00::", Some("multicast")),
        ("ff02::1", Some("multicast")),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("multicast")),
        ("2606:4700:4700::1111", PUBLIC),
        ("2a00:1450:4001:80e::200e", PUBLIC),
    ]);
}

#[test]
fn ipv6_forms_carrying_ipv4_are_judged_by_the_ipv4_address() {
    assert_reasons(&[
        // IPv4-mapped
        ("::ffff:127.0.0.1", Some("loopback")),
        ("::ffff:10.0.0.1", Some("private")),
        ("::ffff:172.16.0.1", Some("private")),
        ("::ffff:0.0.0.0", Some("unspecified")),
        ("::ffff:8.8.8.8", PUBLIC),
        // IPv4-compatible (deprecated)
        ("::127.0.0.1", Some("loopback")),
        ("::192.168.1.1", Some("private")),
        ("::2", Some("unspecified")),
        ("::8.8.8.8", PUBLIC),
        // NAT64 well-known prefix; the local-use prefix is not public at all
        ("64:ff9b::7f00:1", Some("loopback")),
        ("64:ff9b::10.1.2.3", Some("private")),
        ("64:ff9b::808:808", PUBLIC),
        ("64:ff9b:1::808:808", Some("reserved")),
        // 6to4
        ("2002:7f00:1::", Some("loopback")),
        ("2002:c0a8:101::1", Some("private")),
        ("2002:a9fe:a9fe::1", Some("cloud metadata")),
        ("2002:808:808::1", PUBLIC),
        // Teredo: server 65.54.227.120 in clear, client address bit-inverted
        (
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            Some("documentation"),
        ), // client 192.0.2.45
        ("2001:0:4136:e378::80ff:fffe", Some("loopback")), // client 127.0.0.1
        ("2001:0:a00:1::f7f7:f7f7", Some("private")),      // server 10.0.0.1
        ("2001:0:4136:e378::f7f7:f7f7", PUBLIC),           // client 8.8.8.8
    ]);
}

#[test]
fn urls_the_url_crate_rewrites_into_internal_addresses_are_refused() {
    let policy = Policy::default();
    for text in [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://127.0.0.1./",
        "http://%31%32%37.0.0.1/",
        "http://\u{2460}\u{2461}\u{2466}.0.0.1/", // circled digits, mapped by IDNA
        "http://0/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[0:0:0:0:0:ffff:7f00:1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/",
        "https://10.0.0.1:8443/",
        "http://[fe80::1]/",
    ] {
        let result = policy.check_url(&url(text));
        assert_eq!(kind(result), "address_blocked", "{text}");
    }
    assert_eq!(kind(policy.check_url(&url("https://8.8.8.8/"))), "ok");
    assert_eq!(
        kind(policy.check_url(&url("https://[2606:4700:4700::1111]/"))),
        "ok"
    );
    assert_eq!(kind(policy.check_url(&url("https://example.com/"))), "ok");
}

#[test]
fn only_http_and_https_are_fetched() {
    let policy = Policy::default();
    for text in [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "ws://example.com/",
        "data:text/plain,hi",
        "javascript:alert(1)",
        "dict://127.0.0.1:6379/",
    ] {
        assert_eq!(
            kind(policy.check_url(&url(text))),
            "scheme_not_allowed",
            "{text}"
        );
    }
    assert_eq!(kind(policy.check_url(&url("HTTPS://EXAMPLE.COM/"))), "ok");
    let err = policy.check_url(&url("file:///etc/passwd")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "URL scheme \"file\" is not allowed; only http and https are"
    );
}

#[test]
fn credentials_in_the_url_are_refused_without_echoing_them() {
    let policy = hosts("allowed.com");
    for text in [
        "http://allowed.com@evil.com/",
        "http://allowed.com:443@evil.com/",
        "http://user:s3cret@allowed.com/",
        "http://:s3cret@allowed.com/",
        "http://user@allowed.com/",
    ] {
        let err = policy.check_url(&url(text)).unwrap_err();
        assert_eq!(err.kind(), "userinfo_in_url", "{text}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
    let err = policy
        .check_url(&url("http://allowed.com@evil.com/"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "URL for host \"evil.com\" carries a user name or password; \
         send credentials in a header (e.g. Authorization) instead"
    );
}

#[test]
fn url_tricks_are_judged_on_the_host_actually_contacted() {
    let policy = hosts("allowed.com, *.allowed.com");
    let cases = [
        // After '#' or '?' the rest is not the authority.
        ("http://evil.com#@allowed.com/", "host_not_allowed"),
        ("http://evil.com?@allowed.com/", "host_not_allowed"),
        // A backslash ends the host in http(s) URLs, for us and for the client alike.
        ("http://allowed.com\\@evil.com/", "ok"),
        ("http://evil.com\\.allowed.com/", "host_not_allowed"),
        // Percent-encoded dots are decoded in the host.
        ("http://allowed.com%2eevil.com/", "host_not_allowed"),
        ("http://evil%2Eallowed.com/", "ok"),
        ("http://allowed.com.evil.com/", "host_not_allowed"),
        ("http://evilallowed.com/", "host_not_allowed"),
        ("http://evil.com/allowed.com", "host_not_allowed"),
        ("http://evil.com/?u=http://allowed.com/", "host_not_allowed"),
        ("http://ALLOWED.COM./", "ok"),
        ("http://a.b.allowed.com:8080/", "ok"),
    ];
    for (text, expected) in cases {
        assert_eq!(kind(policy.check_url(&url(text))), expected, "{text}");
    }
    let err = policy
        .check_url(&url("http://evil.com\\.allowed.com/"))
        .unwrap_err();
    assert_eq!(
        err,
        PolicyError::HostNotAllowed {
            host: "evil.com".into(),
            port: 80
        }
    );
}

#[test]
fn wildcards_match_subdomains_but_not_the_apex() {
    let wildcard = HostPattern::parse("*.example.com").unwrap();
    assert!(wildcard.matches("api.example.com", Some(443)));
    assert!(wildcard.matches("a.b.example.com", Some(443)));
    assert!(wildcard.matches("API.Example.COM.", Some(443)));
    assert!(!wildcard.matches("example.com", Some(443)));
    assert!(!wildcard.matches(".example.com", Some(443)));
    assert!(!wildcard.matches("badexample.com", Some(443)));
    assert!(!wildcard.matches("example.com.evil.net", Some(443)));
    assert!(!wildcard.matches("com", Some(443)));

    let apex = HostPattern::parse("Example.COM.").unwrap();
    assert_eq!(apex.to_string(), "example.com");
    assert!(apex.matches("example.com", Some(80)));
    assert!(apex.matches("EXAMPLE.com.", Some(80)));
    assert!(!apex.matches("www.example.com", Some(80)));
    assert!(!apex.matches("example.co", Some(80)));

    // A URL without a known port matches only entries that name none.
    assert!(apex.matches("example.com", None));
    assert!(!HostPattern::parse("example.com:443")
        .unwrap()
        .matches("example.com", None));
}

#[test]
fn ports_restrict_only_when_written() {
    let policy = hosts("example.com:8443, api.example.org:443, other.net");
    let cases = [
        ("https://example.com:8443/", "ok"),
        ("https://example.com/", "host_not_allowed"),
        ("http://example.com:8443/", "ok"),
        ("https://api.example.org/", "ok"),
        ("https://api.example.org:443/", "ok"),
        ("http://api.example.org/", "host_not_allowed"),
        ("http://api.example.org:443/", "ok"),
        ("http://other.net:1234/", "ok"),
        ("https://other.net/", "ok"),
    ];
    for (text, expected) in cases {
        assert_eq!(kind(policy.check_url(&url(text))), expected, "{text}");
    }
    let err = policy.check_url(&url("https://example.com/")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "host \"example.com\" (port 443) is not in integration.http_allowed_hosts; \
         an administrator can add it with ALTER ROLE or ALTER DATABASE ... SET integration.http_allowed_hosts"
    );
}

#[test]
fn international_names_match_in_either_spelling() {
    let unicode = HostPattern::parse("Bücher.example").unwrap();
    assert_eq!(unicode.to_string(), "xn--bcher-kva.example");
    let punycode = HostPattern::parse("xn--bcher-kva.example").unwrap();
    assert_eq!(unicode, punycode);
    let wildcard = HostPattern::parse("*.bücher.example:8443").unwrap();
    assert_eq!(wildcard.to_string(), "*.xn--bcher-kva.example:8443");

    let policy = hosts("bücher.example, *.bücher.example");
    for text in [
        "http://bücher.example/",
        "http://BÜCHER.example/",
        "http://xn--bcher-kva.example/",
        "http://shop.bücher.example/",
        "http://bücher\u{3002}example/", // ideographic full stop
    ] {
        assert_eq!(kind(policy.check_url(&url(text))), "ok", "{text}");
    }
    assert_eq!(
        kind(policy.check_url(&url("http://bucher.example/"))),
        "host_not_allowed"
    );
}

#[test]
fn a_bare_star_or_an_empty_list_allows_any_public_host() {
    for policy in [hosts(""), hosts("  , "), hosts("*"), Policy::default()] {
        assert_eq!(
            kind(policy.check_url(&url("https://anything.example/"))),
            "ok"
        );
        // The address gate stays closed.
        assert_eq!(
            kind(policy.check_url(&url("http://127.0.0.1/"))),
            "address_blocked"
        );
    }
    let any_on_port = hosts("*:8443");
    assert_eq!(
        kind(any_on_port.check_url(&url("https://a.example:8443/"))),
        "ok"
    );
    assert_eq!(
        kind(any_on_port.check_url(&url("https://a.example/"))),
        "host_not_allowed"
    );
}

#[test]
fn ip_literal_patterns_match_the_normalised_url_host() {
    let policy = Policy {
        allowed_hosts: parse_host_list("10.0.0.5, [::1]:8080, fd00::7").unwrap(),
        allowed_networks: parse_network_list("10.0.0.0/8, ::1, fd00::/8").unwrap(),
        ..Policy::default()
    };
    let cases = [
        ("http://10.0.0.5/", "ok"),
        ("http://167772165/", "ok"), // 10.0.0.5 as one number
        ("http://10.0.0.6/", "host_not_allowed"),
        ("http://[::1]:8080/", "ok"),
        ("http://[0:0::1]:8080/", "ok"),
        ("http://[::1]/", "host_not_allowed"),
        ("http://[FD00::7]/", "ok"),
    ];
    for (text, expected) in cases {
        assert_eq!(kind(policy.check_url(&url(text))), expected, "{text}");
    }
    // Being on the host list does not unblock the address: the two gates are independent.
    let listed_only = hosts("10.0.0.5");
    assert_eq!(
        kind(listed_only.check_url(&url("http://10.0.0.5/"))),
        "address_blocked"
    );
}

#[test]
fn host_lists_parse_commas_and_spaces() {
    let list =
        parse_host_list(" api.example.com,*.example.org\texample.net:8443 ,, [::1]:80\n").unwrap();
    let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "api.example.com",
            "*.example.org",
            "example.net:8443",
            "[::1]:80"
        ]
    );
    assert!(parse_host_list("").unwrap().is_empty());
}

#[test]
fn bad_host_entries_say_what_is_wrong() {
    let cases = [
        ("https://example.com", "without scheme or path"),
        ("example.com/api", "without scheme or path"),
        ("example.com\\api", "without scheme or path"),
        ("user@example.com", "without a user name"),
        ("*example.com", "'*' is allowed only"),
        ("foo.*.com", "'*' is allowed only"),
        ("*.*.example.com", "'*' is allowed only"),
        ("**", "'*' is allowed only"),
        ("*.", "empty host name"),
        ("example.com:0", "port must be a number from 1 to 65535"),
        ("example.com:65536", "port must be a number from 1 to 65535"),
        ("example.com:", "port must be a number from 1 to 65535"),
        ("example.com:+80", "port must be a number from 1 to 65535"),
        ("example.com:80a", "port must be a number from 1 to 65535"),
        ("[::1", "'[' without a closing ']'"),
        ("[::1]x", "unexpected text after ']'"),
        ("*.10.0.0.1", "cannot be put before an IP address"),
        ("example..com", "empty label"),
        ("ex<ample.com", "not a valid host name"),
        ("exa%mple.com", "not a valid host name"),
        ("[not:an:ip]", "not a valid host name"),
    ];
    for (entry, why) in cases {
        let err = HostPattern::parse(entry).expect_err(entry);
        assert_eq!(err.kind(), "bad_host_pattern", "{entry}");
        let message = err.to_string();
        assert!(message.contains(why), "{entry}: {message}");
        assert!(
            message.starts_with(&format!("invalid host entry {entry:?}: ")),
            "{message}"
        );
    }
    // The message does not name a setting: the same syntax serves several GUCs.
    assert_eq!(
        HostPattern::parse("example.com:0").unwrap_err().to_string(),
        "invalid host entry \"example.com:0\": the port must be a number from 1 to 65535"
    );
    // One bad entry fails the whole list, naming that entry.
    let err = parse_host_list("good.example, bad/entry").unwrap_err();
    assert!(err.to_string().contains("\"bad/entry\""), "{err}");
}

#[test]
fn network_lists_parse_cidr_and_bare_addresses() {
    let list =
        parse_network_list("127.0.0.1/32, ::1/128 10.0.0.0/8,fd00::/8 192.168.1.7 ::1 0.0.0.0/0")
            .unwrap();
    let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "127.0.0.1/32",
            "::1/128",
            "10.0.0.0/8",
            "fd00::/8",
            "192.168.1.7/32",
            "::1/128",
            "0.0.0.0/0"
        ]
    );
    assert!(parse_network_list(" , ").unwrap().is_empty());
    // IPv4-mapped networks become the IPv4 network they stand for.
    let mapped = Network::parse("::ffff:10.0.0.0/104").unwrap();
    assert_eq!(mapped.to_string(), "10.0.0.0/8");
    assert!(mapped.contains(ip("10.1.2.3")));
    assert!(Network::parse("[fd00::]/8").is_ok());
}

#[test]
fn network_containment_at_the_edges() {
    let net = Network::parse("172.16.0.0/12").unwrap();
    assert!(!net.contains(ip("172.15.255.255")));
    assert!(net.contains(ip("172.16.0.0")));
    assert!(net.contains(ip("172.31.255.255")));
    assert!(!net.contains(ip("172.32.0.0")));
    assert!(net.contains(ip("::ffff:172.20.0.1")));
    assert!(!net.contains(ip("fd00::1")));

    let v6 = Network::parse("fd00:1234::/32").unwrap();
    assert!(!v6.contains(ip("fd00:1233:ffff:ffff:ffff:ffff:ffff:ffff")));
    assert!(v6.contains(ip("fd00:1234::")));
    assert!(v6.contains(ip("fd00:1234:ffff:ffff:ffff:ffff:ffff:ffff")));
    assert!(!v6.contains(ip("fd00:1235::")));

    assert!(Network::parse("0.0.0.0/0")
        .unwrap()
        .contains(ip("255.255.255.255")));
    assert!(Network::parse("::/0").unwrap().contains(ip("fe80::1")));
    assert!(!Network::parse("::/0").unwrap().contains(ip("127.0.0.1")));
}

#[test]
fn bad_network_entries_say_what_is_wrong() {
    let cases = [
        ("10.0.0.0/33", "prefix length /33 is larger than 32"),
        ("::/129", "prefix length /129 is larger than 128"),
        ("10.0.0.0/255", "is larger than 32"),
        (
            "10.0.0.5/8",
            "10.0.0.5 has bits set past /8; did you mean 10.0.0.0/8?",
        ),
        ("fd00::1/8", "did you mean fd00::/8?"),
        ("10.0.0.0/", "must be a number from 0 to 32"),
        ("10.0.0.0/+8", "must be a number from 0 to 32"),
        ("10.0.0.0/-1", "must be a number from 0 to 32"),
        ("10.0.0.0/8/9", "must be a number from 0 to 32"),
        ("::/0008", "must be a number from 0 to 128"),
        ("10.1/16", "not an IP address"),
        ("0x7f.0.0.1", "not an IP address"),
        ("example.com", "not an IP address"),
        ("fe80::1%eth0", "not an IP address"),
        ("/8", "not an IP address"),
    ];
    for (entry, why) in cases {
        let err = Network::parse(entry).expect_err(entry);
        assert_eq!(err.kind(), "bad_network", "{entry}");
        let message = err.to_string();
        assert!(message.contains(why), "{entry}: {message}");
        assert!(
            message.starts_with(&format!("invalid network entry {entry:?}: ")),
            "{message}"
        );
    }
    let long = format!("{}/8", "1".repeat(500));
    let message = Network::parse(&long).unwrap_err().to_string();
    assert!(message.len() < 300, "long entries are shortened: {message}");
}

#[test]
fn allowed_networks_unblock_resolved_addresses() {
    let policy = networks("10.0.0.0/8, fd00::/8, ::1");
    assert_eq!(kind(policy.check_ip("svc.internal", ip("10.0.0.5"))), "ok");
    assert_eq!(
        kind(policy.check_ip("svc.internal", ip("::ffff:10.0.0.5"))),
        "ok"
    );
    assert_eq!(kind(policy.check_ip("svc.internal", ip("fd12::1"))), "ok");
    assert_eq!(kind(policy.check_ip("localhost", ip("::1"))), "ok");
    assert_eq!(
        kind(policy.check_ip("localhost", ip("127.0.0.1"))),
        "address_blocked"
    );
    assert_eq!(
        kind(policy.check_ip("svc.internal", ip("192.168.1.1"))),
        "address_blocked"
    );
    // NAT64 and 6to4 forms need an IPv6 entry of their own.
    assert_eq!(
        kind(policy.check_ip("svc.internal", ip("64:ff9b::a00:5"))),
        "address_blocked"
    );
    assert_eq!(kind(policy.check_ip("public.example", ip("8.8.8.8"))), "ok");
}

#[test]
fn metadata_stays_closed_unless_listed_by_itself() {
    let wide = networks("169.254.0.0/16, 100.64.0.0/10, 0.0.0.0/0, fd00::/8, ::/0");
    assert_eq!(kind(wide.check_ip("h", ip("169.254.1.1"))), "ok");
    assert_eq!(kind(wide.check_ip("h", ip("100.64.0.1"))), "ok");
    assert_eq!(kind(wide.check_ip("h", ip("fd00::1"))), "ok");
    for metadata in [
        "169.254.169.254",
        "100.100.100.200",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
    ] {
        let err = wide
            .check_ip("metadata.google.internal", ip(metadata))
            .unwrap_err();
        assert_eq!(
            err,
            PolicyError::AddressBlocked {
                host: "metadata.google.internal".into(),
                ip: ip(metadata),
                reason: "cloud metadata"
            }
        );
    }
    let exact = networks("169.254.169.254/32, fd00:ec2::254");
    assert_eq!(kind(exact.check_ip("h", ip("169.254.169.254"))), "ok");
    assert_eq!(
        kind(exact.check_ip("h", ip("::ffff:169.254.169.254"))),
        "ok"
    );
    assert_eq!(kind(exact.check_ip("h", ip("fd00:ec2::254"))), "ok");
    assert_eq!(
        kind(exact.check_ip("h", ip("169.254.170.2"))),
        "address_blocked"
    );
}

#[test]
fn blocked_addresses_are_explained_with_the_way_out() {
    let policy = Policy::default();
    let err = policy
        .check_ip("internal.example", ip("10.0.0.5"))
        .unwrap_err();
    assert_eq!(err.kind(), "address_blocked");
    assert_eq!(
        err.to_string(),
        "address 10.0.0.5 of host \"internal.example\" is not public (private); an administrator \
         can allow it by adding 10.0.0.5/32 or its network to integration.http_allowed_networks"
    );
    let literal = policy
        .check_url(&url("http://[::ffff:127.0.0.1]/"))
        .unwrap_err();
    assert_eq!(
        literal.to_string(),
        "address ::ffff:127.0.0.1 is not public (loopback); an administrator \
         can allow it by adding 127.0.0.1/32 or its network to integration.http_allowed_networks"
    );
    let metadata = policy
        .check_url(&url("http://169.254.169.254/"))
        .unwrap_err();
    assert_eq!(
        metadata.to_string(),
        "address 169.254.169.254 is not public (cloud metadata); an administrator \
         can allow it only by listing 169.254.169.254/32 itself in integration.http_allowed_networks"
    );
}

#[test]
fn redirects_are_capped_and_each_target_is_checked() {
    let policy = Policy::default();
    let next = url("https://example.com/next");
    for hop in 1..=5 {
        assert_eq!(kind(policy.check_redirect(hop, &next)), "ok", "hop {hop}");
    }
    let err = policy.check_redirect(6, &next).unwrap_err();
    assert_eq!(err, PolicyError::TooManyRedirects { limit: 5 });
    assert_eq!(
        err.to_string(),
        "too many redirects (the limit is 5, set by integration.http_max_redirects)"
    );
    assert_eq!(
        kind(policy.check_redirect(1, &url("http://169.254.169.254/"))),
        "address_blocked"
    );
    assert_eq!(
        kind(policy.check_redirect(1, &url("file:///etc/passwd"))),
        "scheme_not_allowed"
    );
    let none = Policy {
        max_redirects: 0,
        ..Policy::default()
    };
    assert_eq!(kind(none.check_redirect(1, &next)), "too_many_redirects");
}

#[test]
fn response_bodies_are_capped_at_ten_mebibytes_by_default() {
    let policy = Policy::default();
    assert_eq!(policy.max_response_bytes, DEFAULT_MAX_RESPONSE_BYTES);
    assert_eq!(policy.max_response_bytes, 10_485_760);
    assert_eq!(policy.max_redirects, 5);
    assert!(policy.allowed_hosts.is_empty() && policy.allowed_networks.is_empty());
    assert_eq!(kind(policy.check_response_size(0)), "ok");
    assert_eq!(kind(policy.check_response_size(10_485_760)), "ok");
    let err = policy.check_response_size(10_485_761).unwrap_err();
    assert_eq!(err.kind(), "response_too_large");
    assert_eq!(
        err.to_string(),
        "response body is larger than 10485760 bytes (the limit set by integration.http_max_response_bytes)"
    );
}

#[test]
fn urls_in_errors_lose_their_credentials_query_and_fragment() {
    use integration_core::http_policy::redact_url;
    assert_eq!(
        redact_url("https://user:pw@example.com/a?token=1#x"),
        "https://***@example.com/a"
    );
    assert_eq!(redact_url("http://u:p@ss@h:80"), "http://***@h:80");
    assert_eq!(redact_url("not a url user:pw@x"), "***@x");
    assert_eq!(redact_url("ftp//x:y@host/p"), "ftp//***@host/p");
    assert_eq!(redact_url("https://example.com/p"), "https://example.com/p");
}

#[test]
fn credential_headers_are_recognised() {
    use integration_core::http_policy::is_credential_header;
    for name in [
        "Authorization",
        "X-Api-Key",
        "Cookie",
        "X-Auth-Token",
        "Stripe-Signature",
    ] {
        assert!(is_credential_header(name), "{name}");
    }
    for name in ["Accept", "Content-Type", "X-Request-Id", "User-Agent"] {
        assert!(!is_credential_header(name), "{name}");
    }
}
