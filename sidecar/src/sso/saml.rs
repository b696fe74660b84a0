//! SAML 2.0 logins: the provider's configuration (the IdP from its metadata
//! document given inline or fetched from `idp_metadata_url`, or from its
//! entity id, SSO URL and signing certificates), our
//! SP metadata (`GET /auth/{provider}/metadata`), the AuthnRequest sent over
//! the HTTP-Redirect binding, and the checks of a Response posted to the ACS
//! (saml_acs.rs does its HTTP and database side). Signatures are verified by
//! samael, which reduces the document to what was signed before reading it;
//! xmlsec is initialised once per process by samael itself. With our own
//! key pair (saml_sp_key.rs) AuthnRequests are signed and an
//! EncryptedAssertion is decrypted and then checked as a plain assertion.

use super::endpoints::EndpointPolicy;
use super::idp_http::IdpHttp;
use super::oauth2::{required, text};
use super::saml_sp_key::{is_encrypted, SpKey};
use super::session::random_token;
use super::{Identity, LoginStart, Protocol, SingleUse, SsoError};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures_util::future::BoxFuture;
use openssl::x509::X509;
use samael::crypto::AllowedSignatureAlgorithm;
use samael::crypto::CertificateDer;
use samael::key_info::{KeyInfo, X509Data};
use samael::metadata::{
    EncryptionMethod, Endpoint, EntityDescriptor, IdpSsoDescriptor, IndexedEndpoint, KeyDescriptor,
    SpSsoDescriptor, HTTP_POST_BINDING, HTTP_REDIRECT_BINDING,
};
use samael::schema::{Assertion, AuthnRequest, Issuer, NameIdPolicy, Response as SamlResponse};
use samael::service_provider::ServiceProvider;
use samael::traits::ToXml;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::str::FromStr;
use tokio::sync::OnceCell;

