//! The outbound HTTP policy as GUCs. The ones that widen what may be
//! reached are superuser-only, so an administrator sets them per role or
//! database (`ALTER ROLE … SET`, `ALTER DATABASE … SET`) or delegates them
//! with `GRANT SET ON PARAMETER`; callers cannot raise them.

use integration_core::http_policy::{self, HostPattern, Policy};
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::cell::RefCell;
use std::ffi::CString;
use std::rc::Rc;
use std::time::Duration;

static ALLOWED_HOSTS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static ALLOWED_NETWORKS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static INSECURE_TLS_HOSTS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static MAX_REDIRECTS: GucSetting<i32> = GucSetting::<i32>::new(5);
static MAX_RESPONSE_BYTES: GucSetting<i32> = GucSetting::<i32>::new(10 * 1024 * 1024);
static TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);

pub fn init() {
    GucRegistry::define_string_guc(
        c"integration.http_allowed_hosts",
        c"Hosts outbound HTTP may reach: api.example.com, *.example.com, host:port; empty means any public host.",
        c"Superuser-only; set it per role or database with ALTER ROLE/DATABASE ... SET.",
        &ALLOWED_HOSTS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"integration.http_allowed_networks",
        c"Non-public networks outbound HTTP may reach, as CIDRs (e.g. 10.1.0.0/16, 127.0.0.1).",
        c"Private, loopback, link-local and metadata addresses are refused unless listed here.",
        &ALLOWED_NETWORKS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"integration.http_insecure_tls_hosts",
        c"Hosts whose TLS certificates are not verified (self-signed test servers); empty by default.",
        c"Superuser-only. Every other host is verified against the system roots.",
        &INSECURE_TLS_HOSTS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"integration.http_max_redirects",
        c"Redirects outbound HTTP follows before it fails.",
        c"Every hop is checked against the policy again.",
        &MAX_REDIRECTS,
        0,
        20,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"integration.http_max_response_bytes",
        c"Largest response body outbound HTTP accepts.",
        c"A larger body fails the call instead of filling memory.",
        &MAX_RESPONSE_BYTES,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"integration.http_timeout",
        c"Default time limit of one outbound HTTP call, in milliseconds.",
        c"A call's own timeout argument overrides it; statement_timeout still applies.",
        &TIMEOUT_MS,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
}

fn text(setting: &GucSetting<Option<CString>>) -> String {
    setting
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The policy settings in force for one caller, as text: what the queue
/// stores with a request so the worker delivers it under its caller's rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub allowed_hosts: String,
    pub allowed_networks: String,
    pub insecure_tls_hosts: String,
    pub max_redirects: u32,
    pub max_response_bytes: u64,
}

/// A parsed [`Snapshot`]: the policy, the key its client is kept under and
/// the hosts whose certificates are not verified.
pub struct Rules {
    pub policy: Policy,
    pub key: String,
    pub insecure_tls_hosts: Vec<HostPattern>,
}

impl Snapshot {
    /// The settings of the current role and database.
    pub fn current() -> Snapshot {
        Snapshot {
            allowed_hosts: text(&ALLOWED_HOSTS),
            allowed_networks: text(&ALLOWED_NETWORKS),
            insecure_tls_hosts: text(&INSECURE_TLS_HOSTS),
            max_redirects: u32::try_from(MAX_REDIRECTS.get()).unwrap_or(0),
            max_response_bytes: u64::try_from(MAX_RESPONSE_BYTES.get()).unwrap_or(0),
        }
    }

    /// Parses the settings; the error names the setting at fault.
    pub fn rules(&self) -> Result<Rules, String> {
        let named =
            |name: &str, e: http_policy::PolicyError| format!("invalid value of {name}: {e}");
        Ok(Rules {
            policy: Policy {
                allowed_hosts: http_policy::parse_host_list(&self.allowed_hosts)
                    .map_err(|e| named("integration.http_allowed_hosts", e))?,
                allowed_networks: http_policy::parse_network_list(&self.allowed_networks)
                    .map_err(|e| named("integration.http_allowed_networks", e))?,
                max_redirects: self.max_redirects,
                max_response_bytes: self.max_response_bytes,
            },
            key: format!(
                "{}\n{}\n{}\n{}",
                self.allowed_hosts,
                self.allowed_networks,
                self.max_redirects,
                self.max_response_bytes
            ),
            insecure_tls_hosts: http_policy::parse_host_list(&self.insecure_tls_hosts)
                .map_err(|e| named("integration.http_insecure_tls_hosts", e))?,
        })
    }
}

impl Rules {
    /// True when an administrator turned certificate checks off for `url`'s host.
    pub fn insecure(&self, url: &url::Url) -> bool {
        let host = url.host_str().unwrap_or_default();
        self.insecure_tls_hosts
            .iter()
            .any(|p| p.matches(host, url.port_or_known_default()))
    }
}

thread_local! {
    /// The settings last parsed and their rules: they seldom change within
    /// a session, so most calls only compare three strings.
    static LAST: RefCell<Option<(Snapshot, Rc<Rules>)>> = const { RefCell::new(None) };
}

/// The rules in force for the current role and database.
pub fn current() -> Rc<Rules> {
    parsed(Snapshot::current())
}

/// The rules of `snapshot`; an invalid setting raises an error naming it.
pub fn parsed(snapshot: Snapshot) -> Rc<Rules> {
    LAST.with_borrow_mut(|last| match last {
        Some((seen, rules)) if *seen == snapshot => Rc::clone(rules),
        _ => {
            let rules = Rc::new(snapshot.rules().unwrap_or_else(|e| {
                crate::errors::raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e, None)
            }));
            *last = Some((snapshot, Rc::clone(&rules)));
            rules
        }
    })
}

/// The default time limit of one call.
pub fn default_timeout() -> Duration {
    Duration::from_millis(u64::try_from(TIMEOUT_MS.get()).unwrap_or(30_000))
}
