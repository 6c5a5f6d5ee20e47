//! Milo's own CRDs (`../shared/reference/milo-crds/`), for the tests that check how the server
//! meets a cluster set up the way Milo sets it up.

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Where Milo's CRDs are: `shared/reference/milo-crds` beside the repository.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/milo-crds")
}

/// Every CRD of Milo's, by file name order. Panics, naming the folder, when it is missing: it
/// is always there in CI, and a silent pass without it would prove nothing.
pub fn all() -> Vec<CustomResourceDefinition> {
    let dir = dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("Milo's CRDs are expected in {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no CRD files in {}", dir.display());
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            serde_saphyr::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not a CRD: {e}", path.display()))
        })
        .collect()
}

/// The CRDs as the server's check reads them from a cluster that installed Milo's: every one
/// of ours by name, found or not.
pub fn as_read() -> Vec<(String, Option<CustomResourceDefinition>)> {
    let milo = all();
    milo_webhook::crds::all()
        .iter()
        .map(|ours| {
            let name = ours.metadata.name.clone().unwrap_or_default();
            let theirs = milo
                .iter()
                .find(|m| m.metadata.name.as_deref() == Some(name.as_str()))
                .cloned();
            (name, theirs)
        })
        .collect()
}
