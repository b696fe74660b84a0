//! Our own SAML key pair: `sp_private_key` (PEM, RSA; a secret, seen by the
//! owner and the sidecar only) with `sp_certificate` (PEM, in the config).
//! With it AuthnRequests sent over the HTTP-Redirect binding are signed
//! (SAML bindings §3.4.4.1, RSA-SHA256) and our metadata carries the
//! certificate, for the IdP to verify our requests and to encrypt its
//! assertions to us. An EncryptedAssertion is decrypted here (RSA-OAEP key
//! transport; AES-CBC or AES-GCM content) and put back into the Response in
//! its place, so that the decrypted assertion goes through every check a
//! plain one does, its own signature included.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::md::Md;
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::sign::Signer;
use openssl::symm::{Cipher, Crypter, Mode};
use openssl::x509::X509;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde_json::Value;
use std::ops::Range;
use url::form_urlencoded::byte_serialize;
use url::Url;

/// The only signature algorithm we sign redirects with.
const SIG_ALG_RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
/// The smallest RSA key taken (NIST SP 800-131A).
const MIN_RSA_BITS: u32 = 2048;

pub struct SpKey {
    key: PKey<Private>,
    /// The certificate, DER in base64 (as metadata carries it).
    pub certificate_b64: String,
}

impl SpKey {
    /// The key pair a provider configures: both halves or neither; the key
    /// must be RSA and belong to the certificate. Refusals never quote the key.
    pub fn from_config(config: &Value, secrets: &Value) -> Result<Option<SpKey>, String> {
        let text = |value: Option<&Value>, key: &str| match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{key} must be a PEM text")),
        };
        let key = text(secrets.get("sp_private_key"), "sp_private_key")?;
        let certificate = text(config.get("sp_certificate"), "sp_certificate")?;
        let (key, certificate) = match (key, certificate) {
            (None, None) => return Ok(None),
            (Some(key), Some(certificate)) => (key, certificate),
            (Some(_), None) => return Err("sp_private_key is given without sp_certificate: give both (the certificate goes into the SP metadata) or neither".into()),
            (None, Some(_)) => return Err("sp_certificate is given without sp_private_key: give both (the key signs AuthnRequests and decrypts assertions) or neither".into()),
        };
        let key = PKey::private_key_from_pem(key.as_bytes()).map_err(|_| {
            "sp_private_key is not a PEM private key (unencrypted PKCS#8 or PKCS#1)".to_owned()
        })?;
        match key.rsa() {
            Err(_) => return Err("sp_private_key must be an RSA key".into()),
            Ok(rsa) if rsa.size() * 8 < MIN_RSA_BITS => {
                return Err(format!(
                    "sp_private_key is RSA of {} bits: give one of at least {MIN_RSA_BITS}",
                    rsa.size() * 8
                ))
            }
            Ok(_) => {}
        }
        let certificate = X509::from_pem(certificate.as_bytes())
            .map_err(|e| format!("sp_certificate is not a PEM certificate: {e}"))?;
        let matches = certificate
            .public_key()
            .map(|public| key.public_eq(&public))
            .unwrap_or(false);
        if !matches {
            return Err(
                "sp_private_key does not belong to sp_certificate (their public keys differ)"
                    .into(),
            );
        }
        let der = certificate
            .to_der()
            .map_err(|e| format!("sp_certificate: {e}"))?;
        Ok(Some(SpKey {
            key,
            certificate_b64: STANDARD.encode(der),
        }))
    }

    /// Signs an HTTP-Redirect `url` carrying `SAMLRequest` (and `RelayState`):
    /// appends `SigAlg` and `Signature`, the latter over
    /// `SAMLRequest=…&RelayState=…&SigAlg=…` exactly as they are encoded in
    /// the URL (the IdP's SSO URL's own parameters are not signed).
    pub fn sign_redirect(&self, mut url: Url) -> Result<Url, String> {
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let value = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let request = value("SAMLRequest").ok_or("the redirect carries no SAMLRequest")?;
        let mut signed = format!("SAMLRequest={}", encode(&request));
        if let Some(relay_state) = value("RelayState") {
            signed.push_str(&format!("&RelayState={}", encode(&relay_state)));
        }
        signed.push_str(&format!("&SigAlg={}", encode(SIG_ALG_RSA_SHA256)));
        let signature = Signer::new(MessageDigest::sha256(), &self.key)
            .and_then(|mut signer| {
                signer.update(signed.as_bytes())?;
                signer.sign_to_vec()
            })
            .map_err(|_| "cannot sign the AuthnRequest with sp_private_key".to_owned())?;
        url.query_pairs_mut()
            .append_pair("SigAlg", SIG_ALG_RSA_SHA256)
            .append_pair("Signature", &STANDARD.encode(signature));
        Ok(url)
    }
}

