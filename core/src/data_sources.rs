//! Data-source URLs as `integration.add_data_source` takes them:
//! `postgresql://user:password@host:port/dbname` (also `postgres://`,
//! `kingbase://`) and `mysql://…` (also `mariadb://`). User and password may
//! be percent-encoded; the password never appears in an error message.
//! TLS settings may come as URL parameters, under the names the engine's
//! clients use (`?sslmode=verify-full&sslrootcert=…`, `?ssl-mode=required
//! &ssl-ca=…`), the client certificate too (`sslcert`/`sslkey`,
//! `ssl-cert`/`ssl-key`: user-mapping options); any other parameter is
//! refused rather than ignored.

use thiserror::Error;
use url::Url;

/// The wrapper a URL's scheme selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    /// The foreign data wrapper of this engine.
    pub fn wrapper(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres_wrapper",
            Engine::Mysql => "mysql_wrapper",
        }
    }

    /// The URL parameters this engine takes, the option each one becomes,
    /// and whether that is a user-mapping option (a client certificate is
    /// the user's, not the server's).
    fn url_parameters(self) -> &'static [(&'static str, &'static str, bool)] {
        match self {
            Engine::Postgres => &[
                ("sslmode", "sslmode", false),
                ("sslrootcert", "sslrootcert", false),
                ("sslcert", "sslcert", true),
                ("sslkey", "sslkey", true),
                (PLAIN_PASSWORD_OPTION, PLAIN_PASSWORD_OPTION, false),
            ],
            Engine::Mysql => &[
                ("ssl-mode", "ssl_mode", false),
                ("ssl_mode", "ssl_mode", false),
                ("ssl-ca", "ssl_ca", false),
                ("ssl_ca", "ssl_ca", false),
                ("ssl-cert", "ssl_cert", true),
                ("ssl_cert", "ssl_cert", true),
                ("ssl-key", "ssl_key", true),
                ("ssl_key", "ssl_key", true),
                (PLAIN_PASSWORD_OPTION, PLAIN_PASSWORD_OPTION, false),
            ],
        }
    }

    /// The server options of this engine's wrapper that set up TLS.
    pub fn tls_options(self) -> &'static [&'static str] {
        match self {
            Engine::Postgres => &["sslmode", "sslrootcert", PLAIN_PASSWORD_OPTION],
            Engine::Mysql => &["ssl_mode", "ssl_ca", PLAIN_PASSWORD_OPTION],
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Engine::Postgres => 5432,
            Engine::Mysql => 3306,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUrl {
    pub engine: Engine,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password: Option<String>,
    /// Server options from URL parameters, by option name.
    pub options: Vec<(String, String)>,
    /// User-mapping options from URL parameters (client certificates).
    pub mapping_options: Vec<(String, String)>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SourceUrlError {
    #[error("the data source URL is not a valid URL")]
    Invalid,
    #[error("unsupported scheme {0:?}: use postgresql://, postgres://, kingbase://, mysql:// or mariadb://")]
    Scheme(String),
    #[error("the data source URL needs a host")]
    NoHost,
    #[error("the data source URL needs a user")]
    NoUser,
    #[error("the data source URL needs a database name as its path")]
    NoDatabase,
    #[error("the data source URL is not valid UTF-8 after percent-decoding")]
    Encoding,
    #[error("unsupported URL parameter {name:?}: this engine takes {known}")]
    Parameter { name: String, known: String },
}

fn decode(part: &str) -> Result<String, SourceUrlError> {
    percent_decode(part).ok_or(SourceUrlError::Encoding)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The server option that lets a password travel without TLS to a host
/// off this machine, or be asked for in clear text by the server.
pub const PLAIN_PASSWORD_OPTION: &str = "allow_password_without_tls";

/// True when a connection to `host` leaves this machine: such a remote
/// gets TLS unless its server options say otherwise, so that a password
/// never crosses a network in clear by default. Loopback names and
/// addresses (`localhost`, 127.0.0.0/8, ::1) may go without.
pub fn leaves_the_machine(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.starts_with('/') {
        return false;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => true,
    }
}

/// Parses a data-source URL. Errors never quote the URL (it may hold a
/// password).
pub fn parse_source_url(text: &str) -> Result<SourceUrl, SourceUrlError> {
    let url = Url::parse(text).map_err(|_| SourceUrlError::Invalid)?;
    let engine = match url.scheme() {
        "postgresql" | "postgres" | "kingbase" => Engine::Postgres,
        "mysql" | "mariadb" => Engine::Mysql,
        other => return Err(SourceUrlError::Scheme(other.to_string())),
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or(SourceUrlError::NoHost)?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let user = decode(url.username())?;
    if user.is_empty() {
        return Err(SourceUrlError::NoUser);
    }
    let password = url.password().map(decode).transpose()?;
    let dbname = decode(url.path().trim_start_matches('/'))?;
    if dbname.is_empty() {
        return Err(SourceUrlError::NoDatabase);
    }
    let mut options = Vec::new();
    let mut mapping_options = Vec::new();
    for (name, value) in url.query_pairs() {
        let known = engine.url_parameters();
        let Some((_, option, mapping)) = known.iter().find(|(param, _, _)| *param == name) else {
            return Err(SourceUrlError::Parameter {
                name: name.into_owned(),
                known: known
                    .iter()
                    .map(|(param, _, _)| *param)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let into = if *mapping {
            &mut mapping_options
        } else {
            &mut options
        };
        into.push((option.to_string(), value.into_owned()));
    }
    Ok(SourceUrl {
        engine,
        options,
        mapping_options,
        port: url.port().unwrap_or(engine.default_port()),
        host,
        dbname,
        user,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_and_mysql_urls() {
        let u = parse_source_url("postgresql://app:pw@db.example:6432/erp").unwrap();
        assert_eq!(u.engine, Engine::Postgres);
        assert_eq!((u.host.as_str(), u.port), ("db.example", 6432));
        assert_eq!(
            (u.user.as_str(), u.password.as_deref()),
            ("app", Some("pw"))
        );
        assert_eq!(u.dbname, "erp");
        let u = parse_source_url("mariadb://root@127.0.0.1/shop").unwrap();
        assert_eq!(u.engine.wrapper(), "mysql_wrapper");
        assert_eq!((u.port, u.password), (3306, None));
        let u = parse_source_url("kingbase://u:p@[::1]/test").unwrap();
        assert_eq!(
            (u.engine, u.host.as_str(), u.port),
            (Engine::Postgres, "::1", 5432)
        );
    }

    #[test]
    fn tls_parameters_become_server_options() {
        let u = parse_source_url(
            "postgresql://u:pw@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            u.options,
            vec![
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/etc/ca.pem".to_string())
            ]
        );
        let u = parse_source_url("mariadb://u@h/db?ssl-mode=required&ssl_ca=/ca.pem").unwrap();
        assert_eq!(
            u.options,
            vec![
                ("ssl_mode".to_string(), "required".to_string()),
                ("ssl_ca".to_string(), "/ca.pem".to_string())
            ]
        );
    }

    #[test]
    fn client_certificates_become_user_mapping_options() {
        let u = parse_source_url(
            "postgresql://u@h/db?sslmode=verify-full&sslcert=/c.pem&sslkey=%2Fk.pem",
        )
        .unwrap();
        assert_eq!(u.options, vec![("sslmode".into(), "verify-full".into())]);
        assert_eq!(
            u.mapping_options,
            vec![
                ("sslcert".to_string(), "/c.pem".to_string()),
                ("sslkey".to_string(), "/k.pem".to_string())
            ]
        );
        let u = parse_source_url("mysql://u@h/db?ssl-mode=required&ssl-cert=/c.pem&ssl_key=/k.pem")
            .unwrap();
        assert_eq!(u.options, vec![("ssl_mode".into(), "required".into())]);
        assert_eq!(
            u.mapping_options,
            vec![
                ("ssl_cert".to_string(), "/c.pem".to_string()),
                ("ssl_key".to_string(), "/k.pem".to_string())
            ]
        );
    }

    #[test]
    fn unknown_parameters_are_refused_not_ignored() {
        let err = parse_source_url("mysql://u:secret@h/db?sslmode=require").unwrap_err();
        assert_eq!(
            err,
            SourceUrlError::Parameter {
                name: "sslmode".into(),
                known: "ssl-mode, ssl_mode, ssl-ca, ssl_ca, ssl-cert, ssl_cert, ssl-key, ssl_key, allow_password_without_tls"
                    .into()
            }
        );
        assert!(!err.to_string().contains("secret"));
        assert!(parse_source_url("postgresql://u@h/db?ssl=true").is_err());
    }

    #[test]
    fn percent_encoded_credentials_and_names() {
        let u = parse_source_url("mysql://us%40er:p%40ss%3A%2F%27%22@h/my%20db").unwrap();
        assert_eq!(u.user, "us@er");
        assert_eq!(u.password.as_deref(), Some("p@ss:/'\""));
        assert_eq!(u.dbname, "my db");
    }

    #[test]
    fn only_loopback_goes_without_tls_by_default() {
        for host in [
            "localhost",
            "127.0.0.1",
            "127.0.0.2",
            "::1",
            "[::1]",
            "/var/run/mysqld",
        ] {
            assert!(!leaves_the_machine(host), "{host}");
        }
        for host in [
            "db.internal",
            "10.0.0.8",
            "192.168.1.2",
            "2001:db8::1",
            "localhost.example",
        ] {
            assert!(leaves_the_machine(host), "{host}");
        }
    }

    #[test]
    fn errors_never_quote_the_password() {
        for (url, want) in [
            (
                "http://u:secret@h/db",
                SourceUrlError::Scheme("http".into()),
            ),
            ("postgresql://u:secret@h/", SourceUrlError::NoDatabase),
            ("postgresql://:secret@h/db", SourceUrlError::NoUser),
            ("postgresql://u:secret%ff@h/db", SourceUrlError::Encoding),
            ("not a url secret", SourceUrlError::Invalid),
        ] {
            let err = parse_source_url(url).unwrap_err();
            assert_eq!(err, want, "{url}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }
}
