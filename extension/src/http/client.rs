//! The outbound HTTP engine of one backend: a current-thread tokio runtime
//! and one reqwest client per distinct policy, kept for the life of the
//! backend so connections are reused across calls. Every resolved address
//! is checked against the policy before connecting (so DNS rebinding cannot
//! bypass it), every redirect hop against the URL rules, and waits poll
//! Postgres' cancel flags so statement_timeout and pg_cancel_backend stop a
//! call within about 50 ms.

use super::policy::Rules;
use integration_core::http_policy::{self, Policy, PolicyError};
use pgrx::pg_sys;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// One request, as the SQL functions build it.
pub struct Request {
    pub method: reqwest::Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// What came back; any status is a response, not an error.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub elapsed: Duration,
}

/// Why a call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("invalid request to {host}: {cause}")]
    Invalid { host: String, cause: String },
    #[error("request to {host} timed out after {after:?}")]
    Timeout { host: String, after: Duration },
    #[error("cannot connect to {host}: {cause}")]
    Connect { host: String, cause: String },
    #[error("TLS failure with {host}: {cause}")]
    Tls { host: String, cause: String },
    #[error(
        "response from {host} is larger than {limit} bytes (integration.http_max_response_bytes)"
    )]
    TooLarge { host: String, limit: u64 },
    #[error("more than {limit} redirects from {host} (integration.http_max_redirects)")]
    Redirects { host: String, limit: u32 },
    #[error("request to {host} failed: {cause}")]
    Other { host: String, cause: String },
    /// A cancel or termination request arrived; the caller raises it.
    #[error("canceled")]
    Interrupted,
}

impl CallError {
    /// The short cause the audit log records.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Policy(_) => "policy",
            CallError::Invalid { .. } => "invalid",
            CallError::Timeout { .. } => "timeout",
            CallError::TooLarge { .. } | CallError::Redirects { .. } => "limit",
            CallError::Tls { .. } => "tls",
            CallError::Interrupted => "canceled",
            CallError::Connect { .. } | CallError::Other { .. } => "network",
        }
    }

    /// True when the same request may succeed later: the connection
    /// failed or broke, or the server was too slow.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CallError::Timeout { .. } | CallError::Connect { .. } | CallError::Other { .. }
        )
    }
}

struct Engine {
    runtime: tokio::runtime::Runtime,
    clients: HashMap<(String, bool), reqwest::Client>,
}

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
}

/// A runtime whose threads never receive Postgres' signals: current-thread
/// for a backend's synchronous calls, with `workers` threads for the queue.
pub fn new_runtime(workers: usize) -> Result<tokio::runtime::Runtime, CallError> {
    let mut builder = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder
        .enable_all()
        // DNS look-ups run on helper threads: keep Postgres' signals on the
        // backend's own thread.
        .on_thread_start(|| {
            // SAFETY: blocking every signal in a thread that runs no Postgres code.
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
            }
        })
        .build()
        .map_err(|e| CallError::Other {
            host: String::new(),
            cause: format!("cannot start the HTTP runtime: {e}"),
        })
}

/// Resolves names itself and refuses any address one of the policies forbids.
struct CheckedResolver {
    policies: Arc<Vec<Policy>>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policies = Arc::clone(&self.policies);
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                for policy in policies.iter() {
                    policy.check_ip(&host, addr.ip())?;
                }
            }
            Ok::<Addrs, Box<dyn std::error::Error + Send + Sync>>(Box::new(addrs.into_iter()))
        })
    }
}

/// A client under `policies` (every one must allow each hop and address)
/// that keeps up to `idle_per_host` idle connections to each host for reuse.
pub fn build_client(
    policies: Vec<Policy>,
    insecure: bool,
    idle_per_host: usize,
) -> Result<reqwest::Client, CallError> {
    let policies = Arc::new(policies);
    let hops = Arc::clone(&policies);
    reqwest::Client::builder()
        .dns_resolver(Arc::new(CheckedResolver {
            policies: Arc::clone(&policies),
        }))
        // Every hop is checked against the policies here; `fetch` follows
        // it itself, so that it can drop credentials across origins.
        .redirect(redirect::Policy::custom(move |attempt| {
            match hops.iter().try_for_each(|p| p.check_url(attempt.url())) {
                Ok(()) => attempt.stop(),
                Err(e) => attempt.error(e),
            }
        }))
        .referer(false)
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(idle_per_host)
        .danger_accept_invalid_certs(insecure)
        .user_agent(concat!("pg_integration/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| CallError::Other {
            host: String::new(),
            cause: format!("cannot build the HTTP client: {e}"),
        })
}

fn cancel_requested() -> bool {
    // SAFETY: plain reads of flags set by Postgres' signal handlers.
    unsafe { pg_sys::QueryCancelPending != 0 || pg_sys::ProcDiePending != 0 }
}