/// `text` as `application/x-www-form-urlencoded`, the way `Url::query_pairs_mut` writes it.
fn encode(text: &str) -> String {
    byte_serialize(text.as_bytes()).collect()
}

/// The parts of a Response's EncryptedAssertion, and where it is.
#[derive(Default)]
struct Encrypted {
    /// The EncryptedAssertion element, as bytes of the document.
    span: Range<usize>,
    /// The Response's own Signature element: it covered the encrypted
    /// form, so it cannot verify once the assertion is decrypted.
    response_signature: Option<Range<usize>>,
    data_algorithm: Option<String>,
    data_cipher: String,
    /// EncryptedKey elements seen: only the first is read.
    keys: usize,
    key_algorithm: Option<String>,
    key_digest: Option<String>,
    key_cipher: String,
}

impl Encrypted {
    /// Notes what the element `name` (a Start or Empty `element`, under
    /// `path` inside the EncryptedAssertion) says.
    fn read(&mut self, path: &[String], name: &str, element: &BytesStart) {
        let parent = path.last().map(String::as_str);
        let grandparent = path.len().checked_sub(2).map(|i| path[i].as_str());
        let algorithm = || {
            element
                .try_get_attribute("Algorithm")
                .ok()
                .flatten()
                .map(|a| String::from_utf8_lossy(&a.value).into_owned())
        };
        match (name, parent, grandparent) {
            ("EncryptedKey", _, _) => self.keys += 1,
            ("EncryptionMethod", Some("EncryptedData"), _) => self.data_algorithm = algorithm(),
            ("EncryptionMethod", Some("EncryptedKey"), _) if self.keys == 1 => {
                self.key_algorithm = algorithm()
            }
            ("DigestMethod", Some("EncryptionMethod"), Some("EncryptedKey")) if self.keys == 1 => {
                self.key_digest = algorithm()
            }
            _ => {}
        }
    }

    /// Takes the text of a CipherValue under `path`.
    fn text(&mut self, path: &[String], text: &str) {
        let n = path.len();
        if n < 3 || path[n - 1] != "CipherValue" || path[n - 2] != "CipherData" {
            return;
        }
        match path[n - 3].as_str() {
            "EncryptedData" => self.data_cipher.push_str(text),
            "EncryptedKey" if self.keys == 1 => self.key_cipher.push_str(text),
            _ => {}
        }
    }
}

/// Whether the Response document `xml` holds an EncryptedAssertion.
pub fn is_encrypted(xml: &str) -> Result<bool, String> {
    Ok(scan(xml)?.is_some())
}