const PROTOCOL_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const ENTITY_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity";
const NAME_ID_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";
/// The NameID formats that may be named by their short name.
const NAME_ID_FORMATS: [(&str, &str); 4] = [
    ("unspecified", NAME_ID_UNSPECIFIED),
    (
        "emailAddress",
        "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
    ),
    (
        "persistent",
        "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
    ),
    (
        "transient",
        "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
    ),
];
/// Largest `idp_metadata_xml` read: a federation's aggregate is not an
/// IdP's own metadata.
const MAX_METADATA_BYTES: usize = 1 << 20;
/// Identity fields an attribute may be mapped to.
const ATTRIBUTE_FIELDS: [&str; 3] = ["email", "name", "groups"];
/// Largest `SAMLResponse` read (base64, as posted): a Response with a few
/// hundred attributes fits.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Clock difference tolerated with the IdP on NotBefore/NotOnOrAfter.
const MAX_CLOCK_SKEW_SECS: i64 = 60;
/// How long after its IssueInstant a Response or Assertion is accepted.
const MAX_ISSUE_DELAY_SECS: i64 = 90;
/// What an EncryptedAssertion may be encrypted with (saml_sp_key.rs),
/// announced in our metadata in order of preference.
const DECRYPTED_ALGORITHMS: [&str; 6] = [
    "http://www.w3.org/2009/xmlenc11#aes256-gcm",
    "http://www.w3.org/2009/xmlenc11#aes128-gcm",
    "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
    "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
    "http://www.w3.org/2009/xmlenc11#rsa-oaep",
    "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
];
const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
/// RSA-SHA256 and stronger (samael would take rsa-sha1 by default).
const ALLOWED_ALGORITHMS: [AllowedSignatureAlgorithm; 6] = [
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// The identity provider, as configured.
struct Idp {
    /// The Issuer of its Responses and Assertions (samael checks it).
    #[allow(dead_code)]
    entity_id: String,
    /// Its SingleSignOnService for the HTTP-Redirect binding.
    sso_url: String,
    /// The certificates whose keys may sign its answers (several during a rollover).
    #[allow(dead_code)]
    certificates: Vec<CertificateDer>,
    /// The whole description, as samael's `ServiceProvider` wants it.
    descriptor: EntityDescriptor,
}

/// Where the IdP's metadata is fetched from (`idp_metadata_url`).
struct MetadataUrl {
    url: String,
    /// The shared provider client: no redirects, timeouts, bounded answers.
    http: IdpHttp,
    /// https unless `allow_http`; the SSO URL the metadata names must pass it too.
    policy: EndpointPolicy,
}

/// One SAML provider; built once per configuration load.
pub struct Saml {
    sp_entity_id: String,
    acs_url: String,
    /// The IdP: set when the config gives it, else fetched from `metadata_url`
    /// at the first login after each configuration load (a failed fetch is
    /// tried again at the next one).
    idp: OnceCell<Idp>,
    metadata_url: Option<MetadataUrl>,
    /// The attribute `Name` (or OID) read for each identity field.
    attributes: HashMap<String, String>,
    name_id_format: String,
    allow_idp_initiated: bool,
    /// Our key pair, when configured: signs AuthnRequests, decrypts assertions.
    sp_key: Option<SpKey>,
    /// Our SP metadata, served as is.
    metadata_xml: String,
}

impl Saml {
    /// The provider `name` from its `config`; `public_url` is the sidecar's,
    /// without a trailing slash. Refuses a configuration that would let
    /// anything unverified through (no IdP signing certificate) and IdP
    /// metadata with a DOCTYPE.
    pub fn from_config(
        config: &Value,
        secrets: &Value,
        public_url: &str,
        name: &str,
    ) -> Result<Saml, String> {
        let sp_key = SpKey::from_config(config, secrets)?;
        let by_parts = ["idp_entity_id", "idp_sso_url", "idp_certificates"]
            .iter()
            .any(|key| config.get(*key).is_some_and(|v| !v.is_null()));
        let given = [
            text(config, "idp_metadata_xml")?.is_some(),
            text(config, "idp_metadata_url")?.is_some(),
            by_parts,
        ];
        match given.iter().filter(|g| **g).count() {
            0 => return Err("config lacks the IdP: give idp_metadata_url, idp_metadata_xml, or idp_entity_id + idp_sso_url + idp_certificates".into()),
            1 => {}
            _ => return Err("give the IdP by exactly one of idp_metadata_url, idp_metadata_xml, or idp_entity_id + idp_sso_url + idp_certificates".into()),
        }
        let (idp, metadata_url) = match text(config, "idp_metadata_url")? {
            Some(url) => {
                let policy = EndpointPolicy::from_config(config, "idp_metadata_url", &url)?;
                let http = IdpHttp::from_config(config)?;
                (OnceCell::new(), Some(MetadataUrl { url, http, policy }))
            }
            None => {
                let idp = match text(config, "idp_metadata_xml")? {
                    Some(xml) => idp_from_metadata("idp_metadata_xml", &xml)?,
                    None => idp_from_parts(config)?,
                };
                EndpointPolicy::from_config(config, "the IdP's SSO URL", &idp.sso_url)?;
                (OnceCell::new_with(Some(idp)), None)
            }
        };
        let sp_entity_id = text(config, "sp_entity_id")?
            .unwrap_or_else(|| format!("{public_url}/auth/{name}/metadata"));
        if sp_entity_id.trim().is_empty() || sp_entity_id.chars().any(char::is_control) {
            return Err("sp_entity_id must be a non-empty URI".into());
        }
        let saml = Saml {
            acs_url: format!("{public_url}/auth/{name}/callback"),
            sp_entity_id,
            idp,
            metadata_url,
            attributes: attributes(config)?,
            name_id_format: name_id_format(config)?,
            allow_idp_initiated: match config.get("allow_idp_initiated") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err("allow_idp_initiated must be true or false".into()),
            },
            sp_key,
            metadata_xml: String::new(),
        };
        Ok(Saml {
            metadata_xml: saml.sp_metadata_xml()?,
            ..saml
        })
    }

    /// Our SP metadata: entity id, the ACS with the HTTP-POST binding, the
    /// NameID format asked for, and our certificate (for signing and for
    /// encryption, with the algorithms we decrypt) when configured. Without
    /// `validUntil`: it changes only with the configuration.
    fn sp_metadata_xml(&self) -> Result<String, String> {
        let key_descriptors = self.sp_key.as_ref().map(|key| {
            let descriptor = |key_use: &str, encryption_methods| KeyDescriptor {
                key_use: Some(key_use.into()),
                key_info: KeyInfo {
                    id: None,
                    x509_data: Some(X509Data {
                        certificates: vec![key.certificate_b64.clone()],
                    }),
                },
                encryption_methods,
            };
            let methods = DECRYPTED_ALGORITHMS
                .iter()
                .map(|algorithm| EncryptionMethod {
                    algorithm: (*algorithm).into(),
                })
                .collect();
            vec![
                descriptor("signing", None),
                descriptor("encryption", Some(methods)),
            ]
        });
        let descriptor = EntityDescriptor {
            entity_id: Some(self.sp_entity_id.clone()),
            sp_sso_descriptors: Some(vec![SpSsoDescriptor {
                protocol_support_enumeration: Some(PROTOCOL_NS.into()),
                key_descriptors,
                authn_requests_signed: Some(self.sp_key.is_some()),
                want_assertions_signed: Some(true),
                name_id_formats: Some(vec![xml_text(&self.name_id_format)]),
                assertion_consumer_services: vec![IndexedEndpoint {
                    binding: HTTP_POST_BINDING.into(),
                    location: self.acs_url.clone(),
                    response_location: None,
                    index: 0,
                    is_default: Some(true),
                }],
                ..SpSsoDescriptor::default()
            }]),
            ..EntityDescriptor::default()
        };
        descriptor
            .to_string()
            .map_err(|e| format!("cannot write the SP metadata: {e}"))
    }

    /// The IdP, fetched from `idp_metadata_url` if it is not known yet.
    async fn load_idp(&self) -> Result<&Idp, SsoError> {
        self.idp
            .get_or_try_init(|| async {
                let source = self
                    .metadata_url
                    .as_ref()
                    .ok_or_else(|| SsoError::Internal("a SAML provider without its IdP".into()))?;
                let fetched = async {
                    let response = source
                        .http
                        .client()
                        .get(&source.url)
                        .send()
                        .await
                        .map_err(|e| crate::db::describe(&e.without_url()))?;
                    let status = response.status();
                    if !status.is_success() {
                        return Err(format!("the IdP answered HTTP {status}"));
                    }
                    let body = source
                        .http
                        .read(response)
                        .await
                        .map_err(|e| e.to_string())?;
                    String::from_utf8(body).map_err(|_| "the document is not UTF-8".to_owned())
                }
                .await
                .map_err(|e| {
                    SsoError::Upstream(format!(
                        "cannot fetch the IdP metadata (idp_metadata_url): {e}"
                    ))
                })?;
                let idp = idp_from_metadata("the metadata of idp_metadata_url", &fetched)
                    .and_then(|idp| {
                        source.policy.check("the IdP's SSO URL", &idp.sso_url)?;
                        Ok(idp)
                    })
                    .map_err(SsoError::Upstream)?;
                Ok(idp)
            })
            .await
    }

    /// The IdP, once known (see [`Saml::load_idp`]).
    fn idp(&self) -> Result<&Idp, SsoError> {
        self.idp.get().ok_or_else(|| {
            SsoError::Unavailable("the IdP's metadata has not been fetched yet".into())
        })
    }

    /// A fresh AuthnRequest asking for a Response posted to our ACS.
    fn authn_request(&self, id: String) -> Result<AuthnRequest, SsoError> {
        Ok(AuthnRequest {
            id,
            version: "2.0".into(),
            destination: Some(self.idp()?.sso_url.clone()),
            // samael writes the Issuer's text as given: escaped here.
            issuer: Some(Issuer {
                format: Some(ENTITY_FORMAT.into()),
                value: Some(xml_text(&self.sp_entity_id)),
                ..Issuer::default()
            }),
            assertion_consumer_service_url: Some(self.acs_url.clone()),
            protocol_binding: Some(HTTP_POST_BINDING.into()),
            name_id_policy: Some(NameIdPolicy {
                format: Some(self.name_id_format.clone()),
                allow_create: Some(true),
                sp_name_qualifier: None,
            }),
            // IssueInstant: now.
            ..AuthnRequest::default()
        })
    }

    /// The HTTP-Redirect URL of a new AuthnRequest with `relay_state`, and
    /// the request's ID (the ACS will require it as `InResponseTo`).
    fn redirect(&self, relay_state: &str) -> Result<(String, String), SsoError> {
        // An xs:ID is an NCName: it may not start with a digit or `-`.
        let id = format!("_{}", random_token(20));
        let url = self
            .authn_request(id.clone())?
            .redirect(relay_state)
            .map_err(|e| SsoError::Internal(format!("cannot encode the SAML AuthnRequest: {e}")))?
            .ok_or_else(|| SsoError::Internal("the SAML AuthnRequest has no destination".into()))?;
        let url = match &self.sp_key {
            Some(key) => key.sign_redirect(url).map_err(SsoError::Internal)?,
            None => url,
        };
        Ok((url.into(), id))
    }
}

