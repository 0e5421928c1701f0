//! Plain-text extraction from the supported document formats, plus text statistics.
//!
//! Every extractor returns text with `\n` line endings only (CRLF and lone CR are
//! normalised) and without a leading byte-order mark, so downstream chunking sees one
//! line-break convention. Extraction is deterministic: the same input always yields
//! the same text.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::upload::ContentType;

/// Why a document's text could not be extracted. Every variant is a client error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtractError {
    /// A `application/json` document that does not parse.
    InvalidJson(String),
    /// A `text/csv` document the CSV reader rejects.
    InvalidCsv(String),
    /// The raw bytes are not UTF-8 (only reachable for hand-built uploads:
    /// `parse_upload` already rejects non-UTF-8 content).
    InvalidUtf8(String),
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidJson(e) => write!(f, "document is not valid JSON: {e}"),
            Self::InvalidCsv(e) => write!(f, "document is not valid CSV: {e}"),
            Self::InvalidUtf8(e) => write!(f, "document is not valid UTF-8: {e}"),
        }
    }
}

impl std::error::Error for ExtractError {}

/// Extracts the plain text of a document of type `ct`.
///
/// - PlainText / Markdown: unchanged apart from line endings (Markdown stays Markdown:
///   headings and lists are meaningful to readers of the chunks).
/// - Html: markup, comments, scripts and styles removed, block elements turned into
///   line/paragraph breaks, entities decoded, whitespace tidied (details on the
///   private `html_to_text`).
/// - Json: every string *value* (never a key), in source order, one per line; blank
///   strings are skipped.
/// - Csv: each row's non-empty trimmed cells joined by a space, rows joined by `\n`;
///   rows without any non-empty cell are skipped. No header row is assumed and rows may
///   have different lengths.
pub fn extract_text(ct: ContentType, text: &str) -> Result<String, ExtractError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Normalised before (so the HTML line logic sees only `\n`) and after (JSON `\r`
    // escapes and HTML `&#13;` can reintroduce CR).
    let text = normalize_newlines(text.to_owned());
    let extracted = match ct {
        ContentType::PlainText | ContentType::Markdown => text,
        ContentType::Html => html_to_text(&text),
        ContentType::Json => json_strings(&text)?,
        ContentType::Csv => csv_text(&text)?,
    };
    Ok(normalize_newlines(extracted))
}

/// Word, line and character counts of extracted text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TextStats {
    /// Whitespace-separated tokens.
    pub words: usize,
    /// Lines as `str::lines` counts them: 0 for empty text, and a trailing newline does
    /// not start another line.
    pub lines: usize,
    /// Unicode scalar values (not bytes, not grapheme clusters).
    pub chars: usize,
}

/// Computes [`TextStats`] for `text`.
pub fn stats(text: &str) -> TextStats {
    TextStats {
        words: text.split_whitespace().count(),
        lines: text.lines().count(),
        chars: text.chars().count(),
    }
}

/// Rewrites CRLF and lone CR as LF; returns the input untouched when it has no CR.
fn normalize_newlines(text: String) -> String {
    if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text
    }
}

// ---------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------

/// Elements whose start and end tags both become a paragraph break (blank line).
const PARAGRAPH_TAGS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "caption",
    "details",
    "div",
    "dl",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "title",
    "ul",
];

/// Elements whose start tag begins a new line (list items, rows, explicit breaks).
const LINE_TAGS: &[&str] = &["br", "dd", "dt", "li", "tr"];

/// Elements whose start tag separates inline content with a space (table cells).
const CELL_TAGS: &[&str] = &["td", "th"];

/// Elements whose entire content is dropped (raw text that is code, not prose).
const RAW_TEXT_TAGS: &[&str] = &["script", "style"];

