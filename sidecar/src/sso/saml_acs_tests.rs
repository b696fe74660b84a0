//! The ACS's checks on Responses signed here with test keys (samael's own
//! xmlsec signing): what verifies, and each forgery or mistake it refuses;
//! assertions encrypted here to our SP certificate (AES with RSA-OAEP, as
//! XML Encryption writes them) go through the same checks once decrypted.
//! The database side (pending requests, replays) is tested end to end.

use super::*;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::pkey_ctx::PkeyCtx;
use openssl::rand::rand_bytes;
use openssl::rsa::{Padding, Rsa};
use openssl::symm::{encrypt_aead, Cipher, Crypter, Mode};
use openssl::x509::{X509Builder, X509NameBuilder};
use samael::crypto::{Crypto, CryptoProvider};
use std::sync::OnceLock;

const ACS: &str = "https://sso.example.org/auth/corp/callback";
const SP: &str = "https://sso.example.org/auth/corp/metadata";
const IDP: &str = "https://idp.example.net/saml";
const REQUEST: &str = "_request-of-this-login";
const RSA_SHA256: (&str, &str) = (
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmlenc#sha256",
);
const RSA_SHA1: (&str, &str) = (
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
    "http://www.w3.org/2000/09/xmldsig#sha1",
);

/// An RSA key (private half as DER, for xmlsec) and its self-signed certificate.
struct TestKey {
    der: Vec<u8>,
    cert_pem: String,
}

fn make_key(cn: &str) -> TestKey {
    let pkey = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", cn).expect("cn");
    let name = name.build();
    let mut cert = X509Builder::new().expect("x509");
    cert.set_version(2).expect("version");
    let serial = BigNum::from_u32(1)
        .and_then(|n| n.to_asn1_integer())
        .expect("serial");
    cert.set_serial_number(&serial).expect("serial");
    cert.set_subject_name(&name).expect("subject");
    cert.set_issuer_name(&name).expect("issuer");
    cert.set_pubkey(&pkey).expect("pubkey");
    cert.set_not_before(&Asn1Time::days_from_now(0).expect("now"))
        .expect("not before");
    cert.set_not_after(&Asn1Time::days_from_now(365).expect("later"))
        .expect("not after");
    cert.sign(&pkey, MessageDigest::sha256()).expect("sign");
    TestKey {
        der: pkey.private_key_to_der().expect("der"),
        cert_pem: String::from_utf8(cert.build().to_pem().expect("pem")).expect("utf8"),
    }
}

/// The IdP's key (configured) and another one (not).
fn keys() -> &'static (TestKey, TestKey) {
    static KEYS: OnceLock<(TestKey, TestKey)> = OnceLock::new();
    KEYS.get_or_init(|| (make_key("test-idp"), make_key("someone-else")))
}

/// Our SP key pair (configured on `keyed_provider`) and another SP's.
fn sp_keys() -> &'static (TestKey, TestKey) {
    static KEYS: OnceLock<(TestKey, TestKey)> = OnceLock::new();
    KEYS.get_or_init(|| (make_key("test-sp"), make_key("another-sp")))
}

fn key_pem(key: &TestKey) -> String {
    let pkey = PKey::private_key_from_der(&key.der).expect("key");
    String::from_utf8(pkey.private_key_to_pem_pkcs8().expect("pem")).expect("utf8")
}

/// `provider(false)` with our SP key pair.
fn keyed_provider() -> Saml {
    let config = json!({
        "idp_entity_id": IDP,
        "idp_sso_url": "https://idp.example.net/sso",
        "idp_certificates": [keys().0.cert_pem],
        "attributes": {"email": "mail", "name": "cn", "groups": "groups"},
        "sp_certificate": sp_keys().0.cert_pem,
    });
    let secrets = json!({"sp_private_key": key_pem(&sp_keys().0)});
    Saml::from_config(&config, &secrets, PUBLIC, "corp").expect("config")
}

fn provider(allow_idp_initiated: bool) -> Saml {
    let config = json!({
        "idp_entity_id": IDP,
        "idp_sso_url": "https://idp.example.net/sso",
        "idp_certificates": [keys().0.cert_pem],
        "attributes": {"email": "mail", "name": "cn", "groups": "groups"},
        "allow_idp_initiated": allow_idp_initiated,
    });
    Saml::from_config(&config, &json!({}), PUBLIC, "corp").expect("config")
}

const PUBLIC: &str = "https://sso.example.org";

