//! What one Email becomes at the provider: its template rendered with its variables (values
//! HTML-escaped in the HTML body only) and the sender's addresses. Pure, so it is tested here.

use crate::api::notification::{EmailSpec, EmailTemplateSpec};
use crate::providers::resend::{EmailTag, OutgoingEmail};
use crate::template::{Escape, Template, Value, Variables};

/// The rendered parts of an Email, as its status records them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// Subject, unescaped.
    pub subject: String,
    /// HTML body, values escaped.
    pub html: String,
    /// Text body, unescaped.
    pub text: String,
}

/// Renders `template` with the Email's variables. Absent optional variables render empty (the
/// renderer's rule); an error means a template admission should have refused: permanent.
pub fn render(template: &EmailTemplateSpec, email: &EmailSpec) -> Result<Rendered, String> {
    let variables: Variables = email
        .variables
        .iter()
        .map(|v| (v.name.clone(), Value::Text(v.value.clone())))
        .collect();
    Ok(Parsed::parse(template)?.render(&variables))
}

/// A template's three parts parsed once, to be rendered for many recipients (a broadcast).
pub struct Parsed {
    subject: Template,
    html: Template,
    text: Template,
}

impl Parsed {
    /// Parses the subject and bodies; the error names the part that does not parse.
    pub fn parse(template: &EmailTemplateSpec) -> Result<Self, String> {
        let part = |name: &str, source: &str| {
            Template::parse(source)
                .map_err(|e| format!("the template's {name} cannot be rendered: {e}"))
        };
        Ok(Self {
            subject: part("subject", &template.subject)?,
            html: part("htmlBody", &template.html_body)?,
            text: part("textBody", &template.text_body)?,
        })
    }

    /// Renders with `variables`, values HTML-escaped in the HTML body only. A parsed template
    /// always renders (the renderer's contract); a failure would render as empty text.
    pub fn render(&self, variables: &Variables) -> Rendered {
        let part = |t: &Template, escape| t.render(variables, escape).unwrap_or_default();
        Rendered {
            subject: part(&self.subject, Escape::None),
            html: part(&self.html, Escape::Html),
            text: part(&self.text, Escape::None),
        }
    }
}

/// The sender's addresses (`--email-from-address`, `--email-reply-to-address`).
#[derive(Clone, Debug, Default)]
pub struct Sender {
    /// `from`.
    pub from: String,
    /// `reply_to`, when set.
    pub reply_to: Option<String>,
}

/// The provider request for `rendered`, to `to`, with the Email's cc and bcc. Tagged with the
/// Email's namespace so Resend's dashboard can tell Milo's mail apart; the idempotency key is
/// not a mail header (the client sends it as the HTTP header).
pub fn outgoing(
    rendered: &Rendered,
    to: &str,
    email: &EmailSpec,
    namespace: &str,
    sender: &Sender,
) -> OutgoingEmail {
    OutgoingEmail {
        cc: email.cc.clone(),
        bcc: email.bcc.clone(),
        ..outgoing_to(rendered, to, namespace, sender)
    }
}

/// The provider request for `rendered` to `to` alone (no cc or bcc, no headers), tagged with
/// `namespace`: what an Email and each recipient of a broadcast share.
pub fn outgoing_to(
    rendered: &Rendered,
    to: &str,
    namespace: &str,
    sender: &Sender,
) -> OutgoingEmail {
    let tag_value: String = namespace
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect();
    OutgoingEmail {
        from: sender.from.clone(),
        to: vec![to.to_owned()],
        subject: rendered.subject.clone(),
        html: Some(rendered.html.clone()),
        text: Some(rendered.text.clone()),
        reply_to: sender.reply_to.clone(),
        cc: Vec::new(),
        bcc: Vec::new(),
        headers: Default::default(),
        tags: (!tag_value.is_empty())
            .then(|| EmailTag {
                name: "namespace".into(),
                value: tag_value,
            })
            .into_iter()
            .collect(),
        topic_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::notification::EmailVariable;

    fn template() -> EmailTemplateSpec {
        EmailTemplateSpec {
            subject: "Join {{ .Org }}".into(),
            html_body: "<p>{{.Org}}{{if .Note}} ({{.Note}}){{end}}</p>".into(),
            text_body: "{{.Org}}".into(),
            variables: Vec::new(),
        }
    }

    #[test]
    fn values_are_escaped_in_html_only_and_absent_optionals_are_empty() {
        let email = EmailSpec {
            variables: vec![EmailVariable {
                name: "Org".into(),
                value: "A&B <x>".into(),
            }],
            ..Default::default()
        };
        let rendered = render(&template(), &email).unwrap();
        assert_eq!(rendered.subject, "Join A&B <x>");
        assert_eq!(rendered.html, "<p>A&amp;B &lt;x&gt;</p>");
        assert_eq!(rendered.text, "A&B <x>");
        let sender = Sender {
            from: "Milo <noreply@example.com>".into(),
            reply_to: Some("help@example.com".into()),
        };
        let out = outgoing(&rendered, "a@example.com", &email, "org-1.x", &sender);
        assert_eq!(out.to, ["a@example.com"]);
        assert_eq!(out.reply_to.as_deref(), Some("help@example.com"));
        assert!(out.headers.is_empty());
        assert_eq!(out.tags[0].value, "org-1_x");
    }

    #[test]
    fn an_unrenderable_template_is_an_error_not_a_panic() {
        let mut broken = template();
        broken.html_body = "{{if .Org}}".into();
        let error = render(&broken, &EmailSpec::default()).unwrap_err();
        assert!(error.contains("htmlBody"), "{error}");
    }
}
