//! Document ingestion for `POST /v1/documents`: parse the upload, extract plain text,
//! compute statistics and split the text into overlapping chunks.
//!
//! Pure, host-testable domain logic: no Worker bindings, no I/O, no clock, so the same
//! upload always produces the same [`ProcessedDocument`] (which matters for
//! idempotent replays). The pipeline is
//! [`parse_upload`] → [`process`] ([`extract_text`] → [`stats`] → [`chunk_text`]).

mod chunk;
mod extract;
mod upload;

use crate::idempotency::fingerprint::{canonical_json_text, hex, sha256_hex};
use sha2::{Digest, Sha256};

pub use chunk::{chunk_text, Chunk};
pub use extract::{extract_text, stats, ExtractError, TextStats};
pub use upload::{
    parse_upload, ContentType, Upload, UploadError, KNOWN_FIELDS as UPLOAD_FIELDS, MAX_CHUNK_SIZE,
    MAX_FILENAME_CHARS, MIN_CHUNK_SIZE,
};

/// The result of processing one upload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProcessedDocument {
    pub filename: String,
    pub content_type: ContentType,
    /// Lowercase hex SHA-256 of the raw uploaded bytes (before extraction), so equal
    /// files have equal digests whatever their extracted text.
    pub sha256: String,
    /// Length of the raw uploaded bytes.
    pub size_bytes: usize,
    /// The extracted text; chunk offsets are char offsets into this string.
    pub text: String,
    /// Statistics of `text`.
    pub stats: TextStats,
    pub chunks: Vec<Chunk>,
}

/// Extracts, measures and chunks an upload using its own chunk settings.
///
/// Fails only if the document's content does not match its declared type (invalid
/// JSON or CSV), or if the bytes are not UTF-8 (impossible for uploads from
/// [`parse_upload`]).
pub fn process(upload: &Upload) -> Result<ProcessedDocument, ExtractError> {
    let raw =
        std::str::from_utf8(&upload.bytes).map_err(|e| ExtractError::InvalidUtf8(e.to_string()))?;
    let text = extract_text(upload.content_type, raw)?;
    let stats = stats(&text);
    let chunks = chunk_text(&text, upload.chunk_size, upload.chunk_overlap);
    Ok(ProcessedDocument {
        filename: upload.filename.clone(),
        content_type: upload.content_type,
        sha256: sha256_hex(&upload.bytes),
        size_bytes: upload.bytes.len(),
        text,
        stats,
        chunks,
    })
}

