//! Splitting extracted text into overlapping chunks at natural boundaries.
//!
//! Invariants of the output of [`chunk_text`] (checked by the property test below):
//! - every chunk has between 1 and `size` chars (`size` 0 is treated as 1);
//! - `chunk.text` is exactly the chars `start..end` of the input (char offsets, not
//!   bytes), never begins or ends with whitespace, and so is never whitespace-only;
//! - `start` and `end` strictly increase from one chunk to the next, and `index` counts
//!   from 0, so the loop always makes progress, whatever the overlap;
//! - consecutive chunks share at most `overlap` chars;
//! - every non-whitespace char of the input lies in at least one chunk.
//!
//! The same input always gives the same chunks.

/// One piece of the extracted text. Offsets count Unicode scalar values.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Chunk {
    /// Position in the chunk sequence, from 0.
    pub index: usize,
    /// The exact slice `start..end` (in chars) of the extracted text.
    pub text: String,
    /// First char offset (inclusive).
    pub start: usize,
    /// Last char offset (exclusive).
    pub end: usize,
}

/// Splits `text` into chunks of at most `size` chars.
///
/// Where a chunk ends: the chunk may extend to `size` chars; if text remains beyond,
/// the cut is searched backwards from that limit, but not below half of `size`, and
/// the first kind found wins, in this order of preference:
/// 1. a paragraph break (a line break followed by a blank line);
/// 2. a sentence end: `.`, `!` or `?` followed by whitespace, or a full-width `。！？`;
/// 3. any whitespace;
/// 4. otherwise a hard cut exactly at the limit (between two chars, never inside one).
///
/// Trailing whitespace is then trimmed from the chunk.
///
/// Where the next chunk starts (overlap semantics): at most `overlap` chars before
/// the previous chunk's end, and never more than half of that chunk's length (which
/// guarantees progress even if `overlap >= size`). Within that overlap window the
/// start snaps *forward* to the first word start so chunks do not begin mid-word; if
/// the window contains no word start (e.g. text without spaces) it starts exactly
/// `overlap` chars back. So the real overlap is `<= overlap`, often a little less.
/// Leading whitespace is skipped. With `overlap == 0`, chunks never share chars.
/// Every chunk contains at least one non-whitespace char not in any earlier chunk
/// (the overlap is dropped if it would prevent that), so there are never more
/// chunks than non-whitespace chars.
pub fn chunk_text(text: &str, size: usize, overlap: usize) -> Vec<Chunk> {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let size = size.max(1);
    let min_len = (size / 2).max(1);

    let mut chunks = Vec::new();
    let mut start = skip_whitespace(&chars, 0);
    // First non-whitespace char not yet in any chunk; each chunk must include it, so
    // `end` strictly increases and no chunk is a mere subset of the previous one.
    let mut fresh = start;
    while start < n {
        let limit = (start + size).min(n);
        let cut = if limit == n {
            n
        } else {
            // `fresh + 1 <= limit`: guaranteed when `start` was chosen below.
            find_cut(&chars, (start + min_len).max(fresh + 1), limit)
        };
        // `chars[fresh]` is not whitespace and `cut > fresh`, so trimming stops at
        // `fresh + 1` at the latest.
        let mut end = cut;
        while end > start && chars[end - 1].is_whitespace() {
            end -= 1;
        }
        chunks.push(Chunk {
            index: chunks.len(),
            text: chars[start..end].iter().collect(),
            start,
            end,
        });
        fresh = skip_whitespace(&chars, end);
        if fresh == n {
            break;
        }
        // Never past `fresh`: it is the first non-whitespace char at or after `end`.
        start = skip_whitespace(&chars, next_start(&chars, start, end, overlap));
        if fresh - start >= size {
            // The overlap would leave no room for new text (a long whitespace run
            // followed the previous chunk): start afresh without overlap.
            start = fresh;
        }
    }
    chunks
}

