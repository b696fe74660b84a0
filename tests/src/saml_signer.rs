//! The signing half of a SAML identity provider, for tests that post
//! Responses to the ACS themselves: an RSA key and self-signed certificate
//! made by openssl, and Responses signed (RSA-SHA256, enveloped, exclusive
//! c14n) by Debian's `xmlsec1`, the tool pysaml2 signs with.

use crate::certs::self_signed;
use crate::scratch_dir;
use crate::web::{answer, query};
use crate::Sidecar;
use base64::Engine;
use reqwest::blocking::Client;
use std::fs;
use std::io::Read;
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
        let (key, cert) = self_signed(&dir, name);
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

    /// A Response of IdP `issuer` for `provider` of the sidecar at `base`,
    /// signed, answering `in_response_to` (None: IdP-initiated), with
    /// assertion `id`, valid from `now` to `later` (SAML instants), for
    /// alice@example.org in group `staff`; base64, as the IdP posts it.
    #[allow(clippy::too_many_arguments)]
    pub fn signed_response(
        &self,
        issuer: &str,
        base: &str,
        provider: &str,
        in_response_to: Option<&str>,
        id: &str,
        now: &str,
        later: &str,
    ) -> String {
        let acs = format!("{base}/auth/{provider}/callback");
        let audience = format!("{base}/auth/{provider}/metadata");
        let irt = in_response_to.map_or(String::new(), |r| format!(r#" InResponseTo="{r}""#));
        let xml = format!(
            r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_response-{id}" Version="2.0" IssueInstant="{now}" Destination="{acs}"{irt}><saml:Issuer>{issuer}</saml:Issuer>{signature}<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status><saml:Assertion ID="{id}" Version="2.0" IssueInstant="{now}"><saml:Issuer>{issuer}</saml:Issuer><saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">alice@example.org</saml:NameID><saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData{irt} NotOnOrAfter="{later}" Recipient="{acs}"/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore="{now}" NotOnOrAfter="{later}"><saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience></saml:AudienceRestriction></saml:Conditions><saml:AuthnStatement AuthnInstant="{now}"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement><saml:AttributeStatement><saml:Attribute Name="mail"><saml:AttributeValue>alice@example.org</saml:AttributeValue></saml:Attribute><saml:Attribute Name="groups"><saml:AttributeValue>staff</saml:AttributeValue></saml:Attribute></saml:AttributeStatement></saml:Assertion></samlp:Response>"#,
            signature = Self::template(&format!("_response-{id}")),
        );
        base64::engine::general_purpose::STANDARD.encode(self.sign_response(&xml))
    }
}

/// Starts an SP-initiated login of `provider`; returns the RelayState and
/// the AuthnRequest's ID.
pub fn start_login(browser: &Client, sidecar: &Sidecar, provider: &str) -> (String, String) {
    let a = answer(
        browser
            .get(sidecar.url(&format!("/auth/{provider}/login")))
            .send()
            .expect("GET login"),
    );
    assert_eq!(a.status, 302, "{}\n{}", a.text, sidecar.log());
    let location = a.location.expect("a Location");
    let deflated = base64::engine::general_purpose::STANDARD
        .decode(query(&location, "SAMLRequest").expect("SAMLRequest"))
        .expect("base64");
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(deflated.as_slice())
        .read_to_string(&mut xml)
        .expect("deflated XML");
    let id = xml
        .split(" ID=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the request ID")
        .to_owned();
    (query(&location, "RelayState").expect("RelayState"), id)
}
