//! OpenID Connect logins with the `openidconnect` crate: discovery from the
//! issuer (cached five minutes, fetched again at once when an ID token is
//! signed by a key the cached JWKS lacks, since providers rotate keys), the
//! authorization-code flow with PKCE (S256), `state` and `nonce`; the ID token
//! is checked for signature (RSA keys of at least 2048 bits), algorithm
//! (allowlist, never `none` nor HMAC), issuer, audience and `azp`, expiry,
//! `nbf`, an `iat` window and nonce, as core's JWT verifier does. Userinfo is
//! read when the provider has it (its `sub` must match); the email address
//! is kept only when `email_verified` is true; RP-initiated logout is offered
//! when the provider advertises an `end_session_endpoint`.
//!
//! Config keys: `issuer`, `client_id`, secret `client_secret` (absent: a
//! public client), `scopes` (openid email profile), `userinfo` (true),
//! `id_token_algs` (RS256 PS256 ES256 EdDSA), `post_logout_redirect_uri`,
//! `ca_cert`, `allow_http` (false: the issuer and every endpoint must be
//! https), `endpoint_hosts` (hosts besides the issuer's that discovery may
//! name for the token, JWKS and userinfo endpoints), and the claim paths of
//! oauth2.rs (`email_claim`, `name_claim`, `groups_claim`).

use super::endpoints::EndpointPolicy;
use super::idp_http::{IdpHttp, IdpHttpError};
use super::oauth2::{code, http_client, required, scopes, text, token_error, userinfo, ClaimPaths};
use super::{Identity, LoginStart, Protocol, SsoError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::future::BoxFuture;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKey,
    CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    LogoutRequest, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope, TokenResponse,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long discovery (and so the provider's JWKS) is trusted before it is fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);
/// Clock skew tolerated on `exp`, `nbf` and `iat`, as core's JWT verifier does.
const CLOCK_LEEWAY_SECS: i64 = 30;
/// Oldest `iat` accepted: a login lasts at most as long as its state (browser.rs).
const MAX_ID_TOKEN_AGE_SECS: i64 = 600;

type Metadata = ProviderMetadataWithLogout;

pub struct Oidc {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    redirect: RedirectUrl,
    scopes: Vec<String>,
    userinfo: bool,
    algs: Vec<CoreJwsSigningAlgorithm>,
    post_logout: Option<PostLogoutRedirectUrl>,
    paths: ClaimPaths,
    http: IdpHttp,
    endpoints: EndpointPolicy,
    discovered: Mutex<Option<(Instant, Arc<Metadata>)>>,
}

fn signing_alg(name: &str) -> Result<CoreJwsSigningAlgorithm, String> {
    Ok(match name {
        "RS256" => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        "RS384" => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
        "RS512" => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
        "PS256" => CoreJwsSigningAlgorithm::RsaSsaPssSha256,
        "PS384" => CoreJwsSigningAlgorithm::RsaSsaPssSha384,
        "PS512" => CoreJwsSigningAlgorithm::RsaSsaPssSha512,
        "ES256" => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        "ES384" => CoreJwsSigningAlgorithm::EcdsaP384Sha384,
        "EdDSA" => CoreJwsSigningAlgorithm::EdDsa,
        other => {
            return Err(format!(
                "id_token_algs: {other} is not allowed (asymmetric algorithms only)"
            ))
        }
    })
}

/// Checks the endpoints named in discovery that the sidecar calls itself
/// with secrets or tokens.
fn check_metadata(policy: &EndpointPolicy, metadata: &Metadata) -> Result<(), String> {
    if let Some(token) = metadata.token_endpoint() {
        policy.check("the token endpoint", token.as_str())?;
    }
    if let Some(userinfo) = metadata.userinfo_endpoint() {
        policy.check("the userinfo endpoint", userinfo.as_str())?;
    }
    policy.check("the JWKS", metadata.jwks_uri().as_str())
}

/// The HTTP client of discovery: refuses a URL the policy does not allow
/// before calling it (the JWKS is fetched during discovery).
struct Guarded<'a> {
    http: &'a IdpHttp,
    endpoints: &'a EndpointPolicy,
}

impl<'c> openidconnect::AsyncHttpClient<'c> for Guarded<'_> {
    type Error = IdpHttpError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, IdpHttpError>>
                + Send
                + Sync
                + 'c,
        >,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        let allowed = self
            .endpoints
            .check("the JWKS", &request.uri().to_string())
            .map_err(IdpHttpError::Refused);
        Box::pin(async move {
            allowed?;
            self.http.send(request).await
        })
    }
}