/// What a test Response says and how it is signed.
struct Case {
    response_signed: bool,
    assertion_signed: bool,
    key: &'static TestKey,
    algorithm: (&'static str, &'static str),
    destination: String,
    recipient: String,
    /// Empty: no AudienceRestriction at all.
    audience: String,
    /// None: the Response answers no request (IdP-initiated).
    in_response_to: Option<String>,
    status: String,
    /// Seconds from now: IssueInstant, and NotOnOrAfter.
    issued: i64,
    expires: i64,
    assertion_id: String,
    name_id: String,
    /// The assertion (signed or not) encrypted before the Response is signed.
    encryption: Option<Encryption>,
}

/// How a test assertion is encrypted: to `cert_pem`, the content with
/// `data`, the content key with `key` (xmlenc algorithm URIs).
struct Encryption {
    cert_pem: String,
    data: &'static str,
    key: &'static str,
}

const AES128_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes128-cbc";
const AES256_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes256-cbc";
const AES128_GCM: &str = "http://www.w3.org/2009/xmlenc11#aes128-gcm";
const AES256_GCM: &str = "http://www.w3.org/2009/xmlenc11#aes256-gcm";
const OAEP: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
const RSA_1_5: &str = "http://www.w3.org/2001/04/xmlenc#rsa-1_5";

impl Encryption {
    fn to_us(data: &'static str) -> Option<Encryption> {
        Some(Encryption {
            cert_pem: sp_keys().0.cert_pem.clone(),
            data,
            key: OAEP,
        })
    }
}

/// `assertion` as an EncryptedAssertion, written as XML Encryption does
/// (IV before the ciphertext, GCM's tag after it, CBC padded with random
/// bytes and the pad length).
fn encrypt(assertion: &str, e: &Encryption) -> String {
    let (cipher, gcm) = match e.data {
        AES128_CBC => (Cipher::aes_128_cbc(), false),
        AES256_CBC => (Cipher::aes_256_cbc(), false),
        AES128_GCM => (Cipher::aes_128_gcm(), true),
        AES256_GCM => (Cipher::aes_256_gcm(), true),
        // 3DES: refused before anything is decrypted.
        _ => (Cipher::des_ede3_cbc(), false),
    };
    let random = |n: usize| {
        let mut bytes = vec![0; n];
        rand_bytes(&mut bytes).expect("random");
        bytes
    };
    let key = random(cipher.key_len());
    let iv = random(cipher.iv_len().expect("iv"));
    let mut content = iv.clone();
    if gcm {
        let mut tag = [0; 16];
        content.extend(
            encrypt_aead(cipher, &key, Some(&iv), &[], assertion.as_bytes(), &mut tag)
                .expect("gcm"),
        );
        content.extend(tag);
    } else {
        let block = cipher.block_size();
        let pad = block - assertion.len() % block;
        let mut plain = assertion.as_bytes().to_vec();
        plain.extend(random(pad - 1));
        plain.push(pad as u8);
        let mut crypter = Crypter::new(cipher, Mode::Encrypt, &key, Some(&iv)).expect("cbc");
        crypter.pad(false);
        let mut out = vec![0; plain.len() + block];
        let n = crypter.update(&plain, &mut out).expect("update");
        let n = n + crypter.finalize(&mut out[n..]).expect("finalize");
        content.extend(&out[..n]);
    }
    let public = X509::from_pem(e.cert_pem.as_bytes())
        .and_then(|c| c.public_key())
        .expect("certificate");
    let mut ctx = PkeyCtx::new(&public).expect("ctx");
    ctx.encrypt_init().expect("init");
    ctx.set_rsa_padding(if e.key == RSA_1_5 {
        Padding::PKCS1
    } else {
        Padding::PKCS1_OAEP
    })
    .expect("padding");
    let mut wrapped = Vec::new();
    ctx.encrypt_to_vec(&key, &mut wrapped).expect("wrap");
    format!(
        r#"<saml:EncryptedAssertion><xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" Type="http://www.w3.org/2001/04/xmlenc#Element"><xenc:EncryptionMethod Algorithm="{data}"/><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><xenc:EncryptedKey><xenc:EncryptionMethod Algorithm="{key}"><ds:DigestMethod Algorithm="http://www.w3.org/2000/09/xmldsig#sha1"/></xenc:EncryptionMethod><xenc:CipherData><xenc:CipherValue>{wrapped}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo><xenc:CipherData><xenc:CipherValue>
{content}
</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData></saml:EncryptedAssertion>"#,
        data = e.data,
        key = e.key,
        wrapped = STANDARD.encode(wrapped),
        content = STANDARD.encode(content),
    )
}

