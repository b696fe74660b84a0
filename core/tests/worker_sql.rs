//! Every statement the background worker runs names its functions and
//! relations with their schema. The worker is a superuser's session: an
//! unqualified `now()` there would run whatever a user managed to put first
//! on its `search_path` (issue 22). The worker also pins `search_path`; this
//! keeps the statements safe on their own.

use integration_core::sql_names::{statements_in_rust, unqualified_names};
use std::path::Path;

/// The extension's sources whose statements the worker runs.
const WORKER_SOURCES: &[&str] = &["http/queue.rs", "audit.rs", "worker.rs"];

#[test]
fn worker_statements_are_schema_qualified() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../extension/src");
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in WORKER_SOURCES {
        let code = std::fs::read_to_string(src.join(file)).unwrap();
        for sql in statements_in_rust(&code) {
            checked += 1;
            let names = unqualified_names(&sql);
            if !names.is_empty() {
                problems.push(format!("{file}: {names:?} in\n{sql}\n"));
            }
        }
    }
    assert!(checked >= 15, "only {checked} statements found");
    assert!(
        problems.is_empty(),
        "unqualified names:\n{}",
        problems.join("\n")
    );
}
