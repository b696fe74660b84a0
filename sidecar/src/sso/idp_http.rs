//! The HTTP client for identity providers, shared by OIDC and OAuth2: no
//! redirects, bounded time, the provider's own CA when configured, and every
//! response body (discovery, JWKS, token, userinfo) read through one bounded
//! reader, so a provider cannot make the sidecar hold more than
//! [`MAX_RESPONSE_BYTES`] of one answer. It is the `AsyncHttpClient` handed
//! to the `openidconnect` and `oauth2` crates, which would read any size.

use super::oauth2::text;
use oauth2::{AsyncHttpClient, HttpRequest, HttpResponse};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Longest a call to the identity provider may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from an identity provider. Real discovery documents,
/// JWKS, token responses and userinfo documents are a few KB (an ID token
/// with a few hundred groups, tens of KB).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why a call to the identity provider gave no usable answer. The messages
/// name no URL: they may reach the audit log and the browser.
#[derive(Debug, thiserror::Error)]
pub enum IdpHttpError {
    #[error("the identity provider cannot be reached: {0}")]
    Transport(String),
    #[error("the identity provider's answer is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the identity provider's answer cannot be read: {0}")]
    Http(String),
    /// A URL the provider named is not one the sidecar may call.
    #[error("{0}")]
    Refused(String),
}

/// The client every provider of a kind that talks HTTP keeps.
#[derive(Clone)]
pub struct IdpHttp {
    client: reqwest::Client,
    limit: usize,
}

impl IdpHttp {
    /// No redirects (a token endpoint that redirects could leak the code or
    /// the secret elsewhere), bounded time, and the provider's own CA
    /// (`ca_cert`, PEM) trusted besides the public roots when the config
    /// names one.
    pub fn from_config(config: &serde_json::Value) -> Result<IdpHttp, String> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            // Some APIs (GitHub's) refuse requests without one.
            .user_agent(concat!("integration-sidecar/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = text(config, "ca_cert")? {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| format!("ca_cert is not PEM: {e}"))?;
            if certs.is_empty() {
                return Err("ca_cert holds no certificate".into());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(IdpHttp {
            client,
            limit: MAX_RESPONSE_BYTES,
        })
    }

    /// The underlying client, to build a request with; read its answer with [`IdpHttp::read`].
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The body of `response`, refused past the limit: a declared length is
    /// refused before anything is read, an undeclared one as soon as the
    /// bytes read pass the limit.
    pub async fn read(&self, mut response: reqwest::Response) -> Result<Vec<u8>, IdpHttpError> {
        let limit = self.limit;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(IdpHttpError::TooLarge { limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| IdpHttpError::Transport(crate::db::describe(&e.without_url())))?
        {
            if body.len() + chunk.len() > limit {
                return Err(IdpHttpError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Sends `request` and reads its answer through the bounded reader.
    pub async fn send(&self, request: HttpRequest) -> Result<HttpResponse, IdpHttpError> {
        let request = reqwest::Request::try_from(request)
            .map_err(|e| IdpHttpError::Http(crate::db::describe(&e.without_url())))?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| IdpHttpError::Transport(crate::db::describe(&e.without_url())))?;
        let mut builder = oauth2::http::Response::builder()
            .status(response.status())
            .version(response.version());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let body = self.read(response).await?;
        builder
            .body(body)
            .map_err(|e| IdpHttpError::Http(e.to_string()))
    }
}

impl<'c> AsyncHttpClient<'c> for IdpHttp {
    type Error = IdpHttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<HttpResponse, IdpHttpError>> + Send + Sync + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
