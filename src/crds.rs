//! CustomResourceDefinitions generated from the typed API.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{
    Contact, ContactGroup, ContactGroupEnrollmentPolicy, ContactGroupMembership,
    ContactGroupMembershipRemoval, Email, EmailTemplate, User, UserInvitation,
};

/// Every CRD the server's kinds need, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        Contact::crd(),
        ContactGroup::crd(),
        ContactGroupMembership::crd(),
        ContactGroupMembershipRemoval::crd(),
        ContactGroupEnrollmentPolicy::crd(),
        Email::crd(),
        EmailTemplate::crd(),
        crate::api::broadcast::crd(),
        User::crd(),
        UserInvitation::crd(),
    ]
}

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

/// The CRDs as one multi-document YAML stream, as `milo-webhook crds` prints it.
pub fn to_yaml() -> Result<String, serde_saphyr::SerializeError> {
    all().iter().map(render).collect()
}
