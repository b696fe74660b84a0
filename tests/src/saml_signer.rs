//! The signing half of a SAML identity provider, for tests that post
//! Responses to the ACS themselves: an RSA key and self-signed certificate
//! made by openssl, and Responses signed (RSA-SHA256, enveloped, exclusive
//! c14n) by Debian's `xmlsec1`, the tool pysaml2 signs with.

use crate::scratch_dir;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

pub struct SamlSigner {
    dir: PathBuf,
    key: PathBuf,
    /// The certificate to configure as the IdP's (`idp_certificates`).
    pub cert_pem: String,
}

impl SamlSigner {
    /// A new key and certificate in a scratch folder named after `name`.
    pub fn new(name: &str) -> SamlSigner {
        let dir = scratch_dir(&format!("saml-{name}"));
        let key = dir.join("idp-key.pem");
        let cert = dir.join("idp-cert.pem");
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl (apt install openssl)");
        assert!(
            status.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        SamlSigner {
            cert_pem: fs::read_to_string(&cert).expect("the certificate"),
            dir,
            key,
        }
    }

    /// The private key (PEM): configured as `sp_private_key` where this
    /// pair stands for a service provider's.
    pub fn key_pem(&self) -> String {
        std::fs::read_to_string(&self.key).expect("read the key")
    }

    /// The signature template to put right after the Response's Issuer.
    pub fn template(id: &str) -> String {
        format!(
            r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#{id}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue></ds:Signature>"##
        )
    }

    /// `response` (a samlp:Response holding [`SamlSigner::template`]) signed.
    pub fn sign_response(&self, response: &str) -> String {
        let unsigned = self.dir.join("response.xml");
        let signed = self.dir.join("response-signed.xml");
        fs::write(&unsigned, response).expect("write the response");
        let out = Command::new("xmlsec1")
            .arg("--sign")
            .arg("--privkey-pem")
            .arg(&self.key)
            .args([
                "--id-attr:ID",
                "urn:oasis:names:tc:SAML:2.0:protocol:Response",
            ])
            .arg("--output")
            .arg(&signed)
            .arg(&unsigned)
            .output()
            .expect("run xmlsec1 (apt install xmlsec1)");
        assert!(
            out.status.success(),
            "xmlsec1 --sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::read_to_string(&signed).expect("the signed response")
    }
}
