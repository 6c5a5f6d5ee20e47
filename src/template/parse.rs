//! The parser: source text to a tree of [`Node`]s, rejecting everything outside the subset with a
//! sentence naming the line. Everything it accepts is renderable by construction: fields are
//! top-level names looked up in a map (absent means empty), `.` only appears where it is a list
//! element, and nesting is bounded so neither rendering nor dropping the tree can exhaust the stack.

use super::TemplateError;

/// Deepest `if`/`range` nesting accepted; far beyond any email template, low enough that the
/// recursive renderer and `Drop` stay shallow on hostile input.
pub(super) const MAX_DEPTH: usize = 64;

/// The Resend-style placeholders kept as literal text (substituted later per recipient), so
/// broadcast templates can use them although `{{{` is not Go template syntax.
const PLACEHOLDERS: [&str; 3] = ["{{{FIRST_NAME}}}", "{{{LAST_NAME}}}", "{{{EMAIL}}}"];

/// What an action reads: a top-level field, or the current list element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Arg {
    /// `.Name`: the variable `Name`.
    Field(String),
    /// `.`: the element of the enclosing `range`.
    Dot,
}

/// One piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Node {
    /// Template text, copied as is (never escaped).
    Text(String),
    /// `{{.Name}}` or `{{.}}`: a substituted value.
    Value(Arg),
    /// `{{if arg}}then{{else}}otherwise{{end}}`.
    If {
        cond: Arg,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    /// `{{range .Name}}body{{else}}empty{{end}}`.
    Range {
        field: String,
        body: Vec<Node>,
        empty: Vec<Node>,
    },
}

/// An action's meaning, before it is placed in the tree.
enum Action {
    Value(Arg),
    If(Arg),
    ElseIf(Arg),
    Range(String),
    Else,
    End,
}

/// An open `if` or `range` waiting for its `{{end}}`.
struct Frame {
    line: usize,
    kind: FrameKind,
    /// The enclosing sequence, restored when the frame closes.
    outer: Vec<Node>,
    /// The first branch, once `{{else}}` has been seen.
    first: Vec<Node>,
    in_else: bool,
    /// `{{else if}}` opens an implicit frame closed by the same `{{end}}`.
    implicit: bool,
}

enum FrameKind {
    If(Arg),
    Range(String),
}

