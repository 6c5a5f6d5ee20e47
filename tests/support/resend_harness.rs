//! The provider-sync harness shared by the sync tests: the sync loops on the stateful API server
//! (`live_api`, which checks RBAC and feeds the view like a watch) against the stateful fake
//! Resend and, when attached, the stateful fake Loops, with the objects they sync.

use std::sync::Arc;
use std::time::Duration;

use milo_webhook::api::common::ProviderName;
use milo_webhook::api::common::sync::{CONTACT_READY, GROUP_READY, MEMBERSHIP_READY};
use milo_webhook::controllers::ControllerSettings;
use milo_webhook::controllers::loops::{self, LoopsSync};
use milo_webhook::controllers::resend::{self, ResendSync, SyncMetrics};
use milo_webhook::providers::metrics::ProviderMetrics;
use milo_webhook::providers::resend::{ResendClient, ResendConfig};
use serde_json::{Value, json};

use super::fake_loops::FakeLoops;
pub use super::fake_resend::calls;
use super::fake_resend::{self, FakeConfig, FakeResend};
use super::live_api::LiveApi;

pub const GROUPS: &str = "contactgroups";
pub const CONTACTS: &str = "contacts";
pub const MEMBERSHIPS: &str = "contactgroupmemberships";
pub const REMOVALS: &str = "contactgroupmembershipremovals";

/// The sync loops, their API server and their Resend (and Loops, when attached).
pub struct Harness {
    pub live: LiveApi,
    pub fake: FakeResend,
    pub sync: Arc<ResendSync>,
    /// The providers whose loops run, in `Ready`'s order.
    pub configured: Vec<ProviderName>,
    /// The fake Loops and its sync, once attached.
    pub loops: Option<(FakeLoops, Arc<LoopsSync>)>,
    loops_rate: f64,
    resend_rate: f64,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Resyncs far apart: what a test sees is the sync's reaction to changes alone.
pub fn settings() -> ControllerSettings {
    ControllerSettings {
        resync: Duration::from_secs(3600),
        provider_resync: Duration::from_secs(3600),
        ..ControllerSettings::default()
    }
}

impl Harness {
    /// An empty cluster and an empty Resend account, the client at `rate` requests/s.
    pub async fn new(config: FakeConfig, rate: f64) -> Self {
        let live = LiveApi::new();
        let fake = fake_resend::start(config).await;
        let configured = vec![ProviderName::Resend];
        let sync = Self::sync(&live, &fake, rate, configured.clone());
        Self {
            live,
            fake,
            sync,
            configured,
            loops: None,
            loops_rate: 0.0,
            resend_rate: rate,
            task: None,
        }
    }

    /// Attaches `fake` Loops at `rate` requests/s, beside Resend or (`with_resend` false)
    /// alone; call before [`Self::start`].
    pub fn attach_loops(&mut self, fake: FakeLoops, rate: f64, with_resend: bool) {
        self.configured = if with_resend {
            vec![ProviderName::Resend, ProviderName::Loops]
        } else {
            vec![ProviderName::Loops]
        };
        self.sync = Self::sync(
            &self.live,
            &self.fake,
            self.resend_rate,
            self.configured.clone(),
        );
        let sync = Self::loops_sync(&self.live, &fake, rate, self.configured.clone());
        self.loops = Some((fake, sync));
        self.loops_rate = rate;
    }

    fn loops_sync(
        live: &LiveApi,
        fake: &FakeLoops,
        rate: f64,
        configured: Vec<ProviderName>,
    ) -> Arc<LoopsSync> {
        let ctx = Arc::new(live.context(settings()));
        let client = fake.client(rate);
        Arc::new(LoopsSync::new(
            ctx,
            client,
            SyncMetrics::default(),
            configured,
        ))
    }

    /// The fake Loops (panics when none is attached).
    pub fn fake_loops(&self) -> &FakeLoops {
        &self.loops.as_ref().expect("Loops attached").0
    }

    fn sync(
        live: &LiveApi,
        fake: &FakeResend,
        rate: f64,
        configured: Vec<ProviderName>,
    ) -> Arc<ResendSync> {
        let mut config = ResendConfig::new("re_test_key");
        config.base_url = fake.base_url.clone();
        config.rate_limit = rate;
        config.timeout = Duration::from_secs(2);
        let client = ResendClient::new(config, ProviderMetrics::unregistered()).unwrap();
        let ctx = live.context(settings());
        Arc::new(ResendSync::among(
            Arc::new(ctx),
            client,
            SyncMetrics::default(),
            configured,
        ))
    }

