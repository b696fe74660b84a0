//! The protocol-free parts of CAS logins (CAS protocol 2.0 and 3.0): the
//! login and validation URLs, the `serviceValidate` answer (a user and its
//! attributes, or a failure code) and the SAML `LogoutRequest` of single
//! logout. XML is read with a pull parser that expands nothing: a DOCTYPE
//! (so any entity declaration) is refused, and so are documents larger than
//! [`MAX_XML_BYTES`] or nested deeper than [`MAX_XML_DEPTH`].

use quick_xml::events::{BytesRef, Event};
use quick_xml::name::ResolveResult;
use quick_xml::{NsReader, XmlVersion};
use std::collections::BTreeMap;

/// The namespace of CAS answers.
pub const CAS_NS: &str = "http://www.yale.edu/tp/cas";
/// The namespace of SAML 2.0 protocol messages (`LogoutRequest`, `SessionIndex`).
pub const SAMLP_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// Largest answer parsed; real ones are a few KB.
pub const MAX_XML_BYTES: usize = 1024 * 1024;
/// Deepest element nesting parsed; real answers nest 4 deep.
pub const MAX_XML_DEPTH: usize = 32;

/// Why a CAS document could not be read; the text never quotes a ticket.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CasXmlError {
    #[error("the CAS document is larger than {MAX_XML_BYTES} bytes")]
    TooLarge,
    #[error("the CAS document nests elements deeper than {MAX_XML_DEPTH}")]
    TooDeep,
    #[error("the CAS document has a DOCTYPE, which is refused (no DTD, no entity declarations)")]
    Doctype,
    #[error("the CAS document is not well-formed XML: {0}")]
    Malformed(String),
    #[error("the CAS document is not {expected}: {found}")]
    Unexpected {
        expected: &'static str,
        found: String,
    },
}

/// A `serviceValidate` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationResponse {
    Success(CasSuccess),
    /// `<cas:authenticationFailure code="…">message</cas:authenticationFailure>`.
    Failure {
        code: String,
        message: String,
    },
}

/// A ticket the CAS server vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasSuccess {
    pub user: String,
    /// Every attribute by its local name, each with all its values in order
    /// (CAS repeats an element for a multi-valued attribute).
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// Characters left as they are in a query value (RFC 3986 unreserved);
/// everything else is percent-encoded, so the `service` sent to the login
/// page and to the validation is one exact string.
fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `{server_url}/login?service=…`.
pub fn login_url(server_url: &str, service: &str) -> String {
    format!(
        "{}/login?service={}",
        server_url.trim_end_matches('/'),
        encode_component(service)
    )
}

/// The validation URL: `{server_url}/p3/serviceValidate` for version 3,
/// `{server_url}/serviceValidate` for version 2, with `service` and `ticket`.
pub fn validate_url(server_url: &str, version: u8, service: &str, ticket: &str) -> String {
    let path = if version >= 3 {
        "p3/serviceValidate"
    } else {
        "serviceValidate"
    };
    format!(
        "{}/{path}?service={}&ticket={}",
        server_url.trim_end_matches('/'),
        encode_component(service),
        encode_component(ticket)
    )
}

/// The service URL of a login: the callback with the login's `state`, the
/// one string used for the login redirect and the validation alike.
pub fn service_url(callback: &str, state: &str) -> String {
    format!("{callback}?state={}", encode_component(state))
}

/// A pull reader over one document that counts depth and refuses DTDs
/// and undeclared entities.
struct Walker<'i> {
    reader: NsReader<&'i [u8]>,
    depth: usize,
}

/// What [`Walker::next`] gives.
enum Step {
    Open {
        ns: Option<String>,
        local: String,
        attrs: Vec<(String, String)>,
        empty: bool,
    },
    Close,
    Text(String),
    End,
}

