//! A misbehaving OpenID provider of ours, for what no real provider does on
//! demand: answers too large to hold, claims a careful client refuses,
//! endpoints on other hosts. It runs on a free loopback port in the test
//! process (one thread per connection, `Connection: close`) until dropped,
//! signs ID tokens with core's RS256 test key (kid `rsa-1`), sends every
//! authorization request straight back with a code, and behaves as the
//! test's [`Behaviour`] says at the moment of each request.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

const RSA_PEM: &str = include_str!("../../core/tests/fixtures/jwt/rsa_private.pem");
const JWKS: &str = include_str!("../../core/tests/fixtures/jwt/jwks.json");
/// A 1024-bit RSA key (test-only), too small for a careful client, signed
/// with by the openssl CLI since our own JWT code refuses it.
const RSA1024_PEM_PATH: &str = "tests/oidc/rsa1024_private.pem";
const RSA1024_KID: &str = "rsa-small";
const RSA1024_N: &str = "4DknAMbVU-HY-xASEkLyGKULqnkhC7t4fAUHA2oxBI6r-tyeH0XBlVfgwz-d54_OTXaz7OFRkdwnTb3MLZ29YCcE0OtSUgGTgNftiYyFs8OTIPs0LbDMG_yrOGS2K2lJ-jesoB1iRF5O4dJNPRgXCx3bzqyuecCyKIyo3SeUuSk";

/// How the provider misbehaves; the default is a correct provider.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Bytes of padding added to the token response (a JSON member `padding`).
    pub token_padding: usize,
    /// Bytes of padding added to the JWKS.
    pub jwks_padding: usize,
    /// Sign ID tokens with the 1024-bit key (published in the JWKS as `rsa-small`).
    pub small_key: bool,
    /// Claims set in (or, when null, removed from) the ID token.
    pub id_token_claims: Value,
    /// Members of the userinfo document besides `sub`.
    pub userinfo: Value,
    /// Replaces the discovery document's members (endpoints elsewhere).
    pub discovery: Value,
}

#[derive(Default)]
struct Shared {
    behaviour: Mutex<Behaviour>,
    /// The nonce of each code handed out.
    nonces: Mutex<HashMap<String, String>>,
    /// Requests seen per path, and per `host` + path.
    hits: Mutex<HashMap<String, usize>>,
    stop: AtomicBool,
}

/// The running provider; stops accepting when dropped.
pub struct RogueOidc {
    port: u16,
    shared: Arc<Shared>,
}

/// The subject of every login.
pub const SUBJECT: &str = "rogue-user";

impl RogueOidc {
    pub fn start() -> RogueOidc {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the rogue provider");
        let port = listener.local_addr().expect("local address").port();
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&accepting);
                thread::spawn(move || serve(stream, port, &shared));
            }
        });
        RogueOidc { port, shared }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        issuer(self.port)
    }

    /// Changes how the provider behaves from the next request on.
    pub fn behave(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.shared.behaviour.lock().unwrap());
    }

    /// How many requests reached `path` (`/token`), or `path` on a host
    /// (`localhost/token`, whatever the port).
    pub fn hits(&self, path: &str) -> usize {
        let hits = self.shared.hits.lock().unwrap();
        hits.get(path).copied().unwrap_or(0)
    }
}

impl Drop for RogueOidc {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn issuer(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    form: HashMap<String, String>,
    authorization: Option<String>,
    /// The `Host` header without its port.
    host: String,
}

fn decode(pairs: &str) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{pairs}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut words = line.split_whitespace();
    let method = words.next()?.to_owned();
    let target = words.next()?.to_owned();
    let mut length = 0usize;
    let mut authorization = None;
    let mut host = String::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            } else if name.eq_ignore_ascii_case("host") {
                let value = value.trim();
                host = value.rsplit_once(':').map_or(value, |(h, _)| h).to_owned();
            } else if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_owned());
            }
        }
    }
    let mut body = vec![0; length.min(64 * 1024)];
    reader.read_exact(&mut body).ok()?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Some(Request {
        method,
        path: path.to_owned(),
        query: decode(query),
        form: decode(&String::from_utf8_lossy(&body)),
        authorization,
        host,
    })
}