fn err(line: usize, message: impl Into<String>) -> TemplateError {
    TemplateError {
        line,
        message: message.into(),
    }
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Parses `source` into the node tree, or says on which line and why it is outside the subset.
pub(super) fn parse(source: &str) -> Result<Vec<Node>, TemplateError> {
    let mut parser = Parser {
        stack: Vec::new(),
        current: Vec::new(),
    };
    let mut rest = source;
    let mut line = 1usize;
    let mut trim_next = false;
    let mut text = String::new();
    loop {
        let Some(open) = find_action(rest) else {
            push_text(&mut text, rest, trim_next);
            break;
        };
        push_text(&mut text, &rest[..open], trim_next);
        line += rest[..open].matches('\n').count();
        let after = &rest[open..];
        if let Some(p) = PLACEHOLDERS.iter().find(|p| after.starts_with(**p)) {
            text.push_str(p);
            rest = &after[p.len()..];
            trim_next = false;
            continue;
        }
        let mut inner = &after[2..];
        let mut consumed = 2;
        if let Some(stripped) = inner.strip_prefix('-')
            && stripped.starts_with(is_space)
        {
            let kept = text.trim_end_matches(is_space).len();
            text.truncate(kept);
            inner = stripped;
            consumed += 1;
        }
        let (body, len, trim_after) = if inner.trim_start_matches(is_space).starts_with("/*") {
            comment(inner, line)?
        } else {
            let close = inner
                .find("}}")
                .ok_or_else(|| err(line, "unclosed action"))?;
            let mut body = &inner[..close];
            let mut trim_after = false;
            if let Some(stripped) = body.strip_suffix('-')
                && stripped.ends_with(is_space)
            {
                body = stripped;
                trim_after = true;
            }
            (Some(body), close + 2, trim_after)
        };
        let action_line = line;
        line += after[..consumed + len].matches('\n').count();
        rest = &after[consumed + len..];
        trim_next = trim_after;
        if let Some(body) = body {
            if !text.is_empty() {
                parser.current.push(Node::Text(std::mem::take(&mut text)));
            }
            parser.place(action(body, action_line)?, action_line)?;
        }
    }
    if !text.is_empty() {
        parser.current.push(Node::Text(text));
    }
    if let Some(frame) = parser.stack.last() {
        let what = match frame.kind {
            FrameKind::If(_) => "if",
            FrameKind::Range(_) => "range",
        };
        return Err(err(
            frame.line,
            format!("unclosed {{{{{what}}}}}: missing {{{{end}}}}"),
        ));
    }
    Ok(parser.current)
}

/// Where the next action (or placeholder) starts.
fn find_action(text: &str) -> Option<usize> {
    text.find("{{")
}

/// Appends the text after an action, without its leading whitespace after a `-}}`.
fn push_text(text: &mut String, piece: &str, trim_start: bool) {
    if trim_start {
        text.push_str(piece.trim_start_matches(is_space));
    } else {
        text.push_str(piece);
    }
}

/// A comment `/* ... */` up to its closing `}}`: returns no body, the length consumed after the
/// left delimiter, and whether it ends with a trim marker.
fn comment(inner: &str, line: usize) -> Result<(Option<&str>, usize, bool), TemplateError> {
    let lead = inner.len() - inner.trim_start_matches(is_space).len();
    let start = lead + 2;
    let end = inner[start..]
        .find("*/")
        .ok_or_else(|| err(line, "unclosed comment"))?
        + start
        + 2;
    let tail = &inner[end..];
    if tail.starts_with("}}") {
        return Ok((None, end + 2, false));
    }
    let trimmed = tail.trim_start_matches(is_space);
    if let Some(t) = trimmed.strip_prefix('-')
        && t.starts_with("}}")
        && trimmed.len() < tail.len()
    {
        return Ok((None, end + (tail.len() - trimmed.len()) + 3, true));
    }
    Err(err(line, "comment ends before closing delimiter"))
}

/// Reads one action's words.
fn action(body: &str, line: usize) -> Result<Action, TemplateError> {
    let words: Vec<&str> = body.split(is_space).filter(|w| !w.is_empty()).collect();
    if let Some(first) = words.first()
        && first.starts_with(|c: char| c.is_alphabetic() || c == '_')
        && !matches!(*first, "if" | "range" | "else" | "end")
    {
        // A function call or unsupported keyword: name it, whatever follows.
        arg(first, line)?;
    }
    if body.contains('|') {
        return Err(err(line, "pipelines (\"|\") are not supported"));
    }
    if body.contains(['"', '`', '(']) {
        return Err(err(line, format!("unexpected {:?} in action", body.trim())));
    }
    match words.as_slice() {
        [] => Err(err(line, "empty action")),
        ["end"] => Ok(Action::End),
        ["else"] => Ok(Action::Else),
        ["else", "if", a] => Ok(Action::ElseIf(arg(a, line)?)),
        ["if", a] => Ok(Action::If(arg(a, line)?)),
        ["range", a] => match arg(a, line)? {
            Arg::Field(name) => Ok(Action::Range(name)),
            Arg::Dot => Err(err(
                line,
                "range over \".\" is not supported: name a list variable",
            )),
        },
        [kw @ ("if" | "range"), ..] => Err(err(
            line,
            format!("{{{{{kw}}}}} takes exactly one variable such as .Name"),
        )),
        ["else", ..] | ["end", ..] => {
            Err(err(line, format!("unexpected {:?} in action", body.trim())))
        }
        [a] => Ok(Action::Value(arg(a, line)?)),
        [first, second, ..] => {
            if first.starts_with('.') {
                Err(err(line, format!("unexpected {second:?} after {first:?}")))
            } else {
                match arg(first, line) {
                    Err(e) => Err(e),
                    Ok(_) => Err(err(line, format!("unexpected {second:?} after {first:?}"))),
                }
            }
        }
    }
}

/// One argument: `.Name` or `.`; anything else is named as what it is.
fn arg(word: &str, line: usize) -> Result<Arg, TemplateError> {
    if word == "." {
        return Ok(Arg::Dot);
    }
    if let Some(name) = word.strip_prefix('.') {
        let mut chars = name.chars();
        let ident = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && chars.all(|c| c.is_alphanumeric() || c == '_');
        if ident {
            return Ok(Arg::Field(name.to_owned()));
        }
        if name.contains('.') {
            return Err(err(line, format!("nested field {word:?} is not supported")));
        }
        return Err(err(line, format!("bad field name {word:?}")));
    }
    match word {
        "with" | "define" | "template" | "block" | "break" | "continue" => {
            Err(err(line, format!("{{{{{word}}}}} is not supported")))
        }
        "if" | "range" | "else" | "end" => Err(err(line, format!("unexpected {word:?} in action"))),
        _ if word.starts_with('$') => Err(err(line, format!("variable {word:?} is not supported"))),
        _ if word.starts_with(|c: char| c.is_alphabetic() || c == '_') => {
            let name: String = word
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            Err(err(line, format!("unknown function {name:?}")))
        }
        _ => Err(err(line, format!("unexpected {word:?} in action"))),
    }
}

struct Parser {
    stack: Vec<Frame>,
    current: Vec<Node>,
}

impl Parser {
    fn in_range(&self) -> bool {
        self.stack
            .iter()
            .any(|f| matches!(f.kind, FrameKind::Range(_)) && !f.in_else)
    }

    fn check_arg(&self, a: &Arg, line: usize) -> Result<(), TemplateError> {
        if *a == Arg::Dot && !self.in_range() {
            return Err(err(
                line,
                "\".\" outside {{range}} has no value: name a variable such as .Name",
            ));
        }
        if matches!(a, Arg::Field(_)) && self.in_range() {
            return Err(err(
                line,
                "fields cannot be read inside {{range}}, where \".\" is a list element",
            ));
        }
        Ok(())
    }

    fn open(&mut self, kind: FrameKind, line: usize, implicit: bool) -> Result<(), TemplateError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(err(
                line,
                format!("nesting deeper than {MAX_DEPTH} is not supported"),
            ));
        }
        self.stack.push(Frame {
            line,
            kind,
            outer: std::mem::take(&mut self.current),
            first: Vec::new(),
            in_else: false,
            implicit,
        });
        Ok(())
    }

    /// Closes the innermost frame, returning the finished node.
    fn close(&mut self) -> Option<(Node, bool)> {
        let frame = self.stack.pop()?;
        let last = std::mem::replace(&mut self.current, frame.outer);
        let (first, second) = if frame.in_else {
            (frame.first, last)
        } else {
            (last, Vec::new())
        };
        let node = match frame.kind {
            FrameKind::If(cond) => Node::If {
                cond,
                then: first,
                otherwise: second,
            },
            FrameKind::Range(field) => Node::Range {
                field,
                body: first,
                empty: second,
            },
        };
        Some((node, frame.implicit))
    }

    fn place(&mut self, action: Action, line: usize) -> Result<(), TemplateError> {
        match action {
            Action::Value(a) => {
                self.check_arg(&a, line)?;
                self.current.push(Node::Value(a));
            }
            Action::If(a) => {
                self.check_arg(&a, line)?;
                self.open(FrameKind::If(a), line, false)?;
            }
            Action::Range(name) => {
                self.check_arg(&Arg::Field(name.clone()), line)?;
                self.open(FrameKind::Range(name), line, false)?;
            }
            Action::Else | Action::ElseIf(_) => {
                let Some(frame) = self.stack.last_mut() else {
                    return Err(err(line, "unexpected {{else}} outside {{if}} or {{range}}"));
                };
                if frame.in_else {
                    return Err(err(line, "unexpected second {{else}}"));
                }
                if matches!(action, Action::ElseIf(_)) && matches!(frame.kind, FrameKind::Range(_))
                {
                    return Err(err(line, "{{else if}} is not supported in {{range}}"));
                }
                frame.in_else = true;
                frame.first = std::mem::take(&mut self.current);
                if let Action::ElseIf(a) = action {
                    self.check_arg(&a, line)?;
                    self.open(FrameKind::If(a), line, true)?;
                }
            }
            Action::End => loop {
                let Some((node, implicit)) = self.close() else {
                    return Err(err(line, "unexpected {{end}}"));
                };
                self.current.push(node);
                if !implicit {
                    break;
                }
            },
        }
        Ok(())
    }
}
