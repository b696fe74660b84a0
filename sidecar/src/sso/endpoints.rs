//! Where an identity provider's endpoints may be, for OIDC (the endpoints
//! its discovery names) and OAuth2 (the URLs an admin configured): https
//! (unless the provider sets `allow_http`, for test providers) on the host
//! of the provider's home URL (the OIDC issuer, the OAuth2 `authorize_url`)
//! or one listed in `endpoint_hosts`, since the sidecar sends the code, the
//! client secret and access tokens there. Refusals name no URL: they may
//! reach the browser.

use serde_json::Value;

pub struct EndpointPolicy {
    allow_http: bool,
    /// What the home URL is called in refusals ("the issuer", "authorize_url").
    home: &'static str,
    /// The home URL's host, then those of `endpoint_hosts`, lowercased.
    hosts: Vec<String>,
}

impl EndpointPolicy {
    /// The policy of a provider whose home URL (`home`, e.g. the issuer) is
    /// `home_url`; the home URL itself must pass it.
    pub fn from_config(
        config: &Value,
        home: &'static str,
        home_url: &str,
    ) -> Result<EndpointPolicy, String> {
        let allow_http = match config.get("allow_http") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("allow_http must be true or false".into()),
        };
        let parsed = url::Url::parse(home_url).map_err(|e| format!("{home} is not a URL: {e}"))?;
        let mut hosts: Vec<String> = parsed
            .host_str()
            .map(str::to_ascii_lowercase)
            .into_iter()
            .collect();
        match config.get("endpoint_hosts") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let host = item
                        .as_str()
                        .ok_or("endpoint_hosts must be an array of host names")?;
                    hosts.push(host.to_ascii_lowercase());
                }
            }
            Some(_) => return Err("endpoint_hosts must be an array of host names".into()),
        }
        let policy = EndpointPolicy {
            allow_http,
            home,
            hosts,
        };
        policy.check(home, home_url)?;
        Ok(policy)
    }

    /// Whether `url` (named `what`) may be called; the refusal names no URL.
    pub fn check(&self, what: &str, url: &str) -> Result<(), String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{what} is not a URL: {e}"))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(format!(
                    "{what} must be https (set allow_http only for a test provider)"
                ))
            }
            _ => return Err(format!("{what} must be https")),
        }
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        if self.hosts.contains(&host) {
            Ok(())
        } else {
            Err(format!(
                "{what} is not on {}'s host (list other hosts in endpoint_hosts)",
                self.home
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISSUER: &str = "https://idp.example.org";

    #[test]
    fn endpoints_must_be_https_on_the_home_host_unless_configured() {
        let policy = |config: Value| EndpointPolicy::from_config(&config, "the issuer", ISSUER);
        let strict = policy(json!({})).expect("policy");
        assert!(strict
            .check("t", "https://IDP.example.org:8443/token")
            .is_ok());
        for refused in [
            "http://idp.example.org/token",
            "https://evil.example/token",
            "https://idp.example.org.evil.example/token",
            "file:///etc/passwd",
            "not a url",
            "idp.internal.example/token",
        ] {
            let err = strict
                .check("the token endpoint", refused)
                .expect_err(refused);
            assert!(!err.contains("://"), "{err}");
            assert!(!err.contains("internal"), "{err}");
        }
        let err = strict
            .check("the token endpoint", "https://evil.example/token")
            .expect_err("another host");
        assert!(err.contains("the issuer's host"), "{err}");
        let listed = policy(json!({"endpoint_hosts": ["keys.example.net"], "allow_http": true}))
            .expect("policy");
        assert!(listed.check("t", "http://keys.example.net/jwks").is_ok());
        assert!(listed.check("t", "https://evil.example/jwks").is_err());
        let err = EndpointPolicy::from_config(&json!({}), "the issuer", "http://idp.internal:8080")
            .err()
            .unwrap_or_default();
        assert!(err.contains("allow_http"), "{err}");
        let err =
            EndpointPolicy::from_config(&json!({}), "authorize_url", "idp.internal/authorize")
                .err()
                .unwrap_or_default();
        assert!(err.starts_with("authorize_url is not a URL"), "{err}");
        assert!(!err.contains("internal"), "{err}");
        assert!(policy(json!({"allow_http": "yes"})).is_err());
        assert!(policy(json!({"endpoint_hosts": "a"})).is_err());
    }
}