impl Protocol for Saml {
    fn start_login<'a>(&'a self, state: &'a str) -> BoxFuture<'a, Result<LoginStart, SsoError>> {
        Box::pin(async move {
            self.load_idp().await?;
            // samael's errors are not Send: none is kept past an await.
            self.redirect(state).map(|(url, request_id)| LoginStart {
                url,
                keep: json!({ "request_id": request_id }),
            })
        })
    }

    /// `kept` holds the AuthnRequest's ID, or is null for a Response that
    /// answers no login of ours (IdP-initiated).
    fn finish_callback<'a>(
        &'a self,
        params: &'a HashMap<String, String>,
        kept: &'a Value,
    ) -> BoxFuture<'a, Result<Identity, SsoError>> {
        Box::pin(async move {
            let encoded = params.get("SAMLResponse").ok_or_else(|| {
                SsoError::BadRequest(
                    "a SAML login ends with a SAMLResponse posted to the ACS".into(),
                )
            })?;
            self.load_idp().await?;
            // samael's errors are not Send: none is kept past an await.
            self.verify(encoded, kept["request_id"].as_str(), unix_now())
        })
    }

    fn keeps_login_in_database(&self) -> bool {
        true
    }

    fn sp_metadata(&self) -> Option<&str> {
        Some(&self.metadata_xml)
    }
}

fn unix_now() -> i64 {
    super::session::unix_now()
}

