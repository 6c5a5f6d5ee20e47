use super::*;
use proptest::prelude::*;

fn vars(pairs: &[(&str, &str)]) -> Variables {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::Text(v.to_string())))
        .collect()
}

fn render(source: &str, vars: &Variables, escape: Escape) -> String {
    Template::parse(source)
        .expect("parses")
        .render(vars, escape)
        .expect("renders")
}

fn parse_err(source: &str) -> String {
    Template::parse(source).expect_err("rejected").to_string()
}

#[test]
fn substitutes_with_any_spacing() {
    let v = vars(&[("Name", "Ada")]);
    assert_eq!(
        render(
            "Hi {{.Name}}, {{ .Name }}, {{  .Name\t}}!",
            &v,
            Escape::None
        ),
        "Hi Ada, Ada, Ada!"
    );
}

#[test]
fn html_escape_applies_to_values_not_template_text() {
    let v = vars(&[("Name", "<b>&\"'</b>")]);
    assert_eq!(
        render("<p>{{.Name}}</p>", &v, Escape::Html),
        "<p>&lt;b&gt;&amp;&#34;&#39;&lt;/b&gt;</p>"
    );
    assert_eq!(
        render("<p>{{.Name}}</p>", &v, Escape::None),
        "<p><b>&\"'</b></p>"
    );
}

#[test]
fn missing_optional_variables_render_empty() {
    let out = render(
        "[{{.Missing}}]{{if .Missing}}yes{{else}}no{{end}}",
        &Variables::new(),
        Escape::Html,
    );
    assert_eq!(out, "[]no");
    assert!(!out.contains("no value"));
}

#[test]
fn if_else_and_else_if() {
    let src = "{{if .A}}a{{else if .B}}b{{else}}c{{end}}";
    assert_eq!(render(src, &vars(&[("A", "1")]), Escape::None), "a");
    assert_eq!(render(src, &vars(&[("B", "1")]), Escape::None), "b");
    assert_eq!(
        render(src, &vars(&[("A", ""), ("B", "")]), Escape::None),
        "c"
    );
    assert_eq!(
        render("{{if .A}}x{{end}}", &Variables::new(), Escape::None),
        ""
    );
}

#[test]
fn range_over_lists_and_text() {
    let mut v = Variables::new();
    v.insert("L".into(), Value::List(vec!["a".into(), "<b>".into()]));
    v.insert("T".into(), Value::Text("t".into()));
    v.insert("E".into(), Value::List(vec![]));
    assert_eq!(
        render("{{range .L}}({{.}}){{end}}", &v, Escape::Html),
        "(a)(&lt;b&gt;)"
    );
    assert_eq!(
        render("{{range .T}}({{.}}){{end}}", &v, Escape::None),
        "(t)"
    );
    assert_eq!(
        render("{{range .E}}x{{else}}none{{end}}", &v, Escape::None),
        "none"
    );
    assert_eq!(render("{{range .Absent}}x{{end}}", &v, Escape::None), "");
    assert_eq!(render("{{.L}}", &v, Escape::None), "[a <b>]");
    assert_eq!(
        render("{{range .L}}{{if .}}y{{end}}{{end}}", &v, Escape::None),
        "yy"
    );
}

#[test]
fn comments_are_dropped() {
    let v = vars(&[("A", "1")]);
    assert_eq!(render("a{{/* note {{.B}} */}}b", &v, Escape::None), "ab");
    assert_eq!(render("a  {{- /* c */ -}}  b", &v, Escape::None), "ab");
    assert!(Template::parse("a{{/* c */}}").unwrap().fields().is_empty());
}

#[test]
fn trim_markers_remove_adjacent_whitespace() {
    let v = vars(&[("A", "x")]);
    assert_eq!(render("a \n {{- .A -}} \n b", &v, Escape::None), "axb");
    assert_eq!(render("a {{- .A}} b", &v, Escape::None), "ax b");
    assert_eq!(render("a {{.A -}} b", &v, Escape::None), "a xb");
    assert_eq!(
        render(
            "<ul>\n{{- range .A}}\n  <li>{{.}}</li>\n{{- end}}\n</ul>",
            &v,
            Escape::None
        ),
        "<ul>\n  <li>x</li>\n</ul>"
    );
}

#[test]
fn fields_lists_every_top_level_reference() {
    let t = Template::parse("{{.A}}{{if .B}}{{.C}}{{else}}{{.D}}{{end}}{{range .E}}{{.}}{{end}}")
        .unwrap();
    let names: Vec<String> = t.fields().into_iter().collect();
    assert_eq!(names, ["A", "B", "C", "D", "E"]);
}

