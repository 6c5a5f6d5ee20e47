//! The consent invariant, by property: over random interleavings of contacts signing up,
//! enrollment passes, opt-outs (removals), memberships deleted by hand, leader restarts and a
//! view (and webhook) lagging behind the API server, and a leader dying between any two writes
//! of an enrollment pass or of the cleanup (where a membership's finalizer records its contact),
//! once everything has settled no membership stands beside a removal of its (contact, group),
//! none is left half-deleted, and no policy enrolled a contact twice.
//!
//! The real enrollment, removal and membership reconciles run against a stateful API server
//! ([`support::sim_api`]) whose membership webhook decides from the same lagging view.
//! `PROPTEST_CASES` sets the number of cases (default 48 here; run more by hand).
mod support;

use std::sync::{Arc, Mutex};

use milo_webhook::api::ContactGroupEnrollmentPolicy;
use milo_webhook::controllers::enrollment::{self, EnrollmentContext};
use milo_webhook::controllers::{Context, ControllerSettings, membership, removal};
use milo_webhook::metrics::Metrics;
use milo_webhook::view::{ClusterView, ViewKind};
use proptest::prelude::*;
use serde_json::json;
use support::sim_api::{self, SimState};

const CONTACTS: u8 = 5;

#[derive(Clone, Debug)]
enum Op {
    /// A person signs up: their Contact is created.
    CreateContact(u8),
    /// The person opts out of the group: a removal is created.
    OptOut(u8),
    /// An administrator deletes the person's memberships.
    DeleteMembership(u8),
    /// An enrollment pass of the policy.
    Enroll,
    /// The removal and membership controllers reconcile everything the view shows.
    Cleanup,
    /// The view (and the webhook's view) catches up with the API server.
    SyncView,
    /// The leader changes: in-process memory is lost, the new leader lists afresh.
    Restart,
    /// An enrollment pass whose leader dies after this many writes (membership creates, record
    /// annotations, status and Events alike), then a new leader.
    CrashDuringEnroll(usize),
    /// A cleanup whose leader dies after this many writes (a record written as a membership
    /// goes, the finalizer released, memberships deleted beside removals), then a new leader.
    CrashDuringCleanup(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..CONTACTS).prop_map(Op::CreateContact),
        2 => (0..CONTACTS).prop_map(Op::OptOut),
        1 => (0..CONTACTS).prop_map(Op::DeleteMembership),
        3 => Just(Op::Enroll),
        2 => Just(Op::Cleanup),
        2 => Just(Op::SyncView),
        1 => Just(Op::Restart),
        2 => (0..6usize).prop_map(Op::CrashDuringEnroll),
        1 => (0..4usize).prop_map(Op::CrashDuringCleanup),
    ]
}

fn policy() -> ContactGroupEnrollmentPolicy {
    serde_json::from_value(json!({
        "apiVersion": "notification.miloapis.com/v1alpha1",
        "kind": "ContactGroupEnrollmentPolicy",
        "metadata": {"name": "newsletter", "uid": "uid-newsletter", "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"contactGroupRef": {"name": "news", "namespace": "groups"},
            "trigger": {"type": "ContactCreated"}, "backfill": true}
    }))
    .unwrap()
}

fn contact_key(i: u8) -> (String, String) {
    ("people".into(), format!("c{i}"))
}

struct World {
    state: Arc<Mutex<SimState>>,
    view: Arc<ClusterView>,
    shared: Arc<Context>,
    enrollment: Arc<EnrollmentContext>,
}