/// The identity of an unkeyed upload (`docs/contract.md`, "Keys: grammar and refused
/// forms", policy `derive`): the lowercase
/// hex SHA-256 of `"idemgate derived document key v2"`, the tenant, the upload body
/// in canonical JSON form, and the chunk size and overlap as applied — each part
/// preceded by its length as 8 big-endian bytes.
///
/// It covers everything that changes the answer: the body carries the content (so
/// its hash), the filename, the content type and any chunking the client asked
/// for; the applied chunking adds the operator's defaults. And because the
/// canonical body is exactly what the request fingerprint hashes, two uploads with
/// one derived key always have one fingerprint: an unkeyed upload is a replay of
/// the same document or a new document, never a 422. Bodies that differ only in
/// key order or whitespace are one upload; the same bytes under another name,
/// type or chunking — or sent as `content_base64` instead of `content` — are a new
/// document.
///
/// `body` is the body `upload` was parsed from (so it is JSON; raw bytes are hashed
/// if it somehow were not, like the fingerprint does).
pub fn derived_key_digest(tenant: &str, body: &[u8], upload: &Upload) -> String {
    let canonical = canonical_json_text(body);
    let body = canonical.as_ref().map_or(body, |c| c.as_bytes());
    let mut h = Sha256::new();
    for part in [
        b"idemgate derived document key v2".as_slice(),
        tenant.as_bytes(),
        body,
        upload.chunk_size.to_string().as_bytes(),
        upload.chunk_overlap.to_string().as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::fingerprint::Fingerprint;

    fn upload(content_type: ContentType, content: &str, size: usize, overlap: usize) -> Upload {
        Upload {
            filename: "doc".into(),
            content_type,
            bytes: content.as_bytes().to_vec(),
            chunk_size: size,
            chunk_overlap: overlap,
        }
    }

    #[test]
    fn process_runs_the_whole_pipeline_from_a_request_body() {
        let body = br#"{"filename":"page.html","content_type":"text/html; charset=utf-8",
            "content_base64":"PGgxPkhpPC9oMT48cD5PbmUuPC9wPg","chunk_size":100,"chunk_overlap":10}"#;
        let up = parse_upload(body, 1000, 100).unwrap();
        assert_eq!(up.bytes, b"<h1>Hi</h1><p>One.</p>");
        let doc = process(&up).unwrap();
        assert_eq!(doc.filename, "page.html");
        assert_eq!(doc.content_type, ContentType::Html);
        assert_eq!(doc.sha256, sha256_hex(b"<h1>Hi</h1><p>One.</p>"));
        assert_eq!(doc.size_bytes, 22);
        assert_eq!(doc.text, "Hi\n\nOne.");
        assert_eq!(
            doc.stats,
            TextStats {
                words: 2,
                lines: 3,
                chars: 8
            }
        );
        assert_eq!(
            doc.chunks,
            vec![Chunk {
                index: 0,
                text: "Hi\n\nOne.".into(),
                start: 0,
                end: 8
            }]
        );
    }

    /// The derived key and the fingerprint of an upload body, with the default
    /// chunking 1000/100.
    fn key_and_fingerprint(tenant: &str, body: &str) -> (String, Fingerprint) {
        let upload = parse_upload(body.as_bytes(), 1000, 100).unwrap();
        (
            derived_key_digest(tenant, body.as_bytes(), &upload),
            Fingerprint::compute("POST", "/v1/documents", body.as_bytes(), true, None),
        )
    }

    #[test]
    fn the_same_bytes_under_another_name_and_type_derive_another_key() {
        let a = r##"{"filename":"a.md","content_type":"text/markdown","content":"# Hi\nthere"}"##;
        let b = r##"{"filename":"b.txt","content_type":"text/plain","content":"# Hi\nthere"}"##;
        assert_ne!(
            key_and_fingerprint("acme", a).0,
            key_and_fingerprint("acme", b).0
        );
    }

    #[test]
    fn one_derived_key_means_one_fingerprint_so_an_unkeyed_upload_never_gets_422() {
        let c = r#""content":"Some words.""#;
        let bodies = [
            format!(r#"{{"filename":"a.md","content_type":"text/markdown",{c}}}"#),
            format!(r#"{{ {c}, "content_type":"text/markdown", "filename":"a.md" }}"#),
            format!(r#"{{"filename":"a.md","content_type":"text/markdown; charset=utf-8",{c}}}"#),
            format!(r#"{{"filename":"a.txt","content_type":"text/plain",{c}}}"#),
            format!(r#"{{"filename":"a.txt","content_type":"text/plain",{c},"chunk_size":1000}}"#),
            format!(r#"{{"filename":"a.txt","content_type":"text/plain",{c},"chunk_size":null}}"#),
            format!(r#"{{"filename":"a.txt","content_type":"text/plain",{c},"chunk_size":200}}"#),
            format!(r#"{{"filename":"a.txt","content_type":"text/plain",{c},"chunk_overlap":10}}"#),
            r#"{"filename":"a.txt","content_type":"text/plain","content_base64":"U29tZSB3b3Jkcy4="}"#
                .to_owned(),
            r#"{"filename":"a.txt","content_type":"text/plain","content_base64":"U29tZSB3b3Jkcy4"}"#
                .to_owned(),
        ];
        let derived: Vec<_> = bodies
            .iter()
            .map(|b| key_and_fingerprint("acme", b))
            .collect();
        for (i, (key_i, fp_i)) in derived.iter().enumerate() {
            for (j, (key_j, fp_j)) in derived.iter().enumerate() {
                assert_eq!(
                    key_i == key_j,
                    fp_i == fp_j,
                    "{} vs {}",
                    bodies[i],
                    bodies[j]
                );
            }
        }
        // Only the reordered, re-spaced body is the same upload as the first.
        assert_eq!(derived[0], derived[1]);
        let distinct: std::collections::HashSet<_> = derived.iter().map(|(k, _)| k).collect();
        assert_eq!(distinct.len(), bodies.len() - 1);
    }

    #[test]
    fn derived_keys_depend_on_the_tenant_and_on_the_applied_default_chunking() {
        let body = r#"{"filename":"a.txt","content_type":"text/plain","content":"x"}"#;
        assert_ne!(
            key_and_fingerprint("acme", body).0,
            key_and_fingerprint("globex", body).0
        );
        let with = |size, overlap| {
            let up = parse_upload(body.as_bytes(), size, overlap).unwrap();
            derived_key_digest("acme", body.as_bytes(), &up)
        };
        assert_eq!(with(1000, 100), with(1000, 100));
        assert_ne!(with(1000, 100), with(500, 100));
        assert_ne!(with(1000, 100), with(1000, 50));
        assert_eq!(with(1000, 100).len(), 64);
    }

    #[test]
    fn process_chunks_with_the_upload_settings() {
        let text = "A sentence of some length. ".repeat(40);
        let doc = process(&upload(ContentType::PlainText, &text, 100, 20)).unwrap();
        assert!(doc.chunks.len() > 10);
        assert!(doc.chunks.iter().all(|c| c.end - c.start <= 100));
        assert_eq!(doc.stats.words, 200);
    }

    #[test]
    fn process_empty_document_has_no_chunks() {
        let doc = process(&upload(ContentType::Markdown, "", 100, 0)).unwrap();
        assert!(doc.chunks.is_empty());
        assert_eq!(doc.stats.lines, 0);
    }

    #[test]
    fn process_reports_content_that_does_not_match_its_type() {
        let err = process(&upload(ContentType::Json, "{not json", 100, 0)).unwrap_err();
        assert!(matches!(err, ExtractError::InvalidJson(_)));
    }

    #[test]
    fn process_rejects_non_utf8_bytes() {
        let mut up = upload(ContentType::PlainText, "", 100, 0);
        up.bytes = vec![0xff, 0xfe];
        assert!(matches!(process(&up), Err(ExtractError::InvalidUtf8(_))));
    }

    #[test]
    fn processed_document_serializes_content_type_as_media_type() {
        let doc = process(&upload(ContentType::Csv, "a,b", 100, 0)).unwrap();
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["content_type"], "text/csv");
        assert_eq!(json["text"], "a b");
        assert_eq!(json["chunks"][0]["end"], 3);
    }
}
