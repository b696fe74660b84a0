//! Certificates for TLS peers in tests, made by openssl: a throwaway CA and a
//! server certificate for 127.0.0.1 signed by it.

use crate::process::run_checked;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it
/// (rustls refuses a CA certificate presented as the server's own).
pub fn make_certificate(dir: &Path, ca: &Path, cert: &Path, key: &Path) {
    let ca_key = dir.join("ca-key.pem");
    let csr = dir.join("server.csr");
    let ext = dir.join("server.ext");
    fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
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