/// Writes a JSON answer whose object gets a `padding` member of `padding`
/// bytes, streamed so the test process never holds it.
fn respond(
    stream: &mut TcpStream,
    status: u16,
    extra: &[(&str, String)],
    body: &Value,
    padding: usize,
) {
    let text = body.to_string();
    let (head_part, tail) = if padding > 0 {
        let open = text.trim_end_matches('}');
        let separator = if open.ends_with('{') { "" } else { "," };
        (format!("{open}{separator}\"padding\":\""), "\"}".to_owned())
    } else {
        (text, String::new())
    };
    let length = head_part.len() + padding + tail.len();
    let mut head = format!(
        "HTTP/1.1 {status} S\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n"
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(head_part.as_bytes()).is_err()
    {
        return;
    }
    let chunk = vec![b'a'; 64 * 1024];
    let mut left = padding;
    while left > 0 {
        let n = left.min(chunk.len());
        // The reader may hang up once it has read enough: that is the point.
        if stream.write_all(&chunk[..n]).is_err() {
            return;
        }
        left -= n;
    }
    let _ = stream.write_all(tail.as_bytes());
}

fn merge(base: &mut Value, changes: &Value) {
    if let (Value::Object(all), Value::Object(more)) = (base, changes) {
        for (k, v) in more {
            if v.is_null() {
                all.remove(k);
            } else {
                all.insert(k.clone(), v.clone());
            }
        }
    }
}

fn serve(stream: TcpStream, port: u16, shared: &Shared) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let Some(request) = read_request(&mut reader) else {
        return;
    };
    {
        let mut hits = shared.hits.lock().unwrap();
        *hits.entry(request.path.clone()).or_default() += 1;
        *hits
            .entry(format!("{}{}", request.host, request.path))
            .or_default() += 1;
    }
    let behaviour = shared.behaviour.lock().unwrap().clone();
    let iss = issuer(port);
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/.well-known/openid-configuration") => {
            let mut doc = json!({
                "issuer": iss,
                "authorization_endpoint": format!("{iss}/authorize"),
                "token_endpoint": format!("{iss}/token"),
                "jwks_uri": format!("{iss}/jwks"),
                "userinfo_endpoint": format!("{iss}/userinfo"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            });
            merge(&mut doc, &behaviour.discovery);
            respond(&mut writer, 200, &[], &doc, 0);
        }
        ("GET", "/jwks") => {
            let mut jwks: Value = serde_json::from_str(JWKS).expect("the JWKS fixture");
            if let Some(keys) = jwks["keys"].as_array_mut() {
                keys.push(
                    json!({"kty": "RSA", "kid": RSA1024_KID, "use": "sig", "alg": "RS256",
                                 "n": RSA1024_N, "e": "AQAB"}),
                );
            }
            respond(&mut writer, 200, &[], &jwks, behaviour.jwks_padding);
        }
        ("GET", "/authorize") => {
            let code = format!("code-{}", rand_token());
            let nonce = request.query.get("nonce").cloned().unwrap_or_default();
            shared.nonces.lock().unwrap().insert(code.clone(), nonce);
            let mut back = reqwest::Url::parse(
                request
                    .query
                    .get("redirect_uri")
                    .map_or("http://invalid/", String::as_str),
            )
            .expect("a redirect_uri");
            back.query_pairs_mut()
                .append_pair("code", &code)
                .append_pair(
                    "state",
                    request.query.get("state").map_or("", String::as_str),
                )
                .append_pair("iss", &iss);
            respond(
                &mut writer,
                302,
                &[("Location", back.to_string())],
                &json!({}),
                0,
            );
        }
        ("POST", "/token") => {
            let code = request.form.get("code").cloned().unwrap_or_default();
            let Some(nonce) = shared.nonces.lock().unwrap().remove(&code) else {
                respond(&mut writer, 400, &[], &json!({"error": "invalid_grant"}), 0);
                return;
            };
            let client_id = request
                .form
                .get("client_id")
                .cloned()
                .or_else(|| basic_user(request.authorization.as_deref()))
                .unwrap_or_default();
            let now = now();
            let mut claims = json!({
                "iss": iss, "aud": client_id, "sub": SUBJECT, "nonce": nonce,
                "iat": now, "exp": now + 300,
                "email": "rogue@example.org", "name": "Rogue User",
            });
            merge(&mut claims, &behaviour.id_token_claims);
            let id_token = if behaviour.small_key {
                sign_with_openssl(&claims)
            } else {
                integration_core::jwt::sign(&claims, RSA_PEM, "RS256", Some("rsa-1"))
                    .expect("sign the ID token")
            };
            let body = json!({
                "access_token": format!("at-{}", rand_token()), "token_type": "Bearer",
                "expires_in": 300, "id_token": id_token,
            });
            respond(&mut writer, 200, &[], &body, behaviour.token_padding);
        }
        ("GET", "/userinfo") => {
            let mut doc = json!({"sub": SUBJECT});
            merge(&mut doc, &behaviour.userinfo);
            respond(&mut writer, 200, &[], &doc, 0);
        }
        _ => respond(&mut writer, 404, &[], &json!({"error": "not found"}), 0),
    }
}

/// The client id of an `Authorization: Basic` header.
fn basic_user(header: Option<&str>) -> Option<String> {
    use base64::Engine;
    let encoded = header?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next()?;
    Some(decode(&format!("u={user}")).remove("u").unwrap_or_default())
}

/// A code nobody guesses within a test run.
fn rand_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", hasher.finish())
}

/// An RS256 token signed with the 1024-bit key by `openssl dgst`.
fn sign_with_openssl(claims: &Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": RSA1024_KID});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = crate::workspace_root().join(RSA1024_PEM_PATH);
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl output");
    assert!(out.status.success(), "openssl dgst -sign failed");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(out.stdout))
}
