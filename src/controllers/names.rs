//! Deterministic names for what the controllers create. The same inputs always give the same
//! name, so a retry, a restart or a new leader creates the same object again and gets
//! AlreadyExists instead of a duplicate. Readable parts keep short names recognizable; a hash of
//! the full inputs keeps long ones unique and within Kubernetes' limits.

use ring::digest::{SHA256, digest};

/// Longest object name (a DNS subdomain).
pub const MAX_NAME: usize = 253;
/// Longest label value, and longest name part of a label or annotation key.
pub const MAX_LABEL: usize = 63;
/// Hex digits of hash appended where a name must stay unique after truncation.
const HASH_DIGITS: usize = 10;

/// The first `HASH_DIGITS` hex digits of SHA-256 over the parts, NUL-separated so that
/// ("a-b", "c") and ("a", "b-c") differ.
pub fn short_hash(parts: &[&str]) -> String {
    let joined = parts.join("\0");
    let sum = digest(&SHA256, joined.as_bytes());
    sum.as_ref()
        .iter()
        .take(HASH_DIGITS / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `<part>-<part>-…-<hash>`, each part truncated evenly so the whole fits in `max`, and every
/// part trimmed so the result stays a valid DNS subdomain (and label value) character sequence.
fn hashed_join(parts: &[&str], max: usize) -> String {
    let hash = short_hash(parts);
    let separators = parts.len();
    let room = max.saturating_sub(hash.len() + separators);
    let each = room / parts.len().max(1);
    let mut name = String::with_capacity(max);
    for part in parts {
        let cut: String = part.chars().take(each).collect();
        let trimmed = cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        if !trimmed.is_empty() {
            name.push_str(trimmed);
            name.push('-');
        }
    }
    name.push_str(&hash);
    name
}

/// Name of the membership a policy creates for a contact: `<policy>-<contact>-<hash>`, where the
/// hash covers both full names, so no two (policy, contact) pairs ever share a name.
pub fn enrollment_membership(policy: &str, contact: &str) -> String {
    hashed_join(&[policy, contact], MAX_NAME)
}

/// Name of the removal an opt-out reported by a provider creates for one (contact, group) pair:
/// `unsubscribe-<contact>-<group>-<hash>`, the hash covering both namespaces and names, so a
/// repeated event (or a restart half-way) finds the removal it created before.
pub fn unsubscribe_removal(contact: (&str, &str), group: (&str, &str)) -> String {
    let hash = short_hash(&[contact.0, contact.1, group.0, group.1]);
    let readable = hashed_join(
        &["unsubscribe", contact.1, group.1],
        MAX_NAME - HASH_DIGITS - 1,
    );
    format!("{readable}-{hash}")
}

/// Name of the membership a rejoin at a provider makes again for one (contact, group) pair:
/// `rejoin-<contact>-<group>-<hash>`, the hash covering both namespaces and names and the
/// `evidence` (the provider's event id), so a retry of the same event finds the membership it
/// made, while a later rejoin never collides with an earlier one still being deleted.
pub fn rejoin_membership(contact: (&str, &str), group: (&str, &str), evidence: &str) -> String {
    let hash = short_hash(&[contact.0, contact.1, group.0, group.1, evidence]);
    let readable = hashed_join(&["rejoin", contact.1, group.1], MAX_NAME - HASH_DIGITS - 1);
    format!("{readable}-{hash}")
}

/// A value that fits a label value or a key's name part: `value` itself when it fits, otherwise a
/// readable prefix and a hash of the whole.
pub fn label_safe(value: &str) -> String {
    if value.len() <= MAX_LABEL {
        value.to_owned()
    } else {
        hashed_join(&[value], MAX_LABEL)
    }
}

/// Name of the Contact created for a User: `user-<user>` when it fits, else hashed.
pub fn user_contact(user: &str) -> String {
    let plain = format!("user-{user}");
    if plain.len() <= MAX_NAME {
        plain
    } else {
        hashed_join(&["user", user], MAX_NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_subdomain(name: &str) -> bool {
        name.len() <= MAX_NAME
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && label.ends_with(|c: char| c.is_ascii_alphanumeric())
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    }

    #[test]
    fn short_names_stay_readable() {
        let name = enrollment_membership("newsletter", "alice");
        assert!(name.starts_with("newsletter-alice-"), "{name}");
        assert_eq!(name.len(), "newsletter-alice-".len() + HASH_DIGITS);
        assert_eq!(name, enrollment_membership("newsletter", "alice"));
        assert_eq!(user_contact("u1"), "user-u1");
    }

    #[test]
    fn ambiguous_joins_get_different_names() {
        assert_ne!(
            enrollment_membership("a-b", "c"),
            enrollment_membership("a", "b-c")
        );
    }

    #[test]
    fn longest_inputs_fit_and_stay_valid() {
        let long_policy = format!("{}.x", "p".repeat(250));
        let long_contact = format!("{}-.{}", "c".repeat(200), "d".repeat(50));
        let name = enrollment_membership(&long_policy, &long_contact);
        assert!(is_dns_subdomain(&name), "{name}");
        let other = enrollment_membership(&long_policy, &format!("{long_contact}e"));
        assert_ne!(name, other);
        let contact = user_contact(&"u".repeat(253));
        assert!(is_dns_subdomain(&contact), "{contact}");
        assert!(contact.starts_with("user-uuu"));
    }

    #[test]
    fn rejoin_memberships_are_named_per_pair_and_event() {
        let name = rejoin_membership(("people", "ada"), ("groups", "news"), "msg_1");
        assert!(name.starts_with("rejoin-ada-news-"), "{name}");
        assert!(is_dns_subdomain(&name), "{name}");
        assert_eq!(
            name,
            rejoin_membership(("people", "ada"), ("groups", "news"), "msg_1")
        );
        assert_ne!(
            name,
            rejoin_membership(("people", "ada"), ("groups", "news"), "msg_2")
        );
        assert_ne!(
            name,
            rejoin_membership(("people", "ada"), ("other", "news"), "msg_1")
        );
        let long = rejoin_membership(("p", &"c".repeat(253)), ("g", &"n".repeat(253)), "m");
        assert!(is_dns_subdomain(&long), "{long}");
    }

    #[test]
    fn label_values_are_kept_when_they_fit_and_hashed_when_not() {
        let exact = "p".repeat(63);
        assert_eq!(label_safe(&exact), exact);
        let long = format!("{}.example.com", "p".repeat(60));
        let safe = label_safe(&long);
        assert!(safe.len() <= MAX_LABEL && is_dns_subdomain(&safe), "{safe}");
        assert_ne!(safe, label_safe(&format!("{long}x")));
    }
}
