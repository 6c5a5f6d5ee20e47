//! CustomResourceDefinitions generated from the typed API.
//!
//! Each is a superset of Milo's CRD for the same kind (`tests/crds_milo.rs` checks it against
//! Milo's own): every field, validation, default, printer column and selectable field of Milo's
//! is in ours unchanged, so applying ours over Milo's never prunes what Milo's controllers write
//! or lets through what Milo's API server would reject.

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;

use crate::api::{
    Contact, ContactGroup, ContactGroupEnrollmentPolicy, ContactGroupMembership,
    ContactGroupMembershipRemoval, Email, EmailBroadcast, EmailTemplate, IAM_GROUP, User,
    UserInvitation,
};

/// Every CRD the server's kinds need, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        Contact::crd(),
        ContactGroup::crd(),
        ContactGroupMembership::crd(),
        ContactGroupMembershipRemoval::crd(),
        ContactGroupEnrollmentPolicy::crd(),
        Email::crd(),
        EmailTemplate::crd(),
        EmailBroadcast::crd(),
        User::crd(),
        UserInvitation::crd(),
    ]
    .into_iter()
    .map(complete)
    .collect()
}

/// Adds what kube's derive leaves out and controller-gen (Milo's CRDs) writes: `names.listKind`,
/// and `apiVersion`, `kind` and `metadata` in the root schema.
fn complete(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let names = &mut crd.spec.names;
    names.list_kind = Some(format!("{}List", names.kind));
    for version in &mut crd.spec.versions {
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let properties = root.properties.get_or_insert_with(Default::default);
        properties.insert(
            "apiVersion".into(),
            JSONSchemaProps {
                description: Some(API_VERSION_DESCRIPTION.into()),
                type_: Some("string".into()),
                ..Default::default()
            },
        );
        properties.insert(
            "kind".into(),
            JSONSchemaProps {
                description: Some(KIND_DESCRIPTION.into()),
                type_: Some("string".into()),
                ..Default::default()
            },
        );
        properties.insert(
            "metadata".into(),
            JSONSchemaProps {
                type_: Some("object".into()),
                ..Default::default()
            },
        );
    }
    crd
}

const API_VERSION_DESCRIPTION: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DESCRIPTION: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

/// Whether Milo's own controllers own the kind (write its status): the `User` CRD. In a Milo
/// installation Milo's CRD for it stays; ours is applied only in a cluster without Milo.
pub fn owned_by_milo(crd: &CustomResourceDefinition) -> bool {
    crd.spec.group == IAM_GROUP && crd.spec.names.kind == "User"
}

/// The folder under the output directory (a kustomize Component) holding the CRDs of
/// [`owned_by_milo`] kinds.
pub const STANDALONE_DIR: &str = "standalone";

/// One CRD as a YAML document (with its leading `---`), as checked in under `manifests/crds/`.
pub fn render(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    Ok(format!("---\n{}", to_yaml_document(crd)?))
}

/// A manifest as YAML the way kubectl and serde_yaml write it: every string on one line (no
/// folded or literal blocks), so generated files diff line by line.
pub fn to_yaml_document<T: serde::Serialize>(
    value: &T,
) -> Result<String, serde_saphyr::SerializeError> {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    serde_saphyr::to_string_with_options(value, options)
}

/// The file a CRD is checked in as: `<plural>.<group>.yaml`, the CRD's own name.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default())
}

/// Every file `milo-webhook crds --output-dir` writes (how `manifests/crds/` is made), by path
/// relative to that directory: one per CRD and two kustomizations. The top one lists the CRDs to
/// apply in a Milo installation; [`STANDALONE_DIR`] is a Component with the CRDs of the kinds
/// Milo owns, added only in a cluster without Milo.
pub fn files() -> Result<Vec<(PathBuf, String)>, serde_saphyr::SerializeError> {
    let mut files = Vec::new();
    let mut ours = String::from(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         # The CRDs of the kinds milo-webhook writes: in a Milo installation, apply only these.\n\
         # Without Milo, also apply the `standalone` Component (kinds Milo's own IAM owns).\n\
         resources:\n",
    );
    let mut standalone = String::from(
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n\
         # CRDs of kinds Milo's own IAM owns: apply only in a cluster without Milo, where\n\
         # Milo's CRDs for them are not installed.\n\
         resources:\n",
    );
    for crd in all() {
        let file = file_name(&crd);
        let (list, path) = if owned_by_milo(&crd) {
            (&mut standalone, PathBuf::from(STANDALONE_DIR).join(&file))
        } else {
            (&mut ours, PathBuf::from(&file))
        };
        list.push_str(&format!("  - {file}\n"));
        files.push((path, render(&crd)?));
    }
    files.push(("kustomization.yaml".into(), ours));
    files.push((
        PathBuf::from(STANDALONE_DIR).join("kustomization.yaml"),
        standalone,
    ));
    Ok(files)
}

/// The CRDs as one multi-document YAML stream, as `milo-webhook crds` prints it.
pub fn to_yaml() -> Result<String, serde_saphyr::SerializeError> {
    all().iter().map(render).collect()
}
