//! The envtest tier: the milo-webhook binary against a real kube-apiserver (and etcd, and the
//! controller manager where garbage collection matters), registered as the cluster's admission
//! webhooks and running its controllers under the deployment's RBAC. What unit and fake-API tests
//! cannot show: how the API server itself answers (schema pruning and validation of status
//! writes, CEL rules, webhook denials as kubectl gets them, patches as stored, ownerReferences
//! garbage-collected). Each test gets its own cluster; each scenario runs with this repository's
//! CRDs and, where it should hold there too, with Milo's.
//!
//! Needs etcd (`apt-get install -y etcd-server`) and kube-apiserver/kube-controller-manager
//! (`../shared/envtest/install target/envtest`); run with
//! `cargo test --features envtest --test envtest`.

#[path = "../support"]
mod support {
    #![allow(dead_code)]
    pub mod fake_loops;
    pub mod fake_resend;
}

mod harness;
mod scenarios;

use harness::CrdSet;

/// One test per CRD set a scenario runs with: `<scenario>::ours`, `<scenario>::milo`.
macro_rules! scenario {
    ($name:ident, $run:path, $($test:ident: $set:ident),+) => {
        mod $name {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    $run(CrdSet::$set).await;
                }
            )+
        }
    };
}

scenario!(admission_denials, scenarios::admission::denials, ours: Ours, milo: Milo);
scenario!(webhook_calls, scenarios::admission::webhook_calls, ours: Ours, milo: Milo);
scenario!(contact_owner_reference, scenarios::admission::owner_reference, ours: Ours, milo: Milo);
scenario!(enrollment, scenarios::controllers::enrollment, ours: Ours, milo: Milo);
scenario!(removal_deletes_membership, scenarios::controllers::removal_deletes_membership, ours: Ours, milo: Milo);
scenario!(signup_contacts, scenarios::controllers::signup_contacts, ours: Ours, milo: Milo);
scenario!(resend_sync, scenarios::resend::sync, ours: Ours, milo: Milo);
scenario!(provider_opt_out, scenarios::operations::provider_opt_out, ours: Ours, milo: Milo);
scenario!(resend_topic_opt_out, scenarios::resend_topics::topic_opt_out, ours: Ours, milo: Milo);
scenario!(email_once_across_restart, scenarios::operations::email_once_across_restart, ours: Ours, milo: Milo);
scenario!(lease_handover, scenarios::operations::lease_handover, ours: Ours);
scenario!(broadcast_and_one_click, scenarios::broadcast::broadcast_and_one_click, ours: Ours, milo: Milo);
scenario!(invitation_lifecycle, scenarios::invitation::lifecycle, ours: Ours, milo: Milo);
scenario!(signup_enrollment, scenarios::controllers::signup_enrollment, ours: Ours, milo: Milo);
scenario!(namespace_deletion, scenarios::resend::namespace_deletion, ours: Ours, milo: Milo);
scenario!(loops_beside_resend, scenarios::loops::beside_resend, ours: Ours, milo: Milo);
scenario!(loops_list_events, scenarios::loops_events::list_events, ours: Ours, milo: Milo);
scenario!(preference_page_in_a_browser, scenarios::preferences::browser, ours: Ours, milo: Milo);
