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

use crate::idempotency::fingerprint::sha256_hex;

pub use chunk::{chunk_text, Chunk};
pub use extract::{extract_text, stats, ExtractError, TextStats};
pub use upload::{
    parse_upload, ContentType, Upload, UploadError, MAX_CHUNK_SIZE, MAX_FILENAME_CHARS,
    MIN_CHUNK_SIZE,
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

#[cfg(test)]
mod tests {
    use super::*;

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
