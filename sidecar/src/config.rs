//! Command-line flags and their environment twins (`--database-url` and
//! `DATABASE_URL`, …); a flag wins over its variable. The database URL is
//! held by [`DatabaseUrl`], which prints itself only with the password
//! replaced by `***`, so neither logs nor `--help` ever show it.

use clap::{Parser, ValueEnum};
use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use url::Url;

/// What stands in for a password in anything we print.
const REDACTED: &str = "***";

/// The sidecar's configuration, read once at start.
#[derive(Debug, Parser)]
#[command(
    name = "integration-sidecar",
    version,
    about = "HTTP sidecar of pg_integration: webhook ingress, SSO, API docs, health, readiness and Prometheus metrics",
    long_about = "HTTP sidecar of pg_integration: webhook ingress (POST /webhooks/{name}, configured \
                  in the database), SSO logins (/auth/...), the API document (/openapi.json) and \
                  its interactive docs (/docs), health (/healthz), readiness (/readyz) and \
                  Prometheus metrics (/metrics). Every flag can also be given by the environment \
                  variable named next to it; the flag wins."
)]
pub struct Config {
    /// PostgreSQL URL (or key=value string) to log in with, as role integration_sidecar
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: DatabaseUrl,

    /// Address and port to listen on
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,

    /// URL under which clients reach the sidecar [default: http(s)://LISTEN_ADDR/]
    #[arg(long, env = "PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<Url>,

    /// Log line format
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Most database connections kept open at once
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub db_pool_size: u16,

    /// PEM certificate chain; with --tls-key the sidecar serves HTTPS instead of HTTP
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Seconds a client has to send a complete request head (and, over
    /// HTTPS, finish the handshake), counted from the connection's start or
    /// the end of its previous answer: a keep-alive connection waiting for
    /// its next request is closed after it too
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout: u64,

    /// Seconds without a byte moving either way after which a connection is
    /// closed (a stalled upload, a client that stops reading its answer)
    #[arg(long, env = "IDLE_TIMEOUT", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout: u64,

    /// Most client connections open at once; past it new connections wait
    /// in the listen backlog until one closes, and a warning is logged
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Who may read the API docs (/docs and /openapi.json) [default: public
    /// when listening on a loopback address, authenticated otherwise]
    #[arg(long, env = "DOCS", value_enum)]
    pub docs: Option<DocsAccess>,
}

/// Who may read `/docs` and `/openapi.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DocsAccess {
    /// Anyone who reaches the sidecar
    Public,
    /// Only with an API key of scope `docs` or a valid session
    Authenticated,
    /// Not served (404)
    Off,
}

/// How log lines are written to standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors
    Json,
    /// Human-readable lines
    Text,
}

impl Config {
    /// The certificate and key files when HTTPS is configured.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }

    /// `--docs`, else public on a loopback listen address (only this
    /// machine can reach it) and authenticated on any other.
    pub fn docs(&self) -> DocsAccess {
        self.docs.unwrap_or(if self.listen_addr.ip().is_loopback() {
            DocsAccess::Public
        } else {
            DocsAccess::Authenticated
        })
    }

    /// `--public-url`, or one derived from the listen address and the scheme
    /// (an unspecified address such as 0.0.0.0 becomes `localhost`).
    pub fn public_url(&self) -> Url {
        if let Some(url) = &self.public_url {
            return url.clone();
        }
        let scheme = if self.tls().is_some() {
            "https"
        } else {
            "http"
        };
        let port = self.listen_addr.port();
        let derived = match self.listen_addr.ip() {
            ip if ip.is_unspecified() => format!("{scheme}://localhost:{port}/"),
            IpAddr::V4(ip) => format!("{scheme}://{ip}:{port}/"),
            IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{port}/"),
        };
        Url::parse(&derived).expect("a scheme, a host and a port form a valid URL")
    }
}

fn parse_public_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("expected an http:// or https:// URL with a host".into());
    }
    Ok(url)
}

/// The database connection string. It is validated by the driver when the
/// pool is built, not by clap, because clap would echo a rejected value —
/// password included — in its error message.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The string as given, password included: for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for DatabaseUrl {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DatabaseUrl(s.to_owned()))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", redact(&self.0))
    }
}

