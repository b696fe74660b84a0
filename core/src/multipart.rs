//! `multipart/form-data` bodies (RFC 7578) for outbound HTTP: text fields
//! and files. Names and file names are escaped the way browsers do (`"`,
//! CR and LF percent-encoded), so a hostile name cannot add headers or
//! parts; the boundary is random and checked against the content.

use rand::distributions::Alphanumeric;
use rand::Rng;

/// One part: a form field, or a file when `filename` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

/// Errors a caller can fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultipartError {
    #[error("a multipart part needs a non-empty name")]
    EmptyName,
    #[error("content type {0:?} of a multipart part must not contain CR or LF")]
    BadContentType(String),
}

fn escape(value: &str) -> String {
    value
        .replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Encodes `parts`; returns the body and its Content-Type header value.
pub fn encode(parts: &[Part]) -> Result<(Vec<u8>, String), MultipartError> {
    for part in parts {
        if part.name.is_empty() {
            return Err(MultipartError::EmptyName);
        }
        if let Some(ct) = &part.content_type {
            if ct.contains(['\r', '\n']) {
                return Err(MultipartError::BadContentType(ct.clone()));
            }
        }
    }
    let boundary = loop {
        let candidate: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let candidate = format!("pg_integration-{candidate}");
        if !parts
            .iter()
            .any(|p| contains(&p.data, candidate.as_bytes()))
        {
            break candidate;
        }
    };
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disposition = format!(
            "Content-Disposition: form-data; name=\"{}\"",
            escape(&part.name)
        );
        if let Some(filename) = &part.filename {
            disposition.push_str(&format!("; filename=\"{}\"", escape(filename)));
        }
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"\r\n");
        let content_type = match (&part.content_type, &part.filename) {
            (Some(ct), _) => Some(ct.as_str()),
            (None, Some(_)) => Some("application/octet-stream"),
            (None, None) => None,
        };
        if let Some(ct) = content_type {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(&part.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok((body, format!("multipart/form-data; boundary={boundary}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> Part {
        Part {
            name: name.into(),
            filename: None,
            content_type: None,
            data: value.as_bytes().to_vec(),
        }
    }

    fn boundary_of(content_type: &str) -> &str {
        content_type
            .strip_prefix("multipart/form-data; boundary=")
            .expect("multipart content type")
    }

    #[test]
    fn fields_and_files_in_order() {
        let file = Part {
            name: "upload".into(),
            filename: Some("a.bin".into()),
            content_type: None,
            data: vec![0, 255, 13, 10],
        };
        let (body, content_type) = encode(&[field("title", "héllo"), file]).unwrap();
        let b = boundary_of(&content_type);
        let mut expected = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhéllo\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        expected.extend_from_slice(&[0, 255, 13, 10]);
        expected.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
        assert_eq!(body, expected);
    }

    #[test]
    fn hostile_names_cannot_break_out() {
        let part = Part {
            name: "a\"\r\nX-Evil: 1".into(),
            filename: Some("x\".txt\r\n\r\ninjected".into()),
            content_type: Some("text/plain".into()),
            data: b"data".to_vec(),
        };
        let (body, _) = encode(&[part]).unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("name=\"a%22%0D%0AX-Evil: 1\""), "{text}");
        assert!(
            text.contains("filename=\"x%22.txt%0D%0A%0D%0Ainjected\""),
            "{text}"
        );
        assert_eq!(text.matches("\r\n\r\n").count(), 1, "{text}");
    }

    #[test]
    fn refuses_what_cannot_be_encoded() {
        assert_eq!(encode(&[field("", "x")]), Err(MultipartError::EmptyName));
        let part = Part {
            content_type: Some("text/plain\r\nX: y".into()),
            ..field("f", "x")
        };
        assert!(matches!(
            encode(&[part]),
            Err(MultipartError::BadContentType(_))
        ));
    }

    #[test]
    fn boundary_never_occurs_in_the_content() {
        let (body, content_type) = encode(&[field("f", "x")]).unwrap();
        let b = boundary_of(&content_type).to_string();
        assert!(b.len() >= 40);
        assert_eq!(String::from_utf8(body).unwrap().matches(&b).count(), 2);
        let (_, other) = encode(&[field("f", "x")]).unwrap();
        assert_ne!(other, content_type, "boundaries are random");
    }
}