/// First index at or after `from` that is not whitespace (or `chars.len()`).
fn skip_whitespace(chars: &[char], from: usize) -> usize {
    chars[from..]
        .iter()
        .position(|c| !c.is_whitespace())
        .map_or(chars.len(), |p| from + p)
}

/// The best cut (exclusive chunk end) in `lo..=hi`, where `hi < chars.len()`.
fn find_cut(chars: &[char], lo: usize, hi: usize) -> usize {
    let candidates = || (lo..=hi).rev();
    candidates()
        .find(|&c| is_paragraph_break(chars, c))
        .or_else(|| candidates().find(|&c| is_sentence_end(chars, c)))
        .or_else(|| candidates().find(|&c| chars[c].is_whitespace()))
        .unwrap_or(hi)
}

/// `chars[c]` is a line break and the next line is blank (spaces/tabs only).
fn is_paragraph_break(chars: &[char], c: usize) -> bool {
    chars[c] == '\n'
        && chars[c + 1..]
            .iter()
            .find(|&&ch| ch != ' ' && ch != '\t')
            .is_some_and(|&ch| ch == '\n')
}

/// The chars before `c` end a sentence: `.!?` then whitespace at `c`, or a full-width
/// terminator (CJK text puts no space after it).
fn is_sentence_end(chars: &[char], c: usize) -> bool {
    match chars[c - 1] {
        '.' | '!' | '?' => chars[c].is_whitespace(),
        '。' | '！' | '？' => true,
        _ => false,
    }
}