impl Saml {
    /// The identity a posted `SAMLResponse` (base64) proves, checked
    /// against the AuthnRequest `request_id` (`None`: IdP-initiated, refused
    /// unless the provider allows it) at Unix time `now`. Refusals name the
    /// check that failed, never the assertion's content.
    fn verify(
        &self,
        encoded: &str,
        request_id: Option<&str>,
        now: i64,
    ) -> Result<Identity, SsoError> {
        let rejected = |why: String| SsoError::Rejected(format!("SAML response refused: {why}"));
        if encoded.len() > MAX_RESPONSE_BYTES {
            return Err(SsoError::BadRequest(format!(
                "a SAMLResponse holds at most {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        let compact: String = encoded
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let xml = STANDARD
            .decode(compact)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                SsoError::BadRequest("SAMLResponse is not base64 of UTF-8 XML".into())
            })?;
        refuse_doctype("the SAML response", &xml).map_err(SsoError::BadRequest)?;
        if request_id.is_none() && !self.allow_idp_initiated {
            return Err(rejected(
                "it answers no login in progress (RelayState unknown, expired or used), and this provider does not allow IdP-initiated logins".into(),
            ));
        }
        // An encrypted assertion is decrypted into its place; from there on
        // it is checked as a plain one.
        let xml = match &self.sp_key {
            Some(key) => key.decrypt_response(&xml).map_err(rejected)?.unwrap_or(xml),
            None if is_encrypted(&xml).map_err(SsoError::BadRequest)? => return Err(rejected(
                "the assertion is encrypted, and this provider has no sp_private_key to decrypt it"
                    .into(),
            )),
            None => xml,
        };
        refuse_doctype("the decrypted SAML response", &xml).map_err(SsoError::BadRequest)?;
        // The envelope, unverified: only ever a reason to refuse. When only
        // the assertion is signed samael skips these; required here.
        let envelope = SamlResponse::from_str(&xml)
            .map_err(|_| rejected("the document is not a SAML Response".into()))?;
        if envelope.destination.as_deref() != Some(self.acs_url.as_str()) {
            return Err(rejected(format!(
                "its Destination is not this ACS ({})",
                self.acs_url
            )));
        }
        let status = envelope
            .status
            .as_ref()
            .and_then(|s| s.status_code.value.as_deref());
        if status != Some(STATUS_SUCCESS) {
            return Err(rejected(format!(
                "the IdP answered status {}",
                status
                    .unwrap_or("(none)")
                    .chars()
                    .take(200)
                    .collect::<String>()
            )));
        }
        let sp = ServiceProvider {
            entity_id: Some(self.sp_entity_id.clone()),
            acs_url: Some(self.acs_url.clone()),
            idp_metadata: self.idp()?.descriptor.clone(),
            allow_idp_initiated: request_id.is_none() && self.allow_idp_initiated,
            max_issue_delay: chrono_seconds(MAX_ISSUE_DELAY_SECS),
            max_clock_skew: chrono_seconds(MAX_CLOCK_SKEW_SECS),
            allowed_signature_algorithms: Some(ALLOWED_ALGORITHMS.to_vec()),
            ..ServiceProvider::default()
        };
        let ids: Vec<&str> = request_id.into_iter().collect();
        let assertion = sp
            .parse_xml_response(&xml, request_id.map(|_| ids.as_slice()))
            .map_err(|e| rejected(e.to_string()))?;
        self.identity(&assertion, now).map_err(rejected)
    }

    /// Checks samael leaves to us on the verified assertion, then the identity.
    fn identity(&self, assertion: &Assertion, now: i64) -> Result<Identity, String> {
        let conditions = assertion
            .conditions
            .as_ref()
            .ok_or("the assertion has no Conditions (no Audience)")?;
        let for_us = conditions
            .audience_restrictions
            .iter()
            .flatten()
            .any(|r| r.audience.contains(&self.sp_entity_id));
        if !for_us {
            return Err(format!(
                "its Audience is not this SP ({})",
                self.sp_entity_id
            ));
        }
        // samael checked these with the skew; checked again so that a
        // future samael that skipped one could not let an expired one through.
        if let Some(before) = conditions.not_before {
            if now + MAX_CLOCK_SKEW_SECS < before.timestamp() {
                return Err("the assertion is not valid yet (NotBefore)".into());
            }
        }
        let issued = assertion.issue_instant.timestamp();
        let mut until = issued + MAX_ISSUE_DELAY_SECS;
        if let Some(after) = conditions.not_on_or_after {
            until = until.min(after.timestamp());
        }
        let until = until + MAX_CLOCK_SKEW_SECS;
        if now >= until {
            return Err("the assertion expired (NotOnOrAfter or IssueInstant)".into());
        }
        let name_id = assertion
            .subject
            .as_ref()
            .and_then(|s| s.name_id.as_ref())
            .ok_or("the assertion names no subject (no NameID)")?;
        let subject = name_id.value.trim().to_owned();
        if subject.is_empty() {
            return Err("the assertion's NameID is empty".into());
        }
        if assertion.id.is_empty() {
            return Err("the assertion has no ID".into());
        }
        let mut claims = serde_json::Map::new();
        let mut values_of: HashMap<&str, Vec<String>> = HashMap::new();
        for attribute in assertion
            .attribute_statements
            .iter()
            .flatten()
            .flat_map(|s| &s.attributes)
        {
            let values: Vec<String> = attribute
                .values
                .iter()
                .filter_map(|v| v.value.clone())
                .collect();
            for key in [&attribute.name, &attribute.friendly_name]
                .into_iter()
                .flatten()
            {
                values_of.entry(key).or_default().extend(values.clone());
            }
            if let Some(key) = &attribute.name {
                let value = match values.as_slice() {
                    [one] => Value::String(one.clone()),
                    many => json!(many),
                };
                claims.insert(key.clone(), value);
            }
        }
        claims.insert("name_id".into(), Value::String(subject.clone()));
        if let Some(format) = &name_id.format {
            claims.insert("name_id_format".into(), Value::String(format.clone()));
        }
        let field = |name: &str| -> Vec<String> {
            self.attributes
                .get(name)
                .and_then(|attribute| values_of.get(attribute.as_str()))
                .cloned()
                .unwrap_or_default()
        };
        Ok(Identity {
            subject,
            email: field("email").into_iter().next(),
            name: field("name").into_iter().next(),
            groups: field("groups"),
            claims: Value::Object(claims),
            logout_key: None,
            single_use: Some(SingleUse {
                id_hash: Sha256::digest(assertion.id.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                until,
            }),
        })
    }
}

/// samael's durations are chrono's.
fn chrono_seconds(secs: i64) -> chrono::Duration {
    chrono::Duration::seconds(secs)
}

/// `GET /auth/{provider}/metadata`: the SP metadata to give the IdP.
pub async fn metadata(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let provider = match super::provider(&state, &name) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let protocol = match &provider.protocol {
        Ok(protocol) => protocol,
        Err(e) => return SsoError::Unavailable(e.clone()).into_response(),
    };
    match protocol.sp_metadata() {
        Some(xml) => {
            let mut response = xml.to_owned().into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/samlmetadata+xml"),
            );
            response
        }
        None => SsoError::NotFound(format!(
            "SSO provider {name} is not a SAML provider: it has no SP metadata"
        ))
        .into_response(),
    }
}

/// The IdP from its metadata document (an `EntityDescriptor`), called
/// `what` in refusals.
fn idp_from_metadata(what: &str, xml: &str) -> Result<Idp, String> {
    if xml.len() > MAX_METADATA_BYTES {
        return Err(format!(
            "{what} holds more than {MAX_METADATA_BYTES} bytes: give the IdP's own EntityDescriptor"
        ));
    }
    refuse_doctype(what, xml)?;
    let descriptor = EntityDescriptor::from_str(xml)
        .map_err(|e| format!("{what} is not a SAML EntityDescriptor: {e}"))?;
    let entity_id = descriptor
        .entity_id
        .clone()
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| format!("{what} has no entityID: give the IdP's own EntityDescriptor"))?;
    if descriptor
        .idp_sso_descriptors
        .as_ref()
        .is_none_or(Vec::is_empty)
    {
        return Err(format!(
            "{what} describes no identity provider (no IDPSSODescriptor)"
        ));
    }
    let sp = ServiceProvider {
        idp_metadata: descriptor,
        ..ServiceProvider::default()
    };
    let sso_url = sp
        .sso_binding_location(HTTP_REDIRECT_BINDING)
        .ok_or_else(|| {
            format!("{what} has no SingleSignOnService with the HTTP-Redirect binding")
        })?;
    let certificates = sp
        .idp_signing_certs()
        .map_err(|e| format!("{what}: {e}"))?
        .unwrap_or_default();
    if certificates.is_empty() {
        return Err(format!("{what} names no signing certificate (a KeyDescriptor with use=\"signing\" or without use): nothing could be verified"));
    }
    for (i, certificate) in certificates.iter().enumerate() {
        X509::from_der(certificate.der_data()).map_err(|e| {
            format!(
                "signing certificate {} of {what} is not an X.509 certificate: {e}",
                i + 1
            )
        })?;
    }
    Ok(Idp {
        entity_id,
        sso_url,
        certificates,
        descriptor: sp.idp_metadata,
    })
}

/// The IdP from `idp_entity_id`, `idp_sso_url` and `idp_certificates`.
fn idp_from_parts(config: &Value) -> Result<Idp, String> {
    let entity_id = required(config, "idp_entity_id")?;
    if entity_id.trim().is_empty() {
        return Err("idp_entity_id must not be empty".into());
    }
    let sso_url = required(config, "idp_sso_url")?;
    let pems = match config.get("idp_certificates") {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => {
            return Err("config lacks idp_certificates (the IdP's signing certificates, PEM): without one nothing could be verified".into())
        }
        Some(_) => return Err("idp_certificates must be an array of PEM certificates".into()),
    };
    let mut certificates = Vec::new();
    for (i, pem) in pems.iter().enumerate() {
        let pem = pem
            .as_str()
            .ok_or("idp_certificates must be an array of PEM certificates")?;
        let parsed = X509::stack_from_pem(pem.as_bytes())
            .map_err(|e| format!("idp_certificates[{i}] is not a PEM certificate: {e}"))?;
        if parsed.is_empty() {
            return Err(format!(
                "idp_certificates[{i}] holds no certificate (-----BEGIN CERTIFICATE-----)"
            ));
        }
        for certificate in parsed {
            let der = certificate
                .to_der()
                .map_err(|e| format!("idp_certificates[{i}]: {e}"))?;
            certificates.push(CertificateDer::from(der));
        }
    }
    if certificates.is_empty() {
        return Err(
            "idp_certificates is empty: without a signing certificate nothing could be verified"
                .into(),
        );
    }
    let key_descriptors = certificates
        .iter()
        .map(|certificate| KeyDescriptor {
            key_use: Some("signing".into()),
            key_info: KeyInfo {
                id: None,
                x509_data: Some(X509Data {
                    certificates: vec![STANDARD.encode(certificate.der_data())],
                }),
            },
            encryption_methods: None,
        })
        .collect();
    let descriptor = EntityDescriptor {
        entity_id: Some(entity_id.clone()),
        idp_sso_descriptors: Some(vec![IdpSsoDescriptor {
            id: None,
            valid_until: None,
            cache_duration: None,
            protocol_support_enumeration: Some(PROTOCOL_NS.into()),
            error_url: None,
            signature: None,
            key_descriptors,
            organization: None,
            contact_people: Vec::new(),
            artifact_resolution_service: Vec::new(),
            single_logout_services: Vec::new(),
            manage_name_id_services: Vec::new(),
            name_id_formats: Vec::new(),
            want_authn_requests_signed: None,
            single_sign_on_services: vec![Endpoint {
                binding: HTTP_REDIRECT_BINDING.into(),
                location: sso_url.clone(),
                response_location: None,
            }],
            name_id_mapping_services: Vec::new(),
            assertion_id_request_services: Vec::new(),
            attribute_profiles: Vec::new(),
            attributes: Vec::new(),
        }]),
        ..EntityDescriptor::default()
    };
    Ok(Idp {
        entity_id,
        sso_url,
        certificates,
        descriptor,
    })
}

/// Refuses XML with a document type declaration: entities are how XML
/// bombs and external-entity reads start, and SAML never needs one.
fn refuse_doctype(what: &str, xml: &str) -> Result<(), String> {
    let lower = xml.to_ascii_lowercase();
    if lower.contains("<!doctype") || lower.contains("<!entity") {
        return Err(format!(
            "{what} holds a DOCTYPE or ENTITY declaration: refused"
        ));
    }
    Ok(())
}

/// `attributes`: which attribute (`Name` or OID) gives email, name, groups.
fn attributes(config: &Value) -> Result<HashMap<String, String>, String> {
    let map = match config.get("attributes") {
        None | Some(Value::Null) => return Ok(HashMap::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err("attributes must be an object like {\"email\": \"mail\", \"name\": \"cn\", \"groups\": \"groups\"}".into()),
    };
    let mut out = HashMap::new();
    for (field, attribute) in map {
        if !ATTRIBUTE_FIELDS.contains(&field.as_str()) {
            return Err(format!(
                "attributes.{field} is not an identity field (use email, name, groups)"
            ));
        }
        match attribute.as_str() {
            Some(name) if !name.trim().is_empty() => {
                out.insert(field.clone(), name.to_owned());
            }
            _ => {
                return Err(format!(
                    "attributes.{field} must be an attribute Name or OID"
                ))
            }
        }
    }
    Ok(out)
}

/// `name_id_format`: a short name (`emailAddress`, …) or a `urn:` format.
fn name_id_format(config: &Value) -> Result<String, String> {
    let Some(given) = text(config, "name_id_format")? else {
        return Ok(NAME_ID_UNSPECIFIED.into());
    };
    if let Some((_, urn)) = NAME_ID_FORMATS.iter().find(|(short, _)| *short == given) {
        return Ok((*urn).into());
    }
    if given.starts_with("urn:") && !given.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Ok(given);
    }
    Err(format!(
        "name_id_format must be unspecified, emailAddress, persistent, transient or a urn: format, not {given:?}"
    ))
}

/// `text` escaped for XML character data.
fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
#[path = "saml_acs_tests.rs"]
mod acs_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::DeflateDecoder;
    use std::io::Read;

