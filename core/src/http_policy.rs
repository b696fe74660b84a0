//! Outbound HTTP policy for requests made from SQL (SSRF defence): which URLs, hosts and
//! addresses may be fetched, how many redirects are followed and how large a body may be.
//! Pure checks only. The caller resolves the name itself, runs [`Policy::check_ip`] on every
//! resolved address and connects to an address it checked (so DNS rebinding cannot swap it),
//! with proxies disabled, and runs [`Policy::check_redirect`] before following each redirect.
#![warn(missing_docs)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// GUC holding the host allowlist, parsed with [`parse_host_list`].
pub const ALLOWED_HOSTS_GUC: &str = "integration.http_allowed_hosts";
/// GUC holding the networks exempt from [`blocked_reason`], parsed with [`parse_network_list`].
pub const ALLOWED_NETWORKS_GUC: &str = "integration.http_allowed_networks";
/// GUC holding [`Policy::max_redirects`].
pub const MAX_REDIRECTS_GUC: &str = "integration.http_max_redirects";
/// GUC holding [`Policy::max_response_bytes`].
pub const MAX_RESPONSE_BYTES_GUC: &str = "integration.http_max_response_bytes";
/// Redirects followed by default.
pub const DEFAULT_MAX_REDIRECTS: u32 = 5;
/// Largest response body accepted by default (10 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 10 * 1024 * 1024;

const UNSPECIFIED: &str = "unspecified";
const LOOPBACK: &str = "loopback";
const PRIVATE: &str = "private";
const LINK_LOCAL: &str = "link-local";
const CLOUD_METADATA: &str = "cloud metadata";
const CGNAT: &str = "carrier-grade NAT";
const MULTICAST: &str = "multicast";
const BROADCAST: &str = "broadcast";
const RESERVED: &str = "reserved";
const DOCUMENTATION: &str = "documentation";
const BENCHMARKING: &str = "benchmarking";
const UNIQUE_LOCAL: &str = "unique local";
const SITE_LOCAL: &str = "site-local";

/// Instance-metadata and host-agent endpoints, refused even where their range is allowed.
const METADATA_V4: [Ipv4Addr; 6] = [
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack, DigitalOcean, ...
    Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task credentials
    Ipv4Addr::new(169, 254, 170, 23),  // AWS EKS Pod Identity agent
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
    Ipv4Addr::new(192, 0, 0, 192),     // Oracle Cloud (legacy)
    Ipv4Addr::new(168, 63, 129, 16),   // Azure WireServer (a public address)
];
const METADATA_V6: [Ipv6Addr; 3] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254), // AWS IMDS
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),  // AWS EKS Pod Identity agent
    Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254),  // GCP (IPv6-only instances)
];

/// Non-public IPv4 ranges, most specific first (IANA special-purpose registry).
const V4_RANGES: [([u8; 4], u8, &str); 16] = [
    ([0, 0, 0, 0], 8, UNSPECIFIED), // "this network"; 0.0.0.0 reaches localhost on Linux
    ([10, 0, 0, 0], 8, PRIVATE),
    ([100, 64, 0, 0], 10, CGNAT),
    ([127, 0, 0, 0], 8, LOOPBACK),
    ([169, 254, 0, 0], 16, LINK_LOCAL),
    ([172, 16, 0, 0], 12, PRIVATE),
    ([192, 0, 0, 0], 24, RESERVED), // IETF protocol assignments
    ([192, 0, 2, 0], 24, DOCUMENTATION),
    ([192, 88, 99, 0], 24, RESERVED), // deprecated 6to4 relay anycast
    ([192, 168, 0, 0], 16, PRIVATE),
    ([198, 18, 0, 0], 15, BENCHMARKING),
    ([198, 51, 100, 0], 24, DOCUMENTATION),
    ([203, 0, 113, 0], 24, DOCUMENTATION),
    ([224, 0, 0, 0], 4, MULTICAST),
    ([255, 255, 255, 255], 32, BROADCAST),
    ([240, 0, 0, 0], 4, RESERVED),
];

