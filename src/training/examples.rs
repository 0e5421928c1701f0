//! Turning stored documents into training examples (`POST /v1/training-data`).
//!
//! Each example is one JSONL line (without its newline) in one of two shapes:
//!
//! - chunks ([`Format::Chunks`]): `{"text":"<chunk>"}`, one per stored chunk, in index order;
//! - chat ([`Format::Chat`]): `{"messages":[{"role":"user","content":"<heading>"},
//!   {"role":"assistant","content":"<section body>"}]}`, one per markdown section
//!   found by [`chat_sections`].
//!
//! Invariants of the output of [`build_examples`]:
//! - examples follow the input documents' order, and within a document the order of
//!   its chunks or sections;
//! - every kept example has `chars >= min_chars`;
//! - no two kept examples have the same `line` (first occurrence in the whole data
//!   set wins), so no two have the same `sha256`;
//! - at most `max_examples` examples are kept (the first ones);
//! - the same inputs give byte-identical lines: lines are serialised from structs
//!   whose field order is fixed (`text`; `messages`; `role` before `content`), never
//!   from a map whose key order could depend on serde_json features.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::idempotency::fingerprint::sha256_hex;

/// The shape of a data set's lines. Serialised as `"chunks"` or `"chat"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `{"text": …}` per stored chunk.
    Chunks,
    /// A user/assistant exchange per markdown section (heading → body).
    Chat,
}

impl Format {
    /// The wire name, as stored in `datasets.format`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chunks => "chunks",
            Self::Chat => "chat",
        }
    }

    /// The inverse of [`Format::as_str`]; exact, case-sensitive.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "chunks" => Some(Self::Chunks),
            "chat" => Some(Self::Chat),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored document, as loaded for data set generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDocument {
    pub id: String,
    /// The extracted text; [`Format::Chat`] reads its markdown headings.
    pub text: String,
    /// The stored chunks' text, in chunk index order; [`Format::Chunks`] uses these.
    pub chunks: Vec<String>,
}

/// One line of a data set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Example {
    /// The document the example came from.
    pub document_id: String,
    /// One compact JSON object, no trailing newline: a JSONL line.
    pub line: String,
    /// Lowercase hex SHA-256 of `line`'s UTF-8 bytes; unique within a data set.
    pub sha256: String,
    /// Unicode scalar values of the example's text content: the chunk for
    /// [`Format::Chunks`], heading plus body for [`Format::Chat`]. JSON syntax and
    /// escaping are not counted, so this is what `min_chars` is compared with.
    pub chars: usize,
}

/// What [`build_examples`] kept and dropped.
///
/// `examples` is the number returned. `duplicates_dropped` and `too_short_dropped`
/// count over the whole input, before `max_examples` truncation; examples cut by the
/// truncation are counted in neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildStats {
    pub examples: usize,
    pub duplicates_dropped: usize,
    pub too_short_dropped: usize,
    /// Sum of `chars` over the kept examples.
    pub chars: usize,
    /// [`estimate_tokens`] of `chars`.
    pub estimated_tokens: usize,
    /// Every input document, in input order (a repeated input appears twice), with
    /// the number of its examples that were kept.
    pub per_document: Vec<(String, usize)>,
}

/// `{"text": …}`
#[derive(Serialize)]
struct TextLine<'a> {
    text: &'a str,
}

/// `{"messages": [user, assistant]}`
#[derive(Serialize)]
struct ChatLine<'a> {
    messages: [Message<'a>; 2],
}

/// `{"role": …, "content": …}`: field order is the serialisation order.
#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

/// A candidate example before filtering.
struct Candidate {
    line: String,
    chars: usize,
}