    const PUBLIC: &str = "https://sso.example.org";
    /// Two self-signed P-256 certificates (keys thrown away: nothing is signed in step 1).
    const CERT_1: &str = "-----BEGIN CERTIFICATE-----
MIIBgjCCASegAwIBAgIUO73co6/uLdveOVqoPV2edQcCTi0wCgYIKoZIzj0EAwIw
FTETMBEGA1UEAwwKdGVzdC1pZHAtMTAgFw0yNjEyMDYxNTE5MTdaGA8yMTI2MTEx
MjE1MTkxN1owFTETMBEGA1UEAwwKdGVzdC1pZHAtMTBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABOaI7OSsMCkg1YK397A1duYEEvOuA/aak9Ezp7tMJem3aOQcfq4v
6KRYQuOfhSBKd4WBN4pspOdpT+Px6mHHIuSjUzBRMB0GA1UdDgQWBBQCK56Y8Bn4
oyOmxrMgRtoSR+h4TzAfBgNVHSMEGDAWgBQCK56Y8Bn4oyOmxrMgRtoSR+h4TzAP
BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQDM05clhDFUyO42bVWs
On7ISWFx/IoYQVOzlXQ7HJyUrAIhAIrpJPZXqZP7MFJ9S/L5PFrT1HJo6cpS8937
4+1XHtkH
-----END CERTIFICATE-----
";
    const CERT_2: &str = "-----BEGIN CERTIFICATE-----
MIIBgTCCASegAwIBAgIUFeAXJVOY9q/iGHT10eqVRUcllsEwCgYIKoZIzj0EAwIw
FTETMBEGA1UEAwwKdGVzdC1pZHAtMjAgFw0yNjEyMDYxNTE5MTdaGA8yMTI2MTEx
MjE1MTkxN1owFTETMBEGA1UEAwwKdGVzdC1pZHAtMjBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABDXztKoeANqa7cenOXuPufo+hSnjdbyGe/h6wTK/VsLQSeXbiGAO
xucXjjVliPwz/l7zzKEgeJlNvRwotLXmP2CjUzBRMB0GA1UdDgQWBBQz6SK82UU7
pCnktXOOafqDxsSy2jAfBgNVHSMEGDAWgBQz6SK82UU7pCnktXOOafqDxsSy2jAP
BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIEKZ2A7TeCrfRLyJg8kh
1V+WEzFtS3zZ2SxDPZc/uYsLAiEA0BDE8RbZm2gA686Oo3/LSA5Y82NceacBuRkF
V2ddQgU=
-----END CERTIFICATE-----
";

    fn der(pem: &str) -> Vec<u8> {
        X509::from_pem(pem.as_bytes())
            .and_then(|c| c.to_der())
            .expect("test certificate")
    }