/// Replaces every password in a PostgreSQL connection string by `***`: the
/// `user:password@` part and a `password=` parameter of a URL, or the
/// `password=` pair of a key=value string. The credentials of a URL end at
/// its first `@`, as tokio-postgres reads them.
pub fn redact(conn: &str) -> String {
    match conn.split_once("://") {
        Some((scheme, rest)) => {
            let rest = match rest.split_once('@') {
                Some((credentials, hosts)) => match credentials.split_once(':') {
                    Some((user, _)) => format!("{user}:{REDACTED}@{hosts}"),
                    None => rest.to_owned(),
                },
                None => rest.to_owned(),
            };
            let rest = match rest.split_once('?') {
                Some((path, query)) => format!("{path}?{}", redact_query(query)),
                None => rest,
            };
            format!("{scheme}://{rest}")
        }
        None => redact_key_values(conn),
    }
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                format!("{key}={REDACTED}")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Redacts `password = value` in a libpq key=value string, where a value is a
/// bare word or a single-quoted string with backslash escapes.
fn redact_key_values(conn: &str) -> String {
    let mut out = String::with_capacity(conn.len());
    let mut rest = conn;
    loop {
        let trimmed = rest.trim_start();
        out.push_str(&rest[..rest.len() - trimmed.len()]);
        if trimmed.is_empty() {
            return out;
        }
        let key_len = trimmed
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(trimmed.len());
        let key = &trimmed[..key_len];
        let after_key = &trimmed[key_len..];
        let after_eq = after_key.trim_start();
        let Some(value_and_rest) = after_eq.strip_prefix('=') else {
            // Not a key=value pair: copy the word and go on.
            out.push_str(key);
            rest = after_key;
            continue;
        };
        let value_start = value_and_rest.trim_start();
        let value_len = value_length(value_start);
        out.push_str(key);
        out.push_str(&after_key[..after_key.len() - after_eq.len()]);
        out.push('=');
        out.push_str(&value_and_rest[..value_and_rest.len() - value_start.len()]);
        if key.eq_ignore_ascii_case("password") {
            out.push_str(REDACTED);
        } else {
            out.push_str(&value_start[..value_len]);
        }
        rest = &value_start[value_len..];
    }
}

/// Byte length of the value at the start of `s`: up to the closing quote of
/// a quoted value, else up to the next whitespace.
fn value_length(s: &str) -> usize {
    if let Some(quoted) = s.strip_prefix('\'') {
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '\'' => return i + 2,
                _ => {}
            }
        }
        s.len()
    } else {
        s.find(char::is_whitespace).unwrap_or(s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Every variable the configuration reads; tests clear the ones they do
    /// not set so the developer's environment cannot leak in.
    const VARIABLES: [&str; 8] = [
        "DATABASE_URL",
        "LISTEN_ADDR",
        "PUBLIC_URL",
        "LOG_FORMAT",
        "DB_POOL_SIZE",
        "TLS_CERT",
        "TLS_KEY",
        "DOCS",
    ];

    /// The environment is process-wide; config tests take turns with it.
    static ENV: Mutex<()> = Mutex::new(());

    fn parse_with_env(env: &[(&str, &str)], args: &[&str]) -> Result<Config, clap::Error> {
        let _turn = ENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for name in VARIABLES {
            std::env::remove_var(name);
        }
        for (name, value) in env {
            std::env::set_var(name, value);
        }
        let parsed = Config::try_parse_from(
            std::iter::once("integration-sidecar").chain(args.iter().copied()),
        );
        for (name, _) in env {
            std::env::remove_var(name);
        }
        parsed
    }

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        parse_with_env(&[], args)
    }

    #[test]
    fn defaults_apply_when_only_the_database_url_is_given() {
        let config = parse(&["--database-url", "postgresql://integration_sidecar@db/app"])
            .expect("valid flags");
        assert_eq!(config.listen_addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.db_pool_size, 8);
        assert!(config.tls().is_none());
        assert_eq!(config.public_url().as_str(), "http://127.0.0.1:8080/");
        assert_eq!(
            config.database_url.expose(),
            "postgresql://integration_sidecar@db/app"
        );
    }

    #[test]
    fn environment_variables_configure_every_setting() {
        let config = parse_with_env(
            &[
                ("DATABASE_URL", "postgresql://u:pw@db/app"),
                ("LISTEN_ADDR", "0.0.0.0:9000"),
                ("PUBLIC_URL", "https://sidecar.example.com/"),
                ("LOG_FORMAT", "json"),
                ("DB_POOL_SIZE", "3"),
                ("TLS_CERT", "/etc/tls/cert.pem"),
                ("TLS_KEY", "/etc/tls/key.pem"),
            ],
            &[],
        )
        .expect("valid environment");
        assert_eq!(config.database_url.expose(), "postgresql://u:pw@db/app");
        assert_eq!(config.listen_addr, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.public_url().as_str(), "https://sidecar.example.com/");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.db_pool_size, 3);
        assert_eq!(
            config.tls(),
            Some((
                Path::new("/etc/tls/cert.pem"),
                Path::new("/etc/tls/key.pem")
            ))
        );
    }

    #[test]
    fn a_flag_wins_over_its_environment_variable() {
        let config = parse_with_env(
            &[
                ("DATABASE_URL", "postgresql://from-env/app"),
                ("LISTEN_ADDR", "127.0.0.1:1"),
            ],
            &["--listen-addr", "127.0.0.1:2"],
        )
        .expect("valid");
        assert_eq!(config.listen_addr.port(), 2);
        assert_eq!(config.database_url.expose(), "postgresql://from-env/app");
    }

    #[test]
    fn a_missing_database_url_is_reported_by_name() {
        let err = parse(&[]).expect_err("DATABASE_URL is required");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(
            err.to_string().contains("--database-url <DATABASE_URL>"),
            "{err}"
        );
    }

    #[test]
    fn invalid_values_are_rejected() {
        let url = ["--database-url", "postgresql://db/app"];
        for bad in [
            &["--listen-addr", "localhost"][..],
            &["--log-format", "xml"],
            &["--db-pool-size", "0"],
            &["--public-url", "/relative"],
            &["--public-url", "ftp://example.com/"],
        ] {
            let args: Vec<&str> = url.iter().chain(bad).copied().collect();
            assert!(parse(&args).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn tls_needs_both_certificate_and_key() {
        let err = parse(&[
            "--database-url",
            "postgresql://db/app",
            "--tls-cert",
            "c.pem",
        ])
        .expect_err("a certificate without a key");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let config = parse(&[
            "--database-url",
            "postgresql://db/app",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--listen-addr",
            "[::]:8443",
        ])
        .expect("both given");
        assert_eq!(config.public_url().as_str(), "https://localhost:8443/");
    }

    #[test]
    fn debug_output_hides_the_password() {
        let config = parse(&["--database-url", "postgresql://u:hunter2@db/app"]).expect("valid");
        let printed = format!("{config:?} {}", config.database_url);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("postgresql://u:***@db/app"), "{printed}");
    }

    #[test]
    fn redaction_replaces_url_credentials_and_password_parameters() {
        let cases = [
            (
                "postgresql://u:secret@db:5432/app",
                "postgresql://u:***@db:5432/app",
            ),
            (
                "postgres://u:s%40cr%3At@h1,h2/app?sslmode=disable",
                "postgres://u:***@h1,h2/app?sslmode=disable",
            ),
            (
                "postgresql://u@db/app?password=secret&application_name=x",
                "postgresql://u@db/app?password=***&application_name=x",
            ),
            ("postgresql://db/app", "postgresql://db/app"),
            ("postgresql://u@db/app", "postgresql://u@db/app"),
            // A raw '@' or '/' in the password: tokio-postgres splits at the first '@'.
            ("postgresql://u:pa/ss@db/app", "postgresql://u:***@db/app"),
            (
                "host=db user=u password=secret dbname=app",
                "host=db user=u password=*** dbname=app",
            ),
            (
                "host=db password = 'it\\'s a secret' dbname=app",
                "host=db password = *** dbname=app",
            ),
            ("password='a b c'", "password=***"),
            ("host=db", "host=db"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "redacting {input:?}");
        }
    }

    #[test]
    fn redaction_never_lets_the_password_through() {
        let password = "Tr0ub4dor";
        for conn in [
            format!("postgresql://user:{password}@host/db"),
            format!("postgresql://user@host/db?password={password}"),
            format!("postgresql://user@host/db?sslmode=require&PASSWORD={password}"),
            format!("user=user password={password}"),
            format!("user=user password='{password}' host=h"),
            format!("user=user\tpassword=\n{password}"),
        ] {
            let redacted = redact(&conn);
            assert!(!redacted.contains(password), "{conn:?} became {redacted:?}");
        }
    }

    #[test]
    fn docs_are_public_on_loopback_and_authenticated_elsewhere() {
        let url = "postgresql://integration_sidecar@db/app";
        for (listen, expected) in [
            ("127.0.0.1:8080", DocsAccess::Public),
            ("[::1]:8080", DocsAccess::Public),
            ("0.0.0.0:8080", DocsAccess::Authenticated),
            ("192.0.2.7:8080", DocsAccess::Authenticated),
        ] {
            let config = parse(&["--database-url", url, "--listen-addr", listen]).expect("valid");
            assert_eq!(config.docs(), expected, "{listen}");
        }
    }

    #[test]
    fn docs_access_is_read_from_the_flag_or_docs() {
        let url = "postgresql://integration_sidecar@db/app";
        let config = parse(&["--database-url", url, "--docs", "off"]).expect("valid");
        assert_eq!(config.docs(), DocsAccess::Off);
        let config = parse(&[
            "--database-url",
            url,
            "--listen-addr",
            "0.0.0.0:80",
            "--docs",
            "public",
        ])
        .expect("valid");
        assert_eq!(config.docs(), DocsAccess::Public);
        let config =
            parse_with_env(&[("DOCS", "authenticated")], &["--database-url", url]).expect("valid");
        assert_eq!(config.docs(), DocsAccess::Authenticated);
        let config = parse_with_env(
            &[("DOCS", "public")],
            &["--database-url", url, "--docs", "off"],
        )
        .expect("valid");
        assert_eq!(config.docs(), DocsAccess::Off, "the flag wins");
        let refused = parse(&["--database-url", url, "--docs", "private"]);
        assert!(refused.is_err(), "an unknown mode is refused");
    }
}
