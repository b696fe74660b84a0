//! The browser harness itself: Debian's headless Chromium, driven by our
//! playwright-core script, loads a page from a loopback server, runs its
//! script, and reports every request it made (the /docs and SAML tests rely
//! on that list).

use integration_tests::chromium::{artifacts_dir, run_script};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread;

#[test]
fn headless_chromium_renders_a_loopback_page_and_lists_its_requests() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            reader.read_line(&mut request_line).expect("request line");
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = if request_line.starts_with("GET / ") {
                "<title>harness</title><p id=out></p>\
                 <script>document.getElementById('out').textContent = 'script ran';\
                 fetch('/ping');</script>"
            } else {
                "pong"
            };
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let url = format!("http://127.0.0.1:{port}/");
    let result = run_script("smoke.mjs", "smoke", json!({ "url": url }));
    assert_eq!(result["title"], "harness");
    assert!(
        result["text"].as_str().unwrap().contains("script ran"),
        "{result}"
    );
    let requests: Vec<&str> = result["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(requests[0], url, "{requests:?}");
    assert!(
        requests.iter().all(|r| r.starts_with(&url)),
        "a request left the page's origin: {requests:?}"
    );
    assert!(artifacts_dir("smoke").join("smoke.png").exists());
}