/// Converts HTML to readable plain text with a small, forgiving scanner.
///
/// Tags and comments are removed; `<script>` and `<style>` elements are removed with
/// their content; block-level elements become line or paragraph breaks; entities are
/// decoded only *after* tags are gone (so `&lt;b&gt;` survives as the text `<b>`);
/// then spaces and tabs (and no-break spaces) are collapsed, lines trimmed and runs of
/// blank lines reduced to one. The `<title>` text is kept as its own paragraph.
///
/// Never panics: a `<` that does not start markup is text, and an unterminated tag,
/// comment or script element swallows the rest of the input (as browsers do).
/// Only ASCII delimiters are searched for, so every slice falls on a char boundary.
fn html_to_text(html: &str) -> String {
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len());
    let mut i = 0;
    while i < html.len() {
        let Some(rel) = html[i..].find('<') else {
            out.push_str(&html[i..]);
            break;
        };
        let lt = i + rel;
        out.push_str(&html[i..lt]);
        let rest = &html[lt..];
        let next = bytes.get(lt + 1).copied();

        if rest.starts_with("<!--") {
            i = match html[lt + 4..].find("-->") {
                Some(p) => lt + 4 + p + 3,
                None => html.len(),
            };
            continue;
        }
        let is_markup = match next {
            Some(b) if b.is_ascii_alphabetic() || b == b'!' || b == b'?' => true,
            Some(b'/') => bytes.get(lt + 2).is_some_and(u8::is_ascii_alphabetic),
            _ => false,
        };
        if !is_markup {
            // A literal `<` in text, e.g. `a < b` or `<3`.
            out.push('<');
            i = lt + 1;
            continue;
        }

        let Some(gt) = tag_end(html, lt) else {
            // Unterminated tag: nothing after it can be text.
            break;
        };
        let tag = &html[lt + 1..gt];
        i = gt + 1;

        let closing = tag.starts_with('/');
        let name_start = usize::from(closing);
        let name: String = tag[name_start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if name.is_empty() {
            // `<!DOCTYPE …>`, `<?xml …?>`, `<![CDATA[…]]>`: declarations, not text.
            continue;
        }
        let name = name.as_str();

        if !closing && RAW_TEXT_TAGS.contains(&name) {
            // `<script …/>` is only self-closing in XHTML; honouring it there avoids
            // swallowing the document, and in HTML it is rare.
            if tag.ends_with('/') {
                continue;
            }
            i = skip_raw_text(html, i, name);
            continue;
        }
        if PARAGRAPH_TAGS.contains(&name) {
            out.push_str("\n\n");
        } else if !closing && LINE_TAGS.contains(&name) {
            out.push('\n');
        } else if !closing && CELL_TAGS.contains(&name) {
            out.push(' ');
        }
    }

    let decoded = html_escape::decode_html_entities(&out);
    tidy_whitespace(&decoded.replace('\u{a0}', " "))
}

/// Byte index of the `>` closing the tag that starts at `lt`, skipping `>` inside
/// quoted attribute values. If a quote never closes, falls back to the first `>`.
fn tag_end(html: &str, lt: usize) -> Option<usize> {
    let bytes = html.as_bytes();
    let mut quote: Option<u8> = None;
    for (offset, &b) in bytes[lt + 1..].iter().enumerate() {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'>') => return Some(lt + 1 + offset),
            (None, _) => {}
        }
    }
    html[lt + 1..].find('>').map(|p| lt + 1 + p)
}

/// Skips the content of a raw-text element whose start tag ended just before `from`;
/// returns the index just after its end tag (`</script …>`, any case), or the end of
/// the input when the element is never closed.
fn skip_raw_text(html: &str, from: usize, name: &str) -> usize {
    let bytes = html.as_bytes();
    let needle_len = 2 + name.len();
    let mut i = from;
    while let Some(rel) = html[i..].find("</") {
        let start = i + rel;
        let candidate = bytes.get(start + 2..start + needle_len);
        let ends_name = bytes
            .get(start + needle_len)
            .is_none_or(|b| !b.is_ascii_alphanumeric());
        if candidate.is_some_and(|c| c.eq_ignore_ascii_case(name.as_bytes())) && ends_name {
            return match html[start..].find('>') {
                Some(p) => start + p + 1,
                None => html.len(),
            };
        }
        i = start + 2;
    }
    html.len()
}

/// Expects `\n` line endings. Collapses runs of spaces/tabs to one space, trims every line, drops leading and
/// trailing blank lines and keeps at most one blank line between paragraphs.
fn tidy_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_breaks = 0usize;
    for line in text.split('\n') {
        let mut collapsed = String::with_capacity(line.len());
        // CR can only come from a decoded `&#13;` here; treat it as a space.
        for word in line
            .split([' ', '\t', '\r', '\u{c}'])
            .filter(|w| !w.is_empty())
        {
            if !collapsed.is_empty() {
                collapsed.push(' ');
            }
            collapsed.push_str(word);
        }
        if collapsed.is_empty() {
            pending_breaks += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if pending_breaks > 0 { "\n\n" } else { "\n" });
        }
        out.push_str(&collapsed);
        pending_breaks = 0;
    }
    out
}

