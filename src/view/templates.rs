//! EmailTemplates in the view: per template only its declared variables (interned names, two
//! flags, one boxed slice), which Email admission and the invitation controller check against.
//! The bodies (up to 256 KiB each) are never kept: they are checked when the template is admitted.

use kube::ResourceExt;

use super::records::TemplateVariableRecord;
use super::store::{Row, Store, ViewKind};
use crate::api::EmailTemplate;
use crate::api::notification::TemplateVariableType;

/// A variable an EmailTemplate declares, as lookups return it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateVariableView<'a> {
    /// `name`.
    pub name: &'a str,
    /// Whether an Email must supply it.
    pub required: bool,
    /// Whether its values must be absolute https URLs.
    pub url: bool,
}

impl Store {
    /// Stores or replaces an EmailTemplate's declared variables.
    pub fn apply_email_template(&mut self, template: &EmailTemplate) {
        let key = self.key("", &template.name_any());
        let variables: Box<[TemplateVariableRecord]> = template
            .spec
            .variables
            .iter()
            .map(|v| TemplateVariableRecord {
                name: self.symbols.intern(&v.name),
                required: v.required,
                url: v.type_ == TemplateVariableType::Url,
            })
            .collect();
        self.upsert(ViewKind::EmailTemplate, key, Row::EmailTemplate(variables));
    }

    /// The variables the EmailTemplate `name` declares, in declaration order; `None` when there
    /// is no such template.
    pub fn email_template(&self, name: &str) -> Option<Vec<TemplateVariableView<'_>>> {
        match self.row(ViewKind::EmailTemplate, "", name)? {
            (_, Row::EmailTemplate(variables)) => Some(
                variables
                    .iter()
                    .map(|v| TemplateVariableView {
                        name: self.symbols.resolve(v.name),
                        required: v.required,
                        url: v.url,
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::notification::{EmailTemplateSpec, TemplateVariable};

    fn template(name: &str, variables: &[(&str, bool, TemplateVariableType)]) -> EmailTemplate {
        let spec = EmailTemplateSpec {
            subject: "s".into(),
            html_body: "h".into(),
            text_body: "t".into(),
            variables: variables
                .iter()
                .map(|(n, required, type_)| TemplateVariable {
                    name: (*n).into(),
                    required: *required,
                    type_: *type_,
                })
                .collect(),
        };
        EmailTemplate::new(name, spec)
    }

    #[test]
    fn templates_keep_their_declared_variables_and_release_them() {
        let mut store = Store::admission_only();
        let before = store.symbol_count();
        store.apply_email_template(&template(
            "invite",
            &[
                ("Name", true, TemplateVariableType::String),
                ("Link", false, TemplateVariableType::Url),
            ],
        ));
        let vars = store.email_template("invite").expect("stored");
        assert_eq!(
            vars,
            [
                TemplateVariableView {
                    name: "Name",
                    required: true,
                    url: false
                },
                TemplateVariableView {
                    name: "Link",
                    required: false,
                    url: true
                },
            ]
        );
        assert!(store.email_template("other").is_none());
        store.apply_email_template(&template("invite", &[]));
        assert_eq!(store.email_template("invite"), Some(vec![]));
        store.delete(ViewKind::EmailTemplate, "", "invite");
        assert!(store.email_template("invite").is_none());
        assert_eq!(store.symbol_count(), before);
    }
}
