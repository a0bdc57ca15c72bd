//! What the demo prints: step headings, outcomes and notes for a person to
//! read. Colour and a progress line only when stdout is a terminal; plain
//! text when piped. Every line passes through [`scrub`], so that no
//! personnummer can reach the output even by mistake (masked only).

use std::cell::Cell;
use std::io::{IsTerminal, Write};

/// ANSI styles used on a terminal.
#[derive(Clone, Copy)]
enum Style {
    Bold,
    Green,
    Red,
    Yellow,
    Dim,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Bold => "\x1b[1m",
            Style::Green => "\x1b[32m",
            Style::Red => "\x1b[31m",
            Style::Yellow => "\x1b[33m",
            Style::Dim => "\x1b[2m",
        }
    }
}

/// The demo's printer. Write errors (a closed pipe) are ignored: the demo
/// goes on and its exit code still says whether the story went as expected.
pub struct Out {
    tty: bool,
    step: Cell<usize>,
    total: usize,
    progress_shown: Cell<bool>,
}

impl Out {
    /// A printer for `total` numbered steps; colour if stdout is a terminal
    /// and `NO_COLOR` is unset.
    pub fn new(total: usize) -> Out {
        let tty = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Out {
            tty,
            step: Cell::new(0),
            total,
            progress_shown: Cell::new(false),
        }
    }

    fn paint(&self, style: Style, text: &str) -> String {
        if self.tty {
            format!("{}{text}\x1b[0m", style.code())
        } else {
            text.to_owned()
        }
    }

    fn emit(&self, line: &str) {
        let mut stdout = std::io::stdout().lock();
        if self.progress_shown.replace(false) {
            let _ = write!(stdout, "\r\x1b[2K");
        }
        let _ = writeln!(stdout, "{}", scrub(line));
        let _ = stdout.flush();
    }

    /// The banner at the top.
    pub fn title(&self, text: &str) {
        self.emit(&self.paint(Style::Bold, text));
        self.emit(&"=".repeat(text.chars().count()));
    }

    /// A chapter of the story (unnumbered).
    pub fn chapter(&self, text: &str) {
        self.emit("");
        self.emit(&self.paint(Style::Bold, text));
    }

    /// A numbered step: `[ 3/24] text`.
    pub fn step(&self, text: &str) {
        let n = self.step.get() + 1;
        self.step.set(n);
        let width = self.total.to_string().len();
        let counter = format!("[{n:>width$}/{}]", self.total);
        self.emit(&format!("{} {text}", self.paint(Style::Dim, &counter)));
    }

    /// An indented plain line.
    pub fn line(&self, text: &str) {
        self.emit(&format!("      {text}"));
    }

    /// A positive outcome (`delivered`, `recorded`, `verified`).
    pub fn ok(&self, label: &str, text: &str) {
        let mark = if self.tty { "✓" } else { "+" };
        let head = self.paint(Style::Green, &format!("{mark} {label}"));
        self.emit(&format!("      {head}  {text}"));
    }

    /// A denial or failure with its reason.
    pub fn denied(&self, label: &str, text: &str) {
        let mark = if self.tty { "✗" } else { "x" };
        let head = self.paint(Style::Red, &format!("{mark} {label}"));
        self.emit(&format!("      {head}  {text}"));
    }

    /// Something the build cannot do yet, or did not go as expected.
    pub fn warn(&self, text: &str) {
        let head = self.paint(Style::Yellow, "!");
        self.emit(&format!("      {head} {text}"));
    }

    /// A quieter explanatory line.
    pub fn note(&self, text: &str) {
        self.emit(&format!("      {}", self.paint(Style::Dim, text)));
    }

    /// A blank line.
    pub fn blank(&self) {
        self.emit("");
    }

    /// A transient "working" line (terminal only), replaced by the next line.
    pub fn progress(&self, text: &str) {
        if !self.tty {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = write!(
            stdout,
            "\r\x1b[2K      {}",
            self.paint(Style::Dim, &format!("… {}", scrub(text)))
        );
        let _ = stdout.flush();
        self.progress_shown.set(true);
    }
}

/// Masks anything shaped like a personnummer or samordningsnummer (10 or 12
/// digits, optionally with `-` or `+` before the last four) to its date part
/// and `-****`. Digit runs inside longer words (hex hashes, ids) are left
/// alone: a candidate must not touch a letter, digit, `_` or `-` on either
/// side.
pub fn scrub(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        if let Some((len, date_len)) = identity_number_at(&chars, i) {
            out.extend(chars.iter().skip(i).take(date_len));
            out.push_str("-****");
            i += len;
        } else {
            if let Some(c) = chars.get(i) {
                out.push(*c);
            }
            i += 1;
        }
    }
    out
}

/// If an identity number starts at `i`: its length in chars and the length
/// of its date part.
fn identity_number_at(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let boundary =
        |c: Option<&char>| c.is_none_or(|c| !(c.is_alphanumeric() || *c == '_' || *c == '-'));
    if i > 0 && !boundary(chars.get(i - 1)) {
        return None;
    }
    let digits_from = |from: usize| {
        chars
            .iter()
            .skip(from)
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let run = digits_from(i);
    let after = |len: usize| boundary(chars.get(i + len));
    // Without separator: exactly 10 or 12 digits.
    if (run == 10 || run == 12) && after(run) {
        return Some((run, run - 4));
    }
    // With separator: 6 or 8 digits, `-`/`+`, 4 digits.
    if run == 6 || run == 8 {
        let sep = chars.get(i + run).is_some_and(|c| *c == '-' || *c == '+');
        if sep && digits_from(i + run + 1) == 4 && after(run + 5) {
            return Some((run + 5, run));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn scrub_masks_every_form_of_a_personnummer() {
        for (input, want) in [
            ("pnr 200203149828 x", "pnr 20020314-**** x"),
            ("pnr 20020314-9828.", "pnr 20020314-****."),
            ("(0203149828)", "(020314-****)"),
            ("020314-9828", "020314-****"),
            ("020314+9828", "020314-****"),
        ] {
            assert_eq!(scrub(input), want);
        }
    }

    #[test]
    fn scrub_leaves_masked_numbers_hashes_and_counts_alone() {
        for input in [
            "20020314-****",
            "root 3f200203149828ab",
            "exchange 0195-200203149828",
            "size 12, 1234567",
            "ps1_abc2002031498",
        ] {
            assert_eq!(scrub(input), input);
        }
    }
}