/// Finds the one EncryptedAssertion among the children of the document's
/// root (none: `None`), its parts, and the root's own Signature.
fn scan(xml: &str) -> Result<Option<Encrypted>, String> {
    let garbled = |_| "the SAML response is not well-formed XML".to_owned();
    let mut reader = Reader::from_str(xml);
    // Local names of the open elements, the root first.
    let mut path: Vec<String> = Vec::new();
    let mut found: Option<Encrypted> = None;
    let mut signature: Option<Range<usize>> = None;
    // Where the current child of the root starts.
    let mut child_start = 0usize;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(garbled)?;
        let after = reader.buffer_position() as usize;
        let (element, empty) = match &event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            _ => (None, false),
        };
        if let Some(e) = element {
            let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
            if path.len() == 1 {
                child_start = before;
                if name == "EncryptedAssertion" {
                    if found.is_some() {
                        return Err(
                            "the SAML response holds more than one EncryptedAssertion".into()
                        );
                    }
                    found = Some(Encrypted::default());
                }
            }
            if let Some(f) = found.as_mut() {
                if path.len() >= 2 && path[1] == "EncryptedAssertion" {
                    f.read(&path, &name, e);
                }
            }
            path.push(name);
        }
        let ended = matches!(event, Event::End(_)) || empty;
        match event {
            Event::Text(t) => {
                if let Some(f) = found.as_mut() {
                    if path.len() >= 2 && path[1] == "EncryptedAssertion" {
                        let text = t
                            .decode()
                            .map_err(|_| "the SAML response is not UTF-8".to_owned())?;
                        f.text(&path, &text);
                    }
                }
            }
            Event::Eof => break,
            Event::End(_) => {}
            _ if empty => {}
            _ => continue,
        }
        // An element ended (End, or Empty just pushed).
        if ended {
            let name = path.pop().unwrap_or_default();
            if path.len() == 1 {
                match (name.as_str(), found.as_mut()) {
                    ("EncryptedAssertion", Some(f)) => f.span = child_start..after,
                    ("Signature", _) => signature = Some(child_start..after),
                    _ => {}
                }
            }
        }
    }
    Ok(found.map(|f| Encrypted {
        response_signature: signature,
        ..f
    }))
}

impl SpKey {
    /// The Response document `xml` with its EncryptedAssertion replaced by
    /// the assertion decrypted with our key, and without the Response's own
    /// signature (made over the encrypted form): the assertion must carry
    /// its own. `None` when nothing is encrypted. Refusals never quote
    /// what was decrypted.
    pub fn decrypt_response(&self, xml: &str) -> Result<Option<String>, String> {
        let Some(encrypted) = scan(xml)? else {
            return Ok(None);
        };
        let plaintext = self.decrypt(&encrypted)?;
        let assertion = String::from_utf8(plaintext)
            .map_err(|_| "the decrypted assertion is not UTF-8".to_owned())?;
        let assertion = match assertion.trim_start().strip_prefix("<?xml") {
            Some(rest) => rest
                .split_once("?>")
                .map(|(_, body)| body.to_owned())
                .ok_or("the decrypted assertion is not XML")?,
            None => assertion,
        };
        let mut removed = vec![encrypted.span.clone()];
        removed.extend(encrypted.response_signature.clone());
        removed.sort_by_key(|r| r.start);
        let mut out = String::with_capacity(xml.len() + assertion.len());
        let mut at = 0;
        for range in removed {
            if range.start < at {
                return Err("the SAML response's Signature and EncryptedAssertion overlap".into());
            }
            out.push_str(&xml[at..range.start]);
            if range == encrypted.span {
                out.push_str(&assertion);
            }
            at = range.end;
        }
        out.push_str(&xml[at..]);
        Ok(Some(out))
    }