/// Named non-public IPv6 ranges; whatever else lies outside 2000::/3 is "reserved".
const V6_RANGES: [([u16; 8], u8, &str); 8] = [
    ([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48, BENCHMARKING),
    ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, RESERVED), // IETF protocol assignments
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, DOCUMENTATION),
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, DOCUMENTATION),
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, UNIQUE_LOCAL),
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, LINK_LOCAL),
    ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, SITE_LOCAL),
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, MULTICAST),
];

/// What outbound HTTP from SQL may reach. Two independent gates: `allowed_hosts` restricts
/// which names may be asked for, `allowed_networks` unblocks non-public addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Hosts that may be requested; empty means any host (whose addresses are public).
    pub allowed_hosts: Vec<HostPattern>,
    /// Networks exempt from [`blocked_reason`]; empty means only public addresses.
    pub allowed_networks: Vec<Network>,
    /// Redirects followed before giving up; 0 follows none.
    pub max_redirects: u32,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: u64,
}

impl Default for Policy {
    /// Any public host, no private network, [`DEFAULT_MAX_REDIRECTS`] and
    /// [`DEFAULT_MAX_RESPONSE_BYTES`].
    fn default() -> Self {
        Policy {
            allowed_hosts: Vec::new(),
            allowed_networks: Vec::new(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

impl Policy {
    /// Checks a URL before any connection: scheme http or https, a host, no user name or
    /// password (they would be logged with the query and `http://allowed@evil/` reads as
    /// the wrong host; credentials belong in a header), the host and port on
    /// `allowed_hosts` when it is not empty, and an IP-literal host through [`Policy::check_ip`].
    /// A host name still has to have each resolved address checked with [`Policy::check_ip`].
    pub fn check_url(&self, url: &Url) -> Result<(), PolicyError> {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(PolicyError::Scheme {
                scheme: shown(scheme),
            });
        }
        let (Some(host), Some(name), Some(port)) =
            (url.host(), url.host_str(), url.port_or_known_default())
        else {
            return Err(PolicyError::NoHost);
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(PolicyError::Userinfo {
                host: name.to_owned(),
            });
        }
        if !self.allowed_hosts.is_empty()
            && !self
                .allowed_hosts
                .iter()
                .any(|p| p.matches(name, Some(port)))
        {
            return Err(PolicyError::HostNotAllowed {
                host: name.to_owned(),
                port,
            });
        }
        match host {
            Host::Domain(_) => Ok(()),
            Host::Ipv4(ip) => self.check_ip(name, IpAddr::V4(ip)),
            Host::Ipv6(ip) => self.check_ip(name, IpAddr::V6(ip)),
        }
    }

    /// Checks one address `host` resolved to (or the address an IP-literal URL names):
    /// refused when [`blocked_reason`] gives a reason, unless an entry of `allowed_networks`
    /// contains it. IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
    /// A cloud-metadata address is unblocked only by an entry naming exactly it
    /// (`169.254.169.254/32`), so allowing `169.254.0.0/16` or `100.64.0.0/10` keeps it closed.
    /// Other embedded forms (NAT64, 6to4, Teredo) are unblocked by IPv6 entries only.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), PolicyError> {
        let canonical = ip.to_canonical();
        let Some(reason) = blocked_reason(canonical) else {
            return Ok(());
        };
        let allowed = self.allowed_networks.iter().any(|network| {
            if reason == CLOUD_METADATA {
                network.is_single(canonical)
            } else {
                network.contains(canonical)
            }
        });
        if allowed {
            Ok(())
        } else {
            Err(PolicyError::AddressBlocked {
                host: host.to_owned(),
                ip,
                reason,
            })
        }
    }

    /// Checks redirect number `hop` (1 for the first) to `target`: refused past
    /// `max_redirects`, otherwise `target` goes through [`Policy::check_url`] like the first URL.
    pub fn check_redirect(&self, hop: u32, target: &Url) -> Result<(), PolicyError> {
        if hop > self.max_redirects {
            return Err(PolicyError::TooManyRedirects {
                limit: self.max_redirects,
            });
        }
        self.check_url(target)
    }

    /// Checks a body size (a `Content-Length`, or the bytes read so far while streaming)
    /// against `max_response_bytes`.
    pub fn check_response_size(&self, bytes: u64) -> Result<(), PolicyError> {
        if bytes > self.max_response_bytes {
            return Err(PolicyError::ResponseTooLarge {
                limit: self.max_response_bytes,
            });
        }
        Ok(())
    }
}

/// Why an address is not public, or `None` for a public one. Reasons: "unspecified",
/// "loopback", "private", "link-local", "cloud metadata", "carrier-grade NAT", "multicast",
/// "broadcast", "reserved", "documentation", "benchmarking", "unique local", "site-local".
/// IPv6 addresses that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo `2001::/32` server and client)
/// are judged by that IPv4 address; other IPv6 outside global unicast 2000::/3 is "reserved".
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => v4_reason(ip),
        IpAddr::V6(ip) => v6_reason(ip),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    if METADATA_V4.contains(&ip) {
        return Some(CLOUD_METADATA);
    }
    let bits = u32::from(ip);
    V4_RANGES
        .iter()
        .find(|(base, prefix, _)| same_prefix_v4(bits, u32::from_be_bytes(*base), *prefix))
        .map(|(_, _, reason)| *reason)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some(UNSPECIFIED);
    }
    if ip.is_loopback() {
        return Some(LOOPBACK);
    }
    if METADATA_V6.contains(&ip) {
        return Some(CLOUD_METADATA);
    }
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        // IPv4-mapped and IPv4-compatible (:: and ::1 are handled above).
        [0, 0, 0, 0, 0, 0xffff | 0, hi, lo] => return v4_reason(v4(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return v4_reason(v4(hi, lo)),
        [0x2002, hi, lo, ..] => return v4_reason(v4(hi, lo)),
        // Teredo: server address in clear, client address with every bit inverted.
        [0x2001, 0, server_hi, server_lo, _, _, client_hi, client_lo] => {
            return v4_reason(v4(server_hi, server_lo))
                .or_else(|| v4_reason(v4(!client_hi, !client_lo)));
        }
        _ => {}
    }
    let bits = u128::from(ip);
    let named = V6_RANGES
        .iter()
        .find(|(base, prefix, _)| same_prefix_v6(bits, u128::from(Ipv6Addr::from(*base)), *prefix))
        .map(|(_, _, reason)| *reason);
    if named.is_some() {
        return named;
    }
    if s[0] & 0xe000 != 0x2000 {
        return Some(RESERVED);
    }
    None
}

fn same_prefix_v4(a: u32, b: u32, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    a & mask == b & mask
}

fn same_prefix_v6(a: u128, b: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    a & mask == b & mask
}

/// One entry of the host allowlist: `api.example.com`, `*.example.com` (subdomains at any
/// depth, not the apex), `*` (any host), an IP literal (`10.0.0.5`, `[::1]`, `::1`), each
/// optionally followed by `:port` (without one, any port matches). Names are compared the
/// way the `url` crate writes hosts: lower case, IDNA to punycode, one trailing dot ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    Subdomains(String),
}

