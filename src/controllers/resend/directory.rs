//! The contacts Resend holds, as last listed: where a contact without a recorded id is looked up
//! before it is created, instead of one `GET /contacts/{email}` per contact.
//!
//! Why a shared snapshot: a first sync of N contacts would otherwise cost N look-ups before N
//! creates; listing costs N/100 pages and serves every contact loop reconcile (and a membership
//! needs nothing from it: see [`crate::controllers::providers::joins`]). It is listed lazily, only when a
//! contact without a recorded id needs mirroring (a settled cluster, even after a restart, never
//! lists), then kept: drift repair lists every contact every `--provider-resync` anyway and
//! [`Directory::replace`]s it, so a new Contact in the steady state costs its create alone. The
//! contact loop lists on its own only when no listing is younger than [`MAX_AGE_RESYNCS`] resync
//! periods (a new leader, or drift repair failing).
//!
//! What keeps it true between listings: every write of ours is noted in it (creates, email
//! changes, deletes); a create whose answer was lost (timeout, 5xx, dropped connection) marks the
//! address *doubted*, so its next attempt asks Resend (one GET) and adopts what Resend made rather
//! than creating it twice; and an address being created by one reconcile is *busy* for the others
//! (two Contacts may share it). What it cannot see, a contact made in the dashboard since the last
//! listing, is met by the client's own already-exists handling, and drift repair corrects any
//! membership that rode on such a create.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::providers::resend::types::RemoteContact;
use crate::providers::resend::{ResendClient, ResendError};

/// A listing older than this many `--provider-resync` periods is listed again before use. Drift
/// repair refreshes it every period; two leave room for a repair pass's own duration.
pub const MAX_AGE_RESYNCS: u32 = 2;

/// What is known of one Resend contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    /// Resend's id.
    pub id: String,
    /// Given name at Resend.
    pub first_name: Option<String>,
    /// Family name at Resend.
    pub last_name: Option<String>,
    /// When we learnt it: a listing started earlier does not overwrite it.
    noted: Instant,
}

impl Known {
    /// What a write of ours (a create, a patch) left at Resend.
    pub fn written(id: String, first_name: Option<String>, last_name: Option<String>) -> Self {
        Self {
            id,
            first_name,
            last_name,
            noted: Instant::now(),
        }
    }
}

