//! Who is asking. Milo's API server marks requests a user makes on their own behalf with the
//! `iam.miloapis.com/parent-type` and `parent-name` extras; ownership rules apply only then, so
//! operators, controllers and service accounts are never caught by them.

use super::review::Request;

/// `userInfo.extra` key naming the kind of the principal a request is made for.
pub const PARENT_TYPE: &str = "iam.miloapis.com/parent-type";
/// `userInfo.extra` key naming the principal a request is made for.
pub const PARENT_NAME: &str = "iam.miloapis.com/parent-name";

impl Request<'_> {
    fn extra(&self, key: &str) -> Option<&[String]> {
        self.user_info.extra.as_ref()?.get(key).map(Vec::as_slice)
    }

    /// The requesting User when the request is made in user context: parent-type `User`, or a
    /// parent-name with no parent-type. `None` outside user context.
    pub fn user_context(&self) -> Option<&str> {
        let user_context = match self.extra(PARENT_TYPE) {
            Some(types) => types.iter().any(|t| t == "User"),
            None => self
                .extra(PARENT_NAME)
                .is_some_and(|names| !names.is_empty()),
        };
        user_context.then(|| self.requester_uid())
    }

    /// `userInfo.uid`: the name of the requester's User.
    pub fn requester_uid(&self) -> &str {
        self.user_info.uid.as_deref().unwrap_or_default()
    }

    /// `userInfo.username`.
    pub fn requester_username(&self) -> &str {
        self.user_info.username.as_deref().unwrap_or_default()
    }
}
