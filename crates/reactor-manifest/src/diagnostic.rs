use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a file, located to the line and column, rendered the way rustc renders
/// its errors so the eye finds the spot at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line; 0 when the problem is not at one place (a missing key).
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
    /// The offending line's text and the length of the underline.
    snippet: Option<(String, usize)>,
}

impl Diagnostic {
    /// A problem at `span` (byte offsets) of `src`, read from `file`.
    pub fn at(
        file: &Path,
        src: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let mut d = Diagnostic {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
            hint: None,
            snippet: None,
        };
        if let Some(span) = span {
            let start = floor_char_boundary(src, span.start.min(src.len()));
            let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = src[start..].find('\n').map_or(src.len(), |i| start + i);
            let text = src[line_start..line_end].trim_end_matches('\r');
            d.line = src[..start].matches('\n').count() + 1;
            d.column = src[line_start..start].chars().count() + 1;
            let end = span.end.clamp(start, line_end.max(start));
            let width = src[start..floor_char_boundary(src, end)]
                .chars()
                .count()
                .max(1);
            d.snippet = Some((text.to_string(), width));
        }
        d
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        if self.line == 0 {
            writeln!(f, "  --> {}", self.file.display())?;
        } else {
            writeln!(
                f,
                "  --> {}:{}:{}",
                self.file.display(),
                self.line,
                self.column
            )?;
        }
        if let Some((text, width)) = &self.snippet {
            let gutter = self.line.to_string().len();
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{} | {}", self.line, text)?;
            writeln!(
                f,
                "{:gutter$} | {}{}",
                "",
                " ".repeat(self.column - 1),
                "^".repeat(*width)
            )?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "  = hint: {hint}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_and_column_and_underlines() {
        let src = "a = 1\nnmae = \"x\"\n";
        let d = Diagnostic::at(
            Path::new("reactor.toml"),
            src,
            Some(6..10),
            "unknown key `nmae`",
        )
        .with_hint("did you mean `name`?");
        assert_eq!((d.line, d.column), (2, 1));
        let shown = d.to_string();
        assert!(shown.contains("reactor.toml:2:1"), "{shown}");
        assert!(shown.contains("2 | nmae = \"x\""), "{shown}");
        assert!(shown.contains("  | ^^^^\n"), "{shown}");
        assert!(shown.contains("hint: did you mean `name`?"), "{shown}");
    }

    #[test]
    fn suggests_only_close_words() {
        assert_eq!(did_you_mean("nmae", ["name", "project_id"]), Some("name"));
        assert_eq!(
            did_you_mean("functoins", ["functions", "sites"]),
            Some("functions")
        );
        assert_eq!(did_you_mean("zzz", ["name", "project_id"]), None);
    }
}