/// Start of the chunk following `start..end` (before skipping whitespace); always
/// greater than `start`.
fn next_start(chars: &[char], start: usize, end: usize, overlap: usize) -> usize {
    let overlap = overlap.min((end - start) / 2);
    if overlap == 0 {
        return end;
    }
    let from = end - overlap;
    (from..end)
        .find(|&p| chars[p - 1].is_whitespace() && !chars[p].is_whitespace())
        .unwrap_or(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks every documented invariant of `chunk_text(text, size, overlap)`.
    fn assert_invariants(text: &str, size: usize, overlap: usize) -> Vec<Chunk> {
        let chunks = chunk_text(text, size, overlap);
        let chars: Vec<char> = text.chars().collect();
        let ctx = format!("size={size} overlap={overlap} text={text:?}");
        let mut covered = vec![false; chars.len()];
        for (i, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.index, i, "{ctx}");
            assert!(chunk.start < chunk.end, "{ctx}");
            assert!(chunk.end - chunk.start <= size.max(1), "{ctx}");
            let slice: String = text
                .chars()
                .skip(chunk.start)
                .take(chunk.end - chunk.start)
                .collect();
            assert_eq!(chunk.text, slice, "{ctx}");
            assert!(!chunk.text.starts_with(char::is_whitespace), "{ctx}");
            assert!(!chunk.text.ends_with(char::is_whitespace), "{ctx}");
            covered[chunk.start..chunk.end].fill(true);
            if i > 0 {
                let prev = &chunks[i - 1];
                assert!(chunk.start > prev.start, "{ctx}");
                assert!(chunk.end > prev.end, "{ctx}");
                assert!(chunk.start + overlap >= prev.end, "overlap too big: {ctx}");
            }
        }
        for (i, c) in chars.iter().enumerate() {
            assert!(covered[i] || c.is_whitespace(), "char {i} uncovered: {ctx}");
        }
        chunks
    }

    fn texts(chunks: &[Chunk]) -> Vec<&str> {
        chunks.iter().map(|c| c.text.as_str()).collect()
    }

    #[test]
    fn empty_and_whitespace_only_text_give_no_chunks() {
        assert!(chunk_text("", 100, 10).is_empty());
        assert!(chunk_text(" \n\t\r\n  ", 100, 10).is_empty());
    }

    #[test]
    fn short_text_is_one_trimmed_chunk() {
        let chunks = assert_invariants("  hello world \n", 100, 10);
        assert_eq!(
            chunks,
            vec![Chunk {
                index: 0,
                text: "hello world".into(),
                start: 2,
                end: 13
            }]
        );
    }

    #[test]
    fn text_of_exactly_size_is_one_chunk() {
        let text = "a".repeat(100);
        let chunks = assert_invariants(&text, 100, 10);
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].start, chunks[0].end), (0, 100));
    }

    #[test]
    fn text_of_size_plus_one_is_two_chunks() {
        let text = "a".repeat(101);
        let chunks = assert_invariants(&text, 100, 0);
        assert_eq!(
            chunks.iter().map(|c| (c.start, c.end)).collect::<Vec<_>>(),
            vec![(0, 100), (100, 101)]
        );
        let chunks = assert_invariants(&text, 100, 10);
        assert_eq!(
            chunks.iter().map(|c| (c.start, c.end)).collect::<Vec<_>>(),
            vec![(0, 100), (90, 101)]
        );
    }

    #[test]
    fn text_without_whitespace_is_hard_cut_at_size() {
        let text = "x".repeat(250);
        let chunks = assert_invariants(&text, 100, 0);
        assert_eq!(
            chunks.iter().map(|c| (c.start, c.end)).collect::<Vec<_>>(),
            vec![(0, 100), (100, 200), (200, 250)]
        );
    }

    #[test]
    fn multibyte_chars_are_never_split() {
        let text = "😀🎉👍🏽".repeat(40) + " " + &"漢字かな".repeat(30);
        for overlap in [0, 7, 24] {
            let chunks = assert_invariants(&text, 50, overlap);
            assert!(chunks.iter().all(|c| c.text.chars().count() <= 50));
        }
    }

    #[test]
    fn cjk_full_width_sentence_ends_are_preferred_cuts() {
        let text = "这是第一句话。".repeat(20);
        let chunks = assert_invariants(&text, 100, 0);
        assert!(chunks.iter().all(|c| c.text.ends_with('。')), "{chunks:?}");
    }

    #[test]
    fn overlap_zero_chunks_share_no_chars() {
        let text = "word ".repeat(200);
        let chunks = assert_invariants(&text, 100, 0);
        for pair in chunks.windows(2) {
            assert!(pair[1].start >= pair[0].end);
        }
    }

    #[test]
    fn overlap_starts_at_a_word_boundary_within_the_window() {
        let text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi \
                    omicron pi rho sigma tau upsilon phi chi psi omega";
        let chunks = assert_invariants(text, 40, 12);
        assert!(chunks.len() > 2);
        for pair in chunks.windows(2) {
            let (prev, next) = (&pair[0], &pair[1]);
            assert!(next.start < prev.end, "chunks should overlap: {chunks:?}");
            assert!(prev.end - next.start <= 12);
            // Starts a word: the char before is whitespace.
            let before = text.chars().nth(next.start - 1).unwrap();
            assert!(before.is_whitespace(), "{chunks:?}");
        }
    }

    #[test]
    fn overlap_close_to_half_size_still_progresses() {
        let text = "lorem ipsum dolor sit amet. ".repeat(100);
        let chunks = assert_invariants(&text, 100, 49);
        // Each step advances by at least about half a chunk.
        assert!(chunks.len() < text.chars().count() / 25);
    }

    #[test]
    fn overlap_larger_than_size_still_terminates() {
        let text = "abcdefghij".repeat(50);
        let chunks = assert_invariants(&text, 100, 1000);
        assert!(chunks.len() <= 10, "{}", chunks.len());
        let chunks = assert_invariants(&"ab cd ".repeat(50), 3, 10);
        assert!(!chunks.is_empty());
    }

    #[test]
    fn overlap_is_dropped_when_a_long_gap_leaves_no_room_for_new_text() {
        let text = format!("{}{}y", "x".repeat(10), " ".repeat(20));
        let chunks = assert_invariants(&text, 10, 4);
        assert_eq!(texts(&chunks), vec!["xxxxxxxxxx", "y"]);
    }

    #[test]
    fn zero_size_is_treated_as_one() {
        let chunks = assert_invariants("abc", 0, 0);
        assert_eq!(texts(&chunks), vec!["a", "b", "c"]);
    }

    #[test]
    fn paragraph_breaks_are_preferred_over_sentences_and_spaces() {
        let para = |c: char| {
            format!(
                "{}. {}.",
                c.to_string().repeat(30),
                c.to_string().repeat(20)
            )
        };
        let text = format!("{}\n\n{}\n \n{}", para('a'), para('b'), para('c'));
        let chunks = assert_invariants(&text, 60, 0);
        assert_eq!(texts(&chunks), vec![para('a'), para('b'), para('c')]);
    }

    #[test]
    fn many_paragraphs_are_packed_and_cut_between_paragraphs() {
        let paragraphs: Vec<String> = (0..50)
            .map(|i| format!("Paragraph {i} has a few words. It ends here."))
            .collect();
        let text = paragraphs.join("\n\n");
        let chunks = assert_invariants(&text, 200, 0);
        assert!(chunks.len() > 10);
        for chunk in &chunks {
            assert!(chunk.text.starts_with("Paragraph"), "{chunk:?}");
            assert!(chunk.text.ends_with("It ends here."), "{chunk:?}");
        }
    }

    #[test]
    fn sentence_ends_are_preferred_over_other_whitespace() {
        let text = "One two three four five. Six seven eight nine ten eleven twelve thirteen";
        let chunks = assert_invariants(text, 40, 0);
        assert_eq!(chunks[0].text, "One two three four five.");
    }

    #[test]
    fn cuts_are_not_searched_below_half_the_size() {
        // The only sentence end is at 11 chars, below half of 40: cut at a space instead.
        let text = "Short one. aaaa bbbb cccc dddd eeee ffff gggg hhhh iiii";
        let chunks = assert_invariants(text, 40, 0);
        assert_eq!(chunks[0].text, "Short one. aaaa bbbb cccc dddd eeee ffff");
    }

    #[test]
    fn chunking_is_deterministic() {
        let text = "Some text. ".repeat(300);
        assert_eq!(chunk_text(&text, 123, 17), chunk_text(&text, 123, 17));
    }

    /// A small deterministic generator (xorshift) so the property test needs no crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
    }

    fn random_text(rng: &mut Rng, len: usize) -> String {
        const PIECES: &[&str] = &[
            "a",
            "word",
            "longerword",
            " ",
            " ",
            " ",
            "  ",
            "\n",
            "\n\n",
            "\n \n",
            ". ",
            "! ",
            "? ",
            ".",
            "\t",
            "é",
            "😀",
            "漢字",
            "。",
            "\r\n",
        ];
        let mut text = String::new();
        while text.chars().count() < len {
            text.push_str(PIECES[rng.below(PIECES.len() as u64)]);
        }
        text
    }

    #[test]
    fn property_chunks_cover_text_respect_size_and_progress() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..400 {
            let len = rng.below(600);
            let text = random_text(&mut rng, len);
            let size = 1 + rng.below(150);
            let overlap = match round % 4 {
                0 => 0,
                1 => rng.below(size as u64 / 2 + 1),
                2 => (size / 2).saturating_sub(1),
                _ => rng.below(3 * size as u64),
            };
            let chunks = assert_invariants(&text, size, overlap);
            // Every chunk brings at least one new non-whitespace char.
            assert!(chunks.len() <= text.chars().filter(|c| !c.is_whitespace()).count());
        }
        let text = random_text(&mut rng, 5000);
        for size in (1..=300usize).step_by(7) {
            for overlap in [0, size / 4, (size / 2).saturating_sub(1), size, 2 * size] {
                assert_invariants(&text, size, overlap);
            }
        }
    }
}