/// Builds the examples of a data set from `docs`, in order.
///
/// Per candidate, in order: dropped if `chars < min_chars` (counted in
/// `too_short_dropped`), else dropped if an earlier kept example had the same line
/// SHA-256 (counted in `duplicates_dropped`), else kept. Then the kept list is cut to
/// `max_examples` (`Some(0)` keeps nothing). Equal lines have equal `chars`, so the
/// order of the two filters never changes which examples are kept.
///
/// Chunks are used exactly as stored (not trimmed); a document without chunks, or
/// without any non-empty section, simply contributes nothing.
pub fn build_examples(
    docs: &[SourceDocument],
    format: Format,
    min_chars: usize,
    max_examples: Option<usize>,
) -> (Vec<Example>, BuildStats) {
    let mut examples: Vec<Example> = Vec::new();
    // Index into `docs` of each kept example, so per-document counts stay per input
    // position even if an id is repeated.
    let mut origins: Vec<usize> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut duplicates_dropped = 0;
    let mut too_short_dropped = 0;

    for (doc_index, doc) in docs.iter().enumerate() {
        for candidate in candidates(doc, format) {
            if candidate.chars < min_chars {
                too_short_dropped += 1;
                continue;
            }
            let sha256 = sha256_hex(candidate.line.as_bytes());
            if !seen.insert(sha256.clone()) {
                duplicates_dropped += 1;
                continue;
            }
            examples.push(Example {
                document_id: doc.id.clone(),
                line: candidate.line,
                sha256,
                chars: candidate.chars,
            });
            origins.push(doc_index);
        }
    }
    if let Some(max) = max_examples {
        examples.truncate(max);
        origins.truncate(max);
    }

    let mut kept = vec![0usize; docs.len()];
    for &doc_index in &origins {
        kept[doc_index] += 1;
    }
    let per_document = docs
        .iter()
        .zip(kept)
        .map(|(doc, n)| (doc.id.clone(), n))
        .collect();

    let chars = examples.iter().map(|e| e.chars).sum();
    let stats = BuildStats {
        examples: examples.len(),
        duplicates_dropped,
        too_short_dropped,
        chars,
        estimated_tokens: estimate_tokens(chars),
        per_document,
    };
    (examples, stats)
}

/// A rough token count: `ceil(chars / 4)`.
///
/// A heuristic (about four characters per token for English text with common BPE
/// tokenizers), good for sizing and cost estimates only; it is not any model's
/// tokenizer and under-counts for code, CJK text and other dense scripts.
pub fn estimate_tokens(chars: usize) -> usize {
    chars.div_ceil(4)
}

fn candidates(doc: &SourceDocument, format: Format) -> Vec<Candidate> {
    match format {
        Format::Chunks => doc
            .chunks
            .iter()
            .map(|chunk| Candidate {
                line: to_line(&TextLine { text: chunk }),
                chars: chunk.chars().count(),
            })
            .collect(),
        Format::Chat => chat_sections(&doc.text)
            .into_iter()
            .map(|(heading, body)| Candidate {
                line: to_line(&ChatLine {
                    messages: [
                        Message {
                            role: "user",
                            content: &heading,
                        },
                        Message {
                            role: "assistant",
                            content: &body,
                        },
                    ],
                }),
                chars: heading.chars().count() + body.chars().count(),
            })
            .collect(),
    }
}

/// Compact JSON of a line struct.
fn to_line<T: Serialize>(line: &T) -> String {
    // Structs of strings only: serialisation to a String cannot fail.
    serde_json::to_string(line).expect("a struct of strings always serialises")
}

/// Splits markdown into `(heading, body)` sections at ATX headings.
///
/// A heading line is up to three spaces, one to six `#`, then a space or tab (or the
/// end of the line); an optional closing run of `#` preceded by whitespace is
/// removed (`## Setup ##` → `Setup`, but `# C#` stays `C#`). Lines inside fenced
/// code blocks (opened by three or more backticks or tildes, closed by a run of the
/// same character at least as long) are never headings. A section's body is every
/// line after its heading up to the next heading of any level (or the end), trimmed.
///
/// Returned: only sections whose heading text and body are both non-empty after
/// trimming, in document order. Text before the first heading belongs to no section.
/// Setext (underlined) headings are not recognised. Lines are split on `\n` with a
/// trailing `\r` removed, so bodies use `\n` line endings whatever the input used.
pub fn chat_sections(markdown: &str) -> Vec<(String, String)> {
    let mut sections = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    let mut fence: Option<(char, usize)> = None;

    for line in markdown.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some((ch, len)) = fence {
            if is_closing_fence(line, ch, len) {
                fence = None;
            }
        } else if let Some(open) = opening_fence(line) {
            fence = Some(open);
        } else if let Some(heading) = atx_heading(line) {
            if let Some(section) = current.take() {
                push_section(&mut sections, section);
            }
            current = Some((heading.to_owned(), Vec::new()));
            continue;
        }
        if let Some((_, body)) = current.as_mut() {
            body.push(line);
        }
    }
    if let Some(section) = current.take() {
        push_section(&mut sections, section);
    }
    sections
}

fn push_section(sections: &mut Vec<(String, String)>, (heading, body): (String, Vec<&str>)) {
    let body = body.join("\n");
    let body = body.trim();
    if !heading.is_empty() && !body.is_empty() {
        sections.push((heading, body.to_owned()));
    }
}

/// The line without up to three leading spaces, or `None` if it is indented by four
/// or more (an indented code line, never a heading or fence).
fn strip_indent(line: &str) -> Option<&str> {
    let spaces = line.len() - line.trim_start_matches(' ').len();
    (spaces <= 3).then(|| &line[spaces..])
}