    /// The EncryptedData's plaintext: the content key unwrapped with ours
    /// (RSA-OAEP; RSA PKCS#1 v1.5 is refused, it invites padding oracles),
    /// then the content decrypted (AES-CBC or AES-GCM).
    fn decrypt(&self, e: &Encrypted) -> Result<Vec<u8>, String> {
        let base64 = |text: &str, what: &str| {
            let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            STANDARD
                .decode(compact)
                .map_err(|_| format!("the EncryptedAssertion's {what} is not base64"))
        };
        let wrapped = base64(&e.key_cipher, "EncryptedKey")?;
        let content = base64(&e.data_cipher, "CipherValue")?;
        if wrapped.is_empty() || content.is_empty() {
            return Err("the EncryptedAssertion has no EncryptedKey or no CipherValue".into());
        }
        let key_algorithm = e.key_algorithm.as_deref().unwrap_or("(none)");
        let oaep_digest = match (key_algorithm, e.key_digest.as_deref()) {
            (OAEP_MGF1P | OAEP_11, None | Some(SHA1)) => Md::sha1(),
            (OAEP_MGF1P | OAEP_11, Some(SHA256)) => Md::sha256(),
            (OAEP_MGF1P | OAEP_11, Some(other)) => {
                return Err(format!(
                    "the EncryptedKey's digest {} is not supported",
                    short(other)
                ))
            }
            (other, _) => {
                return Err(format!(
                    "the EncryptedKey's algorithm {} is not supported (RSA-OAEP is)",
                    short(other)
                ))
            }
        };
        let key = PkeyCtx::new(&self.key)
            .and_then(|mut ctx| {
                ctx.decrypt_init()?;
                ctx.set_rsa_padding(Padding::PKCS1_OAEP)?;
                ctx.set_rsa_oaep_md(oaep_digest)?;
                ctx.set_rsa_mgf1_md(Md::sha1())?;
                let mut key = Vec::new();
                ctx.decrypt_to_vec(&wrapped, &mut key)?;
                Ok(key)
            })
            .map_err(|_| "the assertion's key cannot be decrypted with sp_private_key (encrypted to another certificate?)".to_owned())?;
        let data_algorithm = e.data_algorithm.as_deref().unwrap_or("(none)");
        let (cipher, gcm) = match data_algorithm {
            "http://www.w3.org/2001/04/xmlenc#aes128-cbc" => (Cipher::aes_128_cbc(), false),
            "http://www.w3.org/2001/04/xmlenc#aes192-cbc" => (Cipher::aes_192_cbc(), false),
            "http://www.w3.org/2001/04/xmlenc#aes256-cbc" => (Cipher::aes_256_cbc(), false),
            "http://www.w3.org/2009/xmlenc11#aes128-gcm" => (Cipher::aes_128_gcm(), true),
            "http://www.w3.org/2009/xmlenc11#aes192-gcm" => (Cipher::aes_192_gcm(), true),
            "http://www.w3.org/2009/xmlenc11#aes256-gcm" => (Cipher::aes_256_gcm(), true),
            other => {
                return Err(format!(
                    "the EncryptedData's algorithm {} is not supported (AES-CBC and AES-GCM are)",
                    short(other)
                ))
            }
        };
        if key.len() != cipher.key_len() {
            return Err("the assertion's key does not fit its algorithm".into());
        }
        let failed = |_| "the assertion cannot be decrypted (altered or garbled)".to_owned();
        let (iv_len, tag_len) = if gcm { (12, 16) } else { (16, 0) };
        if content.len() < iv_len + tag_len + 1 {
            return Err("the assertion cannot be decrypted (altered or garbled)".into());
        }
        let (iv, rest) = content.split_at(iv_len);
        let (data, tag) = rest.split_at(rest.len() - tag_len);
        let mut crypter = Crypter::new(cipher, Mode::Decrypt, &key, Some(iv)).map_err(failed)?;
        crypter.pad(false);
        if gcm {
            crypter.set_tag(tag).map_err(failed)?;
        }
        let mut out = vec![0; data.len() + cipher.block_size()];
        let mut n = crypter.update(data, &mut out).map_err(failed)?;
        n += crypter.finalize(&mut out[n..]).map_err(failed)?;
        out.truncate(n);
        if !gcm {
            // XML Encryption's padding: the last byte gives its length, the
            // others are arbitrary (not PKCS#7).
            let pad = usize::from(*out.last().unwrap_or(&0));
            if pad == 0 || pad > 16 || pad > out.len() {
                return Err("the assertion cannot be decrypted (altered or garbled)".into());
            }
            out.truncate(out.len() - pad);
        }
        Ok(out)
    }
}

const OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
const OAEP_11: &str = "http://www.w3.org/2009/xmlenc11#rsa-oaep";
const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";

/// An algorithm URI as named in a refusal: its fragment, at most 40 characters.
fn short(uri: &str) -> String {
    uri.rsplit('#')
        .next()
        .unwrap_or(uri)
        .chars()
        .take(40)
        .collect()
}