    /// Starts the loops of every configured provider.
    pub fn start(&mut self) {
        let resend = self
            .configured
            .contains(&ProviderName::Resend)
            .then(|| resend::run(self.sync.clone()));
        let loops = self
            .loops
            .as_ref()
            .map(|(_, sync)| loops::run(sync.clone()));
        self.task = Some(tokio::spawn(async move {
            let resend = async {
                if let Some(run) = resend {
                    run.await
                }
            };
            let loops = async {
                if let Some(run) = loops {
                    run.await
                }
            };
            tokio::join!(resend, loops);
        }));
    }

    /// A leader crash: the loops stop mid-flight and a new process starts with no memory.
    pub async fn restart(&mut self, rate: f64) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.resend_rate = rate;
        self.sync = Self::sync(&self.live, &self.fake, rate, self.configured.clone());
        if let Some((fake, sync)) = self.loops.as_mut() {
            *sync = Self::loops_sync(&self.live, fake, self.loops_rate, self.configured.clone());
        }
        self.start();
    }

    /// How many `plural` objects have `condition` True for their generation.
    pub fn ready(&self, plural: &str, condition: &str) -> usize {
        self.live
            .all(plural)
            .iter()
            .filter(|o| {
                o["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["type"] == condition
                            && c["status"] == "True"
                            && c["observedGeneration"] == o["metadata"]["generation"]
                    })
                })
            })
            .count()
    }

    /// Waits (up to 10 s) for `done`, else fails listing every Resend call.
    pub async fn until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        for _ in 0..400 {
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "timed out waiting for {what}; requests: {:?}",
            calls(&self.fake.requests())
        );
    }

    /// Waits for every object to be mirrored.
    pub async fn all_synced(&self) {
        let (c, g, m) = (
            self.live.all(CONTACTS).len(),
            self.live.all(GROUPS).len(),
            self.live.all(MEMBERSHIPS).len(),
        );
        self.until("everything synced", |h| {
            h.ready(CONTACTS, CONTACT_READY) == c
                && h.ready(GROUPS, GROUP_READY) == g
                && h.ready(MEMBERSHIPS, MEMBERSHIP_READY) == m
        })
        .await;
    }

    /// Fails if the API server refused any of the sync's requests.
    pub fn no_rbac_denials(&self) {
        let denied = self.live.state.lock().unwrap().denied.clone();
        assert!(denied.is_empty(), "RBAC refused: {denied:?}");
    }
}

/// The Contact `people/name`.
pub fn contact(name: &str, email: &str) -> Value {
    json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "Contact",
        "metadata": {"namespace": "people", "name": name},
        "spec": {"email": email, "givenName": name}})
}

/// The ContactGroup `groups/name`.
pub fn group(name: &str, visibility: &str) -> Value {
    json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "ContactGroup",
        "metadata": {"namespace": "groups", "name": name},
        "spec": {"displayName": name, "visibility": visibility}})
}

/// The membership `people/name` of `people/contact` in `groups/group`.
pub fn membership(name: &str, contact: &str, group: &str) -> Value {
    json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "ContactGroupMembership",
        "metadata": {"namespace": "people", "name": name},
        "spec": {"contactRef": {"namespace": "people", "name": contact},
                 "contactGroupRef": {"namespace": "groups", "name": group}}})
}

/// Three contacts, a public and a private group, four memberships.
pub fn populate(live: &LiveApi) {
    let mut ada = contact("ada", "ada@example.com");
    // Another provider's entry and another writer's condition, which the sync must keep.
    ada["status"] = json!({"providers": [{"name": "Loops", "id": "loops-1"}],
        "conditions": [{"type": "LoopsContactReady", "status": "True", "reason": "Synced",
            "message": "", "lastTransitionTime": "2026-11-27T12:00:00Z"}]});
    live.create(CONTACTS, ada);
    live.create(CONTACTS, contact("bob", "bob@example.com"));
    live.create(CONTACTS, contact("cy", "cy@example.com"));
    live.create(GROUPS, group("news", "public"));
    live.create(GROUPS, group("staff", "private"));
    live.create(MEMBERSHIPS, membership("ada-news", "ada", "news"));
    live.create(MEMBERSHIPS, membership("bob-news", "bob", "news"));
    live.create(MEMBERSHIPS, membership("ada-staff", "ada", "staff"));
    live.create(MEMBERSHIPS, membership("cy-staff", "cy", "staff"));
}

/// The segment id the group `groups/name` records.
pub fn segment_of(h: &Harness, name: &str) -> String {
    h.live.get(GROUPS, "groups", name).unwrap()["status"]["providers"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `v`, sorted.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
