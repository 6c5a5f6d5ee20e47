//! Offline state in every format `kubectl get` and people write: JSON documents and streams,
//! `kind: List` in JSON and YAML (items before or after `kind`), multi-document YAML. The same
//! objects load the same way, and list items are applied while the list is parsed.

use std::path::{Path, PathBuf};

use milo_webhook::view::Store;
use milo_webhook::view::manifests::{LoadError, LoadReport, load_paths, read_objects};
use serde_json::{Value, json};

const N: usize = 50;

fn contact(i: usize) -> Value {
    json!({
        "apiVersion": "notification.miloapis.com/v1alpha1",
        "kind": "Contact",
        "metadata": {"name": format!("contact-{i}"), "namespace": "milo-system"},
        "spec": {"email": format!("person-{i}@example.com"), "givenName": "Ada: the \"first\"\n# not a comment"},
    })
}

fn objects() -> Vec<Value> {
    let mut objects: Vec<Value> = (0..N).map(contact).collect();
    objects.push(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "milo-system"}}),
    );
    objects
}

fn yaml(value: &Value) -> String {
    milo_webhook::crds::to_yaml_document(value).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn load(path: &Path) -> Result<LoadReport, LoadError> {
    load_paths(&mut Store::default(), &[path.to_owned()])
}

#[test]
fn every_format_loads_the_same_objects() {
    let dir = tempfile::tempdir().unwrap();
    let objects = objects();
    // kubectl's key order: items before kind.
    let list = json!({"apiVersion": "v1", "items": objects, "kind": "List", "metadata": {"resourceVersion": ""}});
    let typed_list =
        json!({"apiVersion": "v1", "kind": "ContactList", "metadata": {}, "items": objects});
    let files = [
        write(
            dir.path(),
            "list.json",
            &serde_json::to_string_pretty(&list).unwrap(),
        ),
        write(
            dir.path(),
            "typed-list.json",
            &serde_json::to_string(&typed_list).unwrap(),
        ),
        write(
            dir.path(),
            "stream.json",
            &objects
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        write(dir.path(), "list.yaml", &yaml(&list)),
        write(
            dir.path(),
            "stream.yaml",
            &format!(
                "# a comment before the first document\n{}",
                objects
                    .iter()
                    .map(|o| format!("---\n{}", yaml(o)))
                    .collect::<String>()
            ),
        ),
        write(
            dir.path(),
            "markers.yaml",
            &objects
                .iter()
                .map(|o| format!("{}...\n---\n\n", yaml(o)))
                .collect::<String>(),
        ),
    ];
    for file in &files {
        let report = load(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            report.stored.get("Contact"),
            Some(&N),
            "{}: {report:?}",
            file.display()
        );
        assert_eq!(
            report.skipped.get("v1/Namespace"),
            Some(&1),
            "{}",
            file.display()
        );
        let read = read_objects(std::slice::from_ref(file)).unwrap();
        assert_eq!(read.len(), N + 1, "{}", file.display());
        assert_eq!(
            read[3].2,
            objects[3],
            "{}: values survive the round trip",
            file.display()
        );
    }
    // Document numbers count documents, not list items.
    let stream = read_objects(&[dir.path().join("stream.yaml")]).unwrap();
    assert_eq!(stream.last().unwrap().1, N + 1);
    let list = read_objects(&[dir.path().join("list.yaml")]).unwrap();
    assert!(list.iter().all(|(_, document, _)| *document == 1));
}

/// A bad item is reported as soon as it is parsed, with its document and name, before the parser
/// reaches a syntax error further down: proof that items are applied while the list is read,
/// not after the whole file became one tree.
#[test]
fn list_items_are_applied_while_the_list_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = contact(1);
    bad["spec"]["email"] = json!(42);
    let items = [contact(0), bad, contact(2)];
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    let json_text = serde_json::to_string(&list).unwrap();
    let truncated = &json_text[..json_text.len() - 20];
    let json_file = write(dir.path(), "list.json", truncated);
    let yaml_text = yaml(&list);
    let yaml_file = write(
        dir.path(),
        "list.yaml",
        &format!("{yaml_text}  - {{unclosed: [\n"),
    );
    for file in [json_file, yaml_file] {
        match load(&file) {
            Err(LoadError::Object {
                document,
                name,
                kind,
                ..
            }) => {
                assert_eq!(
                    (document, name.as_str()),
                    (1, "contact-1"),
                    "{}",
                    file.display()
                );
                assert_eq!(kind, "notification.miloapis.com/v1alpha1/Contact");
            }
            other => panic!("{}: {other:?}", file.display()),
        }
    }

    // Without the bad item the syntax error is what is reported, naming the format.
    let good = json!({"apiVersion": "v1", "kind": "List", "items": [contact(0)]}).to_string();
    let file = write(dir.path(), "cut.json", &good[..good.len() - 5]);
    let error = load(&file).unwrap_err().to_string();
    assert!(error.contains("document 1 is not valid JSON"), "{error}");
    let file = write(
        dir.path(),
        "cut.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- {a: [\n",
    );
    let error = load(&file).unwrap_err().to_string();
    assert!(error.contains("document 1 is not valid YAML"), "{error}");
}