impl HostPattern {
    /// Parses one allowlist entry; see [`HostPattern`] for the forms accepted.
    pub fn parse(text: &str) -> Result<HostPattern, PolicyError> {
        let entry = text.trim();
        let bad = |why: &str| PolicyError::BadHostPattern {
            entry: shown(entry),
            why: why.to_owned(),
        };
        if entry.is_empty() {
            return Err(bad("empty entry"));
        }
        if entry.contains('/') || entry.contains('\\') {
            return Err(bad(
                "write a host only, without scheme or path (e.g. api.example.com or *.example.com:8443)",
            ));
        }
        if entry.contains('@') {
            return Err(bad("write a host only, without a user name"));
        }
        let (host, port) = split_port(entry).map_err(bad)?;
        let port = port.map(parse_port).transpose().map_err(bad)?;
        if host == "*" {
            return Ok(HostPattern {
                host: HostMatch::Any,
                port,
            });
        }
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        if name.contains('*') {
            return Err(bad(
                "'*' is allowed only as a whole first label (*.example.com) or alone",
            ));
        }
        if name.is_empty() || name == "." {
            return Err(bad("empty host name"));
        }
        // Host::parse wants IPv6 in brackets; accept the bare form an admin is likely to type.
        let bracketed;
        let name = if name.contains(':') && !name.starts_with('[') {
            bracketed = format!("[{name}]");
            bracketed.as_str()
        } else {
            name
        };
        let host = match Host::parse(name) {
            Ok(Host::Domain(domain)) => {
                let domain = domain.strip_suffix('.').unwrap_or(&domain);
                if domain.split('.').any(str::is_empty) {
                    return Err(bad("empty label in host name"));
                }
                if wildcard {
                    HostMatch::Subdomains(domain.to_owned())
                } else {
                    HostMatch::Exact(domain.to_owned())
                }
            }
            Ok(ip) if !wildcard => HostMatch::Exact(ip.to_string()),
            Ok(_) => return Err(bad("'*.' cannot be put before an IP address")),
            Err(e) => return Err(bad(&format!("not a valid host name ({e})"))),
        };
        Ok(HostPattern { host, port })
    }

