//! The preference page's HTML: one server-rendered document, no script, one inline style block
//! allowed by its hash, readable on a phone (viewport, one column, 44 px targets), with visible
//! focus, text contrast of at least 7:1, a landmark, headings, and buttons that say what they do.
//! Everything from the cluster (names, descriptions, addresses) is escaped.

use std::fmt::Write as _;
use std::sync::OnceLock;

use base64::Engine as _;

use crate::view::preferences::{GroupChoice, PreferencesView, Standing};

/// The page's only style, allowed by its hash in the Content-Security-Policy.
const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;\
color:#1a1a1a;background:#fff;line-height:1.5}\
main{max-width:40rem;margin:0 auto;padding:1rem}\
h1{font-size:1.5rem;margin:.5rem 0}\
ul{list-style:none;padding:0;margin:0}\
li{border:1px solid #767676;border-radius:.5rem;padding:1rem;margin:0 0 1rem}\
h2{font-size:1.125rem;margin:0}\
p{margin:.25rem 0 .75rem}\
.muted{color:#404040}\
.notice{background:#e8f1fb;border-left:4px solid #0b3d91;padding:.5rem 1rem}\
button{font:inherit;min-height:44px;min-width:44px;padding:.5rem 1rem;border-radius:.375rem;\
border:2px solid #0b3d91;background:#0b3d91;color:#fff;cursor:pointer}\
button.leave{background:#fff;color:#0b3d91}\
:focus-visible{outline:3px solid #b35900;outline-offset:2px}";

/// The Content-Security-Policy of every answer of the page's routes: nothing loads, only the
/// style above applies, forms post only back here, and nothing frames the page.
pub fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash = ring::digest::digest(&ring::digest::SHA256, STYLE.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(hash.as_ref());
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'"
        )
    })
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\">\
         <title>{title}</title><style>{STYLE}</style></head><body><main>"
    )
}

const TAIL: &str = "</main></body></html>";

/// What a change did, shown once above the groups after the form's redirect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The person left the group.
    Left,
    /// The person is back in the group.
    Joined,
    /// An operator's removal stays; nothing changed.
    Kept,
    /// Nothing could be done now; try again.
    Busy,
}

impl Notice {
    /// The `done` query value that carries it through the redirect.
    pub fn as_query(self) -> &'static str {
        match self {
            Notice::Left => "left",
            Notice::Joined => "joined",
            Notice::Kept => "kept",
            Notice::Busy => "busy",
        }
    }

    /// The notice a `done` query value names.
    pub fn from_query(value: &str) -> Option<Self> {
        [Notice::Left, Notice::Joined, Notice::Kept, Notice::Busy]
            .into_iter()
            .find(|n| n.as_query() == value)
    }

    fn sentence(self, group: &str) -> String {
        let group = escape(group);
        match self {
            Notice::Left => format!("You left {group}. You will get no more mail sent to it."),
            Notice::Joined => format!("You are back in {group}."),
            Notice::Kept => {
                format!("An administrator removed you from {group}; only they can add you back.")
            }
            Notice::Busy => {
                "Your choice could not be saved just now. Please try again in a minute.".to_owned()
            }
        }
    }
}

/// What one page shows beyond the view: where its forms post, their value, and a notice.
pub struct PageContext<'a> {
    /// The page's own path (`/preferences/<token>`).
    pub action: &'a str,
    /// The form value every POST must carry.
    pub form_value: &'a str,
    /// A notice from the change just made, with the group's display name.
    pub notice: Option<(Notice, &'a str)>,
}

/// The page of `view`.
pub fn render(view: &PreferencesView<'_>, page: &PageContext<'_>) -> String {
    let mut html = head("Your email preferences");
    let _ = write!(
        html,
        "<h1>Your email preferences</h1><p>Mail sent to groups for <strong>{}</strong>.</p>",
        escape(view.contact.email)
    );
    if let Some((notice, group)) = page.notice {
        let _ = write!(
            html,
            "<p class=\"notice\" role=\"status\">{}</p>",
            notice.sentence(group)
        );
    }
    if view.groups.is_empty() {
        html.push_str("<p>You are not in any group.</p>");
    } else {
        html.push_str("<ul>");
        for choice in &view.groups {
            group_item(&mut html, choice, page);
        }
        html.push_str("</ul>");
    }
    html.push_str(TAIL);
    html
}

fn group_item(html: &mut String, choice: &GroupChoice<'_>, page: &PageContext<'_>) {
    let name = escape(choice.group.display_name);
    let _ = write!(html, "<li><h2>{name}</h2>");
    if !choice.description.is_empty() {
        let _ = write!(
            html,
            "<p class=\"muted\">{}</p>",
            escape(choice.description)
        );
    }
    let (state, action) = match choice.standing {
        Standing::Member => ("You are a member.", Some(("leave", "leave", "Leave"))),
        Standing::Left => ("You left this group.", Some(("join", "join", "Rejoin"))),
        Standing::Managed => (
            "Your organisation manages this group; you cannot leave it here.",
            None,
        ),
        Standing::Removed => (
            "An administrator removed you from this group; only they can add you back.",
            None,
        ),
    };
    let _ = write!(html, "<p>{state}</p>");
    if let Some((value, class, verb)) = action {
        let key = choice.group.key;
        let _ = write!(
            html,
            "<form method=\"post\" action=\"{}\">\
             <input type=\"hidden\" name=\"form\" value=\"{}\">\
             <input type=\"hidden\" name=\"group\" value=\"{}/{}\">\
             <input type=\"hidden\" name=\"action\" value=\"{value}\">\
             <button type=\"submit\" class=\"{class}\">{verb} {name}</button></form>",
            escape(page.action),
            escape(page.form_value),
            escape(key.namespace),
            escape(key.name),
        );
    }
    html.push_str("</li>");
}

/// The page for a link that is forged, altered, expired, or names a Contact no longer there.
pub fn not_found() -> String {
    let mut html = head("Link not valid");
    html.push_str(
        "<h1>This link is not valid</h1><p>It may have expired, or been changed. \
         The newest mail from us carries a fresh one.</p>",
    );
    html.push_str(TAIL);
    html
}

/// The page for a POST whose form value is missing, wrong or too old.
pub fn form_expired(action: &str) -> String {
    let mut html = head("Page expired");
    let _ = write!(
        html,
        "<h1>This page has expired</h1><p>Nothing was changed. \
         <a href=\"{}\">Open your preferences again</a> and choose once more.</p>",
        escape(action)
    );
    html.push_str(TAIL);
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_style_is_allowed_by_its_hash_and_nothing_else_loads() {
        let csp = content_security_policy();
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(head("t").contains(STYLE));
    }

    #[test]
    fn notices_round_trip_through_the_query() {
        for notice in [Notice::Left, Notice::Joined, Notice::Kept, Notice::Busy] {
            assert_eq!(Notice::from_query(notice.as_query()), Some(notice));
        }
        assert_eq!(Notice::from_query("<script>"), None);
        assert!(Notice::Left.sentence("<b>").contains("&lt;b&gt;"));
    }
}
