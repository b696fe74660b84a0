//! TLS to remote servers, shared by the wrappers: the modes a server may ask
//! for, the roots its certificate must chain to, and the client certificate
//! a user mapping may present. Asking for TLS always verifies the
//! certificate chain, and the host name too unless the mode is `verify-ca`;
//! no mode falls back to plain text when the server has no TLS.

use crate::fdw::statements::Problem;
use integration_core::data_sources::PLAIN_PASSWORD_OPTION;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use std::sync::Arc;

/// What a server's TLS option asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text.
    Disable,
    /// TLS, the certificate chains to a trusted root; any host name.
    VerifyCa,
    /// TLS, the certificate chains to a trusted root and names the host.
    VerifyFull,
}

/// The TLS settings of one foreign server and user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// A PEM file of the roots to trust instead of the system's.
    pub root_cert: Option<String>,
    /// PEM files of the client certificate (chain) and its private key,
    /// from the user mapping.
    pub client: Option<(String, String)>,
}

/// The names each wrapper gives its options and the mode values.
pub struct TlsOptionNames {
    pub mode: &'static str,
    pub root_cert: &'static str,
    /// The user mapping's client certificate and key options.
    pub client_cert: &'static str,
    pub client_key: &'static str,
    pub values: &'static [(&'static str, TlsMode)],
}

/// A client certificate chain and its private key, read and checked.
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl TlsOptionNames {
    /// The mode `value` stands for; values are case-insensitive.
    pub fn mode(&self, value: &str) -> Result<TlsMode, Problem> {
        self.values
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(value))
            .map(|(_, mode)| *mode)
            .ok_or_else(|| Problem::Option {
                option: self.mode.into(),
                reason: format!(
                    "{value:?} is not a mode; use one of: {}",
                    self.values
                        .iter()
                        .map(|(name, _)| *name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// The validator's check: a mode option names a known mode.
    pub fn check(&self, options: &[Option<String>]) -> Result<(), Problem> {
        for opt in options.iter().flatten() {
            if let Some((name, value)) = opt.split_once('=') {
                if name == self.mode {
                    self.mode(value)?;
                }
            }
        }
        Ok(())
    }

    /// The settings in a server's options and a user mapping's. A root or
    /// client certificate without a mode that uses TLS is refused: it would
    /// suggest TLS where none is; a client certificate needs its key.
    /// The TLS settings of a server `host`: its mode option, else TLS
    /// verified against the roots for a host off this machine, or when a
    /// root certificate is given, and none on loopback.
    pub fn settings(
        &self,
        server: &std::collections::HashMap<String, String>,
        mapping: &std::collections::HashMap<String, String>,
        host: &str,
    ) -> Result<TlsSettings, Problem> {
        let mode = match server.get(self.mode) {
            Some(value) => self.mode(value)?,
            None if integration_core::data_sources::leaves_the_machine(host)
                || server.contains_key(self.root_cert) =>
            {
                TlsMode::VerifyFull
            }
            None => TlsMode::Disable,
        };
        let needs_tls = |option: &str| Problem::Option {
            option: option.into(),
            reason: format!("needs {} set to a mode that uses TLS", self.mode),
        };
        let root_cert = server.get(self.root_cert).cloned();
        if root_cert.is_some() && mode == TlsMode::Disable {
            return Err(needs_tls(self.root_cert));
        }
        let client = match (mapping.get(self.client_cert), mapping.get(self.client_key)) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (Some(_), None) => return Err(self.pair_missing(self.client_key)),
            (None, Some(_)) => return Err(self.pair_missing(self.client_cert)),
        };
        if client.is_some() && mode == TlsMode::Disable {
            return Err(needs_tls(self.client_cert));
        }
        Ok(TlsSettings {
            mode,
            root_cert,
            client,
        })
    }

    /// Whether the server lets a password go without TLS (see
    /// [`PLAIN_PASSWORD_OPTION`]); refuses a password that would cross
    /// the network in plain text when it does not.
    pub fn password_without_tls(
        &self,
        server: &std::collections::HashMap<String, String>,
        host: &str,
        settings: &TlsSettings,
        password: bool,
    ) -> Result<bool, Problem> {
        let allowed = match server
            .get(PLAIN_PASSWORD_OPTION)
            .map(|v| v.to_ascii_lowercase())
        {
            None => false,
            Some(v) if v == "true" || v == "on" => true,
            Some(v) if v == "false" || v == "off" => false,
            Some(_) => {
                return Err(Problem::Option {
                    option: PLAIN_PASSWORD_OPTION.into(),
                    reason: "must be true or false".into(),
                })
            }
        };
        if password
            && !allowed
            && settings.mode == TlsMode::Disable
            && integration_core::data_sources::leaves_the_machine(host)
        {
            return Err(Problem::Option {
                option: self.mode.into(),
                reason: format!(
                    "the password would cross the network to {host} without TLS; use TLS, or set \
                     {PLAIN_PASSWORD_OPTION} 'true' on the server if the network is trusted"
                ),
            });
        }
        Ok(allowed)
    }

    fn pair_missing(&self, missing: &str) -> Problem {
        Problem::Option {
            option: missing.into(),
            reason: format!(
                "the user mapping gives {} or {} but not both",
                self.client_cert, self.client_key
            ),
        }
    }

    /// The client certificate and key the settings name, read and parsed.
    pub fn client_identity(
        &self,
        settings: &TlsSettings,
    ) -> Result<Option<ClientIdentity>, Problem> {
        let Some((cert_path, key_path)) = &settings.client else {
            return Ok(None);
        };
        let read = |option: &str, path: &str| {
            std::fs::read(path).map_err(|e| Problem::Option {
                option: option.into(),
                reason: format!("cannot read {path}: {e}"),
            })
        };
        let cert_pem = read(self.client_cert, cert_path)?;
        let key_pem = read(self.client_key, key_path)?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Problem::Option {
                option: self.client_cert.into(),
                reason: format!("{cert_path} is not a PEM certificate file"),
            })?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| Problem::Option {
            option: self.client_key.into(),
            reason: format!("{key_path} holds no PEM private key"),
        })?;
        Ok(Some(ClientIdentity {
            cert_pem,
            key_pem,
            certs,
            key,
        }))
    }
}

/// The roots to trust: every certificate of the `root_cert` PEM file, or
/// the system's store when there is none.
pub fn roots(
    settings: &TlsSettings,
    option: &str,
) -> Result<Vec<CertificateDer<'static>>, Problem> {
    let problem = |reason: String| Problem::Option {
        option: option.into(),
        reason,
    };
    match &settings.root_cert {
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| problem(format!("cannot read {path}: {e}")))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| problem(format!("{path} is not a PEM certificate file")))?;
            if certs.is_empty() {
                return Err(problem(format!("{path} holds no certificate")));
            }
            Ok(certs)
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                return Err(problem(
                    "the system has no trusted root certificates; give a file".into(),
                ));
            }
            Ok(found.certs)
        }
    }
}