    /// True when `host` (as [`Url::host_str`] writes it: punycode, IPv6 in brackets; case
    /// and one trailing dot do not matter) on `port` (as [`Url::port_or_known_default`]
    /// gives it; `None` is matched only by entries without a port) matches this entry.
    pub fn matches(&self, host: &str, port: Option<u16>) -> bool {
        if self.port.is_some() && self.port != port {
            return false;
        }
        let host = host.strip_suffix('.').unwrap_or(host).as_bytes();
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(name) => host.eq_ignore_ascii_case(name.as_bytes()),
            HostMatch::Subdomains(suffix) => {
                let suffix = suffix.as_bytes();
                host.len() > suffix.len() + 1
                    && host[host.len() - suffix.len() - 1] == b'.'
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

impl fmt::Display for HostPattern {
    /// The normalised entry, e.g. `*.xn--bcher-kva.example:8443`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostMatch::Any => f.write_str("*")?,
            HostMatch::Exact(name) => f.write_str(name)?,
            HostMatch::Subdomains(suffix) => write!(f, "*.{suffix}")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// Splits `host[:port]`, `[v6][:port]` or a bare IPv6 address (no port possible).
fn split_port(entry: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(rest) = entry.strip_prefix('[') {
        let end = rest.find(']').ok_or("'[' without a closing ']'")?;
        let after = &rest[end + 1..];
        let host = &entry[..end + 2];
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if after.is_empty() => Ok((host, None)),
            None => Err("unexpected text after ']'"),
        };
    }
    if entry.matches(':').count() > 1 {
        return Ok((entry, None));
    }
    Ok(match entry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (entry, None),
    })
}

fn parse_port(text: &str) -> Result<u16, &'static str> {
    const WHY: &str = "the port must be a number from 1 to 65535";
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WHY);
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(WHY),
    }
}

/// Parses a host allowlist GUC value: entries separated by commas and/or white space.
/// An empty (or blank) value gives an empty list, which [`Policy`] reads as "any host".
pub fn parse_host_list(text: &str) -> Result<Vec<HostPattern>, PolicyError> {
    entries(text).map(HostPattern::parse).collect()
}

