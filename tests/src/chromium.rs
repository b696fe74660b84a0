//! Headless Chromium (Debian's `chromium`) driven by playwright-core (npm,
//! installed under build/browser by `make test-deps`; it never downloads a
//! browser). A test runs one of our scripts in `tests/browser/` with a JSON
//! input and gets back the JSON the script returns; `chromium.mjs` there
//! starts the browser with a fresh profile and records every request made.

use crate::process::workspace_root;
use crate::sidecar::scratch_dir;
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Where screenshots and other artifacts of `name` are kept (build/browser-artifacts/NAME).
pub fn artifacts_dir(name: &str) -> PathBuf {
    let dir = workspace_root().join("build/browser-artifacts").join(name);
    fs::create_dir_all(&dir).expect("create the artifacts folder");
    dir
}

/// Runs `tests/browser/{script}` with `input` (an object; `chromium`,
/// `profile` and `artifacts` are added) and returns the script's result;
/// panics with the script's error and output when it fails.
pub fn run_script(script: &str, name: &str, mut input: Value) -> Value {
    let home = workspace_root().join("build/browser");
    assert!(
        home.join("node_modules/playwright-core").exists(),
        "{} lacks playwright-core: run `make test-deps` (make test does it)",
        home.display()
    );
    let chromium = PathBuf::from("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "no /usr/bin/chromium: run `make test-deps`"
    );
    // Node resolves packages next to the script: copy ours there. Tests run
    // in parallel, so each file is written aside and renamed into place.
    for entry in fs::read_dir(workspace_root().join("tests/browser")).expect("read tests/browser") {
        let path = entry.expect("list tests/browser").path();
        if path.extension().is_some_and(|e| e == "mjs") {
            let file = path.file_name().expect("a file name").to_owned();
            let fresh = home.join(format!(
                "{}.{}.{name}",
                file.to_string_lossy(),
                std::process::id()
            ));
            fs::copy(&path, &fresh).expect("copy a browser script");
            fs::rename(&fresh, home.join(&file)).expect("move a browser script into place");
        }
    }
    let profile = scratch_dir(&format!("chromium-{name}"));
    let _ = fs::remove_dir_all(&profile);
    fs::create_dir_all(&profile).expect("create the profile folder");
    let object = input.as_object_mut().expect("the input is a JSON object");
    object.insert("chromium".into(), chromium.to_string_lossy().into());
    object.insert("profile".into(), profile.to_string_lossy().into());
    object.insert(
        "artifacts".into(),
        artifacts_dir(name).to_string_lossy().into(),
    );
    let mut child = Command::new("node")
        .arg(home.join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    child
        .stdin
        .take()
        .expect("node's stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write the script's input");
    let output = child
        .wait_with_output()
        .expect("wait for the browser script");
    let _ = fs::remove_dir_all(&profile);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let answer: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!("{script} printed no result\nstdout: {stdout}\nstderr: {stderr}")
        });
    assert!(
        answer["ok"] == true,
        "{script} failed: {}\nstderr: {stderr}",
        answer["error"].as_str().unwrap_or_default()
    );
    answer["result"].clone()
}