#[test]
fn placeholders_survive_parsing_and_are_substituted() {
    let t = Template::parse("Hi {{{FIRST_NAME}}} {{{LAST_NAME}}} <{{{EMAIL}}}> {{.A}}").unwrap();
    let out = t.render(&vars(&[("A", "a")]), Escape::Html).unwrap();
    assert_eq!(out, "Hi {{{FIRST_NAME}}} {{{LAST_NAME}}} <{{{EMAIL}}}> a");
    assert_eq!(
        substitute_placeholders(&out, "<Ada>", "L", "a@x.io", Escape::Html),
        "Hi &lt;Ada&gt; L <a@x.io> a"
    );
    assert_eq!(
        substitute_placeholders(
            "{{{OTHER}}} {{{EMAIL}}}",
            "f",
            "l",
            "{{{FIRST_NAME}}}",
            Escape::None
        ),
        "{{{OTHER}}} {{{FIRST_NAME}}}"
    );
}

#[test]
fn errors_name_the_line_and_the_problem() {
    assert_eq!(parse_err("a\nb\nc {{.A"), "line 3: unclosed action");
    assert_eq!(
        parse_err("a\n{{printf \"%s\" .A}}"),
        "line 2: unknown function \"printf\""
    );
    assert_eq!(parse_err("{{html}}"), "line 1: unknown function \"html\"");
    assert_eq!(
        parse_err("{{if .A}}\nx"),
        "line 1: unclosed {{if}}: missing {{end}}"
    );
    assert_eq!(parse_err("x\n\n{{end}}"), "line 3: unexpected {{end}}");
    assert_eq!(
        parse_err("{{else}}"),
        "line 1: unexpected {{else}} outside {{if}} or {{range}}"
    );
    assert_eq!(
        parse_err("{{.A.B}}"),
        "line 1: nested field \".A.B\" is not supported"
    );
    assert_eq!(
        parse_err("{{.A | html}}"),
        "line 1: pipelines (\"|\") are not supported"
    );
    assert_eq!(
        parse_err("{{with .A}}{{end}}"),
        "line 1: {{with}} is not supported"
    );
    assert_eq!(
        parse_err("{{$x}}"),
        "line 1: variable \"$x\" is not supported"
    );
    assert_eq!(parse_err("{{}}"), "line 1: empty action");
    assert_eq!(parse_err("{{/* open"), "line 1: unclosed comment");
    assert_eq!(
        parse_err("{{.A .B}}"),
        "line 1: unexpected \".B\" after \".A\""
    );
    assert!(parse_err("{{.}}").contains("outside {{range}}"));
    assert!(parse_err("{{range .L}}{{.A}}{{end}}").contains("inside {{range}}"));
    assert!(parse_err("{{if .A}}{{else}}{{else}}{{end}}").contains("second {{else}}"));
}

#[test]
fn nesting_is_bounded() {
    let deep = "{{if .A}}".repeat(parse::MAX_DEPTH + 1);
    assert!(parse_err(&deep).contains("nesting deeper"));
    let ok = format!(
        "{}{}",
        "{{if .A}}".repeat(parse::MAX_DEPTH),
        "{{end}}".repeat(parse::MAX_DEPTH)
    );
    assert!(Template::parse(&ok).is_ok());
}

/// Fragments that build template-like sources: valid pieces, broken pieces and plain text.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{{.A}}".to_string()),
        Just("{{ .B }}".to_string()),
        Just("{{.L}}".to_string()),
        Just("{{.}}".to_string()),
        Just("{{if .A}}".to_string()),
        Just("{{if .}}".to_string()),
        Just("{{else}}".to_string()),
        Just("{{else if .B}}".to_string()),
        Just("{{end}}".to_string()),
        Just("{{range .L}}".to_string()),
        Just("{{range .A}}".to_string()),
        Just("{{- ".to_string()),
        Just(" -}}".to_string()),
        Just("{{/* c */}}".to_string()),
        Just("{{{EMAIL}}}".to_string()),
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("\n".to_string()),
        Just("<&'\"".to_string()),
        "[a-z .{}|$\\-*/]{0,6}",
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z<&]{0,3}".prop_map(Value::Text),
        proptest::collection::vec("[a-z<]{0,3}", 0..3).prop_map(Value::List),
    ]
}

proptest! {
    /// The invariant: whatever `parse` accepts, `render` renders, for any variables.
    #[test]
    fn accepted_templates_always_render(
        parts in proptest::collection::vec(fragment(), 0..24),
        vars in proptest::collection::btree_map("[ABL]", value(), 0..4),
    ) {
        let source = parts.concat();
        if let Ok(t) = Template::parse(&source) {
            prop_assert!(t.render(&vars, Escape::Html).is_ok());
            prop_assert!(t.render(&vars, Escape::None).is_ok());
            for f in t.fields() {
                let needle = format!(".{}", f);
                prop_assert!(source.contains(&needle));
            }
        }
    }

    /// Arbitrary text never panics the parser, and errors always name a line within the source.
    #[test]
    fn parser_never_panics(source in "\\PC{0,64}") {
        if let Err(e) = Template::parse(&source) {
            prop_assert!(e.line() >= 1 && e.line() <= source.matches('\n').count() + 1);
        }
    }
}
