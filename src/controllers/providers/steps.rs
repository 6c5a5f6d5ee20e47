//! What syncing a live object does, the same for every provider and kind: its finalizer first,
//! then (for a contact) the removals a reported opt-out asks for, then the provider's own work,
//! or else only a `Ready` repair. Each provider's plan decides the steps from the view and says
//! what its work is; [`Steps::run`] carries them out in that order.

use std::future::Future;

use kube::Api;

use super::status::{self, Mirrored};
use super::{SyncCore, SyncedObject, ready};
use crate::api::common::ProviderName;
use crate::controllers::{Action, Error, ObjectKey};
use crate::view::{ContactSync, MembershipSync, Store};

/// The steps of one live object's sync; `T` is the provider's work (`()` when it needs nothing
/// from the plan).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steps<T> {
    /// Put the provider's finalizer on first.
    pub add_finalizer: bool,
    /// Create the removals a contact's reported opt-out asks for.
    pub opt_out: bool,
    /// The provider's work, when there is any.
    pub work: Option<T>,
    /// Only rewrite `Ready`, which disagrees with the providers' conditions.
    pub repair_ready: bool,
}

impl<T> Steps<T> {
    /// These steps, when any of them is to be taken.
    pub fn needed(self) -> Option<Self> {
        (self.add_finalizer || self.opt_out || self.work.is_some() || self.repair_ready)
            .then_some(self)
    }

    /// Takes the steps on the object `key` of `kind` that the providers in `mirrors` mirror:
    /// `work` does the provider's part and decides what comes next.
    pub async fn run<K, F, Fut>(
        self,
        core: &SyncCore,
        api: &Api<K>,
        (key, kind): (&ObjectKey, SyncedObject),
        mirrors: impl Fn(ProviderName) -> bool + Copy,
        work: F,
    ) -> Result<Action, Error>
    where
        K: Mirrored,
        F: FnOnce(T) -> Fut,
        Fut: Future<Output = Result<Action, Error>>,
    {
        let provider = core.provider;
        if self.add_finalizer && !status::set_finalizer(provider, api, &key.name, true).await? {
            // Deleted meanwhile: its deletion wakes the release.
            return Ok(Action::await_change());
        }
        if self.opt_out {
            crate::controllers::resend::optout::apply(&core.ctx, key).await?;
        }
        if let Some(todo) = self.work {
            return work(todo).await;
        }
        if self.repair_ready {
            core.writer()
                .repair_ready(api, &key.name, kind, mirrors)
                .await?;
        }
        Ok(Action::await_change())
    }
}

/// The steps of `provider`'s sync of the live `contact`: every provider mirrors every contact,
/// and the first configured one acts on its opt-outs.
pub fn contact(
    provider: ProviderName,
    contact: &ContactSync<'_>,
    forced: bool,
    configured: &[ProviderName],
) -> Option<Steps<()>> {
    let mirror = !contact.marks.synced(provider) || forced;
    Steps {
        add_finalizer: !contact.marks.finalizer(provider),
        opt_out: contact.unsubscribe_pending && configured.first() == Some(&provider),
        work: mirror.then_some(()),
        repair_ready: !mirror && ready::needs_repair(provider, configured, contact.marks, |_| true),
    }
    .needed()
}

/// The steps of `provider`'s sync of the live membership `m`: its work, once its contact is
/// mirrored there and the pair may join ([`joinable`](super::joins::joinable)), is what `join`
/// makes of the contact and the group's id at the provider.
pub fn membership<T>(
    provider: ProviderName,
    view: &Store,
    m: &MembershipSync<'_>,
    (forced, configured): (bool, &[ProviderName]),
    join: impl FnOnce(&ContactSync<'_>, &str) -> T,
) -> Option<Steps<T>> {
    let wanted = !m.marks.synced(provider) || forced;
    let work = view
        .contact_sync(m.contact.namespace, m.contact.name)
        .filter(|c| wanted && c.marks.synced(provider) && !c.deleting)
        .and_then(|c| Some(join(&c, super::joins::joinable(view, m, provider)?)));
    let mirrors = super::mirrored_by(view, m, configured);
    Steps {
        add_finalizer: !m.marks.finalizer(provider),
        opt_out: false,
        work,
        repair_ready: !wanted
            && ready::needs_repair(provider, configured, m.marks, |p| mirrors.contains(&p)),
    }
    .needed()
}
