//! Text shortening for places with a size limit (error messages, log lines,
//! Kubernetes Events and condition messages) that must never split a UTF-8
//! character: a byte-offset slice in the middle of "é" panics.

/// The mark appended where text was cut.
const ELLIPSIS: char = '…';

/// `s` when it fits in `max_bytes`; otherwise its longest prefix that ends
/// on a character boundary followed by "…", the whole at most `max_bytes`
/// bytes (the limits this serves, such as an Event note, count the mark
/// too). Below the 3 bytes "…" needs, the prefix comes without the mark.
pub fn truncate_chars(s: &str, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s.to_owned();
    }
    let mark = ELLIPSIS.len_utf8();
    if max_bytes < mark {
        return prefix_within(s, max_bytes);
    }
    let mut out = prefix_within(s, max_bytes - mark);
    out.push(ELLIPSIS);
    out
}

/// `s` when it fits in `max_bytes`; otherwise "…" followed by its longest
/// suffix that starts on a character boundary, the whole at most
/// `max_bytes` bytes. For the end of a long stderr, where the cause is.
pub fn tail_chars(s: &str, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s.to_owned();
    }
    let mark = ELLIPSIS.len_utf8();
    let budget = max_bytes.saturating_sub(mark);
    let mut kept: Vec<char> = Vec::new();
    let mut used = 0;
    for c in s.chars().rev() {
        used += c.len_utf8();
        if used > budget {
            break;
        }
        kept.push(c);
    }
    let mut out = String::with_capacity(used + mark);
    if max_bytes >= mark {
        out.push(ELLIPSIS);
    }
    out.extend(kept.iter().rev());
    out
}

/// The longest prefix of `s` of whole characters within `budget` bytes.
fn prefix_within(s: &str, budget: usize) -> String {
    let mut out = String::with_capacity(budget);
    for c in s.chars() {
        if out.len() + c.len_utf8() > budget {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_unchanged() {
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("", 0), "");
        assert_eq!(tail_chars("abc", 3), "abc");
    }

    #[test]
    fn ascii_is_cut_with_the_mark_inside_the_limit() {
        let t = truncate_chars("abcdefghij", 6);
        assert_eq!(t, "abc…");
        assert!(t.len() <= 6);
    }

    #[test]
    fn a_two_byte_char_at_the_cut_is_dropped_whole() {
        // "aé…" would be 1 + 2 + 3 = 6 bytes; with 5 the "é" cannot fit.
        assert_eq!(truncate_chars("aébcdef", 5), "a…");
        assert_eq!(truncate_chars("aébcdef", 6), "aé…");
    }

    #[test]
    fn an_emoji_at_the_cut_is_dropped_whole() {
        let s = "ab🦀🦀🦀";
        for max in 0..s.len() {
            let t = truncate_chars(s, max);
            assert!(t.len() <= max, "{max}: {t:?} is {} bytes", t.len());
            assert!(s.starts_with(t.trim_end_matches('…')), "{max}: {t:?}");
        }
        assert_eq!(truncate_chars(s, 9), "ab🦀…");
        assert_eq!(truncate_chars(s, 8), "ab…");
    }

    #[test]
    fn below_the_mark_size_no_mark() {
        assert_eq!(truncate_chars("abcdef", 2), "ab");
        assert_eq!(truncate_chars("éé", 1), "");
    }

    #[test]
    fn tail_keeps_whole_chars_from_the_end() {
        let s = "header🦀é end";
        for max in 0..s.len() {
            let t = tail_chars(s, max);
            assert!(t.len() <= max, "{max}: {t:?}");
            assert!(s.ends_with(t.trim_start_matches('…')), "{max}: {t:?}");
        }
        assert_eq!(tail_chars(s, 10), "…é end");
    }
}