impl<'i> Walker<'i> {
    fn new(xml: &'i [u8]) -> Result<Walker<'i>, CasXmlError> {
        if xml.len() > MAX_XML_BYTES {
            return Err(CasXmlError::TooLarge);
        }
        let mut reader = NsReader::from_reader(xml);
        reader.config_mut().check_end_names = true;
        Ok(Walker { reader, depth: 0 })
    }

    fn next(&mut self) -> Result<Step, CasXmlError> {
        loop {
            let (ns, event) = self
                .reader
                .read_resolved_event()
                .map_err(|e| CasXmlError::Malformed(e.to_string()))?;
            let ns = match ns {
                ResolveResult::Bound(n) => Some(n.as_ref().to_owned()),
                ResolveResult::Unbound => None,
                ResolveResult::Unknown(prefix) => {
                    return Err(CasXmlError::Malformed(format!(
                        "unknown namespace prefix {prefix}"
                    )))
                }
            };
            match event {
                Event::DocType(_) => return Err(CasXmlError::Doctype),
                Event::Start(e) => {
                    self.depth += 1;
                    if self.depth > MAX_XML_DEPTH {
                        return Err(CasXmlError::TooDeep);
                    }
                    return Ok(Step::Open {
                        ns,
                        local: local_name(e.local_name().as_ref())?,
                        attrs: attributes(&e)?,
                        empty: false,
                    });
                }
                Event::Empty(e) => {
                    if self.depth + 1 > MAX_XML_DEPTH {
                        return Err(CasXmlError::TooDeep);
                    }
                    return Ok(Step::Open {
                        ns,
                        local: local_name(e.local_name().as_ref())?,
                        attrs: attributes(&e)?,
                        empty: true,
                    });
                }
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    return Ok(Step::Close);
                }
                Event::Text(t) => return Ok(Step::Text(t.xml10_content().into_owned())),
                Event::CData(c) => return Ok(Step::Text(c.xml10_content().into_owned())),
                Event::GeneralRef(r) => return Ok(Step::Text(reference(&r)?.to_string())),
                Event::Eof => {
                    if self.depth != 0 {
                        return Err(CasXmlError::Malformed("the document ends early".into()));
                    }
                    return Ok(Step::End);
                }
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            }
        }
    }

    /// The text inside the element just opened, up to its end; refuses child elements.
    fn text_until_close(&mut self, what: &'static str) -> Result<String, CasXmlError> {
        let mut text = String::new();
        loop {
            match self.next()? {
                Step::Text(t) => text.push_str(&t),
                Step::Close => return Ok(text),
                Step::Open { local, .. } => {
                    return Err(CasXmlError::Unexpected {
                        expected: what,
                        found: format!("element {local} inside it"),
                    })
                }
                Step::End => return Err(CasXmlError::Malformed("the document ends early".into())),
            }
        }
    }

    /// Skips what is inside the element just opened, up to its end.
    fn skip(&mut self) -> Result<(), CasXmlError> {
        let mut open = 1usize;
        while open > 0 {
            match self.next()? {
                Step::Open { empty: false, .. } => open += 1,
                Step::Close => open -= 1,
                Step::End => return Err(CasXmlError::Malformed("the document ends early".into())),
                Step::Open { .. } | Step::Text(_) => {}
            }
        }
        Ok(())
    }

    /// The root element, which must be `local` in namespace `ns`.
    fn root(&mut self, ns: &str, local: &str, what: &'static str) -> Result<(), CasXmlError> {
        loop {
            match self.next()? {
                Step::Text(t) if t.trim().is_empty() => {}
                Step::Open {
                    ns: Some(found_ns),
                    local: found,
                    empty: false,
                    ..
                } if found_ns == ns && found == local => return Ok(()),
                Step::Open { local: found, .. } => {
                    return Err(CasXmlError::Unexpected {
                        expected: what,
                        found: format!("root element {}", shorten(&found)),
                    })
                }
                _ => {
                    return Err(CasXmlError::Unexpected {
                        expected: what,
                        found: "no root element".into(),
                    })
                }
            }
        }
    }

    /// Reads to the end of the document; refuses a second root element.
    fn finish(&mut self) -> Result<(), CasXmlError> {
        loop {
            match self.next()? {
                Step::End => return Ok(()),
                Step::Text(t) if t.trim().is_empty() => {}
                _ => {
                    return Err(CasXmlError::Malformed(
                        "content after the root element".into(),
                    ))
                }
            }
        }
    }
}