impl Default for Case {
    fn default() -> Case {
        Case {
            response_signed: true,
            assertion_signed: false,
            key: &keys().0,
            algorithm: RSA_SHA256,
            destination: ACS.into(),
            recipient: ACS.into(),
            audience: SP.into(),
            in_response_to: Some(REQUEST.into()),
            status: STATUS_SUCCESS.into(),
            issued: 0,
            expires: 300,
            assertion_id: "_assertion-1".into(),
            name_id: "alice@example.org".into(),
            encryption: None,
        }
    }
}

fn instant(offset: i64) -> String {
    chrono::DateTime::from_timestamp(unix_now() + offset, 0)
        .expect("time")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// An enveloped-signature template over the element with ID `id`.
fn template(id: &str, (method, digest): (&str, &str)) -> String {
    format!(
        r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="{method}"/><ds:Reference URI="#{id}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="{digest}"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue></ds:Signature>"##
    )
}

fn sign(xml: &str, key: &TestKey) -> String {
    let signed = Crypto::sign_xml(xml, &key.der).expect("sign");
    // The signed element goes into another document: no XML declaration.
    match signed.strip_prefix("<?xml") {
        Some(rest) => rest[rest.find("?>").expect("declaration") + 2..]
            .trim_start()
            .to_owned(),
        None => signed,
    }
}

/// The Response's XML.
fn response_xml(c: &Case) -> String {
    let irt = |attr: &str| {
        c.in_response_to
            .as_ref()
            .map_or(String::new(), |id| format!(r#" {attr}="{id}""#))
    };
    let assertion_signature = if c.assertion_signed {
        template(&c.assertion_id, c.algorithm)
    } else {
        String::new()
    };
    let assertion = format!(
        r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ID="{id}" Version="2.0" IssueInstant="{issued}"><saml:Issuer>{IDP}</saml:Issuer>{assertion_signature}<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">{name_id}</saml:NameID><saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData{scd_irt} NotOnOrAfter="{expires}" Recipient="{recipient}"/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore="{not_before}" NotOnOrAfter="{expires}">{audience}</saml:Conditions><saml:AuthnStatement AuthnInstant="{issued}" SessionIndex="_session-1"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement><saml:AttributeStatement><saml:Attribute Name="mail"><saml:AttributeValue xsi:type="xs:string">alice@example.org</saml:AttributeValue></saml:Attribute><saml:Attribute Name="groups"><saml:AttributeValue xsi:type="xs:string">staff</saml:AttributeValue><saml:AttributeValue xsi:type="xs:string">admins</saml:AttributeValue></saml:Attribute><saml:Attribute Name="urn:oid:2.5.4.3" FriendlyName="cn"><saml:AttributeValue xsi:type="xs:string">Alice Liddell</saml:AttributeValue></saml:Attribute></saml:AttributeStatement></saml:Assertion>"#,
        id = c.assertion_id,
        name_id = c.name_id,
        issued = instant(c.issued),
        not_before = instant(c.issued - 5),
        expires = instant(c.expires),
        scd_irt = irt("InResponseTo"),
        recipient = c.recipient,
        audience = if c.audience.is_empty() {
            String::new()
        } else {
            format!(
                "<saml:AudienceRestriction><saml:Audience>{}</saml:Audience></saml:AudienceRestriction>",
                c.audience
            )
        },
    );
    let assertion = if c.assertion_signed {
        sign(&assertion, c.key)
    } else {
        assertion
    };
    let assertion = match &c.encryption {
        Some(e) => encrypt(&assertion, e),
        None => assertion,
    };
    let response_signature = if c.response_signed {
        template("_response-1", c.algorithm)
    } else {
        String::new()
    };
    let response = format!(
        r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_response-1" Version="2.0" IssueInstant="{issued}" Destination="{destination}"{response_irt}><saml:Issuer>{IDP}</saml:Issuer>{response_signature}<samlp:Status><samlp:StatusCode Value="{status}"/></samlp:Status>{assertion}</samlp:Response>"#,
        issued = instant(c.issued),
        destination = c.destination,
        response_irt = irt("InResponseTo"),
        status = c.status,
    );
    if c.response_signed {
        sign(&response, c.key)
    } else {
        response
    }
}

fn encoded(c: &Case) -> String {
    STANDARD.encode(response_xml(c))
}

fn accepted(p: &Saml, c: &Case, request: Option<&str>) -> Identity {
    match p.verify(&encoded(c), request, unix_now()) {
        Ok(identity) => identity,
        Err(e) => panic!("refused: {e}"),
    }
}

/// The reason of a 401 refusal (a verification failure).
fn rejected(p: &Saml, encoded: &str, request: Option<&str>) -> String {
    match p.verify(encoded, request, unix_now()) {
        Err(SsoError::Rejected(why)) => why,
        Err(other) => panic!("refused otherwise: {other:?}"),
        Ok(identity) => panic!("accepted: {identity:?}"),
    }
}

fn rejected_case(c: &Case) -> String {
    rejected(&provider(false), &encoded(c), Some(REQUEST))
}

#[test]
fn a_signed_response_gives_the_name_id_and_the_configured_attributes() {
    let p = provider(false);
    let before = unix_now();
    let identity = accepted(&p, &Case::default(), Some(REQUEST));
    assert_eq!(identity.subject, "alice@example.org");
    assert_eq!(identity.email.as_deref(), Some("alice@example.org"));
    // `name` is mapped to "cn": the attribute's FriendlyName.
    assert_eq!(identity.name.as_deref(), Some("Alice Liddell"));
    assert_eq!(identity.groups, vec!["staff", "admins"]);
    assert_eq!(identity.claims["groups"], json!(["staff", "admins"]));
    assert_eq!(identity.claims["mail"], "alice@example.org");
    assert_eq!(identity.claims["name_id"], "alice@example.org");
    // The assertion's ID, hashed, is to be used once, remembered as long
    // as the assertion could be accepted (IssueInstant + 90 s + skew).
    let once = identity.single_use.expect("single use");
    assert_eq!(
        once.id_hash,
        format!("{:x}", Sha256::digest(b"_assertion-1"))
    );
    assert!(
        (before + 150..=unix_now() + 150).contains(&once.until),
        "{}",
        once.until
    );
}

#[test]
fn a_response_whose_assertion_alone_is_signed_is_accepted() {
    let c = Case {
        response_signed: false,
        assertion_signed: true,
        ..Case::default()
    };
    let identity = accepted(&provider(false), &c, Some(REQUEST));
    assert_eq!(identity.subject, "alice@example.org");
    assert_eq!(identity.groups, vec!["staff", "admins"]);
}

#[test]
fn an_unsigned_response_is_refused() {
    let c = Case {
        response_signed: false,
        ..Case::default()
    };
    let why = rejected_case(&c);
    assert!(why.contains("signed"), "{why}");
}

#[test]
fn a_response_signed_by_another_key_is_refused() {
    for (response_signed, assertion_signed) in [(true, false), (false, true), (true, true)] {
        let c = Case {
            key: &keys().1,
            response_signed,
            assertion_signed,
            ..Case::default()
        };
        let why = rejected_case(&c);
        assert!(why.contains("signed"), "{why}");
    }
}

#[test]
fn a_response_for_another_audience_is_refused_however_it_is_signed() {
    for (response_signed, assertion_signed) in [(true, false), (false, true)] {
        let c = Case {
            audience: "https://other-sp.example.org/metadata".into(),
            response_signed,
            assertion_signed,
            ..Case::default()
        };
        let why = rejected_case(&c);
        assert!(why.contains("Audience"), "{why}");
        // samael checks the audience only when there is a restriction.
        let c = Case {
            audience: String::new(),
            response_signed,
            assertion_signed,
            ..Case::default()
        };
        let why = rejected_case(&c);
        assert!(why.contains("Audience is not this SP"), "{why}");
    }
}

#[test]
fn a_response_for_another_acs_is_refused_however_it_is_signed() {
    for (response_signed, assertion_signed) in [(true, false), (false, true)] {
        // The Response's Destination (unsigned when only the assertion is).
        let c = Case {
            destination: "https://other-sp.example.org/acs".into(),
            response_signed,
            assertion_signed,
            ..Case::default()
        };
        let why = rejected_case(&c);
        assert!(why.contains("Destination"), "{why}");
        // The signed Recipient of the assertion.
        let c = Case {
            recipient: "https://other-sp.example.org/acs".into(),
            response_signed,
            assertion_signed,
            ..Case::default()
        };
        let why = rejected_case(&c);
        assert!(why.contains("Recipient"), "{why}");
    }
}

#[test]
fn an_expired_response_is_refused_and_a_minute_of_skew_is_tolerated() {
    // Issued ten minutes ago, expired five minutes ago.
    let c = Case {
        issued: -600,
        expires: -300,
        ..Case::default()
    };
    let why = rejected_case(&c);
    assert!(why.contains("expired"), "{why}");
    // NotOnOrAfter 30 s ago: within the skew.
    let c = Case {
        issued: -40,
        expires: -30,
        ..Case::default()
    };
    accepted(&provider(false), &c, Some(REQUEST));
    // NotOnOrAfter 2 minutes ago: past it.
    let c = Case {
        issued: -60,
        expires: -120,
        ..Case::default()
    };
    let why = rejected_case(&c);
    assert!(why.contains("expired"), "{why}");
}

#[test]
fn a_response_to_another_login_is_refused() {
    for (response_signed, assertion_signed) in [(true, false), (false, true)] {
        let c = Case {
            in_response_to: Some("_request-of-another-login".into()),
            response_signed,
            assertion_signed,
            ..Case::default()
        };
        let why = rejected_case(&c);
        assert!(why.contains("InResponseTo"), "{why}");
    }
}

#[test]
fn an_idp_initiated_response_is_refused_unless_the_provider_allows_it() {
    let c = Case {
        in_response_to: None,
        ..Case::default()
    };
    let why = rejected(&provider(false), &encoded(&c), None);
    assert!(why.contains("IdP-initiated"), "{why}");
    let identity = accepted(&provider(true), &c, None);
    assert_eq!(identity.subject, "alice@example.org");
    // Allowing IdP-initiated logins does not loosen SP-initiated ones.
    let c = Case {
        in_response_to: Some("_request-of-another-login".into()),
        ..Case::default()
    };
    let why = rejected(&provider(true), &encoded(&c), Some(REQUEST));
    assert!(why.contains("InResponseTo"), "{why}");
}

#[test]
fn a_response_with_a_doctype_is_refused_before_it_is_parsed() {
    let xml = response_xml(&Case::default());
    for doctype in [
        r#"<!DOCTYPE samlp:Response [<!ENTITY x SYSTEM "file:///etc/passwd">]>"#,
        "<!doctype lol [<!ENTITY lol \"lol\">]>",
    ] {
        let with = format!("<?xml version=\"1.0\"?>{doctype}{xml}");
        match provider(false).verify(&STANDARD.encode(with), Some(REQUEST), unix_now()) {
            Err(SsoError::BadRequest(why)) => assert!(why.contains("DOCTYPE"), "{why}"),
            other => panic!("{doctype}: {other:?}"),
        }
    }
}

#[test]
fn an_rsa_sha1_signature_is_refused() {
    for (response_signed, assertion_signed) in [(true, false), (false, true)] {
        let c = Case {
            algorithm: RSA_SHA1,
            response_signed,
            assertion_signed,
            ..Case::default()
        };
        let why = rejected_case(&c);
        assert!(why.contains("signed"), "{why}");
    }
}

#[test]
fn a_failed_status_an_oversized_or_garbled_response_is_refused() {
    let c = Case {
        status: "urn:oasis:names:tc:SAML:2.0:status:Requester".into(),
        ..Case::default()
    };
    let why = rejected_case(&c);
    assert!(why.contains("status:Requester"), "{why}");
    let p = provider(false);
    let huge = "A".repeat(MAX_RESPONSE_BYTES + 4);
    assert!(matches!(
        p.verify(&huge, Some(REQUEST), unix_now()),
        Err(SsoError::BadRequest(why)) if why.contains("at most")
    ));
    assert!(matches!(
        p.verify("not base64!", Some(REQUEST), unix_now()),
        Err(SsoError::BadRequest(_))
    ));
    // Line-wrapped base64, as some IdPs post it, is read.
    let wrapped: String = encoded(&Case::default())
        .as_bytes()
        .chunks(76)
        .map(|line| format!("{}\r\n", String::from_utf8_lossy(line)))
        .collect();
    assert!(p.verify(&wrapped, Some(REQUEST), unix_now()).is_ok());
}

#[test]
fn a_comment_inside_the_signed_name_id_does_not_truncate_it() {
    // Exclusive c14n drops comments, so one added to a signed document
    // keeps the signature valid: the NameID must not end at the comment.
    for (response_signed, assertion_signed) in [(true, false), (false, true)] {
        let c = Case {
            name_id: "alice@example.org.evil.com".into(),
            response_signed,
            assertion_signed,
            ..Case::default()
        };
        let xml = response_xml(&c).replacen(
            "alice@example.org.evil.com",
            "alice@example.org<!---->.evil.com",
            1,
        );
        assert!(xml.contains("<!---->"));
        match provider(false).verify(&STANDARD.encode(xml), Some(REQUEST), unix_now()) {
            Ok(identity) => assert_eq!(identity.subject, "alice@example.org.evil.com"),
            Err(SsoError::Rejected(_)) => {}
            Err(other) => panic!("refused otherwise: {other:?}"),
        }
    }
}

/// The signed assertion of an assertion-only-signed Response, and the
/// Response around it.
fn signed_assertion_and_response() -> (String, String) {
    let c = Case {
        response_signed: false,
        assertion_signed: true,
        ..Case::default()
    };
    let xml = response_xml(&c);
    let start = xml.find("<saml:Assertion").expect("assertion");
    let end = xml.find("</saml:Assertion>").expect("assertion end") + "</saml:Assertion>".len();
    (xml[start..end].to_owned(), xml)
}

/// Accepted as alice or refused; never the forged subject.
fn never_mallory(xml: &str) {
    assert!(xml.contains("mallory@example.org"));
    match provider(false).verify(&STANDARD.encode(xml), Some(REQUEST), unix_now()) {
        Ok(identity) => assert_eq!(identity.subject, "alice@example.org"),
        Err(SsoError::Rejected(_)) => {}
        Err(other) => panic!("refused otherwise: {other:?}"),
    }
}

#[test]
fn a_forged_assertion_beside_the_signed_one_is_never_read() {
    let (signed, response) = signed_assertion_and_response();
    // An unsigned copy with another subject: with the signed one's ID, and
    // with an ID of its own; before the signed one and after it.
    for id in ["_assertion-1", "_forged"] {
        let forged = signed
            .split("<ds:Signature")
            .next()
            .expect("before the signature")
            .replace("_assertion-1", id)
            + &signed[signed.find("</ds:Signature>").expect("signature") + 15..];
        let forged = forged.replace("alice@example.org", "mallory@example.org");
        never_mallory(&response.replacen(&signed, &format!("{forged}{signed}"), 1));
        never_mallory(&response.replacen(&signed, &format!("{signed}{forged}"), 1));
    }
}

#[test]
fn a_signed_assertion_moved_under_extensions_does_not_vouch_for_a_forged_one() {
    let (signed, response) = signed_assertion_and_response();
    let forged = signed
        .split("<ds:Signature")
        .next()
        .expect("before the signature")
        .replace("_assertion-1", "_forged")
        + &signed[signed.find("</ds:Signature>").expect("signature") + 15..];
    let forged = forged.replace("alice@example.org", "mallory@example.org");
    let wrapped = response.replacen(
        &signed,
        &format!("<samlp:Extensions>{signed}</samlp:Extensions>{forged}"),
        1,
    );
    // Extensions come right after the Issuer in a Response: put them there.
    let issuer_end = wrapped.find("</saml:Issuer>").expect("issuer") + "</saml:Issuer>".len();
    let ext_start = wrapped.find("<samlp:Extensions>").expect("extensions");
    let ext_end =
        wrapped.find("</samlp:Extensions>").expect("extensions end") + "</samlp:Extensions>".len();
    let extensions = &wrapped[ext_start..ext_end];
    let rest = format!("{}{}", &wrapped[issuer_end..ext_start], &wrapped[ext_end..]);
    let moved = format!("{}{extensions}{rest}", &wrapped[..issuer_end]);
    never_mallory(&moved);
}

#[test]
fn an_encrypted_assertion_is_decrypted_and_checked_as_a_plain_one() {
    let p = keyed_provider();
    for data in [AES128_CBC, AES256_CBC, AES128_GCM, AES256_GCM] {
        for response_signed in [false, true] {
            let c = Case {
                response_signed,
                assertion_signed: true,
                encryption: Encryption::to_us(data),
                ..Case::default()
            };
            let xml = response_xml(&c);
            assert!(!xml.contains("alice"), "encrypted: {xml}");
            let identity = accepted(&p, &c, Some(REQUEST));
            assert_eq!(identity.subject, "alice@example.org", "{data}");
            assert_eq!(identity.groups, vec!["staff", "admins"]);
        }
    }
    // Base64 broken into lines with character references, as Java IdPs write it.
    let xml = response_xml(&Case {
        assertion_signed: true,
        encryption: Encryption::to_us(AES256_CBC),
        ..Case::default()
    });
    let at = xml.find("<xenc:CipherValue>").expect("cipher") + 40;
    let wrapped = format!("{}&#13;\n{}", &xml[..at], &xml[at..])
        .replace("<xenc:CipherValue>\n", "<xenc:CipherValue>&#13;\n");
    assert!(p
        .verify(&STANDARD.encode(wrapped), Some(REQUEST), unix_now())
        .is_ok());
    // The checks of a plain assertion apply once it is decrypted.
    let c = Case {
        assertion_signed: true,
        audience: "https://someone-else.example.org".into(),
        encryption: Encryption::to_us(AES256_GCM),
        ..Case::default()
    };
    assert!(rejected(&p, &encoded(&c), Some(REQUEST)).contains("Audience"));
    let c = Case {
        assertion_signed: true,
        encryption: Encryption::to_us(AES256_GCM),
        ..Case::default()
    };
    let why = rejected(&p, &encoded(&c), Some("_another-login"));
    assert!(why.contains("InResponseTo"), "{why}");
    let c = Case {
        assertion_signed: true,
        key: &keys().1,
        encryption: Encryption::to_us(AES256_GCM),
        ..Case::default()
    };
    assert!(rejected(&p, &encoded(&c), Some(REQUEST)).contains("must be signed"));
    // A plain assertion still goes through a provider with a key.
    accepted(&p, &Case::default(), Some(REQUEST));
}

#[test]
fn an_encrypted_assertion_vouched_for_by_the_response_signature_alone_is_refused() {
    // The Response's signature covers the encrypted form, not what it
    // decrypts to: the assertion must be signed itself.
    let c = Case {
        response_signed: true,
        assertion_signed: false,
        encryption: Encryption::to_us(AES128_GCM),
        ..Case::default()
    };
    let why = rejected(&keyed_provider(), &encoded(&c), Some(REQUEST));
    assert!(why.contains("must be signed"), "{why}");
}

#[test]
fn an_encrypted_assertion_is_refused_without_our_key_with_another_or_with_weak_algorithms() {
    let case = |encryption: Encryption| Case {
        assertion_signed: true,
        encryption: Some(encryption),
        ..Case::default()
    };
    let to_us = |data, key| Encryption {
        cert_pem: sp_keys().0.cert_pem.clone(),
        data,
        key,
    };
    let why = rejected(
        &provider(false),
        &encoded(&case(to_us(AES256_GCM, OAEP))),
        Some(REQUEST),
    );
    assert!(why.contains("no sp_private_key"), "{why}");
    let p = keyed_provider();
    let refusals = [
        (
            case(Encryption {
                cert_pem: sp_keys().1.cert_pem.clone(),
                data: AES256_GCM,
                key: OAEP,
            }),
            "cannot be decrypted with sp_private_key",
        ),
        (case(to_us(AES256_GCM, RSA_1_5)), "rsa-1_5 is not supported"),
        (
            case(to_us(
                "http://www.w3.org/2001/04/xmlenc#tripledes-cbc",
                OAEP,
            )),
            "tripledes-cbc is not supported",
        ),
    ];
    for (c, expected) in refusals {
        let why = rejected(&p, &encoded(&c), Some(REQUEST));
        assert!(why.contains(expected), "{expected}: {why}");
        assert!(!why.contains("alice"), "{why}");
    }
    // A ciphertext altered in transit fails GCM's tag.
    let xml = response_xml(&case(to_us(AES256_GCM, OAEP)));
    let at = xml.rfind("</xenc:CipherValue>").expect("content") - 10;
    let flipped = if &xml[at..=at] == "A" { "B" } else { "A" };
    let altered = format!("{}{flipped}{}", &xml[..at], &xml[at + 1..]);
    let why = rejected(&p, &STANDARD.encode(altered), Some(REQUEST));
    assert!(why.contains("cannot be decrypted"), "{why}");
}

#[test]
fn the_sp_key_pair_must_be_whole_rsa_and_match() {
    let config = |certificate: Option<&str>| {
        let mut config = json!({
            "idp_entity_id": IDP,
            "idp_sso_url": "https://idp.example.net/sso",
            "idp_certificates": [keys().0.cert_pem],
        });
        if let Some(certificate) = certificate {
            config["sp_certificate"] = json!(certificate);
        }
        config
    };
    let refusal = |certificate: Option<&str>, key: Option<String>| {
        let secrets = key.map_or(json!({}), |key| json!({ "sp_private_key": key }));
        match Saml::from_config(&config(certificate), &secrets, PUBLIC, "corp") {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        }
    };
    let ours = &sp_keys().0;
    let e = refusal(None, Some(key_pem(ours)));
    assert!(e.contains("without sp_certificate"), "{e}");
    let e = refusal(Some(&ours.cert_pem), None);
    assert!(e.contains("without sp_private_key"), "{e}");
    let e = refusal(Some(&sp_keys().1.cert_pem), Some(key_pem(ours)));
    assert!(e.contains("does not belong to sp_certificate"), "{e}");
    let garbled = key_pem(ours).replace("MII", "MIJ");
    let e = refusal(Some(&ours.cert_pem), Some(garbled.clone()));
    assert!(e.contains("not a PEM private key"), "{e}");
    assert!(!e.contains(&garbled[40..80]), "no key material in {e}");
    let e = refusal(
        Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        Some(key_pem(ours)),
    );
    assert!(e.contains("sp_certificate is not a PEM certificate"), "{e}");
    let ec = PKey::from_ec_key(
        openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                .expect("curve"),
        )
        .expect("ec"),
    )
    .expect("pkey");
    let ec_pem = String::from_utf8(ec.private_key_to_pem_pkcs8().expect("pem")).expect("utf8");
    let e = refusal(Some(&ours.cert_pem), Some(ec_pem));
    assert!(e.contains("must be an RSA key"), "{e}");
    let small = PKey::from_rsa(Rsa::generate(1024).expect("rsa")).expect("pkey");
    let small_pem =
        String::from_utf8(small.private_key_to_pem_pkcs8().expect("pem")).expect("utf8");
    let e = refusal(Some(&ours.cert_pem), Some(small_pem));
    assert!(e.contains("at least 2048"), "{e}");
    keyed_provider();
}

/// A raw query's parameter `name`, as sent (still URL-encoded).
fn raw_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

#[test]
fn the_redirect_signature_verifies_with_the_sp_certificate_over_what_the_bindings_name() {
    let p = keyed_provider();
    let started = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(p.start_login("state with spaces & more"))
        .expect("start");
    let url = url::Url::parse(&started.url).expect("url");
    let query = url.query().expect("query");
    let sig_alg = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
    let pairs: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs["SigAlg"], sig_alg);
    assert_eq!(pairs["RelayState"], "state with spaces & more");
    // SAML bindings §3.4.4.1: SAMLRequest, RelayState, SigAlg, as encoded
    // in the URL, in that order.
    let signed = format!(
        "SAMLRequest={}&RelayState={}&SigAlg={}",
        raw_param(query, "SAMLRequest").expect("SAMLRequest"),
        raw_param(query, "RelayState").expect("RelayState"),
        raw_param(query, "SigAlg").expect("SigAlg"),
    );
    let signature = STANDARD.decode(&pairs["Signature"]).expect("base64");
    let public = X509::from_pem(sp_keys().0.cert_pem.as_bytes())
        .and_then(|c| c.public_key())
        .expect("certificate");
    let verifies = |data: &[u8]| {
        let mut verifier =
            openssl::sign::Verifier::new(MessageDigest::sha256(), &public).expect("verifier");
        verifier.update(data).expect("update");
        verifier.verify(&signature).expect("verify")
    };
    assert!(verifies(signed.as_bytes()), "{signed}");
    assert!(!verifies(
        signed
            .replace("RelayState=state", "RelayState=other")
            .as_bytes()
    ));
    // Without a key nothing is signed.
    let plain = provider(false);
    let started = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(plain.start_login("state"))
        .expect("start");
    assert!(!started.url.contains("Signature="), "{}", started.url);
    assert!(!started.url.contains("SigAlg="), "{}", started.url);
}

#[test]
fn the_sp_metadata_carries_our_certificate_for_signing_and_encryption() {
    let der = X509::from_pem(sp_keys().0.cert_pem.as_bytes())
        .and_then(|c| c.to_der())
        .expect("certificate");
    let metadata = keyed_provider().metadata_xml;
    let parsed = EntityDescriptor::from_str(&metadata).expect("metadata parses");
    let sp = &parsed.sp_sso_descriptors.expect("SPSSODescriptor")[0];
    assert_eq!(sp.authn_requests_signed, Some(true), "{metadata}");
    assert_eq!(sp.want_assertions_signed, Some(true), "{metadata}");
    let keys = sp.key_descriptors.as_ref().expect("KeyDescriptors");
    let uses: Vec<Option<&str>> = keys.iter().map(|k| k.key_use.as_deref()).collect();
    assert_eq!(uses, vec![Some("signing"), Some("encryption")]);
    for k in keys {
        let certificates = &k
            .key_info
            .x509_data
            .as_ref()
            .expect("X509Data")
            .certificates;
        assert_eq!(certificates, &vec![STANDARD.encode(&der)]);
    }
    let methods: Vec<&str> = keys[1]
        .encryption_methods
        .iter()
        .flatten()
        .map(|m| m.algorithm.as_str())
        .collect();
    assert!(
        methods.contains(&AES256_GCM) && methods.contains(&OAEP),
        "{methods:?}"
    );
    assert!(!metadata.contains("PRIVATE"), "{metadata}");

    let plain = provider(false).metadata_xml;
    let parsed = EntityDescriptor::from_str(&plain).expect("metadata parses");
    let sp = &parsed.sp_sso_descriptors.expect("SPSSODescriptor")[0];
    assert_eq!(sp.authn_requests_signed, Some(false));
    assert_eq!(sp.want_assertions_signed, Some(true));
    assert!(
        sp.key_descriptors.as_ref().is_none_or(|k| k.is_empty()),
        "{plain}"
    );
}
