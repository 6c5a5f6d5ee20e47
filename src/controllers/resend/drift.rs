//! Drift repair: every `--provider-resync`, Resend is compared with what the cluster says was
//! mirrored, by listing (pages of 100, never one GET per object), and what drifted is repaired:
//! a segment or contact deleted in the Resend dashboard is synced again (recreated, and its
//! members re-added), and contacts in our segments that no membership accounts for are removed.
//! Its listing of every contact also refreshes the contact loop's [`super::directory`]. Then
//! Resend's suppression list and the members' topics are read ([`super::topic_optout::resync`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::ResendSync;
use crate::api::common::{ObjectRef, ProviderName};
use crate::controllers::{Error, ObjectKey};
use crate::view::{Store, ViewKind};

/// Lists Resend's suppressions and brings the Contacts' `Suppressed` conditions in step.
pub async fn resync_suppressions(
    sync: &ResendSync,
) -> Result<super::suppressions::Resynced, Error> {
    let listed = sync.client.list_suppressions().await?;
    let ctx = &sync.core.ctx;
    Ok(super::suppressions::resync(&ctx.client, &ctx.view, &listed).await?)
}

/// What one repair pass found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriftReport {
    /// Groups whose segment was gone.
    pub segments_missing: usize,
    /// Contacts missing at Resend.
    pub contacts_missing: usize,
    /// Memberships missing from their segment.
    pub members_missing: usize,
    /// Stray segment members removed.
    pub strays_removed: usize,
}

/// Runs a repair pass every `--provider-resync` until aborted.
pub async fn run(sync: Arc<ResendSync>) {
    let every = sync.core.ctx.settings.provider_resync;
    crate::controllers::until_synced(&sync.core.ctx.view).await;
    loop {
        tokio::time::sleep(every).await;
        match repair(&sync).await {
            Ok(report) if report != DriftReport::default() => {
                tracing::info!(?report, "repaired drift from Resend");
            }
            Ok(_) => tracing::debug!("no drift from Resend"),
            Err(error) => tracing::warn!(%error, "drift check against Resend failed"),
        }
        match resync_suppressions(&sync).await {
            Ok(done) if done != super::suppressions::Resynced::default() => {
                tracing::info!(
                    ?done,
                    "Contacts brought in step with Resend's suppression list"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "suppression check against Resend failed"),
        }
        match super::topic_optout::resync(&sync).await {
            Ok(done) if done.topics_created + done.removals > 0 => {
                tracing::info!(?done, "topics brought in step with Resend");
            }
            Ok(done) => tracing::debug!(?done, "no topic left at Resend"),
            Err(error) => tracing::warn!(%error, "topic check against Resend failed"),
        }
    }
}

/// A mirrored group as the pass sees it.
struct Mirrored {
    key: ObjectKey,
    segment: String,
}

fn mirrored_groups(view: &Store) -> Vec<Mirrored> {
    view.names(ViewKind::ContactGroup)
        .into_iter()
        .filter_map(|(ns, name)| {
            let g = view.group_sync(&ns, &name)?;
            let segment = g.segment?.to_owned();
            (!g.deleting && g.marks.synced(ProviderName::Resend)).then(|| Mirrored {
                key: ObjectKey::new(&ns, &name),
                segment,
            })
        })
        .collect()
}

/// Live memberships of `group` that are mirrored (or should be), with their contact's email.
fn members(view: &Store, group: &ObjectKey) -> Vec<(ObjectKey, String, bool)> {
    let group_ref = ObjectRef {
        namespace: group.namespace.clone(),
        name: group.name.clone(),
    };
    view.naming_group(ViewKind::Membership, &group.namespace, &group.name)
        .into_iter()
        .filter_map(|r| {
            let m = view.membership_sync(r.namespace, r.name)?;
            let contact = view.contact_sync(m.contact.namespace, m.contact.name)?;
            let contact_ref = ObjectRef {
                namespace: m.contact.namespace.to_owned(),
                name: m.contact.name.to_owned(),
            };
            let opted_out = !view.removals_of(&contact_ref, &group_ref).is_empty();
            (!m.deleting && !contact.deleting && !opted_out).then(|| {
                (
                    ObjectKey::new(r.namespace, r.name),
                    contact.email.to_lowercase(),
                    m.marks.synced(ProviderName::Resend),
                )
            })
        })
        .collect()
}

/// One repair pass.
pub async fn repair(sync: &ResendSync) -> Result<DriftReport, Error> {
    let mut report = DriftReport::default();
    let mut force = Vec::new();
    let segments: HashSet<String> = sync
        .client
        .list_segments()
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    let groups = mirrored_groups(&sync.core.ctx.view.read());
    let mut present = Vec::new();
    for group in groups {
        if segments.contains(&group.segment) {
            present.push(group);
            continue;
        }
        report.segments_missing += 1;
        let view = sync.core.ctx.view.read();
        for (membership, _, _) in members(&view, &group.key) {
            force.push((ViewKind::Membership, membership));
        }
        force.push((ViewKind::ContactGroup, group.key));
    }
    // The same listing refreshes the contact loop's directory, which so stays younger than a
    // resync period without a listing of its own.
    let started = std::time::Instant::now();
    let listed = sync.client.list_contacts(None).await?;
    let remote: HashSet<String> = listed.iter().map(|c| c.email.to_lowercase()).collect();
    sync.directory.replace(listed, started);
    {
        let view = sync.core.ctx.view.read();
        for (ns, name) in view.names(ViewKind::Contact) {
            let Some(c) = view.contact_sync(&ns, &name) else {
                continue;
            };
            if c.deleting
                || !c.marks.synced(ProviderName::Resend)
                || remote.contains(&c.email.to_lowercase())
            {
                continue;
            }
            report.contacts_missing += 1;
            force.push((ViewKind::Contact, ObjectKey::new(&ns, &name)));
            for m in view.memberships_of_contact(&ns, &name) {
                force.push((ViewKind::Membership, ObjectKey::new(m.namespace, m.name)));
            }
        }
    }
    for group in present {
        let listed = sync.client.list_contacts(Some(&group.segment)).await?;
        let in_segment: HashMap<String, String> = listed
            .into_iter()
            .map(|c| (c.email.to_lowercase(), c.id))
            .collect();
        let wanted = members(&sync.core.ctx.view.read(), &group.key);
        let wanted_emails: HashSet<&str> = wanted.iter().map(|(_, e, _)| e.as_str()).collect();
        for (membership, email, synced) in &wanted {
            if *synced && !in_segment.contains_key(email) {
                report.members_missing += 1;
                force.push((ViewKind::Membership, membership.clone()));
            }
        }
        for (email, id) in &in_segment {
            if !wanted_emails.contains(email.as_str()) {
                sync.client.remove_from_segment(id, &group.segment).await?;
                report.strays_removed += 1;
            }
        }
    }
    sync.core.force(force);
    Ok(report)
}
