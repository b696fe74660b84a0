//! Certificates for TLS peers in tests, made by openssl: a throwaway CA and a
//! server certificate signed by it, for 127.0.0.1 or for names of the test's
//! choosing.

use crate::process::{run_checked, running_as_root};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it
/// (rustls refuses a CA certificate presented as the server's own).
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
    let ca_key = dir.join("ca-key.pem");
    let csr = dir.join("server.csr");
    let ext = dir.join("server.ext");
    fs::write(
        &ext,
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName={names}\n"
        ),
    )
    .expect("write server.ext");
    let openssl = |args: &[&std::ffi::OsStr], what: &str| {
        run_checked(
            Command::new("openssl").args(args).stderr(Stdio::null()),
            what,
        );
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    openssl(
        &[
            os("req"),
            os("-x509"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-days"),
            os("2"),
            os("-subj"),
            os("/CN=pg_integration test CA"),
            os("-keyout"),
            ca_key.as_os_str(),
            os("-out"),
            ca.as_os_str(),
        ],
        "openssl: the test CA",
    );
    openssl(
        &[
            os("req"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-subj"),
            os("/CN=127.0.0.1"),
            os("-keyout"),
            key.as_os_str(),
            os("-out"),
            csr.as_os_str(),
        ],
        "openssl: the server key",
    );
    openssl(
        &[
            os("x509"),
            os("-req"),
            os("-in"),
            csr.as_os_str(),
            os("-CA"),
            ca.as_os_str(),
            os("-CAkey"),
            ca_key.as_os_str(),
            os("-CAcreateserial"),
            os("-days"),
            os("2"),
            os("-extfile"),
            ext.as_os_str(),
            os("-out"),
            cert.as_os_str(),
        ],
        "openssl: the server certificate",
    );
}