/// Sends `request` with `client` (built by [`build_client`] for `policy`)
/// and reads the whole response, at most `policy.max_response_bytes`.
pub async fn fetch(
    client: reqwest::Client,
    request: Request,
    limit: u64,
    max_redirects: u32,
) -> Result<Response, CallError> {
    let host = request.url.host_str().unwrap_or_default().to_string();
    let timeout = request.timeout;
    let started = Instant::now();
    let call = async move {
        let Request {
            mut method,
            mut url,
            mut headers,
            body,
            ..
        } = request;
        let mut body = body.map(bytes::Bytes::from);
        let mut hops = 0;
        let mut response = loop {
            // One deadline for the call, redirects included.
            let left = timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(1));
            let mut builder = client.request(method.clone(), url.clone()).timeout(left);
            for (name, value) in &headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            if let Some(body) = &body {
                builder = builder.body(body.clone());
            }
            let response = builder.send().await.map_err(Failure::Http)?;
            let Some(next) = redirect_target(&response, &url) else {
                break response;
            };
            hops += 1;
            if hops > max_redirects {
                return Err(Failure::Redirects);
            }
            let status = response.status();
            if matches!(status.as_u16(), 301..=303) && method != reqwest::Method::HEAD {
                method = reqwest::Method::GET;
                body = None;
                headers.retain(|(name, _)| !is_body_header(name));
            }
            if next.origin() != url.origin() {
                headers.retain(|(name, _)| !http_policy::is_credential_header(name));
            }
            url = next;
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(Failure::Http)? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Ok(None);
            }
            body.extend_from_slice(&chunk);
        }
        Ok::<_, Failure>(Some(Response {
            status,
            headers,
            body,
            content_type,
            elapsed: started.elapsed(),
        }))
    };
    match call.await {
        Ok(Some(response)) => Ok(response),
        Ok(None) => Err(CallError::TooLarge { host, limit }),
        Err(Failure::Redirects) => Err(CallError::Redirects {
            host,
            limit: max_redirects,
        }),
        Err(Failure::Http(e)) => Err(classify(e, host, timeout)),
    }
}

/// Why a call ended without a response.
enum Failure {
    Http(reqwest::Error),
    Redirects,
}

/// Where a redirect answer points, when it is one that is followed.
fn redirect_target(response: &reqwest::Response, from: &Url) -> Option<Url> {
    if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = response.headers().get(reqwest::header::LOCATION)?;
    from.join(location.to_str().ok()?).ok()
}

fn is_body_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("content-") || name == "transfer-encoding"
}

/// Sends `request` under `rules`, reusing this backend's client for the
/// same policy, and waits for it while watching Postgres' cancel flags.
/// `insecure` skips certificate verification (an admin chose it for this host).
pub fn send(request: Request, rules: &Rules, insecure: bool) -> Result<Response, CallError> {
    let policy = &rules.policy;
    policy.check_url(&request.url)?;
    let limit = policy.max_response_bytes;
    let max_redirects = policy.max_redirects;
    ENGINE.with_borrow_mut(|engine| {
        let engine = match engine {
            Some(engine) => engine,
            None => engine.insert(Engine {
                runtime: new_runtime(0)?,
                clients: HashMap::new(),
            }),
        };
        let key = (rules.key.clone(), insecure);
        let client = match engine.clients.get(&key) {
            Some(client) => client.clone(),
            None => {
                let client = build_client(vec![policy.clone()], insecure, 8)?;
                engine.clients.insert(key, client.clone());
                client
            }
        };
        let call = fetch(client, request, limit, max_redirects);
        engine.runtime.block_on(async {
            tokio::pin!(call);
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    out = &mut call => return out,
                    _ = tick.tick() => if cancel_requested() { return Err(CallError::Interrupted) },
                }
            }
        })
    })
}

/// Turns a reqwest error into the cause a SQL user can act on.
fn classify(error: reqwest::Error, host: String, timeout: Duration) -> CallError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    let mut chain = Vec::new();
    while let Some(e) = source {
        if let Some(policy) = e.downcast_ref::<PolicyError>() {
            return CallError::Policy(policy.clone());
        }
        chain.push(e.to_string());
        source = e.source();
    }
    chain.dedup();
    let cause = chain.join(": ");
    if error.is_timeout() {
        CallError::Timeout {
            host,
            after: timeout,
        }
    } else if cause.contains("certificate") || cause.contains("tls") || cause.contains("TLS") {
        CallError::Tls { host, cause }
    } else if error.is_connect() {
        CallError::Connect { host, cause }
    } else if error.is_builder() {
        CallError::Invalid { host, cause }
    } else {
        CallError::Other { host, cause }
    }
}