impl World {
    fn new() -> Self {
        let mut state = SimState::default();
        state.groups.insert(
            ("groups".into(), "news".into()),
            json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "ContactGroup",
                "metadata": {"name": "news", "namespace": "groups"},
                "spec": {"displayName": "News", "visibility": "public"}}),
        );
        let view = Arc::new(ClusterView::offline(state.store()));
        let state = Arc::new(Mutex::new(state));
        let client = sim_api::client(state.clone(), view.clone());
        let settings = ControllerSettings {
            enrollment_concurrency: 4,
            ..ControllerSettings::default()
        };
        let shared = Arc::new(Context::new(
            client,
            view.clone(),
            Arc::new(Metrics::default()),
            settings,
            None,
        ));
        let enrollment = Arc::new(EnrollmentContext::new(shared.clone()));
        Self {
            state,
            view,
            shared,
            enrollment,
        }
    }

    fn sync_view(&self) {
        let store = self.state.lock().unwrap().store();
        *self.view.write() = store;
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::CreateContact(i) => {
                let (ns, name) = contact_key(i);
                let object = json!({"apiVersion": "notification.miloapis.com/v1alpha1",
                    "kind": "Contact", "metadata": {"name": name, "namespace": ns,
                        "creationTimestamp": "2026-06-01T00:00:00Z"},
                    "spec": {"email": format!("{name}@example.com"),
                        "subject": {"apiGroup": "iam.miloapis.com", "kind": "User", "name": name}}});
                let mut state = self.state.lock().unwrap();
                state.contacts.entry((ns, name)).or_insert(object);
            }
            Op::OptOut(i) => {
                let (ns, name) = contact_key(i);
                let mut state = self.state.lock().unwrap();
                if state.contacts.contains_key(&(ns.clone(), name.clone())) {
                    let removal = format!("{name}-out");
                    let object = json!({"apiVersion": "notification.miloapis.com/v1alpha1",
                        "kind": "ContactGroupMembershipRemoval",
                        "metadata": {"name": removal, "namespace": ns, "generation": 1},
                        "spec": {"contactRef": {"name": name, "namespace": ns},
                            "contactGroupRef": {"name": "news", "namespace": "groups"}}});
                    state.removals.entry((ns, removal)).or_insert(object);
                }
            }
            Op::DeleteMembership(i) => {
                let (_, name) = contact_key(i);
                let mut state = self.state.lock().unwrap();
                let theirs: Vec<_> = state
                    .memberships
                    .iter()
                    .filter(|(_, m)| m["spec"]["contactRef"]["name"] == json!(name))
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in theirs {
                    state.delete("contactgroupmemberships", &key);
                }
            }
            Op::Enroll => {
                let _ = enrollment::reconcile(Arc::new(policy()), self.enrollment.clone()).await;
            }
            Op::Cleanup => self.cleanup().await,
            Op::SyncView => self.sync_view(),
            Op::Restart => self.restart(),
            Op::CrashDuringEnroll(writes) => {
                self.state.lock().unwrap().writes_left = Some(writes);
                let _ = enrollment::reconcile(Arc::new(policy()), self.enrollment.clone()).await;
                self.state.lock().unwrap().writes_left = None;
                self.restart();
            }
            Op::CrashDuringCleanup(writes) => {
                self.state.lock().unwrap().writes_left = Some(writes);
                self.cleanup().await;
                self.state.lock().unwrap().writes_left = None;
                self.restart();
            }
        }
    }

    /// A new leader: every in-process memory is lost, and it lists afresh.
    fn restart(&mut self) {
        self.sync_view();
        let client = sim_api::client(self.state.clone(), self.view.clone());
        self.shared = Arc::new(Context::new(
            client,
            self.view.clone(),
            Arc::new(Metrics::default()),
            self.shared.settings.clone(),
            None,
        ));
        self.enrollment = Arc::new(EnrollmentContext::new(self.shared.clone()));
    }

    async fn cleanup(&self) {
        let (removals, memberships) = {
            let store = self.view.read();
            let removals: Vec<_> = store
                .names(ViewKind::Removal)
                .into_iter()
                .filter_map(|(ns, n)| store.removal_object(&ns, &n))
                .collect();
            let memberships: Vec<_> = store
                .names(ViewKind::Membership)
                .into_iter()
                .filter_map(|(ns, n)| store.membership_object(&ns, &n))
                .collect();
            (removals, memberships)
        };
        for r in removals {
            let _ = removal::reconcile(Arc::new(r), self.shared.clone()).await;
        }
        for m in memberships {
            let _ = membership::reconcile(Arc::new(m), self.shared.clone()).await;
        }
    }

    /// Lets everything settle: the view catches up and every controller runs until quiet.
    async fn settle(&mut self) {
        for _ in 0..3 {
            self.sync_view();
            self.apply(&Op::Enroll).await;
            self.sync_view();
            self.cleanup().await;
        }
        self.sync_view();
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn no_membership_beside_a_removal_and_no_second_enrollment(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (beside, twice, stuck) = runtime.block_on(async {
            let mut world = World::new();
            for op in &ops {
                world.apply(op).await;
            }
            world.settle().await;
            let state = world.state.lock().unwrap();
            let twice: Vec<_> = state
                .created_by_policy
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|((policy, contact), n)| format!("{policy} enrolled {contact} {n} times"))
                .collect();
            let stuck: Vec<_> = state
                .memberships
                .iter()
                .filter(|(_, m)| !m["metadata"]["deletionTimestamp"].is_null())
                .map(|((ns, name), _)| format!("{ns}/{name}"))
                .collect();
            (state.memberships_beside_removals(), twice, stuck)
        });
        prop_assert!(beside.is_empty(), "memberships beside a removal at rest: {:?}", beside);
        prop_assert!(twice.is_empty(), "enrolled twice: {:?}", twice);
        prop_assert!(stuck.is_empty(), "memberships left half-deleted: {:?}", stuck);
    }
}