/// A rustls client configuration for `settings` (not `Disable`), which
/// presents the user mapping's client certificate when the server asks.
pub fn client_config(
    settings: &TlsSettings,
    names: &TlsOptionNames,
) -> Result<Arc<ClientConfig>, Problem> {
    let option = names.root_cert;
    let identity = names.client_identity(settings)?;
    let mut store = RootCertStore::empty();
    let (_, ignored) = store.add_parsable_certificates(roots(settings, option)?);
    if store.is_empty() {
        return Err(Problem::Option {
            option: option.into(),
            reason: format!("none of the {ignored} root certificates is usable"),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .build()
        .map_err(|e| Problem::Option {
            option: option.into(),
            reason: e.to_string(),
        })?;
    let verifier: Arc<dyn ServerCertVerifier> = match settings.mode {
        TlsMode::VerifyCa => Arc::new(AnyHostName(webpki)),
        _ => webpki,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Problem::Option {
            option: option.into(),
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder
            .with_client_auth_cert(identity.certs, identity.key)
            .map_err(|e| Problem::Option {
                option: names.client_key.into(),
                reason: format!("does not go with {}: {e}", names.client_cert),
            })?,
    };
    Ok(Arc::new(config))
}

/// `verify-ca`: the full WebPKI check, of which only a name mismatch is
/// forgiven (rustls checks the chain before the name).
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
