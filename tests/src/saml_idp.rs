//! A real SAML identity provider: pysaml2 (PyPI, installed under build/saml
//! by `make test-deps`, signing RSA-SHA256 with Debian's `xmlsec1`) run by
//! our start script `tests/saml/idp.py` on a free loopback port, reached as
//! `http://localhost:PORT` (another site than the sidecar's 127.0.0.1), with
//! its own key and certificate made here, users `alice` (groups staff, dba)
//! and `bob` (users) with passwords, a password form, the Response signed
//! or only the Assertion, and an IdP-initiated login URL; optionally it
//! requires signed AuthnRequests and encrypts its assertions (`Strict`).
//! Stopped on drop (its log shown when the test failed).

use crate::certs::self_signed;
use crate::process::{free_port, wait_for_ports, workspace_root};
use crate::sidecar::scratch_dir;
use crate::web::answer;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The users of the IdP and their passwords.
pub const ALICE: (&str, &str) = ("alice", "alice-password");
pub const BOB: (&str, &str) = ("bob", "bob-password");

/// What the IdP signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signing {
    /// The Response and the Assertion in it.
    Response,
    /// Only the Assertion.
    AssertionOnly,
}

/// What the IdP demands beyond its defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Strict {
    /// AuthnRequests must be signed by a signing certificate of the SP's
    /// metadata (`want_authn_requests_signed`); others get a 403.
    pub want_signed_requests: bool,
    /// Assertions are encrypted to the SP metadata's encryption
    /// certificate, or to the IdP's own where it names none.
    pub encrypt: bool,
}

/// A Response the IdP answered a login with, as its auto-posting form carries it.
pub struct Posted {
    /// Where the form posts (the SP's ACS).
    pub action: String,
    /// The `SAMLResponse` field (base64).
    pub saml_response: String,
    pub relay_state: Option<String>,
}

pub struct SamlIdp {
    child: Option<Child>,
    pub port: u16,
    /// The IdP's signing certificate (PEM).
    pub cert_pem: String,
    /// Holds the key, the certificate and the log; removed on drop unless the test failed.
    dir: PathBuf,
    log_path: PathBuf,
}

impl SamlIdp {
    /// Starts the IdP with a fresh key; it serves the SPs whose metadata
    /// documents are at `sp_metadata` (fetched at its first login, so the
    /// sidecar may start after it).
    pub fn start(name: &str, signing: Signing, sp_metadata: &[String]) -> SamlIdp {
        SamlIdp::start_strict(name, signing, sp_metadata, Strict::default())
    }

    /// [`SamlIdp::start`], demanding what `strict` says.
    pub fn start_strict(
        name: &str,
        signing: Signing,
        sp_metadata: &[String],
        strict: Strict,
    ) -> SamlIdp {
        let flag = |on: bool| if on { "1" } else { "0" };
        let python = workspace_root().join("build/saml/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run `make test-deps` (make test does it)",
            python.display()
        );
        let port = free_port();
        let dir = scratch_dir(&format!("saml-idp-{name}-{port}"));
        let (key, cert) = self_signed(&dir, &format!("saml-idp-{name}"));
        let log_path = dir.join("saml-idp.log");
        let log = fs::File::create(&log_path).expect("create the IdP log");
        let child = Command::new(&python)
            .arg(workspace_root().join("tests/saml/idp.py"))
            .env("PORT", port.to_string())
            .env("KEY_FILE", &key)
            .env("CERT_FILE", &cert)
            .env("SP_METADATA", sp_metadata.join(" "))
            .env(
                "SIGN",
                match signing {
                    Signing::Response => "response",
                    Signing::AssertionOnly => "assertion",
                },
            )
            .env("WANT_SIGNED_REQUESTS", flag(strict.want_signed_requests))
            .env("ENCRYPT", flag(strict.encrypt))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", python.display()));
        let mut idp = SamlIdp {
            child: Some(child),
            port,
            cert_pem: fs::read_to_string(&cert).expect("the certificate"),
            dir,
            log_path,
        };
        let log_path = idp.log_path.clone();
        if let Some(child) = idp.child.as_mut() {
            wait_for_ports(
                child,
                &[port],
                "the pysaml2 IdP",
                Duration::from_secs(60),
                || fs::read_to_string(&log_path).unwrap_or_default(),
            );
        }
        idp
    }

    /// `http://localhost:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.port)
    }

    /// The IdP's metadata document (entity id, SSO URL, signing certificate).
    pub fn metadata(&self) -> String {
        let a = answer(
            crate::web::client()
                .get(self.url("/metadata"))
                .send()
                .expect("GET the IdP metadata"),
        );
        assert_eq!(a.status, 200, "{}\n{}", a.text, self.log());
        a.text
    }

    /// Logs `user` in at `login_url` (the sidecar's redirect to the IdP's
    /// SSO URL, or the IdP-initiated URL) without a browser, and returns
    /// the Response the IdP would have the browser post.
    pub fn log_in(&self, login_url: &str, (user, password): (&str, &str)) -> Posted {
        let client = crate::web::browser();
        let form = answer(client.get(login_url).send().expect("GET the IdP login"));
        assert_eq!(form.status, 200, "{}\n{}", form.text, self.log());
        let key = field(&form.text, "key").expect("the login form's key");
        let a = answer(
            client
                .post(self.url("/login"))
                .form(&[
                    ("key", key.as_str()),
                    ("username", user),
                    ("password", password),
                ])
                .send()
                .expect("POST the IdP login"),
        );
        assert_eq!(a.status, 200, "{}\n{}", a.text, self.log());
        Posted {
            action: attribute(&a.text, "action").expect("the form's action"),
            saml_response: field(&a.text, "SAMLResponse")
                .unwrap_or_else(|| panic!("no SAMLResponse in {}\n{}", a.text, self.log())),
            relay_state: field(&a.text, "RelayState"),
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// The value of the form field `name` of `html` (as pysaml2 and our form write it).
fn field(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    attribute(&html[tag_start..tag_end], "value")
}

/// The first `name="…"` attribute in `html`, unescaped.
fn attribute(html: &str, name: &str) -> Option<String> {
    let start = html.find(&format!("{name}=\""))? + name.len() + 2;
    let end = start + html[start..].find('"')?;
    Some(
        html[start..end]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#x3D;", "=")
            .replace("&#x2B;", "+")
            .replace("&#x2F;", "/")
            .replace("&amp;", "&"),
    )
}

impl Drop for SamlIdp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- pysaml2 IdP log ---\n{}", self.log());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