fn local_name(raw: &str) -> Result<String, CasXmlError> {
    Ok(raw.to_owned())
}

fn attributes(e: &quick_xml::events::BytesStart<'_>) -> Result<Vec<(String, String)>, CasXmlError> {
    let mut out = Vec::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|e| CasXmlError::Malformed(e.to_string()))?;
        let key = local_name(attr.key.local_name().as_ref())?;
        // Only the five predefined entities and character references.
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| CasXmlError::Malformed(e.to_string()))?;
        out.push((key, value.into_owned()));
    }
    Ok(out)
}

/// A reference in text: a character reference or one of the five
/// predefined entities; any other entity is refused, never looked up.
fn reference(r: &BytesRef<'_>) -> Result<char, CasXmlError> {
    if let Some(c) = r
        .resolve_char_ref()
        .map_err(|e| CasXmlError::Malformed(e.to_string()))?
    {
        return Ok(c);
    }
    match &**r {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        other => Err(CasXmlError::Malformed(format!(
            "undeclared entity &{};",
            shorten(other)
        ))),
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(60).collect()
}

fn is_cas(ns: &Option<String>) -> bool {
    ns.as_deref() == Some(CAS_NS)
}

/// Parses a `serviceValidate` (CAS 2.0) or `p3/serviceValidate` (CAS 3.0)
/// answer. Attributes are the children of `<cas:attributes>`; other
/// children of `<cas:authenticationSuccess>` (proxy tickets, the
/// `<cas:attribute name= value=>` duplicates some servers add) are skipped.
pub fn parse_service_response(xml: &[u8]) -> Result<ValidationResponse, CasXmlError> {
    const WHAT: &str = "a CAS serviceResponse";
    let mut w = Walker::new(xml)?;
    w.root(CAS_NS, "serviceResponse", WHAT)?;
    let mut result = None;
    loop {
        match w.next()? {
            Step::Text(t) if t.trim().is_empty() => {}
            Step::Close => break,
            Step::Open {
                ns, local, empty, ..
            } if is_cas(&ns) && local == "authenticationSuccess" && result.is_none() => {
                if empty {
                    return Err(CasXmlError::Unexpected {
                        expected: WHAT,
                        found: "an empty authenticationSuccess".into(),
                    });
                }
                result = Some(ValidationResponse::Success(success(&mut w)?));
            }
            Step::Open {
                ns,
                local,
                attrs,
                empty,
            } if is_cas(&ns) && local == "authenticationFailure" && result.is_none() => {
                let code = attrs
                    .into_iter()
                    .find(|(k, _)| k == "code")
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                let message = if empty {
                    String::new()
                } else {
                    w.text_until_close("an authenticationFailure message")?
                };
                result = Some(ValidationResponse::Failure {
                    code: code.trim().to_owned(),
                    message: message.trim().to_owned(),
                });
            }
            Step::Open { local, .. } => {
                return Err(CasXmlError::Unexpected {
                    expected: WHAT,
                    found: format!("element {}", shorten(&local)),
                })
            }
            Step::Text(_) | Step::End => {
                return Err(CasXmlError::Unexpected {
                    expected: WHAT,
                    found: "text in serviceResponse".into(),
                })
            }
        }
    }
    w.finish()?;
    result.ok_or(CasXmlError::Unexpected {
        expected: WHAT,
        found: "neither authenticationSuccess nor authenticationFailure".into(),
    })
}

fn success(w: &mut Walker<'_>) -> Result<CasSuccess, CasXmlError> {
    let mut user = None;
    let mut attributes = BTreeMap::new();
    loop {
        match w.next()? {
            Step::Close => break,
            Step::Text(t) if t.trim().is_empty() => {}
            Step::Open {
                ns, local, empty, ..
            } if is_cas(&ns) && local == "user" && !empty && user.is_none() => {
                user = Some(w.text_until_close("a user name")?.trim().to_owned());
            }
            Step::Open {
                ns, local, empty, ..
            } if is_cas(&ns) && local == "attributes" => {
                if !empty {
                    read_attributes(w, &mut attributes)?;
                }
            }
            Step::Open { empty: true, .. } => {}
            Step::Open { .. } => w.skip()?,
            Step::Text(_) | Step::End => {
                return Err(CasXmlError::Unexpected {
                    expected: "a CAS authenticationSuccess",
                    found: "text in authenticationSuccess".into(),
                })
            }
        }
    }
    match user {
        Some(user) if !user.is_empty() => Ok(CasSuccess { user, attributes }),
        _ => Err(CasXmlError::Unexpected {
            expected: "a CAS authenticationSuccess",
            found: "no user".into(),
        }),
    }
}

fn read_attributes(
    w: &mut Walker<'_>,
    attributes: &mut BTreeMap<String, Vec<String>>,
) -> Result<(), CasXmlError> {
    loop {
        match w.next()? {
            Step::Close => return Ok(()),
            Step::Text(t) if t.trim().is_empty() => {}
            Step::Open { local, empty, .. } => {
                let value = if empty {
                    String::new()
                } else {
                    w.text_until_close("an attribute value")?
                };
                attributes.entry(local).or_default().push(value);
            }
            Step::Text(_) | Step::End => {
                return Err(CasXmlError::Unexpected {
                    expected: "CAS attributes",
                    found: "text in attributes".into(),
                })
            }
        }
    }
}

/// The `SessionIndex` (the service ticket the session came from) of a SAML
/// 2.0 `LogoutRequest`, as a CAS server posts it for single logout.
pub fn parse_logout_request(xml: &[u8]) -> Result<String, CasXmlError> {
    const WHAT: &str = "a SAML LogoutRequest";
    let mut w = Walker::new(xml)?;
    w.root(SAMLP_NS, "LogoutRequest", WHAT)?;
    let mut index = None;
    loop {
        match w.next()? {
            Step::Close => break,
            Step::Text(t) if t.trim().is_empty() => {}
            Step::Open {
                ns, local, empty, ..
            } if ns.as_deref() == Some(SAMLP_NS) && local == "SessionIndex" && !empty => {
                if index.is_some() {
                    return Err(CasXmlError::Unexpected {
                        expected: WHAT,
                        found: "more than one SessionIndex".into(),
                    });
                }
                index = Some(w.text_until_close("a SessionIndex")?.trim().to_owned());
            }
            Step::Open { empty: true, .. } => {}
            Step::Open { .. } => w.skip()?,
            Step::Text(_) | Step::End => {
                return Err(CasXmlError::Unexpected {
                    expected: WHAT,
                    found: "text in LogoutRequest".into(),
                })
            }
        }
    }
    w.finish()?;
    match index {
        Some(index) if !index.is_empty() => Ok(index),
        _ => Err(CasXmlError::Unexpected {
            expected: WHAT,
            found: "no SessionIndex".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The success example of the CAS protocol 3.0 specification (section 2.5.2, with attributes).
    const SPEC_SUCCESS: &str = r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas">
 <cas:authenticationSuccess>
  <cas:user>username</cas:user>
  <cas:attributes>
    <cas:firstname>John</cas:firstname>
    <cas:lastname>Doe</cas:lastname>
    <cas:title>Mr.</cas:title>
    <cas:email>jdoe@example.org</cas:email>
    <cas:affiliation>staff</cas:affiliation>
    <cas:affiliation>faculty</cas:affiliation>
  </cas:attributes>
  <cas:proxyGrantingTicket>PGTIOU-84678-8a9d...</cas:proxyGrantingTicket>
 </cas:authenticationSuccess>
</cas:serviceResponse>"#;

    /// The failure example of the specification (section 2.5.3).
    const SPEC_FAILURE: &str = r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas">
 <cas:authenticationFailure code="INVALID_TICKET">
    Ticket ST-1856339-aA5Yuvrxzpv8Tau1cYQ7 not recognized
  </cas:authenticationFailure>
</cas:serviceResponse>"#;

    /// The single-logout request of the specification (appendix C).
    const SPEC_LOGOUT: &str = r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"
     xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"
     ID="LR-1-abc" Version="2.0" IssueInstant="2026-12-06T14:00:00Z">
    <saml:NameID>@NOT_USED@</saml:NameID>
    <samlp:SessionIndex>ST-1-r2G9Dk2bOa-cas.example.org</samlp:SessionIndex>
</samlp:LogoutRequest>"#;

    #[test]
    fn the_login_url_carries_the_service_percent_encoded() {
        let service = service_url("https://app.example.org/auth/campus/callback", "a-b_c");
        assert_eq!(
            service,
            "https://app.example.org/auth/campus/callback?state=a-b_c"
        );
        assert_eq!(
            login_url("https://cas.example.org/cas/", &service),
            "https://cas.example.org/cas/login?service=\
             https%3A%2F%2Fapp.example.org%2Fauth%2Fcampus%2Fcallback%3Fstate%3Da-b_c"
        );
        assert_eq!(
            validate_url("https://cas.example.org/cas", 3, "https://a/b?x=1 2", "ST-1&x"),
            "https://cas.example.org/cas/p3/serviceValidate?service=https%3A%2F%2Fa%2Fb%3Fx%3D1%202&ticket=ST-1%26x"
        );
        assert!(validate_url("https://cas.example.org/cas", 2, "s", "t")
            .starts_with("https://cas.example.org/cas/serviceValidate?"));
    }

    #[test]
    fn a_spec_success_gives_the_user_and_every_value_of_each_attribute() {
        let ValidationResponse::Success(ok) =
            parse_service_response(SPEC_SUCCESS.as_bytes()).expect("parses")
        else {
            panic!("not a success")
        };
        assert_eq!(ok.user, "username");
        assert_eq!(ok.attributes["email"], vec!["jdoe@example.org"]);
        assert_eq!(ok.attributes["affiliation"], vec!["staff", "faculty"]);
        assert_eq!(ok.attributes["firstname"], vec!["John"]);
        assert!(!ok.attributes.contains_key("proxyGrantingTicket"));
    }

    #[test]
    fn a_cas_2_success_has_a_user_and_no_attributes() {
        let xml = r#"<?xml version="1.0"?><cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas">
            <cas:authenticationSuccess><cas:user>alice &amp; bob&#x21;</cas:user></cas:authenticationSuccess>
            </cas:serviceResponse>"#;
        assert_eq!(
            parse_service_response(xml.as_bytes()),
            Ok(ValidationResponse::Success(CasSuccess {
                user: "alice & bob!".into(),
                attributes: BTreeMap::new(),
            }))
        );
    }

    #[test]
    fn a_spec_failure_gives_its_code_and_message() {
        assert_eq!(
            parse_service_response(SPEC_FAILURE.as_bytes()),
            Ok(ValidationResponse::Failure {
                code: "INVALID_TICKET".into(),
                message: "Ticket ST-1856339-aA5Yuvrxzpv8Tau1cYQ7 not recognized".into(),
            })
        );
    }

    #[test]
    fn answers_that_are_not_cas_are_refused() {
        for xml in [
            "",
            "not xml at all",
            "<html><body>Login</body></html>",
            // The right local name in no namespace, or another one.
            "<serviceResponse><authenticationSuccess><user>x</user></authenticationSuccess></serviceResponse>",
            r#"<cas:serviceResponse xmlns:cas="urn:evil"><cas:authenticationSuccess><cas:user>x</cas:user></cas:authenticationSuccess></cas:serviceResponse>"#,
            // No user, an empty user, two results, unclosed elements.
            r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationSuccess/></cas:serviceResponse>"#,
            r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationSuccess><cas:user> </cas:user></cas:authenticationSuccess></cas:serviceResponse>"#,
            r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationFailure code="X"/><cas:authenticationSuccess><cas:user>x</cas:user></cas:authenticationSuccess></cas:serviceResponse>"#,
            r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationSuccess><cas:user>x</cas:user>"#,
            // A second root.
            r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationFailure code="X"/></cas:serviceResponse><x/>"#,
        ] {
            assert!(parse_service_response(xml.as_bytes()).is_err(), "{xml}");
        }
    }

    #[test]
    fn a_doctype_is_refused_before_any_entity_is_seen() {
        let billion_laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationSuccess>
<cas:user>&lol2;</cas:user></cas:authenticationSuccess></cas:serviceResponse>"#;
        assert_eq!(
            parse_service_response(billion_laughs.as_bytes()),
            Err(CasXmlError::Doctype)
        );
        let external = r#"<!DOCTYPE x SYSTEM "file:///etc/passwd"><samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"><samlp:SessionIndex>ST-1</samlp:SessionIndex></samlp:LogoutRequest>"#;
        assert_eq!(
            parse_logout_request(external.as_bytes()),
            Err(CasXmlError::Doctype)
        );
    }

    #[test]
    fn an_undeclared_entity_is_refused_not_looked_up() {
        let xml = r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationSuccess><cas:user>&xxe;</cas:user></cas:authenticationSuccess></cas:serviceResponse>"#;
        assert!(matches!(
            parse_service_response(xml.as_bytes()),
            Err(CasXmlError::Malformed(_))
        ));
    }

    #[test]
    fn a_ten_megabyte_answer_is_refused_unread() {
        let mut xml = String::from(
            r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationSuccess><cas:user>"#,
        );
        xml.push_str(&"a".repeat(10 * 1024 * 1024));
        xml.push_str("</cas:user></cas:authenticationSuccess></cas:serviceResponse>");
        assert_eq!(
            parse_service_response(xml.as_bytes()),
            Err(CasXmlError::TooLarge)
        );
        assert_eq!(
            parse_logout_request(xml.as_bytes()),
            Err(CasXmlError::TooLarge)
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        // Inside elements that are skipped, so only the depth bound stops them.
        let deep = "<a>".repeat(10_000) + &"</a>".repeat(10_000);
        let answer = format!(
            r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationSuccess><cas:user>u</cas:user><cas:proxies>{deep}</cas:proxies></cas:authenticationSuccess></cas:serviceResponse>"#
        );
        assert_eq!(
            parse_service_response(answer.as_bytes()),
            Err(CasXmlError::TooDeep)
        );
        let logout = format!(
            r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"><x>{deep}</x><samlp:SessionIndex>ST-1</samlp:SessionIndex></samlp:LogoutRequest>"#
        );
        assert_eq!(
            parse_logout_request(logout.as_bytes()),
            Err(CasXmlError::TooDeep)
        );
        // Just within the bound is read.
        let fits = "<a>".repeat(MAX_XML_DEPTH - 3) + &"</a>".repeat(MAX_XML_DEPTH - 3);
        let answer = format!(
            r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationSuccess><cas:user>u</cas:user><cas:proxies>{fits}</cas:proxies></cas:authenticationSuccess></cas:serviceResponse>"#
        );
        assert!(parse_service_response(answer.as_bytes()).is_ok());
    }

    #[test]
    fn a_spec_logout_request_gives_its_session_index() {
        assert_eq!(
            parse_logout_request(SPEC_LOGOUT.as_bytes()),
            Ok("ST-1-r2G9Dk2bOa-cas.example.org".into())
        );
    }

    #[test]
    fn logout_requests_without_one_session_index_are_refused() {
        for xml in [
            r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"><saml:NameID xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">x</saml:NameID></samlp:LogoutRequest>"#,
            r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"><samlp:SessionIndex>a</samlp:SessionIndex><samlp:SessionIndex>b</samlp:SessionIndex></samlp:LogoutRequest>"#,
            r#"<LogoutRequest><SessionIndex>ST-1</SessionIndex></LogoutRequest>"#,
            r#"<samlp:LogoutResponse xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"><samlp:SessionIndex>a</samlp:SessionIndex></samlp:LogoutResponse>"#,
        ] {
            assert!(parse_logout_request(xml.as_bytes()).is_err(), "{xml}");
        }
    }
}
