//! The systemd unit-file syntax Quadlet's `.container` files use: `[Section]` headers,
//! `Key=Value` lines (repeatable), `#`/`;` comments, backslash line continuation; and the
//! word splitting of values such as `Environment=` and `Exec=` (systemd's quoting rules).

use thiserror::Error;

/// A problem in a unit file, with the line it is on.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// One `Key=Value` assignment, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// The line it starts on (for error messages).
    pub line: usize,
}

/// A section and its assignments, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub entries: Vec<Entry>,
}

/// A parsed unit file: its sections in file order (a repeated header continues the
/// section, as systemd reads it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitFile {
    pub sections: Vec<Section>,
}

impl UnitFile {
    /// Parses the text of a unit file.
    pub fn parse(text: &str) -> Result<UnitFile, SyntaxError> {
        let mut unit = UnitFile::default();
        let mut current: Option<usize> = None;
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(index, line)| (index + 1, line));
        while let Some((number, raw)) = lines.next() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                let name = line
                    .strip_prefix('[')
                    .and_then(|rest| rest.strip_suffix(']'))
                    .filter(|name| !name.is_empty() && !name.contains(['[', ']']))
                    .ok_or_else(|| SyntaxError {
                        line: number,
                        message: format!("malformed section header {line:?}"),
                    })?;
                current = Some(unit.section_index(name));
                continue;
            }
            // Continuation: a trailing backslash joins the next line with a space; comment
            // lines inside a continuation are skipped, as systemd does.
            let mut joined = line.to_string();
            while joined.ends_with('\\') {
                joined.pop();
                joined.push(' ');
                match lines.next() {
                    Some((_, next)) => {
                        let next = next.trim();
                        if next.starts_with('#') || next.starts_with(';') {
                            joined.push('\\');
                            continue;
                        }
                        joined.push_str(next);
                    }
                    None => break,
                }
            }
            let Some((key, value)) = joined.split_once('=') else {
                return Err(SyntaxError {
                    line: number,
                    message: format!("expected KEY=VALUE or [Section], found {line:?}"),
                });
            };
            let key = key.trim();
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(SyntaxError {
                    line: number,
                    message: format!("invalid key {key:?}"),
                });
            }
            let Some(index) = current else {
                return Err(SyntaxError {
                    line: number,
                    message: format!("{key}= is outside any [Section]"),
                });
            };
            unit.sections[index].entries.push(Entry {
                key: key.to_string(),
                value: value.trim().to_string(),
                line: number,
            });
        }
        Ok(unit)
    }

    fn section_index(&mut self, name: &str) -> usize {
        match self.sections.iter().position(|s| s.name == name) {
            Some(index) => index,
            None => {
                self.sections.push(Section {
                    name: name.to_string(),
                    entries: Vec::new(),
                });
                self.sections.len() - 1
            }
        }
    }

    /// The section of that name, if the file has it.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

/// Splits a value into words the way systemd splits `ExecStart=` and `Environment=`:
/// whitespace separates, `"…"` and `'…'` quote, a backslash escapes the next character
/// (`\n`, `\t` and `\\` as in C).
pub fn split_words(value: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => match chars.next() {
                    Some('n') => word.push('\n'),
                    Some('t') => word.push('\t'),
                    Some(other) => word.push(other),
                    None => return Err(format!("trailing backslash in {value:?}")),
                },
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(q)) if c == q => quote = None,
                (c, None) if c.is_whitespace() => break,
                (c, _) => word.push(c),
            }
        }
        if let Some(q) = quote {
            return Err(format!("unbalanced {q} in {value:?}"));
        }
        words.push(word);
    }
}

/// Quotes one word for an `ExecStart=` line so systemd hands it over unchanged: double
/// quotes, with `\`, `"`, `%` (specifiers) and `$` (variable expansion) escaped.
pub fn quote_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c));
    if plain {
        return word.to_string();
    }
    let mut quoted = String::from("\"");
    for c in word.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '%' => quoted.push_str("%%"),
            '$' => quoted.push_str("$$"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Parses a duration as podman's flags take it (Go's `time.ParseDuration`: `30s`, `1m30s`,
/// `500ms`, `2h`; a bare number is seconds, as systemd reads it) into microseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bad = || format!("invalid duration {text:?} (expected e.g. 30s, 1m30s, 500ms)");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return seconds.checked_mul(1_000_000).ok_or_else(bad);
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "us" | "µs" => 1.0,
            "ms" => 1e3,
            "s" => 1e6,
            "m" | "min" => 60e6,
            "h" => 3600e6,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = total
            .checked_add((number * scale).round() as u64)
            .ok_or_else(bad)?;
    }
    Ok(total)
}