impl Oidc {
    pub fn from_config(config: &Value, secrets: &Value, redirect: &str) -> Result<Oidc, String> {
        let issuer = required(config, "issuer")?;
        let endpoints = EndpointPolicy::from_config(config, "the issuer", &issuer)?;
        let algs = match config.get("id_token_algs") {
            None | Some(Value::Null) => vec!["RS256", "PS256", "ES256", "EdDSA"]
                .into_iter()
                .map(signing_alg)
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| signing_alg(v.as_str().unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err("id_token_algs must be an array of algorithm names".into()),
        };
        Ok(Oidc {
            issuer: IssuerUrl::new(issuer.clone()).map_err(|e| format!("issuer {issuer}: {e}"))?,
            client_id: ClientId::new(required(config, "client_id")?),
            client_secret: text(secrets, "client_secret")?.map(ClientSecret::new),
            redirect: RedirectUrl::new(redirect.to_owned()).map_err(|e| e.to_string())?,
            scopes: scopes(config, &["openid", "email", "profile"])?,
            userinfo: config
                .get("userinfo")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            algs,
            post_logout: text(config, "post_logout_redirect_uri")?
                .map(PostLogoutRedirectUrl::new)
                .transpose()
                .map_err(|e| format!("post_logout_redirect_uri: {e}"))?,
            paths: ClaimPaths::from_config(config)?,
            http: http_client(config)?,
            endpoints,
            discovered: Mutex::new(None),
        })
    }

    /// The provider's metadata and keys, from cache unless stale or `refresh`.
    async fn metadata(&self, refresh: bool) -> Result<Arc<Metadata>, SsoError> {
        let mut cached = self.discovered.lock().await;
        if let Some((at, metadata)) = cached.as_ref() {
            if !refresh && at.elapsed() < DISCOVERY_TTL {
                return Ok(metadata.clone());
            }
        }
        // Every URL discovery fetches (the document, then the JWKS) is
        // checked before it is called.
        let guarded = Guarded {
            http: &self.http,
            endpoints: &self.endpoints,
        };
        let metadata = Metadata::discover_async(self.issuer.clone(), &guarded)
            .await
            .map_err(|e| {
                SsoError::Upstream(format!(
                    "OIDC discovery of {} failed: {}",
                    self.issuer.as_str(),
                    crate::db::describe(&e)
                ))
            })?;
        check_metadata(&self.endpoints, &metadata).map_err(|e| {
            SsoError::Upstream(format!("OIDC discovery of {}: {e}", self.issuer.as_str()))
        })?;
        let jwks = strong_keys(metadata.jwks(), self.issuer.as_str());
        let metadata = Arc::new(metadata.set_jwks(jwks));
        *cached = Some((Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    fn client(
        &self,
        metadata: &Metadata,
    ) -> CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        CoreClient::from_provider_metadata(
            metadata.clone(),
            self.client_id.clone(),
            self.client_secret.clone(),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    async fn finish(&self, code: &str, kept: &Value) -> Result<Identity, SsoError> {
        let (Some(nonce), Some(verifier)) = (kept["nonce"].as_str(), kept["pkce"].as_str()) else {
            return Err(SsoError::BadRequest(
                "the login cookie lacks its nonce or PKCE verifier".into(),
            ));
        };
        let metadata = self.metadata(false).await?;
        let client = self.client(&metadata);
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SsoError::Upstream(format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let id_token = token
            .id_token()
            .ok_or_else(|| SsoError::Upstream("the token response carries no ID token".into()))?;
        let nonce = Nonce::new(nonce.to_owned());
        let check = |metadata: &Metadata| {
            let client = self.client(metadata);
            check_id_token(
                id_token,
                client.id_token_verifier(),
                &self.algs,
                &nonce,
                self.client_id.as_str(),
                super::session::unix_now(),
            )
        };
        let subject = match check(&metadata) {
            // A key the cached JWKS lacks: the provider may have rotated.
            Err(ClaimsVerificationError::SignatureVerification(_)) => {
                check(&*self.metadata(true).await?)
            }
            other => other,
        }
        .map_err(|e| SsoError::Rejected(format!("the ID token was refused: {e}")))?;
        let mut claims = payload(&id_token.to_string())?;
        if self.userinfo {
            if let Some(url) = metadata.userinfo_endpoint() {
                let info =
                    userinfo(&self.http, url.as_str(), token.access_token().secret()).await?;
                if info["sub"].as_str() != Some(subject.as_str()) {
                    return Err(SsoError::Upstream(
                        "userinfo describes another subject than the ID token".into(),
                    ));
                }
                if let (Value::Object(all), Value::Object(more)) = (&mut claims, info) {
                    for (k, v) in more {
                        all.entry(k).or_insert(v);
                    }
                }
            }
        }
        // Protocol members of the ID token say nothing about the person.
        if let Value::Object(all) = &mut claims {
            for k in [
                "nonce",
                "at_hash",
                "c_hash",
                "aud",
                "azp",
                "exp",
                "iat",
                "auth_time",
                "sid",
            ] {
                all.remove(k);
            }
        }
        let verified = email_verified(&claims);
        let mut identity = self.paths.identity(claims)?;
        identity.subject = subject;
        // An address the provider has not verified may be anyone's: it
        // stays in the claims, never in the session nor identities.email.
        if !verified {
            identity.email = None;
        }
        Ok(identity)
    }
}

/// The provider's keys without the RSA keys under
/// [`integration_core::jwt::MIN_RSA_BITS`]: a token they sign finds no key.
fn strong_keys(jwks: &CoreJsonWebKeySet, issuer: &str) -> CoreJsonWebKeySet {
    let keys = jwks
        .keys()
        .iter()
        .filter(|key| {
            let Some(bits) = rsa_bits(key) else {
                return true;
            };
            let strong = bits >= integration_core::jwt::MIN_RSA_BITS as usize;
            if !strong {
                tracing::warn!(
                    issuer,
                    bits,
                    "OIDC: ignoring an RSA key of the provider's JWKS shorter than 2048 bits"
                );
            }
            strong
        })
        .cloned()
        .collect();
    CoreJsonWebKeySet::new(keys)
}

/// The modulus length of an RSA key, in bits; `None` for other key types.
fn rsa_bits(key: &CoreJsonWebKey) -> Option<usize> {
    let jwk = serde_json::to_value(key).ok()?;
    if jwk["kty"] != "RSA" {
        return None;
    }
    let n = URL_SAFE_NO_PAD
        .decode(jwk["n"].as_str().unwrap_or_default().trim_end_matches('='))
        .unwrap_or_default();
    let n = match n.iter().position(|b| *b != 0) {
        Some(first) => &n[first..],
        None => return Some(0),
    };
    Some(n.len() * 8 - n[0].leading_zeros() as usize)
}

/// Verifies an ID token: signed by a key of the provider's JWKS with an
/// algorithm of `algs`, for our client (and, when it names an authorized
/// party or several audiences, `azp` is our client), from the issuer, valid
/// at `now` (`exp`, `nbf`, issued within the last ten minutes and not in
/// the future), with our nonce. Returns its subject.
fn check_id_token(
    id_token: &CoreIdToken,
    verifier: CoreIdTokenVerifier<'_>,
    algs: &[CoreJwsSigningAlgorithm],
    nonce: &Nonce,
    client_id: &str,
    now: i64,
) -> Result<String, ClaimsVerificationError> {
    let verifier = verifier
        .set_allowed_algs(algs.iter().cloned())
        .set_issue_time_verifier_fn(move |iat| {
            let iat = iat.timestamp();
            if iat > now + CLOCK_LEEWAY_SECS {
                Err(format!("the ID token was issued in the future (iat {iat}, now {now})"))
            } else if iat < now - MAX_ID_TOKEN_AGE_SECS - CLOCK_LEEWAY_SECS {
                Err(format!(
                    "the ID token was issued more than {MAX_ID_TOKEN_AGE_SECS} s ago (iat {iat}, now {now})"
                ))
            } else {
                Ok(())
            }
        });
    let claims = id_token.claims(&verifier, nonce)?;
    let subject = claims.subject().to_string();
    // What the library leaves unchecked, from the verified payload.
    let payload = payload(&id_token.to_string())
        .map_err(|e| ClaimsVerificationError::Other(e.to_string()))?;
    match payload.get("azp") {
        Some(Value::String(azp)) if *azp == client_id => {}
        Some(other) => {
            return Err(ClaimsVerificationError::InvalidAudience(format!(
                "the authorized party (azp) {other} is not this client"
            )))
        }
        None if claims.audiences().len() > 1 => {
            return Err(ClaimsVerificationError::InvalidAudience(
                "an ID token for several audiences must name this client as its authorized party (azp)".into(),
            ))
        }
        None => {}
    }
    match payload.get("nbf") {
        None => {}
        Some(nbf) => match nbf.as_f64() {
            Some(nbf) if nbf <= (now + CLOCK_LEEWAY_SECS) as f64 => {}
            Some(nbf) => {
                return Err(ClaimsVerificationError::Expired(format!(
                    "the ID token is not valid before {nbf} (now {now})"
                )))
            }
            None => {
                return Err(ClaimsVerificationError::Other(
                    "the ID token's nbf is not a number".into(),
                ))
            }
        },
    }
    Ok(subject)
}

/// Whether the provider says the email address was verified (`email_verified: true`).
fn email_verified(claims: &Value) -> bool {
    claims.get("email_verified") == Some(&Value::Bool(true))
}

/// The claims of a token whose signature was verified already.
fn payload(token: &str) -> Result<Value, SsoError> {
    token
        .split('.')
        .nth(1)
        .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| SsoError::Upstream("the ID token payload is not JSON".into()))
}

impl Protocol for Oidc {
    fn start_login<'a>(&'a self, state: &'a str) -> BoxFuture<'a, Result<LoginStart, SsoError>> {
        Box::pin(async move {
            let metadata = self.metadata(false).await?;
            let client = self.client(&metadata);
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            let state = state.to_owned();
            let (url, _, nonce) = client
                .authorize_url(
                    CoreAuthenticationFlow::AuthorizationCode,
                    move || CsrfToken::new(state),
                    Nonce::new_random,
                )
                .add_scopes(self.scopes.iter().cloned().map(Scope::new))
                .set_pkce_challenge(challenge)
                .url();
            Ok(LoginStart {
                url: url.to_string(),
                keep: json!({ "nonce": nonce.secret(), "pkce": verifier.secret() }),
            })
        })
    }

    fn finish_callback<'a>(
        &'a self,
        params: &'a HashMap<String, String>,
        kept: &'a Value,
    ) -> BoxFuture<'a, Result<Identity, SsoError>> {
        Box::pin(async move {
            // RFC 9207: when the provider names itself, it must be ours.
            if params
                .get("iss")
                .is_some_and(|iss| iss != self.issuer.as_str())
            {
                return Err(SsoError::BadRequest(
                    "the callback comes from another issuer".into(),
                ));
            }
            self.finish(code(params)?, kept).await
        })
    }

    fn logout_url<'a>(&'a self) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let metadata = self.metadata(false).await.ok()?;
            let endpoint = metadata
                .additional_metadata()
                .end_session_endpoint
                .clone()?;
            let mut request = LogoutRequest::from(endpoint).set_client_id(self.client_id.clone());
            if let Some(uri) = &self.post_logout {
                request = request.set_post_logout_redirect_uri(uri.clone());
            }
            Some(request.http_get_url().to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use integration_core::jwt;
    use std::str::FromStr;

    const ISSUER: &str = "https://idp.example.org";
    const CLIENT: &str = "pg-app";
    const SECRET: &str = "client-secret-0123456789abcdef0123456789";
    // The RSA key whose public half is kid rsa-1 of the JWKS (core's fixtures).
    const RSA_PEM: &str = include_str!("../../../core/tests/fixtures/jwt/rsa_private.pem");
    const JWKS: &str = include_str!("../../../core/tests/fixtures/jwt/jwks.json");

    fn claims(overrides: Value) -> Value {
        let now = session_now();
        let mut claims = json!({
            "iss": ISSUER, "aud": CLIENT, "sub": "ada", "nonce": "n-0123456789",
            "iat": now, "exp": now + 300,
        });
        if let (Value::Object(all), Value::Object(more)) = (&mut claims, overrides) {
            all.extend(more);
        }
        claims
    }

    fn session_now() -> i64 {
        super::super::session::unix_now()
    }

    /// Verifies `token` the way a login does, for a confidential client
    /// (which knows a secret an HMAC-signed token could abuse).
    fn verify(token: &str) -> Result<String, String> {
        let id_token = CoreIdToken::from_str(token).map_err(|e| e.to_string())?;
        let jwks: CoreJsonWebKeySet = serde_json::from_str(JWKS).expect("JWKS");
        let verifier = CoreIdTokenVerifier::new_confidential_client(
            ClientId::new(CLIENT.into()),
            ClientSecret::new(SECRET.into()),
            IssuerUrl::new(ISSUER.into()).expect("issuer"),
            jwks,
        );
        let algs = [CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256];
        check_id_token(
            &id_token,
            verifier,
            &algs,
            &Nonce::new("n-0123456789".into()),
            CLIENT,
            session_now(),
        )
        .map_err(|e| e.to_string())
    }

    fn rs256(claims: &Value) -> String {
        jwt::sign(claims, RSA_PEM, "RS256", Some("rsa-1")).expect("sign")
    }

    #[test]
    fn id_tokens_are_checked_for_signature_algorithm_audience_expiry_and_nonce() {
        assert_eq!(verify(&rs256(&claims(json!({})))), Ok("ada".into()));
        let refused = |token: &str, why: &str| {
            let err = verify(token).expect_err("refused");
            assert!(err.contains(why), "{why}: {err}");
        };
        refused(
            &rs256(&claims(json!({"exp": session_now() - 600}))),
            "Expired",
        );
        refused(&rs256(&claims(json!({"nonce": "another"}))), "nonce");
        refused(
            &rs256(&claims(json!({"aud": "another-client"}))),
            "audience",
        );
        refused(
            &rs256(&claims(json!({"iss": "https://evil.example"}))),
            "ssuer",
        );
        // alg none, with a valid payload.
        let payload = rs256(&claims(json!({})))
            .split('.')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"rsa-1"}"#);
        refused(&format!("{header}.{payload}."), "");
        // Signed by another key under the provider's kid.
        let other = integration_core::sso::generate_signing_key();
        let forged = jwt::sign(
            &claims(json!({})),
            &other.private_pem,
            "EdDSA",
            Some("rsa-1"),
        )
        .expect("sign");
        refused(&forged, "");
        // HMAC with the client secret: a valid MAC, but not an allowed algorithm.
        let hmac = jwt::sign(&claims(json!({})), SECRET, "HS256", None).expect("sign");
        refused(&hmac, "");
        // A flipped signature byte.
        let good = rs256(&claims(json!({})));
        let mut tampered = good.clone().into_bytes();
        let last = tampered.len() - 5;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        refused(&String::from_utf8(tampered).expect("ascii"), "");
    }

    #[test]
    fn azp_nbf_and_the_iat_window_are_checked_as_core_does() {
        let refused = |overrides: Value, why: &str| {
            let err = verify(&rs256(&claims(overrides.clone()))).expect_err("refused");
            assert!(err.contains(why), "{overrides}: {why}: {err}");
        };
        let now = session_now();
        refused(json!({"azp": "another-client"}), "authorized party");
        // The library refuses audiences besides ours already; azp is checked too.
        refused(json!({"aud": [CLIENT, "another-client"]}), "audience");
        refused(
            json!({"aud": [CLIENT, "another-client"], "azp": "another-client"}),
            "audience",
        );
        refused(json!({"azp": 7}), "");
        refused(json!({"nbf": now + 600}), "not valid before");
        refused(json!({"iat": now + 600}), "in the future");
        refused(json!({"iat": now - 3600}), "ago");
        for accepted in [
            json!({"azp": CLIENT}),
            json!({"aud": [CLIENT], "azp": CLIENT}),
            json!({"nbf": now - 5, "iat": now - 60}),
            json!({"nbf": now + 10}),
        ] {
            assert_eq!(
                verify(&rs256(&claims(accepted.clone()))),
                Ok("ada".into()),
                "{accepted}"
            );
        }
    }

    #[test]
    fn rsa_keys_under_2048_bits_are_dropped_from_the_providers_jwks() {
        let mut jwks: Value = serde_json::from_str(JWKS).expect("JWKS");
        // The modulus of a 1024-bit key (tests/oidc/rsa1024_private.pem).
        let small = json!({"kty": "RSA", "kid": "rsa-small", "alg": "RS256", "e": "AQAB",
            "n": URL_SAFE_NO_PAD.encode([0xe0u8; 128])});
        jwks["keys"].as_array_mut().expect("keys").push(small);
        let jwks: CoreJsonWebKeySet = serde_json::from_value(jwks).expect("JWKS");
        let before: Vec<Option<usize>> = jwks.keys().iter().map(rsa_bits).collect();
        assert!(
            before.contains(&Some(2048)) && before.contains(&Some(1024)),
            "{before:?}"
        );
        let kept = strong_keys(&jwks, ISSUER);
        assert_eq!(kept.keys().len(), jwks.keys().len() - 1);
        assert!(kept
            .keys()
            .iter()
            .all(|k| rsa_bits(k).is_none_or(|b| b >= 2048)));
    }

    #[test]
    fn only_asymmetric_id_token_algorithms_are_accepted() {
        let config = |algs: Value| json!({"issuer": "http://127.0.0.1:1", "allow_http": true, "client_id": "c", "id_token_algs": algs});
        let redirect = "http://127.0.0.1:2/auth/x/callback";
        assert!(
            Oidc::from_config(&config(json!(["RS256", "EdDSA"])), &json!({}), redirect).is_ok()
        );
        for refused in ["none", "HS256", "rs256", ""] {
            let err = Oidc::from_config(&config(json!([refused])), &json!({}), redirect)
                .err()
                .unwrap_or_default();
            assert!(err.contains("not allowed"), "{refused}: {err}");
        }
    }
}