/// An IPv4 or IPv6 network in CIDR form, written `10.0.0.0/8`, `fd00::/8`, or a bare
/// address for a single host (`/32`, `/128`). IPv4-mapped IPv6 networks
/// (`::ffff:10.0.0.0/104`) are stored as the IPv4 network they stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses one network; the address must have no bits set past the prefix
    /// (`10.0.0.5/8` is refused rather than silently widened to `10.0.0.0/8`).
    pub fn parse(text: &str) -> Result<Network, PolicyError> {
        let entry = text.trim();
        let bad = |why: String| PolicyError::BadNetwork {
            entry: shown(entry),
            why,
        };
        let (addr_text, prefix_text) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (entry, None),
        };
        let addr_text = addr_text
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr_text);
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            bad(
                "not an IP address; write a network as 10.0.0.0/8 or fd00::/8, or a single address"
                    .to_owned(),
            )
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                match p.parse::<u8>() {
                    Ok(prefix) if prefix <= max => prefix,
                    _ => {
                        return Err(bad(format!(
                            "prefix length /{p} is larger than {max}, the most an {} address has",
                            if max == 32 { "IPv4" } else { "IPv6" }
                        )))
                    }
                }
            }
            Some(_) => {
                return Err(bad(format!(
                    "the prefix length after '/' must be a number from 0 to {max}"
                )))
            }
        };
        let network = Network::masked(addr, prefix);
        if network.addr != addr {
            return Err(bad(format!(
                "{addr} has bits set past /{prefix}; did you mean {network}?"
            )));
        }
        Ok(match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Network {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                },
                None => network,
            },
            _ => network,
        })
    }

    fn masked(addr: IpAddr, prefix: u8) -> Network {
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Network { addr, prefix }
    }

    /// True when `ip` (IPv4-mapped IPv6 counting as IPv4) lies inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix_v4(u32::from(net), u32::from(ip), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix_v6(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }

    /// True when this network is exactly the one address `ip` (a /32 or /128).
    fn is_single(&self, ip: IpAddr) -> bool {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        self.prefix == full && self.contains(ip)
    }
}

impl fmt::Display for Network {
    /// CIDR form, always with the prefix length: `10.0.0.0/8`, `::1/128`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses a network list GUC value: entries separated by commas and/or white space,
/// e.g. `127.0.0.1/32, ::1/128, 10.0.0.0/8`. An empty value gives an empty list.
pub fn parse_network_list(text: &str) -> Result<Vec<Network>, PolicyError> {
    entries(text).map(Network::parse).collect()
}

fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|entry| !entry.is_empty())
}