/// What the directory says of an address.
pub enum Found<'a> {
    /// Resend has it: adopt it.
    Present(Known),
    /// Resend had none when listed and nothing since says otherwise: create it.
    Absent(Claim<'a>),
    /// A create of it may have happened with its answer lost: ask Resend before creating.
    Doubted(Claim<'a>),
    /// Another reconcile is creating it now: come back when it is done.
    Busy,
}

#[derive(Default)]
struct State {
    listed_at: Option<Instant>,
    /// By lowercase email.
    by_email: HashMap<String, Known>,
    /// Lowercase email by id, to follow email changes and deletions made by id.
    email_of: HashMap<String, String>,
    /// Lowercase emails whose create's outcome is unknown, since when.
    doubted: HashMap<String, Instant>,
    /// Lowercase emails a reconcile holds a [`Claim`] on.
    creating: std::collections::HashSet<String>,
}

impl State {
    fn insert(&mut self, email: String, known: Known) {
        if let Some(old) = self.by_email.get(&email)
            && old.id != known.id
        {
            self.email_of.remove(&old.id);
        }
        if let Some(previous) = self.email_of.insert(known.id.clone(), email.clone())
            && previous != email
        {
            self.by_email.remove(&previous);
        }
        self.doubted.remove(&email);
        self.by_email.insert(email, known);
    }
}

/// The account's contacts by email, as last listed and since written.
#[derive(Default)]
pub struct Directory {
    state: Mutex<State>,
    /// Held while listing, so concurrent reconciles share one listing.
    listing: tokio::sync::Mutex<()>,
}

impl Directory {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, max_age: Duration) -> bool {
        self.lock()
            .listed_at
            .is_some_and(|at| at.elapsed() < max_age)
    }

    /// What Resend holds for `email`, listing first when no listing is younger than `max_age`.
    /// An [`Found::Absent`] or [`Found::Doubted`] answer claims the address until its claim is
    /// dropped: meanwhile others are told [`Found::Busy`].
    pub async fn find(
        &self,
        client: &ResendClient,
        email: &str,
        max_age: Duration,
    ) -> Result<Found<'_>, ResendError> {
        if !self.fresh(max_age) {
            let _one = self.listing.lock().await;
            if !self.fresh(max_age) {
                let started = Instant::now();
                let listed = client.list_contacts(None).await?;
                self.replace(listed, started);
            }
        }
        let email = email.to_lowercase();
        let mut state = self.lock();
        if state.creating.contains(&email) {
            return Ok(Found::Busy);
        }
        if let Some(known) = state.by_email.get(&email) {
            return Ok(Found::Present(known.clone()));
        }
        let doubted = state.doubted.contains_key(&email);
        state.creating.insert(email.clone());
        let claim = Claim {
            directory: self,
            email,
        };
        Ok(if doubted {
            Found::Doubted(claim)
        } else {
            Found::Absent(claim)
        })
    }

    /// Replaces the snapshot with a listing that started at `started`; what was noted since
    /// then (our own creates and doubts) is kept, since the listing may not show it.
    pub fn replace(&self, listed: Vec<RemoteContact>, started: Instant) {
        let mut state = self.lock();
        let kept: Vec<(String, Known)> = state
            .by_email
            .drain()
            .filter(|(_, k)| k.noted > started)
            .collect();
        state.email_of.clear();
        state.doubted.retain(|_, at| *at > started);
        for c in listed {
            let known = Known {
                id: c.id,
                first_name: c.first_name,
                last_name: c.last_name,
                noted: started,
            };
            state.insert(c.email.to_lowercase(), known);
        }
        for (email, known) in kept {
            state.insert(email, known);
        }
        state.listed_at = Some(started);
    }

    /// Notes what a write of ours left at Resend for `email` (an email change moves the entry).
    pub fn note(&self, email: &str, known: Known) {
        self.lock().insert(email.to_lowercase(), known);
    }

    /// Forgets the contact `id` (deleted, or found gone).
    pub fn forget_id(&self, id: &str) {
        let mut state = self.lock();
        if let Some(email) = state.email_of.remove(id) {
            state.by_email.remove(&email);
        }
    }

    /// Forgets `email`'s contact, whatever its id.
    pub fn forget_email(&self, email: &str) {
        let mut state = self.lock();
        if let Some(known) = state.by_email.remove(&email.to_lowercase()) {
            state.email_of.remove(&known.id);
        }
    }

    /// How many contacts it knows (for tests and logs).
    pub fn len(&self) -> usize {
        self.lock().by_email.len()
    }

    /// Whether it knows none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The right to create one address; released when dropped.
pub struct Claim<'a> {
    directory: &'a Directory,
    email: String,
}

impl Claim<'_> {
    /// The create succeeded (or Resend showed the contact): noted, the doubt lifted.
    pub fn found(&self, known: Known) {
        self.directory.lock().insert(self.email.clone(), known);
    }

    /// The create failed in a way that may have happened at Resend all the same.
    pub fn doubt(&self) {
        let mut state = self.directory.lock();
        state.doubted.insert(self.email.clone(), Instant::now());
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.directory.lock().creating.remove(&self.email);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(id: &str, email: &str) -> RemoteContact {
        RemoteContact {
            id: id.into(),
            email: email.into(),
            first_name: None,
            last_name: None,
            unsubscribed: false,
        }
    }

    #[test]
    fn a_listing_keeps_what_was_written_after_it_started() {
        let directory = Directory::default();
        let started = Instant::now();
        directory.note("New@Example.com", Known::written("n1".into(), None, None));
        directory.replace(vec![remote("a1", "a@example.com")], started);
        assert_eq!(directory.len(), 2);
        directory.forget_id("n1");
        assert_eq!(directory.len(), 1);
        // An email change by id moves the entry.
        directory.note("b@example.com", Known::written("a1".into(), None, None));
        directory.forget_email("a@example.com");
        assert_eq!(directory.len(), 1);
        directory.forget_email("B@example.com");
        assert!(directory.is_empty());
    }
}
