//! A small HTTP/1.1 server of ours for behaviours httpbin cannot show:
//! a status sequence per key (503, 503, then 200), `Retry-After`, slow
//! answers with a count of how many were in flight at once, and
//! connections closed without an answer. It runs on a free loopback port
//! in the test process, one thread per connection, until dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Default)]
struct Shared {
    /// Requests seen per path (without the query).
    hits: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    stop: AtomicBool,
}

/// The running server; stops accepting when dropped.
pub struct TestServer {
    port: u16,
    shared: Arc<Shared>,
}

impl TestServer {
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test server");
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
                thread::spawn(move || serve(stream, &shared));
            }
        });
        TestServer { port, shared }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// How many requests reached `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.shared
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// The most `/slow/…` requests that were in flight at the same moment.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Request {
    path: String,
    query: HashMap<String, String>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let target = line.split_whitespace().nth(1)?.to_string();
    let mut length = 0usize;
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
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Request {
        path: path.to_string(),
        query,
    })
}

fn respond(stream: &mut TcpStream, status: u16, extra: &[(&str, String)], body: &str) -> bool {
    let mut head = format!(
        "HTTP/1.1 {status} S\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).is_ok() && stream.write_all(body.as_bytes()).is_ok()
}

fn serve(stream: TcpStream, shared: &Shared) {
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        let hit = {
            let mut hits = shared.hits.lock().unwrap();
            let count = hits.entry(request.path.clone()).or_default();
            *count += 1;
            *count
        };
        let parts: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
        let body = format!("{{\"path\": \"{}\", \"hit\": {hit}}}", request.path);
        let ok = match parts.as_slice() {
            // /seq/{key}/{codes}: the n-th request answers the n-th code (the
            // last one repeats); ?retry_after=S adds Retry-After to 429/503.
            ["seq", _key, codes] => {
                let codes: Vec<u16> = codes.split(',').filter_map(|c| c.parse().ok()).collect();
                let status = codes[(hit - 1).min(codes.len() - 1)];
                let mut extra = Vec::new();
                if let Some(seconds) = request.query.get("retry_after") {
                    if status == 429 || status == 503 {
                        extra.push(("Retry-After", seconds.clone()));
                    }
                }
                respond(&mut writer, status, &extra, &body)
            }
            ["slow", ms] => {
                let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(ms.parse().unwrap_or(10)));
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                respond(&mut writer, 200, &[], &body)
            }
            // The connection is closed with no answer.
            ["close"] => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            _ => respond(&mut writer, 200, &[], &body),
        };
        if !ok {
            return;
        }
    }
}
