//! Cheap checks on request bodies before a parser sees them.
//!
//! libyaml (behind serde_yaml) spends time proportional to the body times
//! its flow nesting depth, so 100 KB of `[` keeps a CPU busy for seconds
//! before serde_yaml's own recursion limit says no. These scanners count
//! nesting in one linear pass without building anything, so a body nesting
//! deeper than [`MAX_NESTING`] is refused before it is parsed.
//!
//! The YAML scanner follows libyaml's tokenizer where it matters (quoted,
//! plain and block scalars, comments, tags, block indentation) and errs on
//! the side of counting: brackets inside anything it takes for text still
//! count while they are open there, and those left open count for the rest
//! of the body, so a misjudged scalar can only make it refuse more, never
//! hide an opening bracket.

/// How deep a request body may nest (flow and block levels together).
/// Specs nest 3 levels, lockfiles about 8.
pub const MAX_NESTING: usize = 64;

/// Largest JSON body of the small JSON routes (namespaces, policies,
/// tokens, members, quotas).
pub const MAX_JSON_BYTES: usize = 256 * 1024;

/// Why a body is refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is {size} bytes; at most {limit} are accepted")]
    TooLarge { size: usize, limit: usize },
    #[error("the body nests deeper than {limit} levels (at line {line}); flatten it")]
    TooDeep { limit: usize, line: usize },
}

/// Refuses a body larger than `limit` bytes.
pub fn check_size(body: &[u8], limit: usize) -> Result<(), BodyError> {
    if body.len() > limit {
        return Err(BodyError::TooLarge {
            size: body.len(),
            limit,
        });
    }
    Ok(())
}

/// Refuses JSON nesting deeper than `limit` arrays and objects.
pub fn check_json(body: &[u8], limit: usize) -> Result<(), BodyError> {
    let mut depth = 0usize;
    let mut line = 1;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if byte == b'\n' {
            line += 1;
        }
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(BodyError::TooDeep { limit, line });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Refuses YAML (or JSON read as YAML) nesting deeper than `limit` levels.
pub fn check_yaml(body: &[u8], limit: usize) -> Result<(), BodyError> {
    let mut scanner = YamlScanner::new(body, limit);
    scanner.run()?;
    Ok(())
}

/// The deepest nesting the YAML scanner counts in `body`.
pub fn yaml_depth(body: &[u8]) -> usize {
    let mut scanner = YamlScanner::new(body, usize::MAX);
    // With no limit the scan cannot fail.
    let _ = scanner.run();
    scanner.max
}

fn blank(byte: Option<u8>) -> bool {
    matches!(byte, None | Some(b' ' | b'\t' | b'\n' | b'\r'))
}

fn flow_indicator(byte: Option<u8>) -> bool {
    matches!(byte, Some(b',' | b'[' | b']' | b'{' | b'}'))
}

/// An open flow collection.
struct Flow {
    sequence: bool,
    /// A sequence holding a `key: value` pair (a mapping inside it).
    pair: bool,
    /// Opened in block context or in a flow sequence, where it may turn out
    /// to be a key: the mapping that makes encloses it.
    key: bool,
}

struct YamlScanner<'a> {
    text: &'a [u8],
    at: usize,
    line: usize,
    column: usize,
    limit: usize,
    max: usize,
    /// Open flow collections as the tokenizer sees them.
    flows: Vec<Flow>,
    /// Brackets left open inside text: they count for the rest of the body.
    carried: usize,
    /// Brackets open inside the current piece of text.
    local: usize,
    /// Block collections' columns (libyaml's indent stack), each with
    /// whether an indentless sequence sits at the same column.
    indents: Vec<(usize, bool)>,
    /// Where a simple key may have started: (line, column).
    key: Option<(usize, usize)>,
}

