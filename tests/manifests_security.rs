//! What the deploy manifests let each identity and each network peer do, read from the YAML the
//! kustomize base applies: no subject may bind or escalate a role it is not named for, only the
//! invitation controller's pods hold the account that grants access, and every port of every
//! Deployment is open only to the peers its NetworkPolicy names.

use std::collections::BTreeSet;
use std::path::Path;

use milo_webhook::controllers::ControllerKind;
use serde_json::Value;

fn deploy_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/deploy")
}

/// Every document of every file the base's kustomization lists.
fn documents() -> Vec<Value> {
    let dir = deploy_dir();
    let kustomization: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(dir.join("kustomization.yaml")).expect("kustomization.yaml"),
    )
    .expect("kustomization parses");
    kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .flat_map(|file| {
            let file = file.as_str().expect("a file name");
            let text = std::fs::read_to_string(dir.join(file)).expect("a listed file");
            serde_saphyr::from_multiple::<Value>(&text).expect("the file parses")
        })
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn no_subject_may_bind_or_escalate_without_resource_names() {
    let docs = documents();
    let roles: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .collect();
    assert!(roles.len() >= 4, "the base's roles were read");
    for role in roles {
        for rule in role["rules"].as_array().into_iter().flatten() {
            let verbs = strings(&rule["verbs"]);
            let powerful = verbs
                .iter()
                .any(|v| matches!(*v, "bind" | "escalate" | "impersonate" | "*"));
            let named = !strings(&rule["resourceNames"]).is_empty();
            assert!(
                !powerful || named,
                "{} {} grants {verbs:?} without resourceNames",
                role["kind"],
                role["metadata"]["name"]
            );
            assert!(
                !strings(&rule["resources"]).contains(&"*"),
                "{} grants every resource",
                role["metadata"]["name"]
            );
        }
    }
}

/// The account of each Deployment, and the controllers it runs.
fn deployments(docs: &[Value]) -> Vec<(String, String, Vec<String>)> {
    of_kind(docs, "Deployment")
        .into_iter()
        .map(|d| {
            let spec = &d["spec"]["template"]["spec"];
            let account = spec["serviceAccountName"].as_str().unwrap_or("default");
            let args = strings(&spec["containers"][0]["args"]);
            let controllers = args
                .iter()
                .find_map(|a| a.strip_prefix("--controllers="))
                .map(|list| list.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            (
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                account.to_owned(),
                controllers,
            )
        })
        .collect()
}

#[test]
fn only_the_invitation_deployment_runs_under_the_account_that_grants_access() {
    let docs = documents();
    let found = deployments(&docs);
    let names: Vec<&str> = found.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["milo-webhook", "milo-webhook-invitations"]);
    let (_, main_account, main) = &found[0];
    let (_, invitation_account, invitations) = &found[1];
    assert_eq!(main_account, "milo-webhook");
    assert_eq!(invitation_account, "milo-webhook-invitations");
    assert_eq!(invitations, &["invitation"]);
    assert!(!main.iter().any(|c| c == "invitation"));
    // Between them, every controller runs, each in one Deployment.
    let all: BTreeSet<String> = ControllerKind::ALL.iter().map(|k| k.to_string()).collect();
    let both: BTreeSet<String> = main.iter().chain(invitations).cloned().collect();
    assert_eq!(both, all);
    assert_eq!(main.len() + invitations.len(), all.len());
    // The Service the API server calls selects only the milo-webhook pods.
    let service = of_kind(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "milo-webhook")
        .expect("the webhook Service");
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/name"],
        "milo-webhook"
    );
}

/// The sources a NetworkPolicy admits to `port` of the pods named `app`.
fn admitted(docs: &[Value], app: &str, port: u64) -> Vec<Value> {
    let mut sources = Vec::new();
    for policy in of_kind(docs, "NetworkPolicy") {
        let spec = &policy["spec"];
        if spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] != app {
            continue;
        }
        assert!(strings(&spec["policyTypes"]).contains(&"Ingress"));
        for rule in spec["ingress"].as_array().into_iter().flatten() {
            let ports = rule["ports"]
                .as_array()
                .expect("every rule names its ports");
            let from = rule["from"]
                .as_array()
                .expect("every rule names its sources");
            assert!(!from.is_empty(), "a rule with no source admits everyone");
            if ports.iter().any(|p| p["port"] == port) {
                sources.extend(from.iter().cloned());
            }
        }
    }
    sources
}

#[test]
fn every_port_is_open_only_to_the_peers_its_network_policy_names() {
    let docs = documents();
    for deployment in of_kind(&docs, "Deployment") {
        let app = deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
            .as_str()
            .expect("the pods' name label");
        let ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .expect("container ports");
        for port in ports {
            let number = port["containerPort"].as_u64().expect("a port number");
            let sources = admitted(&docs, app, number);
            assert!(
                !sources.is_empty(),
                "{app}:{number} is admitted from nowhere"
            );
            for source in &sources {
                let namespace =
                    &source["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"];
                match number {
                    // The API server's addresses are the cluster's: an ipBlock to narrow.
                    9443 => assert!(source["ipBlock"]["cidr"].is_string(), "{source}"),
                    // Metrics and probes: the monitoring namespace only.
                    8080 => assert_eq!(namespace, "monitoring", "{app}:8080 from {source}"),
                    other => panic!("{app}:{other} has no rule in this test"),
                }
            }
        }
    }
    // The provider events port (added by manifests/provider-events) is open to the ingress
    // controller's namespace only.
    let events = admitted(&docs, "milo-webhook", 8081);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "ingress-nginx"
    );
    // The invitation pods admit nothing but the metrics scrape.
    assert!(admitted(&docs, "milo-webhook-invitations", 9443).is_empty());
}
