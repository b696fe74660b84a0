//! panva's `oidc-provider` (npm, installed under build/oidc by `make
//! test-deps`) run by node with our start script `tests/oidc/provider.mjs`
//! on a free loopback port: a fresh signing key at every start, PKCE
//! required, a password-checking login form, automatic consent, and clients
//! redirecting to a sidecar at a given URL; over http, or https with a
//! certificate from a throwaway CA. Stopped on drop.

use crate::certs::make_certificate;
use crate::process::{free_port, wait_for_ports, workspace_root};
use crate::sidecar::scratch_dir;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The accounts of the start script: (login, password, in the "admins" group).
pub const USERS: [(&str, &str, bool); 2] = [
    ("ada", "ada-password", true),
    ("bob", "bob-password", false),
];
/// Confidential client `confidential`, redirecting to `/auth/oidc/callback`.
pub const CONFIDENTIAL_SECRET: &str = "confidential-secret-0123456789abcdef";
/// Client `oauth2` (for the generic OAuth2 provider `generic`).
pub const OAUTH2_SECRET: &str = "oauth2-secret-0123456789abcdef";
/// Client `hs256`, whose ID tokens are signed with this secret (HS256).
pub const HS256_SECRET: &str = "hs256-secret-0123456789abcdef0123456789";

pub struct OidcProvider {
    child: Child,
    pub port: u16,
    /// Holds the log and the certificates; removed on drop unless the test failed.
    dir: PathBuf,
    log_path: PathBuf,
    sidecar_url: String,
    /// The CA (PEM) of the provider's certificate when it serves https.
    pub ca_pem: Option<String>,
}

impl OidcProvider {
    /// Starts the provider for a sidecar that will listen at `sidecar_url`.
    pub fn start(sidecar_url: &str) -> OidcProvider {
        Self::start_on(free_port(), sidecar_url, false)
    }

    /// Starts it serving https with a certificate from a throwaway CA.
    pub fn start_tls(sidecar_url: &str) -> OidcProvider {
        Self::start_on(free_port(), sidecar_url, true)
    }

    fn start_on(port: u16, sidecar_url: &str, tls: bool) -> OidcProvider {
        let home = workspace_root().join("build/oidc");
        assert!(
            home.join("node_modules/oidc-provider").exists(),
            "{} lacks oidc-provider: run `make test-deps` (make test does it)",
            home.display()
        );
        // Node resolves packages next to the script: run our script from there.
        // Tests start providers in parallel: each writes its own copy and
        // renames it into place, so no node ever reads a half-written file.
        let script = home.join("provider.mjs");
        let fresh = home.join(format!("provider.mjs.{}.{port}", std::process::id()));
        fs::copy(workspace_root().join("tests/oidc/provider.mjs"), &fresh)
            .expect("copy provider.mjs next to node_modules");
        fs::rename(&fresh, &script).expect("move provider.mjs into place");
        let dir = scratch_dir(&format!("oidc-{port}"));
        let log_path = dir.join("oidc-provider.log");
        let log = fs::File::create(&log_path).expect("create the provider log");
        let mut command = Command::new("node");
        let mut ca_pem = None;
        if tls {
            let (ca, cert, key) = (
                dir.join("ca.pem"),
                dir.join("cert.pem"),
                dir.join("key.pem"),
            );
            make_certificate(&dir, &ca, &cert, &key);
            ca_pem = Some(fs::read_to_string(&ca).expect("read the CA"));
            command.env("TLS_CERT", &cert).env("TLS_KEY", &key);
        }
        let child = command
            .arg(&script)
            .env("PORT", port.to_string())
            .env("SIDECAR_URL", sidecar_url)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn node");
        let mut provider = OidcProvider {
            child,
            port,
            dir,
            log_path,
            sidecar_url: sidecar_url.to_owned(),
            ca_pem,
        };
        let log_path = provider.log_path.clone();
        wait_for_ports(
            &mut provider.child,
            &[port],
            "oidc-provider",
            // Loading oidc-provider and making an RSA key can take long on
            // two cores busy with other tests; this only bounds a hang.
            Duration::from_secs(120),
            || fs::read_to_string(&log_path).unwrap_or_default(),
        );
        provider
    }

    /// Stops the provider and starts a new one on the same port (new signing key).
    pub fn restart(self) -> OidcProvider {
        let (port, sidecar_url, tls) = (self.port, self.sidecar_url.clone(), self.ca_pem.is_some());
        drop(self);
        Self::start_on(port, &sidecar_url, tls)
    }

    /// The issuer, `http(s)://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- oidc-provider log ---\n{}", self.log());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