impl<'a> YamlScanner<'a> {
    fn new(text: &'a [u8], limit: usize) -> Self {
        Self {
            text,
            at: 0,
            line: 1,
            column: 0,
            limit,
            max: 0,
            flows: Vec::new(),
            carried: 0,
            local: 0,
            indents: Vec::new(),
            key: None,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.text.get(self.at + offset).copied()
    }

    fn bump(&mut self) {
        if let Some(byte) = self.peek() {
            self.at += 1;
            match byte {
                b'\n' => {
                    self.line += 1;
                    self.column = 0;
                }
                // A UTF-8 continuation byte does not start a column.
                0x80..=0xbf => {}
                _ => self.column += 1,
            }
        }
    }

    fn depth(&self) -> usize {
        let block = self.indents.len()
            + self
                .indents
                .iter()
                .filter(|(_, indentless)| *indentless)
                .count();
        let flow: usize = self
            .flows
            .iter()
            .map(|flow| 1 + usize::from(flow.pair) + usize::from(flow.key))
            .sum();
        block + flow + self.carried + self.local
    }

    fn check(&mut self) -> Result<(), BodyError> {
        let depth = self.depth();
        self.max = self.max.max(depth);
        if depth > self.limit {
            return Err(BodyError::TooDeep {
                limit: self.limit,
                line: self.line,
            });
        }
        Ok(())
    }

    /// A byte of text: brackets count while they are open in it.
    fn text_byte(&mut self) -> Result<(), BodyError> {
        match self.peek() {
            Some(b'[' | b'{') => {
                self.local += 1;
                self.check()?;
            }
            Some(b']' | b'}') => self.local = self.local.saturating_sub(1),
            _ => {}
        }
        self.bump();
        Ok(())
    }

    /// Ends a piece of text: what it left open counts from now on.
    fn end_text(&mut self) {
        self.carried += self.local;
        self.local = 0;
    }

    /// libyaml's indentation of the current block collection (-1: none).
    fn indent(&self) -> isize {
        self.indents
            .last()
            .map_or(-1, |(column, _)| *column as isize)
    }

    fn roll(&mut self, column: usize) -> Result<(), BodyError> {
        if column as isize > self.indent() {
            self.indents.push((column, false));
            self.check()?;
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), BodyError> {
        loop {
            self.skip_to_token()?;
            let Some(byte) = self.peek() else {
                return Ok(());
            };
            let column = self.column;
            if self.flows.is_empty() {
                while self.indent() > column as isize {
                    self.indents.pop();
                }
            }
            let next = self.peek_at(1);
            if column == 0 && self.document_marker() {
                self.indents.clear();
                self.flows.clear();
                self.key = None;
                for _ in 0..3 {
                    self.bump();
                }
                continue;
            }
            match byte {
                b'[' | b'{' => {
                    let key = self.flows.last().is_none_or(|parent| parent.sequence);
                    self.mark_key();
                    self.flows.push(Flow {
                        sequence: byte == b'[',
                        pair: false,
                        key,
                    });
                    self.check()?;
                    self.bump();
                }
                b']' | b'}' => {
                    self.flows.pop();
                    self.bump();
                }
                b',' => self.bump(),
                b'-' if blank(next) => {
                    if self.flows.is_empty() {
                        if column as isize > self.indent() {
                            self.indents.push((column, false));
                        } else if let Some(last) = self.indents.last_mut() {
                            last.1 = true;
                        }
                        self.check()?;
                    }
                    self.key = None;
                    self.bump();
                }
                b'?' if !self.flows.is_empty() || blank(next) => {
                    if self.flows.is_empty() {
                        self.roll(column)?;
                    }
                    self.pair_in_flow()?;
                    self.key = None;
                    self.bump();
                }
                b':' if !self.flows.is_empty() || blank(next) => {
                    if self.flows.is_empty()
                        && let Some((line, key_column)) = self.key
                        && line == self.line
                    {
                        self.roll(key_column)?;
                    }
                    self.pair_in_flow()?;
                    self.key = None;
                    self.bump();
                }
                b'\'' | b'"' => {
                    self.mark_key();
                    self.quoted(byte)?;
                }
                b'&' | b'*' => {
                    self.mark_key();
                    self.bump();
                    while self.peek().is_some_and(|byte| {
                        byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
                    }) {
                        self.bump();
                    }
                }
                b'!' => {
                    self.mark_key();
                    while !blank(self.peek()) {
                        self.text_byte()?;
                    }
                    self.end_text();
                }
                b'|' | b'>' if self.flows.is_empty() => self.block_scalar()?,
                b'%' if column == 0 => {
                    while !matches!(self.peek(), None | Some(b'\n')) {
                        self.text_byte()?;
                    }
                    self.end_text();
                }
                _ => {
                    self.mark_key();
                    self.plain()?;
                }
            }
        }
    }

    /// `?` or `:` in a flow sequence makes a one-pair mapping inside it.
    fn pair_in_flow(&mut self) -> Result<(), BodyError> {
        if let Some(last) = self.flows.last_mut()
            && last.sequence
            && !last.pair
        {
            last.pair = true;
            self.check()?;
        }
        Ok(())
    }

    fn mark_key(&mut self) {
        if self.flows.is_empty() && self.key.is_none() {
            self.key = Some((self.line, self.column));
        }
    }

    /// `---` or `...` followed by a blank, at the start of a line.
    fn document_marker(&self) -> bool {
        let rest = &self.text[self.at..];
        (rest.starts_with(b"---") || rest.starts_with(b"...")) && blank(self.peek_at(3))
    }

    /// Skips blanks, line breaks and comments (a comment's brackets still
    /// count while open on its line).
    fn skip_to_token(&mut self) -> Result<(), BodyError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r') => self.bump(),
                Some(b'\n') => {
                    self.bump();
                    if self.flows.is_empty() {
                        self.key = None;
                    }
                }
                Some(b'#') => {
                    while !matches!(self.peek(), None | Some(b'\n')) {
                        self.text_byte()?;
                    }
                    self.end_text();
                }
                _ => return Ok(()),
            }
        }
    }

    /// A single- or double-quoted scalar, possibly over several lines.
    fn quoted(&mut self, quote: u8) -> Result<(), BodyError> {
        self.bump();
        loop {
            match self.peek() {
                None => break,
                Some(b'\'') if quote == b'\'' => {
                    self.bump();
                    if self.peek() == Some(b'\'') {
                        self.bump();
                    } else {
                        break;
                    }
                }
                Some(b'"') if quote == b'"' => {
                    self.bump();
                    break;
                }
                Some(b'\\') if quote == b'"' => {
                    self.bump();
                    self.text_byte()?;
                }
                Some(_) => self.text_byte()?,
            }
        }
        self.end_text();
        Ok(())
    }

    /// A plain scalar, as libyaml's `scan_plain_scalar` ends it.
    fn plain(&mut self) -> Result<(), BodyError> {
        let continuation = self.indent() + 1;
        loop {
            if self.column == 0 && self.document_marker() {
                break;
            }
            if self.peek() == Some(b'#') {
                break;
            }
            while !blank(self.peek()) {
                let byte = self.peek();
                let next = self.peek_at(1);
                if byte == Some(b':')
                    && (blank(next)
                        || (!self.flows.is_empty() && (flow_indicator(next) || next == Some(b'?'))))
                {
                    break;
                }
                if !self.flows.is_empty() && flow_indicator(byte) {
                    break;
                }
                self.text_byte()?;
            }
            if !blank(self.peek()) || self.peek().is_none() {
                break;
            }
            // Blanks and line breaks: the scalar goes on after them unless
            // the next line is not indented past its block collection.
            let mut crossed_line = false;
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
                if self.peek() == Some(b'\n') {
                    crossed_line = true;
                }
                self.bump();
            }
            if self.peek().is_none() {
                break;
            }
            if crossed_line && self.flows.is_empty() && (self.column as isize) < continuation {
                break;
            }
        }
        self.end_text();
        Ok(())
    }

    /// A literal (`|`) or folded (`>`) block scalar: its header, then every
    /// line indented at least as far as its content.
    fn block_scalar(&mut self) -> Result<(), BodyError> {
        self.bump();
        let mut explicit = None;
        while let Some(byte @ (b'+' | b'-' | b'0'..=b'9')) = self.peek() {
            if byte.is_ascii_digit() {
                explicit = Some(usize::from(byte - b'0'));
            }
            self.bump();
        }
        while !matches!(self.peek(), None | Some(b'\n')) {
            self.text_byte()?;
        }
        self.bump();
        let base = self.indent();
        let mut indent = match explicit {
            Some(step) if base >= 0 => Some(base as usize + step),
            Some(step) => Some(step),
            None => None,
        };
        let mut widest = 0usize;
        loop {
            let start = (self.at, self.line, self.column);
            let mut spaces = 0;
            while self.peek() == Some(b' ') {
                spaces += 1;
                self.bump();
            }
            let empty = matches!(self.peek(), None | Some(b'\n' | b'\r'));
            if self.peek().is_none() {
                break;
            }
            if empty {
                widest = widest.max(spaces);
                self.bump();
                continue;
            }
            let content =
                *indent.get_or_insert_with(|| widest.max(spaces).max((base + 1).max(1) as usize));
            if spaces < content {
                (self.at, self.line, self.column) = start;
                break;
            }
            while !matches!(self.peek(), None | Some(b'\n')) {
                self.text_byte()?;
            }
            self.bump();
        }
        self.end_text();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_depth(value: &serde_yaml::Value) -> usize {
        match value {
            serde_yaml::Value::Sequence(items) => {
                1 + items.iter().map(value_depth).max().unwrap_or(0)
            }
            serde_yaml::Value::Mapping(map) => {
                1 + map
                    .iter()
                    .map(|(key, value)| value_depth(key).max(value_depth(value)))
                    .max()
                    .unwrap_or(0)
            }
            serde_yaml::Value::Tagged(tagged) => value_depth(&tagged.value),
            _ => 0,
        }
    }

    #[test]
    fn deep_flow_nesting_is_refused_quickly() {
        for body in [
            "[".repeat(100_000),
            "{a: ".repeat(25_000),
            "[a, ".repeat(25_000),
            "- ".repeat(50_000),
        ] {
            let started = std::time::Instant::now();
            assert!(matches!(
                check_yaml(body.as_bytes(), MAX_NESTING),
                Err(BodyError::TooDeep { .. })
            ));
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
        }
        assert!(check_json("[".repeat(65).as_bytes(), MAX_NESTING).is_err());
        assert!(check_json("[".repeat(64).as_bytes(), MAX_NESTING).is_ok());
        // Brackets in JSON strings are text.
        assert!(
            check_json(
                format!("[\"{}\"]", "[".repeat(1000)).as_bytes(),
                MAX_NESTING
            )
            .is_ok()
        );
        assert!(
            check_json(
                format!("[\"\\\"{}\"]", "[".repeat(1000)).as_bytes(),
                MAX_NESTING
            )
            .is_ok()
        );
    }

    #[test]
    fn real_specs_and_lockfiles_pass() {
        let spec = "name: x\nchannels:\n  - demo\ndependencies:\n  - python >=3.11\n  - 'numpy[version=\">=1\"]'\n  - pandas[build=py*]\n  - {name: x}\n# a comment [ with a bracket\nplatforms: [linux-64, osx-arm64]\nvariables: {A: '[', B: \"{\"}\n";
        assert!(
            check_yaml(spec.as_bytes(), MAX_NESTING).is_ok(),
            "{}",
            yaml_depth(spec.as_bytes())
        );
        let lock = "version: 6\nenvironments:\n  default:\n    channels:\n    - url: https://x/\n    packages:\n      linux-64:\n      - conda: https://x/a.conda\npackages:\n- conda: https://x/a.conda\n  sha256: ab\n  depends:\n  - b >=1\n  license: |\n    text [a] [[b]] ]] 'c\n    \"d\n  size: 1\n";
        assert!(
            check_yaml(lock.as_bytes(), MAX_NESTING).is_ok(),
            "{}",
            yaml_depth(lock.as_bytes())
        );
        assert!(
            yaml_depth(lock.as_bytes()) < 12,
            "{}",
            yaml_depth(lock.as_bytes())
        );
    }

    #[test]
    fn text_cannot_hide_an_open_bracket() {
        // A closing bracket inside a quote closes nothing; one misjudged
        // quote cannot hide the brackets that follow it either.
        for body in [
            format!("a: [{}]", "[ ']', ".repeat(100)),
            format!("a: x '\nb: {}\nc: '\n", "[".repeat(100)),
            format!("a: b\n  'c {}\n", "[".repeat(100)),
            format!("a: # ]]]]\n {}", "[ #]\n".repeat(100)),
            format!("a: !t]]]] {}", "[".repeat(100)),
        ] {
            assert!(yaml_depth(body.as_bytes()) > 64, "{body}");
        }
    }

    /// A small deterministic generator (no crate needed).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    /// Whatever serde_yaml manages to parse nests no deeper than the scanner
    /// counts: random bodies of YAML's special characters.
    #[test]
    fn the_scanner_never_counts_less_than_serde_yaml_parses() {
        const ALPHABET: &[&str] = &[
            "[", "]", "{", "}", "'", "\"", "#", " ", "\n", "\n  ", ",", ":", ": ", "- ", "a", "b",
            "? ", "\\", "&x ", "*x", "!t ", "|\n", ">\n", "''", "a: ", "\t", "---\n", "[a, ",
            "{a: ", "]]", "'[", "\"]",
        ];
        let mut random = Lcg(7);
        let mut checked = 0;
        for _ in 0..200_000 {
            let length = 1 + random.next() % 24;
            let mut body = String::new();
            for _ in 0..length {
                body.push_str(ALPHABET[(random.next() % ALPHABET.len() as u64) as usize]);
            }
            let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(&body) else {
                continue;
            };
            checked += 1;
            let parsed = value_depth(&value);
            let counted = yaml_depth(body.as_bytes());
            assert!(
                counted >= parsed,
                "{body:?}: serde_yaml nests {parsed}, the scanner counted {counted}"
            );
        }
        assert!(checked > 1000, "only {checked} bodies parsed");
    }
}