// ---------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------

/// Collects string values in *source* order by driving serde_json's streaming
/// deserializer with a visitor, instead of building a `serde_json::Value` (whose object
/// order would depend on whether some crate enables `preserve_order`). serde_json's
/// default recursion limit (128) bounds nesting, so hostile input cannot overflow
/// the stack.
fn json_strings(text: &str) -> Result<String, ExtractError> {
    let mut strings = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    StringCollector(&mut strings)
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| ExtractError::InvalidJson(e.to_string()))?;
    Ok(strings.join("\n"))
}

/// Appends every non-blank string value it visits; numbers, booleans, nulls and object
/// keys are ignored.
struct StringCollector<'a>(&'a mut Vec<String>);

impl StringCollector<'_> {
    fn push(self, s: &str) {
        if !s.trim().is_empty() {
            self.0.push(s.to_owned());
        }
    }
}

impl<'de> DeserializeSeed<'de> for StringCollector<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StringCollector<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.push(v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(StringCollector(&mut *self.0))?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(StringCollector(&mut *self.0))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------

/// RFC 4180 parsing via the `csv` crate (quoted cells, embedded newlines, `""`).
/// The reader is lenient, so in practice few inputs are rejected.
fn csv_text(text: &str) -> Result<String, ExtractError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| ExtractError::InvalidCsv(e.to_string()))?;
        let cells: Vec<&str> = record
            .iter()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if !cells.is_empty() {
            rows.push(cells.join(" "));
        }
    }
    Ok(rows.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(s: &str) -> String {
        extract_text(ContentType::Html, s).unwrap()
    }

    #[test]
    fn plain_text_is_kept_except_line_endings() {
        let got = extract_text(ContentType::PlainText, "a\r\nb\rc\n  d  ").unwrap();
        assert_eq!(got, "a\nb\nc\n  d  ");
    }

    #[test]
    fn markdown_is_kept_as_markdown() {
        let md = "# Title\r\n\r\n- item *one*\r\n";
        assert_eq!(
            extract_text(ContentType::Markdown, md).unwrap(),
            "# Title\n\n- item *one*\n"
        );
    }

    #[test]
    fn leading_byte_order_mark_is_dropped() {
        assert_eq!(
            extract_text(ContentType::PlainText, "\u{feff}hello").unwrap(),
            "hello"
        );
        assert_eq!(
            extract_text(ContentType::Csv, "\u{feff}a,b").unwrap(),
            "a b"
        );
    }

    #[test]
    fn html_tags_are_removed_and_paragraphs_survive() {
        let got = html(
            "<html><body><h1>Title</h1><p>Hello <b>bold</b> world.</p><p>Second</p></body></html>",
        );
        assert_eq!(got, "Title\n\nHello bold world.\n\nSecond");
    }

    #[test]
    fn html_scripts_and_styles_are_removed() {
        let got = html(
            "<p>a</p><SCRIPT type=\"text/javascript\">if (a < b && c > d) { x('</p>') }</SCRIPT >\
             <style media=screen>p { color: red }</Style><p>b</p>",
        );
        assert_eq!(got, "a\n\nb");
    }

    #[test]
    fn html_comments_are_removed() {
        assert_eq!(html("a<!-- hidden <p>x</p> -->b"), "ab");
    }

    #[test]
    fn html_title_is_kept_as_its_own_paragraph() {
        let got = html("<html><head><title>The Title</title><meta charset=utf-8></head><body>Body text</body></html>");
        assert_eq!(got, "The Title\n\nBody text");
    }

    #[test]
    fn html_entities_are_decoded_after_tags_are_removed() {
        assert_eq!(
            html("<p>&lt;b&gt;not a tag&lt;/b&gt; &amp; &#233;&#x263A; &eacute;</p>"),
            "<b>not a tag</b> & é☺ é"
        );
    }

    #[test]
    fn html_line_breaks_list_items_and_cells_are_separated() {
        let got = html(
            "<ul><li>one</li><li>two</li></ul>line<br>next<br/>last\
             <table><tr><th>h1</th><th>h2</th></tr><tr><td>a</td><td>b</td></tr></table>",
        );
        assert_eq!(got, "one\ntwo\n\nline\nnext\nlast\n\nh1 h2\na b");
    }

    #[test]
    fn html_whitespace_is_collapsed_and_blank_lines_limited() {
        let got = html(
            "  <div>\n\n   a \t\t b&nbsp;&nbsp;c  \n\n\n\n   d   </div>\r\n\r\n\r\n<p>e</p>  ",
        );
        assert_eq!(got, "a b c\n\nd\n\ne");
    }

    #[test]
    fn html_quoted_gt_inside_attributes_does_not_end_the_tag() {
        assert_eq!(
            html(r#"<a title="x > y" href='a>b'>link</a> text"#),
            "link text"
        );
    }

    #[test]
    fn html_declarations_are_dropped() {
        assert_eq!(
            html("<?xml version=\"1.0\"?><!DOCTYPE html><html><body>x</body></html>"),
            "x"
        );
    }

    #[test]
    fn html_malformed_input_does_not_panic() {
        let cases = [
            ("a < b and c > d", "a < b and c > d"),
            ("<3 love", "<3 love"),
            ("x <", "x <"),
            ("x </", "x </"),
            ("text <b unclosed", "text"),
            ("<p>ok<script>never closed <p>hidden", "ok"),
            ("ok<!-- never closed", "ok"),
            ("<a title=\"unclosed>quote</a> after", "quote after"),
            ("</ >é<", "</ >é<"),
            ("<script/>visible", "visible"),
            ("<scripted>x</scripted>", "x"),
            ("<script>a</scriptx>b</script>c", "c"),
            ("<é>ü", "<é>ü"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(html(input), want, "{input:?}");
        }
    }

    #[test]
    fn json_collects_string_values_in_source_order_not_keys() {
        let doc = r#"{"zeta":"first","alpha":["second",{"k":"third"}],"n":1,"b":true,"z":null,"m":"fourth"}"#;
        assert_eq!(
            extract_text(ContentType::Json, doc).unwrap(),
            "first\nsecond\nthird\nfourth"
        );
    }

    #[test]
    fn json_blank_strings_are_skipped_and_escapes_decoded() {
        let doc = r#"["a\nb", "", "  ", "\u00e9\r\nx"]"#;
        assert_eq!(extract_text(ContentType::Json, doc).unwrap(), "a\nb\né\nx");
    }

    #[test]
    fn json_top_level_scalars_are_allowed() {
        assert_eq!(
            extract_text(ContentType::Json, r#""solo""#).unwrap(),
            "solo"
        );
        assert_eq!(extract_text(ContentType::Json, "42").unwrap(), "");
    }

    #[test]
    fn json_invalid_documents_are_rejected() {
        for doc in ["", "{", r#"{"a":}"#, r#"["a"] trailing"#, "[1,]"] {
            assert!(
                matches!(
                    extract_text(ContentType::Json, doc),
                    Err(ExtractError::InvalidJson(_))
                ),
                "{doc:?}"
            );
        }
    }

    #[test]
    fn json_deep_nesting_is_rejected_not_a_stack_overflow() {
        let doc = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            extract_text(ContentType::Json, &doc),
            Err(ExtractError::InvalidJson(_))
        ));
    }

    #[test]
    fn csv_cells_are_trimmed_and_joined_by_row() {
        let doc = "name, city ,note\r\n Ada ,London,\"multi\nline, quoted\"\n,,\nshort\n\"\"\"q\"\"\",x,  \n";
        assert_eq!(
            extract_text(ContentType::Csv, doc).unwrap(),
            "name city note\nAda London multi\nline, quoted\nshort\n\"q\" x"
        );
    }

    #[test]
    fn csv_empty_document_is_empty_text() {
        assert_eq!(extract_text(ContentType::Csv, "").unwrap(), "");
    }

    #[test]
    fn stats_count_words_lines_and_chars() {
        assert_eq!(
            stats(""),
            TextStats {
                words: 0,
                lines: 0,
                chars: 0
            }
        );
        assert_eq!(
            stats("héllo wörld\n"),
            TextStats {
                words: 2,
                lines: 1,
                chars: 12
            }
        );
        assert_eq!(
            stats("a\n\nb c d"),
            TextStats {
                words: 4,
                lines: 3,
                chars: 8
            }
        );
        assert_eq!(stats("😀🎉").chars, 2);
        assert_eq!(stats("\n").lines, 1);
    }

    #[test]
    fn errors_display_a_readable_message() {
        assert_eq!(
            ExtractError::InvalidCsv("bad".into()).to_string(),
            "document is not valid CSV: bad"
        );
    }
}
