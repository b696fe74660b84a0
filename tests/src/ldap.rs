//! A throwaway OpenLDAP server (Debian `slapd`): a cn=config of ours loaded
//! with `slapadd -n0`, started on two free loopback ports (ldap:// with
//! StartTLS, and ldaps://) with a certificate for 127.0.0.1 from a
//! throwaway CA made by openssl, the memberOf overlay, and a small directory added over
//! LDAP (so the overlay fills memberOf). Stopped and deleted on drop.

use crate::certs::make_certificate;
use crate::process::{free_port, run_checked, wait_for_ports};
use crate::sidecar::scratch_dir;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BASE_DN: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PASSWORD: &str = "admin-secret";
/// A read-only service account for search-then-bind.
pub const READER_DN: &str = "cn=reader,ou=services,dc=example,dc=org";
pub const READER_PASSWORD: &str = "reader-secret";
/// Group whose members `memberOf` names.
pub const ADMINS_GROUP: &str = "cn=admins,ou=groups,dc=example,dc=org";

/// The people in the directory: (uid, common name, mail, password, in admins).
pub const PEOPLE: [(&str, &str, &str, &str, bool); 3] = [
    ("ada", "Ada Lovelace", "ada@example.org", "ada-secret", true),
    ("bob", "Bob Builder", "bob@example.org", "bob-secret", false),
    // A uid with filter metacharacters: found only when they are escaped.
    (
        "al*ce",
        "Alice Star",
        "alice@example.org",
        "alice-secret",
        false,
    ),
];

pub struct Slapd {
    child: Child,
    dir: PathBuf,
    pub port: u16,
    pub tls_port: u16,
    /// The self-signed CA (PEM) that issued the certificate of LDAPS and StartTLS.
    pub ca_pem: String,
}

impl Slapd {
    pub fn start() -> Slapd {
        for tool in ["/usr/sbin/slapd", "/usr/sbin/slapadd", "/usr/bin/ldapadd"] {
            assert!(
                PathBuf::from(tool).exists(),
                "{tool} is missing: run `make test-deps` (make test does it)"
            );
        }
        let (port, tls_port) = (free_port(), free_port());
        let dir = scratch_dir(&format!("slapd-{port}"));
        fs::create_dir_all(dir.join("slapd.d")).expect("create slapd.d");
        fs::create_dir_all(dir.join("data")).expect("create the data folder");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let ca = dir.join("ca.pem");
        make_certificate(&dir, &ca, &cert, &key);
        let config = dir.join("config.ldif");
        fs::write(&config, config_ldif(&dir)).expect("write config.ldif");
        run_checked(
            Command::new("/usr/sbin/slapadd")
                .args(["-n0", "-F"])
                .arg(dir.join("slapd.d"))
                .arg("-l")
                .arg(&config),
            "slapadd -n0",
        );
        let log = fs::File::create(dir.join("slapd.log")).expect("create slapd.log");
        let child = Command::new("/usr/sbin/slapd")
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/"
            ))
            .arg("-F")
            .arg(dir.join("slapd.d"))
            // Stay in the foreground (so drop can stop it) and log nothing.
            .args(["-d", "0"])
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn slapd");
        let mut slapd = Slapd {
            child,
            ca_pem: fs::read_to_string(&ca).expect("read the CA certificate"),
            dir,
            port,
            tls_port,
        };
        let log_path = slapd.dir.join("slapd.log");
        wait_for_ports(
            &mut slapd.child,
            &[port, tls_port],
            "slapd",
            Duration::from_secs(20),
            || fs::read_to_string(&log_path).unwrap_or_default(),
        );
        slapd.load_directory();
        slapd
    }

    fn load_directory(&self) {
        let mut ldif = format!(
            "dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
             dn: ou=people,{BASE_DN}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{BASE_DN}\nobjectClass: organizationalUnit\nou: groups\n\n\
             dn: ou=services,{BASE_DN}\nobjectClass: organizationalUnit\nou: services\n\n\
             dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
             cn: reader\nuserPassword: {READER_PASSWORD}\n\n"
        );
        for (uid, cn, mail, password, _) in PEOPLE {
            let sn = cn.rsplit(' ').next().unwrap_or(cn);
            ldif.push_str(&format!(
                "dn: {}\nobjectClass: inetOrgPerson\nuid: {uid}\n\
                 cn: {cn}\nsn: {sn}\nmail: {mail}\nuserPassword: {password}\n\n",
                Self::user_dn(uid)
            ));
        }
        ldif.push_str(&format!(
            "dn: {ADMINS_GROUP}\nobjectClass: groupOfNames\ncn: admins\n"
        ));
        for (uid, _, _, _, admin) in PEOPLE {
            if admin {
                ldif.push_str(&format!("member: {}\n", Self::user_dn(uid)));
            }
        }
        let path = self.dir.join("data.ldif");
        fs::write(&path, ldif).expect("write data.ldif");
        run_checked(
            Command::new("/usr/bin/ldapadd")
                .args(["-x", "-H", &self.url()])
                .args(["-D", ADMIN_DN, "-w", ADMIN_PASSWORD, "-f"])
                .arg(&path)
                .stdout(Stdio::null()),
            "ldapadd (test directory)",
        );
    }

    /// The DN of a person of [`PEOPLE`].
    pub fn user_dn(uid: &str) -> String {
        // The uids of PEOPLE need no DN escaping (`*` is plain in a DN).
        format!("uid={uid},ou=people,{BASE_DN}")
    }

    /// `ldap://127.0.0.1:PORT` (plain, StartTLS available).
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT`.
    pub fn tls_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- slapd log ---\n{}", self.log());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn config_ldif(dir: &std::path::Path) -> String {
    let d = dir.display();
    format!(
        "dn: cn=config\nobjectClass: olcGlobal\ncn: config\nolcPidFile: {d}/slapd.pid\n\
         olcTLSCertificateFile: {d}/cert.pem\nolcTLSCertificateKeyFile: {d}/key.pem\n\n\
         dn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\n\
         olcModulePath: /usr/lib/ldap\nolcModuleLoad: back_mdb\nolcModuleLoad: memberof\n\n\
         dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n\
         include: file:///etc/ldap/schema/core.ldif\n\n\
         include: file:///etc/ldap/schema/cosine.ldif\n\n\
         include: file:///etc/ldap/schema/inetorgperson.ldif\n\n\
         dn: olcDatabase={{-1}}frontend,cn=config\nobjectClass: olcDatabaseConfig\n\
         objectClass: olcFrontendConfig\nolcDatabase: {{-1}}frontend\n\n\
         dn: olcDatabase={{0}}config,cn=config\nobjectClass: olcDatabaseConfig\n\
         olcDatabase: {{0}}config\nolcAccess: {{0}}to * by * none\n\n\
         dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\n\
         objectClass: olcMdbConfig\nolcDatabase: {{1}}mdb\nolcSuffix: {BASE_DN}\n\
         olcDbDirectory: {d}/data\nolcDbMaxSize: 10485760\nolcRootDN: {ADMIN_DN}\n\
         olcRootPW: {ADMIN_PASSWORD}\n\
         olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none\n\
         olcAccess: {{1}}to * by * read\n\n\
         dn: olcOverlay={{0}}memberof,olcDatabase={{1}}mdb,cn=config\n\
         objectClass: olcOverlayConfig\nobjectClass: olcMemberOf\nolcOverlay: {{0}}memberof\n\
         olcMemberOfGroupOC: groupOfNames\nolcMemberOfMemberAD: member\n\
         olcMemberOfMemberOfAD: memberOf\n"
    )
}
