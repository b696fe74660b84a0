//! Certificates for TLS peers in tests, made by openssl: a throwaway CA and a
//! server certificate signed by it, for 127.0.0.1 or for names of the test's
//! choosing.

use crate::process::{run_checked, running_as_root};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it
/// (rustls refuses a CA certificate presented as the server's own).
/// A self-signed RSA-2048 certificate for `/CN={common_name}` and its key,
/// as `idp-cert.pem` and `idp-key.pem` in `dir` (what a SAML IdP signs with).
pub fn self_signed(dir: &Path, common_name: &str) -> (PathBuf, PathBuf) {
    let (key, cert) = (dir.join("idp-key.pem"), dir.join("idp-cert.pem"));
    run_checked(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", &format!("/CN={common_name}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        "openssl req (apt install openssl)",
    );
    (key, cert)
}

pub fn make_certificate(dir: &Path, ca: &Path, cert: &Path, key: &Path) {
    make_certificate_for(dir, ca, cert, key, "IP:127.0.0.1,DNS:localhost");
}

/// A CA, and a server certificate and key signed by it, in one folder.
pub struct ServerCertificate {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServerCertificate {
    /// Made in `dir` for `names` (an openssl subjectAltName list, such as
    /// `DNS:localhost`).
    pub fn new(dir: &Path, names: &str) -> ServerCertificate {
        fs::create_dir_all(dir).expect("create the certificate folder");
        let made = ServerCertificate {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        };
        make_certificate_for(dir, &made.ca, &made.cert, &made.key, names);
        made
    }
}

/// Gives a private key to the `postgres` OS user, mode 0600, as PostgreSQL
/// demands of `ssl_key_file`.
pub fn key_for_postgres(key: &Path) {
    if running_as_root() {
        run_checked(
            Command::new("chown").arg("postgres:postgres").arg(key),
            "chown the key to postgres",
        );
    }
    run_checked(
        Command::new("chmod").arg("0600").arg(key),
        "chmod 0600 the key",
    );
}

/// [`make_certificate`] for the subjectAltName list `names`.
pub fn make_certificate_for(dir: &Path, ca: &Path, cert: &Path, key: &Path, names: &str) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=pg_integration test CA",
            "-keyout",
            path(&dir.join("ca-key.pem")),
            "-out",
            path(ca),
        ],
        "openssl: the test CA",
    );
    sign(
        dir,
        ca,
        "server",
        "/CN=127.0.0.1",
        &format!("extendedKeyUsage=serverAuth\nsubjectAltName={names}\n"),
        (cert, key),
    );
}

impl ServerCertificate {
    /// A client certificate and key for `user` (its CN) signed by this CA,
    /// the key given to the `postgres` OS user (the local server reads it).
    pub fn client(&self, user: &str) -> (PathBuf, PathBuf) {
        let dir = self.ca.parent().expect("the CA's folder");
        let made = (
            dir.join(format!("client-{user}.pem")),
            dir.join(format!("client-{user}-key.pem")),
        );
        sign(
            dir,
            &self.ca,
            &format!("client-{user}"),
            &format!("/CN={user}"),
            "extendedKeyUsage=clientAuth\n",
            (&made.0, &made.1),
        );
        key_for_postgres(&made.1);
        made
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn openssl(args: &[&str], what: &str) {
    run_checked(
        Command::new("openssl").args(args).stderr(Stdio::null()),
        what,
    );
}

/// A key and a certificate for `subject` with the extensions `ext`, signed
/// by the CA `ca` (its key `ca-key.pem` beside it in `dir`).
fn sign(dir: &Path, ca: &Path, name: &str, subject: &str, ext: &str, (cert, key): (&Path, &Path)) {
    let csr = dir.join(format!("{name}.csr"));
    let ext_file = dir.join(format!("{name}.ext"));
    fs::write(
        &ext_file,
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n{ext}"
        ),
    )
    .expect("write the extensions file");
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            path(key),
            "-out",
            path(&csr),
        ],
        "openssl: a key",
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            path(&csr),
            "-CA",
            path(ca),
            "-CAkey",
            path(&dir.join("ca-key.pem")),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            path(&ext_file),
            "-out",
            path(cert),
        ],
        "openssl: a certificate",
    );
}