/// The heading text of an ATX heading line, trimmed and without its closing `#`s.
fn atx_heading(line: &str) -> Option<&str> {
    let rest = strip_indent(line)?;
    let level = rest.len() - rest.trim_start_matches('#').len();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &rest[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let content = rest.trim_matches([' ', '\t']);
    let without_closing = content.trim_end_matches('#');
    if without_closing.is_empty() {
        // Only `#`s after the opening run: an empty heading.
        Some("")
    } else if without_closing.ends_with([' ', '\t']) {
        Some(without_closing.trim_end_matches([' ', '\t']))
    } else {
        // No closing run, or `#`s glued to the text (`C#`): part of the heading.
        Some(content)
    }
}

/// `(fence char, run length)` if the line opens a fenced code block.
fn opening_fence(line: &str) -> Option<(char, usize)> {
    let rest = strip_indent(line)?;
    let ch = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = rest.len() - rest.trim_start_matches(ch).len();
    if len < 3 {
        return None;
    }
    // A backtick fence's info string may not contain backticks (CommonMark).
    if ch == '`' && rest[len..].contains('`') {
        return None;
    }
    Some((ch, len))
}

/// Whether the line closes a fence opened with `len` × `ch`.
fn is_closing_fence(line: &str, ch: char, len: usize) -> bool {
    let Some(rest) = strip_indent(line) else {
        return false;
    };
    let run = rest.len() - rest.trim_start_matches(ch).len();
    run >= len && rest[run..].trim_matches([' ', '\t']).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::fingerprint::hex;
    use sha2::{Digest, Sha256};

    fn doc(id: &str, text: &str, chunks: &[&str]) -> SourceDocument {
        SourceDocument {
            id: id.to_owned(),
            text: text.to_owned(),
            chunks: chunks.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn lines(examples: &[Example]) -> Vec<&str> {
        examples.iter().map(|e| e.line.as_str()).collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(h, b)| ((*h).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn chunks_format_emits_one_text_line_per_chunk_in_order() {
        let docs = [doc("d1", "ignored", &["first chunk", "second \"quoted\""])];
        let (examples, stats) = build_examples(&docs, Format::Chunks, 0, None);
        assert_eq!(
            lines(&examples),
            [
                r#"{"text":"first chunk"}"#,
                r#"{"text":"second \"quoted\""}"#
            ]
        );
        assert_eq!(examples[0].document_id, "d1");
        assert_eq!(examples[0].chars, 11);
        assert_eq!(examples[1].chars, 15);
        assert_eq!(stats.examples, 2);
        assert_eq!(stats.chars, 26);
    }

    #[test]
    fn chat_format_emits_user_heading_and_assistant_body_in_fixed_key_order() {
        let text = "intro is ignored\n# Install\n\nRun `x`.\n\n## Usage ##\nCall it.\n";
        let (examples, stats) = build_examples(&[doc("d", text, &[])], Format::Chat, 0, None);
        assert_eq!(
            lines(&examples),
            [
                r#"{"messages":[{"role":"user","content":"Install"},{"role":"assistant","content":"Run `x`."}]}"#,
                r#"{"messages":[{"role":"user","content":"Usage"},{"role":"assistant","content":"Call it."}]}"#,
            ]
        );
        assert_eq!(examples[0].chars, "Install".len() + "Run `x`.".len());
        assert_eq!(stats.chars, 7 + 8 + 5 + 8);
    }

    #[test]
    fn sha256_is_hex_of_the_line() {
        let (examples, _) = build_examples(&[doc("d", "", &["abc"])], Format::Chunks, 0, None);
        let expected = hex(&Sha256::digest(br#"{"text":"abc"}"#));
        assert_eq!(examples[0].sha256, expected);
        assert_eq!(examples[0].sha256.len(), 64);
    }

    #[test]
    fn duplicates_within_a_document_keep_the_first() {
        let docs = [doc("d", "", &["a", "b", "a", "a"])];
        let (examples, stats) = build_examples(&docs, Format::Chunks, 0, None);
        assert_eq!(lines(&examples), [r#"{"text":"a"}"#, r#"{"text":"b"}"#]);
        assert_eq!(stats.duplicates_dropped, 2);
        assert_eq!(stats.per_document, [("d".to_owned(), 2)]);
    }

    #[test]
    fn duplicates_across_documents_are_credited_to_the_first_document() {
        let docs = [doc("d1", "", &["same", "x"]), doc("d2", "", &["same", "y"])];
        let (examples, stats) = build_examples(&docs, Format::Chunks, 0, None);
        assert_eq!(
            examples
                .iter()
                .map(|e| (e.document_id.as_str(), e.line.as_str()))
                .collect::<Vec<_>>(),
            [
                ("d1", r#"{"text":"same"}"#),
                ("d1", r#"{"text":"x"}"#),
                ("d2", r#"{"text":"y"}"#)
            ]
        );
        assert_eq!(stats.duplicates_dropped, 1);
        assert_eq!(
            stats.per_document,
            [("d1".to_owned(), 2), ("d2".to_owned(), 1)]
        );
    }

    #[test]
    fn duplicate_chat_sections_across_documents_are_dropped() {
        let text = "# Q\nA\n";
        let docs = [doc("d1", text, &[]), doc("d2", text, &[])];
        let (examples, stats) = build_examples(&docs, Format::Chat, 0, None);
        assert_eq!(examples.len(), 1);
        assert_eq!(stats.duplicates_dropped, 1);
    }

    #[test]
    fn examples_shorter_than_min_chars_are_dropped_and_counted() {
        let docs = [doc("d", "", &["1234", "12345", "123", "123"])];
        let (examples, stats) = build_examples(&docs, Format::Chunks, 5, None);
        assert_eq!(lines(&examples), [r#"{"text":"12345"}"#]);
        assert_eq!(stats.too_short_dropped, 3);
        assert_eq!(stats.duplicates_dropped, 0);
    }

    #[test]
    fn min_chars_counts_unicode_chars_not_bytes_or_json_escapes() {
        let docs = [doc("d", "", &["ééé", "a\"b"])];
        let (examples, _) = build_examples(&docs, Format::Chunks, 3, None);
        assert_eq!(examples.len(), 2);
        let (examples, _) = build_examples(&docs, Format::Chunks, 4, None);
        assert!(examples.is_empty());
    }

    #[test]
    fn chat_min_chars_counts_heading_plus_body() {
        let docs = [doc("d", "# ab\ncde\n", &[])];
        assert_eq!(build_examples(&docs, Format::Chat, 5, None).0.len(), 1);
        assert_eq!(build_examples(&docs, Format::Chat, 6, None).0.len(), 0);
    }

    #[test]
    fn max_examples_keeps_the_first_after_filtering() {
        let docs = [
            doc("d1", "", &["x", "a", "a", "b"]),
            doc("d2", "", &["c", "d"]),
        ];
        let (examples, stats) = build_examples(&docs, Format::Chunks, 1, Some(3));
        assert_eq!(
            lines(&examples),
            [r#"{"text":"x"}"#, r#"{"text":"a"}"#, r#"{"text":"b"}"#]
        );
        assert_eq!(stats.examples, 3);
        assert_eq!(stats.duplicates_dropped, 1);
        assert_eq!(stats.chars, 3);
        assert_eq!(
            stats.per_document,
            [("d1".to_owned(), 3), ("d2".to_owned(), 0)]
        );
        assert!(build_examples(&docs, Format::Chunks, 0, Some(0))
            .0
            .is_empty());
        assert_eq!(
            build_examples(&docs, Format::Chunks, 0, Some(1000)).0.len(),
            5
        );
    }

    #[test]
    fn same_inputs_give_byte_identical_output() {
        let docs = [
            doc(
                "d1",
                "# Ünïcode ✓\nbody \"q\" \\ \t tab\n## Two\nmore\n",
                &["c1", "c2"],
            ),
            doc("d2", "# Two\nmore\n", &["c1", "c3"]),
        ];
        for format in [Format::Chunks, Format::Chat] {
            let first = build_examples(&docs, format, 0, None);
            let second = build_examples(&docs, format, 0, None);
            assert_eq!(first, second);
            let joined = |ex: &[Example]| lines(ex).join("\n");
            assert_eq!(joined(&first.0), joined(&second.0));
        }
    }

    #[test]
    fn per_document_lists_every_input_document_in_order() {
        let docs = [
            doc("empty", "", &[]),
            doc("two", "", &["a", "b"]),
            doc("dupes-only", "", &["a"]),
            doc("short", "", &[""]),
        ];
        let (_, stats) = build_examples(&docs, Format::Chunks, 1, None);
        assert_eq!(
            stats.per_document,
            [
                ("empty".to_owned(), 0),
                ("two".to_owned(), 2),
                ("dupes-only".to_owned(), 0),
                ("short".to_owned(), 0),
            ]
        );
        assert_eq!(stats.too_short_dropped, 1);
        assert_eq!(stats.duplicates_dropped, 1);
    }

    #[test]
    fn per_document_keeps_repeated_input_ids_separate() {
        let docs = [
            doc("d", "", &[]),
            doc("d", "", &["a"]),
            doc("d", "", &["b", "c"]),
        ];
        let (_, stats) = build_examples(&docs, Format::Chunks, 0, None);
        assert_eq!(
            stats.per_document,
            [
                ("d".to_owned(), 0),
                ("d".to_owned(), 1),
                ("d".to_owned(), 2)
            ]
        );
    }

    #[test]
    fn empty_input_gives_empty_stats() {
        let (examples, stats) = build_examples(&[], Format::Chat, 0, None);
        assert!(examples.is_empty());
        assert_eq!(
            stats,
            BuildStats {
                examples: 0,
                duplicates_dropped: 0,
                too_short_dropped: 0,
                chars: 0,
                estimated_tokens: 0,
                per_document: vec![],
            }
        );
    }

    #[test]
    fn token_estimate_is_chars_divided_by_four_rounded_up() {
        for (chars, tokens) in [(0, 0), (1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3)] {
            assert_eq!(estimate_tokens(chars), tokens, "{chars}");
        }
        let (_, stats) = build_examples(&[doc("d", "", &["12345"])], Format::Chunks, 0, None);
        assert_eq!((stats.chars, stats.estimated_tokens), (5, 2));
    }

    #[test]
    fn headings_inside_fenced_code_are_body_text() {
        let md = "# Script\n```bash\n# not a heading\necho hi\n```\n# Next\nafter\n";
        assert_eq!(
            chat_sections(md),
            pairs(&[
                ("Script", "```bash\n# not a heading\necho hi\n```"),
                ("Next", "after")
            ])
        );
    }

    #[test]
    fn fences_close_only_on_a_matching_run() {
        let md = "# A\n````\n```\n# inside\n````\n# B\nb\n~~~\n# tilde inside\n```\n~~~\n";
        assert_eq!(
            chat_sections(md),
            pairs(&[
                ("A", "````\n```\n# inside\n````"),
                ("B", "b\n~~~\n# tilde inside\n```\n~~~")
            ])
        );
    }

    #[test]
    fn an_unclosed_fence_runs_to_the_end() {
        let md = "# A\n```\n# inside\n";
        assert_eq!(chat_sections(md), pairs(&[("A", "```\n# inside")]));
    }

    #[test]
    fn closing_hashes_are_stripped_only_after_whitespace() {
        let md = "# Title ###\nx\n## C#\ny\n### F# ##  \nz\n#### a#b #\nw\n";
        assert_eq!(
            chat_sections(md),
            pairs(&[("Title", "x"), ("C#", "y"), ("F#", "z"), ("a#b", "w")])
        );
    }

    #[test]
    fn heading_needs_one_to_six_hashes_then_whitespace() {
        let md = "# H\n#nospace\n####### seven\n    # indented code\n   ###\tTab\nt\n";
        assert_eq!(
            chat_sections(md),
            pairs(&[
                ("H", "#nospace\n####### seven\n    # indented code"),
                ("Tab", "t")
            ])
        );
    }

    #[test]
    fn empty_sections_and_empty_headings_are_skipped() {
        let md = "# Empty\n\n   \n## Full\ntext\n# ##\norphan body\n#\nalso orphan\n# Last\n";
        assert_eq!(chat_sections(md), pairs(&[("Full", "text")]));
    }

    #[test]
    fn a_section_ends_at_the_next_heading_of_any_level() {
        let md = "## Outer\nouter text\n#### Inner\ninner text\n# Top\ntop text";
        assert_eq!(
            chat_sections(md),
            pairs(&[
                ("Outer", "outer text"),
                ("Inner", "inner text"),
                ("Top", "top text")
            ])
        );
    }

    #[test]
    fn text_before_the_first_heading_and_crlf_are_handled() {
        let md = "preamble\r\n\r\n# Head\r\nline one\r\nline two\r\n";
        assert_eq!(chat_sections(md), pairs(&[("Head", "line one\nline two")]));
        assert!(chat_sections("no headings at all\n").is_empty());
    }

    #[test]
    fn format_round_trips_through_its_wire_name() {
        for format in [Format::Chunks, Format::Chat] {
            assert_eq!(Format::parse(format.as_str()), Some(format));
            assert_eq!(
                serde_json::to_string(&format).unwrap(),
                format!("\"{format}\"")
            );
            let back: Format = serde_json::from_str(&format!("\"{}\"", format.as_str())).unwrap();
            assert_eq!(back, format);
        }
        assert_eq!(Format::parse("Chat"), None);
    }
}