/// Why a URL, an address or a response was refused, or a setting could not be parsed;
/// [`PolicyError::kind`] is the stable code. Messages name the host, the address and the
/// reason, and the setting an administrator can change; they never repeat a URL's password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The URL's scheme is neither http nor https (`scheme_not_allowed`).
    #[error("URL scheme {scheme:?} is not allowed; only http and https are")]
    Scheme {
        /// The scheme as the URL parser lower-cased it.
        scheme: String,
    },
    /// The URL names no host (`no_host`).
    #[error("URL has no host")]
    NoHost,
    /// The URL carries a user name or password (`userinfo_in_url`).
    #[error("URL for host {host:?} carries a user name or password; send credentials in a header (e.g. Authorization) instead")]
    Userinfo {
        /// The host the URL would have reached.
        host: String,
    },
    /// The host list is not empty and no entry matches (`host_not_allowed`).
    #[error("host {host:?} (port {port}) is not in {}; an administrator can add it with ALTER ROLE or ALTER DATABASE ... SET {}", ALLOWED_HOSTS_GUC, ALLOWED_HOSTS_GUC)]
    HostNotAllowed {
        /// The host as the URL parser normalised it.
        host: String,
        /// The explicit or default port.
        port: u16,
    },
    /// The address is not public and no allowed network covers it (`address_blocked`).
    #[error("{}", blocked_message(host, *ip, reason))]
    AddressBlocked {
        /// The host name, or the IP literal of the URL.
        host: String,
        /// The address refused, as resolved or written.
        ip: IpAddr,
        /// What [`blocked_reason`] said.
        reason: &'static str,
    },
    /// One more redirect than the policy allows (`too_many_redirects`).
    #[error(
        "too many redirects (the limit is {limit}, set by {})",
        MAX_REDIRECTS_GUC
    )]
    TooManyRedirects {
        /// [`Policy::max_redirects`].
        limit: u32,
    },
    /// The body is, or announces it will be, over the limit (`response_too_large`).
    #[error(
        "response body is larger than {limit} bytes (the limit set by {})",
        MAX_RESPONSE_BYTES_GUC
    )]
    ResponseTooLarge {
        /// [`Policy::max_response_bytes`].
        limit: u64,
    },
    /// A host allowlist entry cannot be parsed (`bad_host_pattern`).
    #[error("invalid host entry {entry:?}: {why}")]
    BadHostPattern {
        /// The entry, shortened if long.
        entry: String,
        /// What is wrong with it.
        why: String,
    },
    /// A network list entry cannot be parsed (`bad_network`).
    #[error("invalid network entry {entry:?}: {why}")]
    BadNetwork {
        /// The entry, shortened if long.
        entry: String,
        /// What is wrong with it.
        why: String,
    },
}

impl PolicyError {
    /// A short, stable reason code for SQL callers and audit rows.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::Scheme { .. } => "scheme_not_allowed",
            PolicyError::NoHost => "no_host",
            PolicyError::Userinfo { .. } => "userinfo_in_url",
            PolicyError::HostNotAllowed { .. } => "host_not_allowed",
            PolicyError::AddressBlocked { .. } => "address_blocked",
            PolicyError::TooManyRedirects { .. } => "too_many_redirects",
            PolicyError::ResponseTooLarge { .. } => "response_too_large",
            PolicyError::BadHostPattern { .. } => "bad_host_pattern",
            PolicyError::BadNetwork { .. } => "bad_network",
        }
    }
}

fn blocked_message(host: &str, ip: IpAddr, reason: &str) -> String {
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse::<IpAddr>()
        .is_ok();
    let subject = if literal {
        format!("address {ip}")
    } else {
        format!("address {ip} of host {host:?}")
    };
    let addr = ip.to_canonical();
    let single = Network {
        addr,
        prefix: if addr.is_ipv4() { 32 } else { 128 },
    };
    let way_out = if reason == CLOUD_METADATA {
        format!("only by listing {single} itself in")
    } else {
        format!("by adding {single} or its network to")
    };
    format!(
        "{subject} is not public ({reason}); an administrator can allow it {way_out} {ALLOWED_NETWORKS_GUC}"
    )
}

/// Settings and URL parts are echoed in messages; keep them short.
fn shown(text: &str) -> String {
    const MAX: usize = 100;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `url` as it may appear in an error: without the user and password of
/// its authority, and without its query and fragment, which often carry
/// tokens. Works on text that does not parse as a URL: whatever stands
/// before an `@` back to the previous `/` is hidden.
pub fn redact_url(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..cut];
    match url.rfind('@') {
        Some(at) => {
            let start = url[..at].rfind('/').map_or(0, |slash| slash + 1);
            format!("{}***{}", &url[..start], &url[at..])
        }
        None => url.to_string(),
    }
}

/// Headers that carry credentials: the outbound client drops them when a
/// redirect leaves the origin (as browsers and curl do for Authorization and Cookie; also any
/// custom header whose name says it holds a key, token or secret).
pub fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "auth",
        "cookie",
        "token",
        "key",
        "secret",
        "session",
        "password",
        "signature",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}
