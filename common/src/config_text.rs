//! Locating a byte offset of config text as a line, for parse errors that name the line.

/// The 1-based line of `text` that holds byte `offset`; an offset past the end is the last line.
///
/// Counts bytes rather than chars, so an offset inside a multi-byte char still has a line.
pub fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_is_line_one() {
        assert_eq!(line_at("a = 1\n", 0), 1);
        assert_eq!(line_at("", 0), 1);
    }

    #[test]
    fn a_newline_belongs_to_the_line_it_ends() {
        let text = "a = 1\nb = 2\n";
        assert_eq!(line_at(text, 5), 1);
        assert_eq!(line_at(text, 6), 2);
        assert_eq!(line_at(text, 11), 2);
    }

    #[test]
    fn offset_past_the_end_is_clamped() {
        assert_eq!(line_at("a\nb\n", 100), 3);
        assert_eq!(line_at("a\nb", 100), 2);
    }

    #[test]
    fn offset_inside_a_multibyte_char_does_not_panic() {
        let text = "k = \"é\"\nx";
        assert_eq!(line_at(text, 6), 1);
        assert_eq!(line_at(text, text.len() - 1), 2);
    }
}