    fn base64_body(pem: &str) -> String {
        pem.lines().filter(|l| !l.starts_with("-----")).collect()
    }

    fn by_parts() -> Value {
        json!({
            "idp_entity_id": "https://idp.example.net/saml",
            "idp_sso_url": "https://idp.example.net/sso?tenant=acme",
            "idp_certificates": [CERT_1, CERT_2],
        })
    }

    /// IdP metadata whose POST endpoint comes first: the Redirect one must be picked.
    fn idp_metadata(key_descriptor: &str) -> String {
        format!(
            r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.example.net/meta">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    {key_descriptor}
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://idp.example.net/post"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.net/redirect"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#
        )
    }

    fn signing_key(use_attr: &str) -> String {
        format!(
            r#"<md:KeyDescriptor {use_attr}><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#,
            base64_body(CERT_1)
        )
    }

    fn saml(config: Value) -> Result<Saml, String> {
        Saml::from_config(&config, &json!({}), PUBLIC, "corp")
    }

    fn refusal(config: Value) -> String {
        match saml(config) {
            Ok(_) => panic!("the configuration was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn an_idp_given_by_parts_keeps_every_certificate_and_the_defaults_apply() {
        let p = saml(by_parts()).expect("config");
        assert_eq!(
            p.idp.get().expect("given").entity_id,
            "https://idp.example.net/saml"
        );
        assert_eq!(
            p.idp.get().expect("given").sso_url,
            "https://idp.example.net/sso?tenant=acme"
        );
        let kept: Vec<&[u8]> = p
            .idp
            .get()
            .expect("given")
            .certificates
            .iter()
            .map(|c| c.der_data())
            .collect();
        assert_eq!(kept, vec![der(CERT_1).as_slice(), der(CERT_2).as_slice()]);
        assert_eq!(p.sp_entity_id, "https://sso.example.org/auth/corp/metadata");
        assert_eq!(p.acs_url, "https://sso.example.org/auth/corp/callback");
        assert_eq!(p.name_id_format, NAME_ID_UNSPECIFIED);
        assert!(!p.allow_idp_initiated);
        assert!(p.attributes.is_empty());
        // samael sees the same IdP: the certificates it would verify with and the SSO URL.
        let sp = ServiceProvider {
            idp_metadata: p.idp.get().expect("given").descriptor.clone(),
            ..ServiceProvider::default()
        };
        let certs = sp.idp_signing_certs().expect("certs").expect("some");
        assert_eq!(certs, p.idp.get().expect("given").certificates);
        assert_eq!(
            sp.sso_binding_location(HTTP_REDIRECT_BINDING).as_deref(),
            Some("https://idp.example.net/sso?tenant=acme")
        );

        let mut config = by_parts();
        config["sp_entity_id"] = json!("urn:example:sp");
        config["name_id_format"] = json!("emailAddress");
        config["allow_idp_initiated"] = json!(true);
        config["attributes"] =
            json!({"email": "mail", "name": "cn", "groups": "1.3.6.1.4.1.5923.1.5.1.1"});
        let p = saml(config).expect("config");
        assert_eq!(p.sp_entity_id, "urn:example:sp");
        assert_eq!(
            p.name_id_format,
            "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
        );
        assert!(p.allow_idp_initiated);
        assert_eq!(p.attributes["groups"], "1.3.6.1.4.1.5923.1.5.1.1");
        assert_eq!(p.attributes["email"], "mail");
    }

    #[test]
    fn an_idp_given_by_metadata_gives_its_redirect_endpoint_and_signing_certificate() {
        for use_attr in [r#"use="signing""#, ""] {
            let config = json!({ "idp_metadata_xml": idp_metadata(&signing_key(use_attr)) });
            let p = saml(config).expect(use_attr);
            assert_eq!(
                p.idp.get().expect("given").entity_id,
                "https://idp.example.net/meta"
            );
            assert_eq!(
                p.idp.get().expect("given").sso_url,
                "https://idp.example.net/redirect"
            );
            assert_eq!(p.idp.get().expect("given").certificates.len(), 1);
            assert_eq!(
                p.idp.get().expect("given").certificates[0].der_data(),
                der(CERT_1).as_slice()
            );
        }
    }

    #[test]
    fn metadata_as_real_idps_write_it_is_read() {
        // Default namespace, a metadata signature, extensions, an
        // encryption key beside the signing one, two signing keys (a
        // rollover), several endpoints and formats.
        let xml = format!(
            r##"<?xml version="1.0" encoding="UTF-8"?>
<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" ID="_m1" entityID="https://idp.example.net/realms/corp" validUntil="2099-01-01T00:00:00Z">
  <ds:Signature><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#_m1"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>AAAA</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>AAAA</ds:SignatureValue></ds:Signature>
  <Extensions><foo xmlns="urn:example:ext">bar</foo></Extensions>
  <IDPSSODescriptor WantAuthnRequestsSigned="false" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{c2}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></KeyDescriptor>
    <KeyDescriptor use="signing"><ds:KeyInfo><ds:KeyName>k1</ds:KeyName><ds:X509Data><ds:X509Certificate>
{c1}
    </ds:X509Certificate></ds:X509Data></ds:KeyInfo></KeyDescriptor>
    <KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{c2}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></KeyDescriptor>
    <SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.net/slo"/>
    <NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</NameIDFormat>
    <NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</NameIDFormat>
    <SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://idp.example.net/sso/post"/>
    <SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.net/sso/redirect"/>
    <SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:SOAP" Location="https://idp.example.net/sso/soap"/>
  </IDPSSODescriptor>
  <Organization><OrganizationName xml:lang="en">Example</OrganizationName><OrganizationDisplayName xml:lang="en">Example</OrganizationDisplayName><OrganizationURL xml:lang="en">https://example.net</OrganizationURL></Organization>
  <ContactPerson contactType="technical"><EmailAddress>ops@example.net</EmailAddress></ContactPerson>
</EntityDescriptor>"##,
            c1 = CERT_1
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<Vec<_>>()
                .join("\n"),
            c2 = base64_body(CERT_2),
        );
        let p = saml(json!({ "idp_metadata_xml": xml })).expect("metadata");
        assert_eq!(
            p.idp.get().expect("given").entity_id,
            "https://idp.example.net/realms/corp"
        );
        assert_eq!(
            p.idp.get().expect("given").sso_url,
            "https://idp.example.net/sso/redirect"
        );
        let kept: Vec<&[u8]> = p
            .idp
            .get()
            .expect("given")
            .certificates
            .iter()
            .map(|c| c.der_data())
            .collect();
        assert_eq!(
            kept,
            vec![der(CERT_1).as_slice(), der(CERT_2).as_slice()],
            "the signing keys only, in order"
        );
    }

    #[test]
    fn a_provider_that_could_verify_nothing_is_refused() {
        let refusals = [
            (json!({}), "config lacks the IdP"),
            (
                json!({"idp_entity_id": "e", "idp_sso_url": "https://idp.example.net/sso"}),
                "config lacks idp_certificates",
            ),
            (
                json!({"idp_entity_id": "e", "idp_sso_url": "https://idp.example.net/sso", "idp_certificates": []}),
                "idp_certificates is empty",
            ),
            (
                json!({"idp_entity_id": "e", "idp_sso_url": "https://idp.example.net/sso", "idp_certificates": CERT_1}),
                "must be an array of PEM certificates",
            ),
            (
                json!({"idp_entity_id": "e", "idp_sso_url": "https://idp.example.net/sso", "idp_certificates": ["not a pem"]}),
                "idp_certificates[0]",
            ),
            (
                json!({"idp_entity_id": "e", "idp_sso_url": "https://idp.example.net/sso",
                       "idp_certificates": [CERT_1, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]}),
                "idp_certificates[1]",
            ),
            (
                json!({"idp_sso_url": "https://idp.example.net/sso", "idp_certificates": [CERT_1]}),
                "config lacks idp_entity_id",
            ),
            (
                json!({"idp_metadata_xml": idp_metadata("")}),
                "names no signing certificate",
            ),
            // Only an encryption key: nothing to verify a signature with.
            (
                json!({"idp_metadata_xml": idp_metadata(&signing_key(r#"use="encryption""#))}),
                "names no signing certificate",
            ),
            (
                json!({"idp_metadata_xml": idp_metadata(&signing_key("").replace(&base64_body(CERT_1), "AAAA"))}),
                "is not an X.509 certificate",
            ),
        ];
        for (config, expected) in refusals {
            let e = refusal(config.clone());
            assert!(e.contains(expected), "{config}: {e}");
        }
    }

    #[test]
    fn metadata_with_a_doctype_is_refused_before_it_is_parsed() {
        let metadata = idp_metadata(&signing_key(r#"use="signing""#));
        for doctype in [
            "<!DOCTYPE md:EntityDescriptor [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>",
            "<!doctype foo>",
            "<!ENTITY lol \"lol\">",
        ] {
            let xml = metadata.replacen("?>", &format!("?>{doctype}"), 1);
            let e = refusal(json!({ "idp_metadata_xml": xml }));
            assert!(e.contains("DOCTYPE or ENTITY"), "{doctype}: {e}");
        }
    }

    #[test]
    fn other_configuration_mistakes_are_refused_with_what_to_do() {
        let with = |key: &str, value: Value| {
            let mut config = by_parts();
            config[key] = value;
            refusal(config)
        };
        let e = refusal(json!({"idp_metadata_url": "http://idp.example.net/metadata"}));
        assert!(e.contains("idp_metadata_url must be https"), "{e}");
        assert!(saml(json!({"idp_metadata_url": "https://idp.example.net/metadata"})).is_ok());
        assert!(with("sp_certificate", json!(CERT_1)).contains("without sp_private_key"));
        assert!(with("sp_certificate", json!(["pem"])).contains("must be a PEM text"));
        let e = with("idp_metadata_xml", json!(idp_metadata(&signing_key(""))));
        assert!(e.contains("exactly one of"), "{e}");
        let mut config = by_parts();
        config["idp_metadata_url"] = json!("https://idp.example.net/metadata");
        assert!(refusal(config).contains("exactly one of"));
        let e = with("idp_sso_url", json!("http://idp.example.net/sso"));
        assert!(e.contains("allow_http"), "{e}");
        assert!(!e.contains("://"), "refusals name no URL: {e}");
        let mut config = by_parts();
        config["idp_sso_url"] = json!("http://127.0.0.1:8080/sso");
        config["allow_http"] = json!(true);
        assert!(saml(config).is_ok());
        assert!(with("allow_idp_initiated", json!("yes")).contains("true or false"));
        assert!(with("attributes", json!({"mail": "email"})).contains("attributes.mail"));
        assert!(with("attributes", json!({"email": ""})).contains("attributes.email"));
        assert!(with("attributes", json!(["mail"])).contains("must be an object"));
        assert!(with("name_id_format", json!("email")).contains("name_id_format"));
        assert!(with("sp_entity_id", json!("")).contains("sp_entity_id"));
        let e = refusal(
            json!({"idp_metadata_xml": format!("<x>{}</x>", "a".repeat(MAX_METADATA_BYTES))}),
        );
        assert!(e.contains("more than"), "{e}");
        let e = refusal(
            json!({"idp_metadata_xml": "<md:EntitiesDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\"/>"}),
        );
        assert!(e.contains("entityID"), "{e}");
        let e = refusal(
            json!({"idp_metadata_xml": idp_metadata(&signing_key("")).replace("HTTP-Redirect", "SOAP")}),
        );
        assert!(e.contains("HTTP-Redirect"), "{e}");
    }

    /// The redirect URL's query, and the AuthnRequest it carries, inflated.
    fn sent(url: &str) -> (HashMap<String, String>, String) {
        let url = url::Url::parse(url).expect("url");
        let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let deflated = STANDARD.decode(&query["SAMLRequest"]).expect("base64");
        let mut xml = String::new();
        DeflateDecoder::new(deflated.as_slice())
            .read_to_string(&mut xml)
            .expect("raw deflate");
        (query, xml)
    }

    fn unix_now() -> i64 {
        super::super::session::unix_now()
    }

    #[test]
    fn the_authn_request_is_deflated_into_the_redirect_with_every_field() {
        let mut config = by_parts();
        // An entity id with XML's special characters stays one text node.
        config["sp_entity_id"] = json!("https://sp.example.org/saml?a=1&b=<2>");
        config["name_id_format"] = json!("persistent");
        let p = saml(config).expect("config");
        let before = unix_now();
        let started = futures_executor(p.start_login("the-login-state")).expect("start");
        let request_id = started.keep["request_id"]
            .as_str()
            .expect("kept id")
            .to_owned();

        assert!(
            started.url.starts_with("https://idp.example.net/sso?"),
            "{}",
            started.url
        );
        let (query, xml) = sent(&started.url);
        assert_eq!(query["tenant"], "acme", "the SSO URL's own query is kept");
        assert_eq!(query["RelayState"], "the-login-state");
        assert_eq!(query.len(), 3, "{query:?}");
        assert!(!xml.contains("Signature"), "{xml}");

        let request = AuthnRequest::from_str(&xml).expect("an AuthnRequest");
        assert_eq!(request.id, request_id);
        assert!(
            request.id.starts_with('_') && request.id.len() > 20,
            "{}",
            request.id
        );
        assert_eq!(request.version, "2.0");
        let issued = request.issue_instant.timestamp();
        assert!((before - 1..=unix_now() + 1).contains(&issued), "{issued}");
        assert_eq!(
            request.destination.as_deref(),
            Some("https://idp.example.net/sso?tenant=acme")
        );
        assert_eq!(
            request.assertion_consumer_service_url.as_deref(),
            Some("https://sso.example.org/auth/corp/callback")
        );
        assert_eq!(request.protocol_binding.as_deref(), Some(HTTP_POST_BINDING));
        let issuer = request.issuer.expect("issuer");
        assert_eq!(
            issuer.value.as_deref(),
            Some("https://sp.example.org/saml?a=1&b=<2>")
        );
        assert_eq!(issuer.format.as_deref(), Some(ENTITY_FORMAT));
        let policy = request.name_id_policy.expect("NameIDPolicy");
        assert_eq!(
            policy.format.as_deref(),
            Some("urn:oasis:names:tc:SAML:2.0:nameid-format:persistent")
        );
        assert_eq!(policy.allow_create, Some(true));

        // Every login gets its own request ID.
        let again = futures_executor(p.start_login("the-login-state")).expect("start");
        assert_ne!(again.keep["request_id"], started.keep["request_id"]);
        let (_, xml) = sent(&again.url);
        assert_eq!(
            AuthnRequest::from_str(&xml).expect("request").id,
            again.keep["request_id"].as_str().unwrap_or_default()
        );
    }

    #[test]
    fn the_sp_metadata_names_our_entity_the_post_acs_and_the_name_id_format() {
        let mut config = by_parts();
        config["sp_entity_id"] = json!("https://sp.example.org/saml?a=1&b=2");
        config["name_id_format"] = json!("emailAddress");
        let p = saml(config).expect("config");
        let xml = p.sp_metadata().expect("metadata");
        assert!(!xml.to_ascii_lowercase().contains("<!doctype"));
        let parsed = EntityDescriptor::from_str(xml).expect("metadata parses");
        assert_eq!(
            parsed.entity_id.as_deref(),
            Some("https://sp.example.org/saml?a=1&b=2")
        );
        assert!(parsed.idp_sso_descriptors.is_none_or(|d| d.is_empty()));
        let sps = parsed.sp_sso_descriptors.expect("SPSSODescriptor");
        assert_eq!(sps.len(), 1);
        let sp = &sps[0];
        assert_eq!(
            sp.protocol_support_enumeration.as_deref(),
            Some(PROTOCOL_NS)
        );
        assert_eq!(
            sp.name_id_formats.as_deref(),
            Some(&["urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".to_owned()][..])
        );
        assert_eq!(sp.assertion_consumer_services.len(), 1);
        let acs = &sp.assertion_consumer_services[0];
        assert_eq!(acs.binding, HTTP_POST_BINDING);
        assert_eq!(acs.location, "https://sso.example.org/auth/corp/callback");
        // Built once: served as is.
        assert_eq!(p.sp_metadata(), Some(p.metadata_xml.as_str()));
    }

    /// A loopback server answering every request with the status and body
    /// currently in `answer`; counts the requests.
    async fn metadata_server(
        answer: std::sync::Arc<std::sync::Mutex<(u16, String)>>,
        count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (status, body) = answer.lock().expect("answer").clone();
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            }
        });
        port
    }

    async fn start(p: &Saml) -> Result<LoginStart, SsoError> {
        p.start_login("state").await
    }

    #[tokio::test]
    async fn idp_metadata_url_is_fetched_at_the_first_login_of_each_load_and_checked() {
        use std::sync::atomic::Ordering::SeqCst;
        let answer = std::sync::Arc::new(std::sync::Mutex::new((404, String::new())));
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let port = metadata_server(answer.clone(), count.clone()).await;
        let here = format!("http://127.0.0.1:{port}");
        let metadata = idp_metadata(&signing_key(r#"use="signing""#))
            .replace("https://idp.example.net", &here);
        let config = json!({"idp_metadata_url": format!("{here}/metadata"), "allow_http": true});
        let load = || saml(config.clone()).expect("config");

        // Not there yet: refused, and no URL in the message; tried again next time.
        let p = load();
        let e = start(&p).await.err().expect("refused").to_string();
        assert!(e.contains("HTTP 404"), "{e}");
        assert!(!e.contains("127.0.0.1"), "{e}");
        *answer.lock().expect("answer") = (200, metadata.clone());
        let started = start(&p).await.expect("started");
        assert!(
            started.url.starts_with(&format!("{here}/redirect?")),
            "{}",
            started.url
        );
        start(&p).await.expect("started again");
        assert_eq!(count.load(SeqCst), 2, "fetched once, then kept");
        // A new configuration load reads it again.
        let reloaded = load();
        start(&reloaded).await.expect("started after a reload");
        assert_eq!(count.load(SeqCst), 3);

        // What the document says is checked as if it were given inline.
        for (document, expected) in [
            (
                metadata.replacen("?>", "?><!DOCTYPE x [<!ENTITY a \"b\">]>", 1),
                "DOCTYPE or ENTITY",
            ),
            (idp_metadata(""), "names no signing certificate"),
            (
                metadata.replace(&format!("{here}/redirect"), "http://elsewhere.example/sso"),
                "not on idp_metadata_url's host",
            ),
            ("x".repeat(2 << 20), "larger than"),
        ] {
            *answer.lock().expect("answer") = (200, document);
            let e = start(&load()).await.err().expect("refused").to_string();
            assert!(e.contains(expected), "{expected}: {e}");
        }
    }

    /// Runs a future that never waits (the SAML steps tested here do no I/O).
    fn futures_executor<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }
}
