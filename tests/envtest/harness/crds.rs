//! CRDs and RBAC installed from files, the way an operator would apply them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::objects::{self, eventually};

/// Which CustomResourceDefinitions the cluster gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrdSet {
    /// This repository's `manifests/crds/*.yaml` (generated from `src/api`).
    Ours,
    /// Milo's own CRDs (`../shared/reference/milo-crds/*.yaml`): the server must also work on a
    /// cluster set up by Milo, whose schemas lack some of our status fields.
    Milo,
}

impl CrdSet {
    /// The directories the CRD files are read from: ours are `manifests/crds` and its
    /// `standalone` component (the User CRD, which Milo's IAM owns where Milo runs).
    pub fn dirs(self) -> Vec<PathBuf> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        match self {
            Self::Ours => vec![
                repo.join("manifests/crds"),
                repo.join("manifests/crds/standalone"),
            ],
            Self::Milo => vec![
                repo.parent()
                    .expect("the repository has a parent directory")
                    .join("shared/reference/milo-crds"),
            ],
        }
    }
}

/// Every YAML document of the `.yaml` files in `dir` (sorted by name), as JSON.
pub fn documents(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| file_documents(f)).collect()
}

/// Every non-empty YAML document of one file, as JSON.
pub fn file_documents(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", file.display()));
    docs.into_iter().filter(|d| d.is_object()).collect()
}

/// Installs the CRDs of `set` and waits until each is Established.
pub async fn install(client: &kube::Client, set: CrdSet) {
    let crds: Vec<Value> = set
        .dirs()
        .iter()
        .flat_map(|dir| documents(dir))
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    let names: Vec<&str> = crds
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        crds.len(),
        10,
        "{set:?}: expected the 10 CRDs of the kinds served, found {names:?} in {:?}",
        set.dirs()
    );
    for crd in &crds {
        objects::create(client, crd).await;
    }
    for crd in &crds {
        let name = crd["metadata"]["name"].as_str().expect("a CRD name");
        eventually(
            &format!("CRD {name} Established"),
            Duration::from_secs(30),
            || async {
                let crd = objects::get(client, "CustomResourceDefinition", None, name).await;
                let established = crd.as_ref().is_some_and(|c| {
                    c["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Established" && c["status"] == "True")
                    })
                });
                if established {
                    Ok(())
                } else {
                    Err(format!("{crd:?}"))
                }
            },
        )
        .await;
    }
}

/// Applies `manifests/deploy/rbac.yaml`, so the server runs with exactly the permissions it is
/// deployed with.
pub async fn install_rbac(client: &kube::Client) {
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/deploy/rbac.yaml");
    for doc in file_documents(&rbac) {
        objects::create(client, &doc).await;
    }
}
