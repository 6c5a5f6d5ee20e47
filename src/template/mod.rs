//! The Go template subset Milo's email templates use, parsed and rendered in Rust.
//!
//! Why our own and not `gtmpl`: `gtmpl` implements `text/template` as a whole, so it accepts
//! pipelines, function calls and nested fields that can fail at execution time, renders an absent
//! key as `<no value>`, and has no notion of escaping substituted values while leaving template
//! text alone. Admission must reject exactly what the sender cannot render, so the accepted
//! language has to be one where rendering cannot fail: that is this module.
//!
//! Accepted: text; `{{.Name}}` with any spacing; trim markers `{{- ` and ` -}}`;
//! `{{if .X}}...{{else if .Y}}...{{else}}...{{end}}` (true when non-empty); `{{range .List}}...
//! {{.}}...{{else}}...{{end}}`; comments `{{/* ... */}}`; and the Resend-style placeholders
//! `{{{FIRST_NAME}}}`, `{{{LAST_NAME}}}`, `{{{EMAIL}}}` as literal text, substituted later by
//! [`substitute_placeholders`]. Everything else is a [`TemplateError`] naming the line.
//!
//! Pure: no I/O, no clock; below admission and the controllers in the layering.

mod parse;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use parse::{Arg, Node};

/// A parsed template, ready to render any number of times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    nodes: Vec<Node>,
}

/// Why a template source is outside the supported subset; displays as one sentence starting with
/// the line, such as `line 3: unclosed action`, which admission quotes in its denial.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    line: usize,
    message: String,
}

impl TemplateError {
    /// The 1-based line of the offending action.
    pub fn line(&self) -> usize {
        self.line
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A variable's value: Milo's variables are strings; lists exist for `{{range}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A string.
    Text(String),
    /// A list of strings, iterated by `{{range}}`.
    List(Vec<String>),
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Text(t) => !t.is_empty(),
            Value::List(l) => !l.is_empty(),
        }
    }
}

/// Variables by name, as a template reads them with `.Name`.
pub type Variables = BTreeMap<String, Value>;

/// Whether substituted values are HTML-escaped: yes for `htmlBody`, no for text and subjects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// Escape `& < > " '` in substituted values (never in template text).
    Html,
    /// Substitute values as they are.
    None,
}

impl Template {
    /// Parses `source`, rejecting anything outside the subset; whatever it accepts renders.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        parse::parse(source).map(|nodes| Template { nodes })
    }

    /// Every top-level field referenced (`.Name` -> "Name"), for admission's declared-variable
    /// checks: in values, `if` conditions and `range` lists alike.
    pub fn fields(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        collect(&self.nodes, &mut out);
        out
    }

    /// Renders with `vars`. Absent variables render as empty text (and are false in `if`); a list
    /// substituted directly renders like Go's `[a b]`; a text iterated by `range` is one element
    /// (none when empty). Never fails on a parsed template: the `Result` is for callers' symmetry
    /// with [`Template::parse`] and future extension.
    pub fn render(&self, vars: &Variables, escape: Escape) -> Result<String, TemplateError> {
        let mut out = String::new();
        render(&self.nodes, vars, None, escape, &mut out);
        Ok(out)
    }
}

fn collect(nodes: &[Node], out: &mut BTreeSet<String>) {
    for node in nodes {
        match node {
            Node::Text(_) | Node::Value(Arg::Dot) => {}
            Node::Value(Arg::Field(f)) => {
                out.insert(f.clone());
            }
            Node::If {
                cond,
                then,
                otherwise,
            } => {
                if let Arg::Field(f) = cond {
                    out.insert(f.clone());
                }
                collect(then, out);
                collect(otherwise, out);
            }
            Node::Range { field, body, empty } => {
                out.insert(field.clone());
                collect(body, out);
                collect(empty, out);
            }
        }
    }
}

fn render(nodes: &[Node], vars: &Variables, dot: Option<&str>, escape: Escape, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Value(Arg::Dot) => push_escaped(out, dot.unwrap_or(""), escape),
            Node::Value(Arg::Field(f)) => match vars.get(f) {
                None => {}
                Some(Value::Text(t)) => push_escaped(out, t, escape),
                Some(Value::List(items)) => {
                    push_escaped(out, &format!("[{}]", items.join(" ")), escape)
                }
            },
            Node::If {
                cond,
                then,
                otherwise,
            } => {
                let truth = match cond {
                    Arg::Dot => dot.is_some_and(|d| !d.is_empty()),
                    Arg::Field(f) => vars.get(f).is_some_and(Value::truthy),
                };
                let branch = if truth { then } else { otherwise };
                render(branch, vars, dot, escape, out);
            }
            Node::Range { field, body, empty } => {
                let items: &[String] = match vars.get(field) {
                    None => &[],
                    Some(Value::List(items)) => items,
                    Some(Value::Text(t)) if t.is_empty() => &[],
                    Some(Value::Text(t)) => std::slice::from_ref(t),
                };
                if items.is_empty() {
                    render(empty, vars, dot, escape, out);
                }
                for item in items {
                    render(body, vars, Some(item), escape, out);
                }
            }
        }
    }
}

/// Appends `value`, escaped the way Go's `html/template` escapes text (`&#34;` and `&#39;` for
/// quotes) when `escape` is [`Escape::Html`].
fn push_escaped(out: &mut String, value: &str, escape: Escape) {
    if escape == Escape::None {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Replaces the Resend-style placeholders `{{{FIRST_NAME}}}`, `{{{LAST_NAME}}}` and `{{{EMAIL}}}`
/// with the recipient's values (escaped per `escape`), so broadcasts sent per recipient honour the
/// placeholders Milo's type documents. Other text is untouched; one pass, so a value containing a
/// placeholder is not substituted again.
pub fn substitute_placeholders(
    text: &str,
    first: &str,
    last: &str,
    email: &str,
    escape: Escape,
) -> String {
    const NAMES: [&str; 3] = ["{{{FIRST_NAME}}}", "{{{LAST_NAME}}}", "{{{EMAIL}}}"];
    let values = [first, last, email];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("{{{") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        match NAMES.iter().position(|n| tail.starts_with(n)) {
            Some(i) => {
                push_escaped(&mut out, values[i], escape);
                rest = &tail[NAMES[i].len()..];
            }
            None => {
                out.push_str("{{{");
                rest = &tail[3..];
            }
        }
    }
    out.push_str(rest);
    out
}
