//! Replays every fixture in `webhooks/` through the `milo-webhook review` binary, with `--path`
//! and (for cases a webhook can answer) through the API-server-order chain without it.

mod support;

use std::process::{Command, Stdio};

use milo_webhook::admission::WEBHOOKS;
use milo_webhook::admission::registry::by_path;
use serde_json::Value;
use support::fixtures::{self, Fixture};

fn review(fixture: &Fixture, dir: &std::path::Path, with_path: bool) -> (i32, String, String) {
    let state = fixture.write_state(dir);
    let input = dir.join(format!("{}-review.json", fixture.name));
    std::fs::write(&input, fixture.body()).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_milo-webhook"));
    command
        .arg("review")
        .arg("--state")
        .arg(&state)
        .args(fixture.settings_args());
    if with_path {
        command.arg("--path").arg(&fixture.path);
    }
    let output = command
        .arg(&input)
        .stdin(Stdio::null())
        .output()
        .expect("run milo-webhook");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_fixture_through_review() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in fixtures::all() {
        let (code, stdout, stderr) = review(&fixture, dir.path(), true);
        assert_eq!(
            code, fixture.expect.review_exit,
            "{}: exit code; stderr: {stderr}",
            fixture.name
        );
        if code == 0 {
            let review: Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("{}: stdout not JSON: {e}", fixture.name));
            fixture.check_review(&review);
        } else {
            assert_eq!(
                stderr.lines().count(),
                1,
                "{}: one clear line on stderr, got {stderr:?}",
                fixture.name
            );
            assert!(
                stdout.is_empty(),
                "{}: nothing on stdout when the input is unreadable",
                fixture.name
            );
            if let Some(fragment) = &fixture.expect.message {
                assert!(
                    stderr.contains(fragment.as_str()),
                    "{}: {stderr:?} lacks {fragment:?}",
                    fixture.name
                );
            }
        }
    }
}

#[test]
fn chain_agrees_with_the_single_webhook_for_served_requests() {
    let dir = tempfile::tempdir().unwrap();
    let served: Vec<Fixture> = fixtures::all()
        .into_iter()
        .filter(|f| f.expect.review_exit == 0 && f.expect.code != Some(400))
        // Where a mutating webhook also runs, the chain's answer legitimately differs (it patches).
        .filter(|f| {
            let resource = by_path(&f.path).unwrap().resource;
            WEBHOOKS.iter().filter(|w| w.resource == resource).count() == 1
        })
        .collect();
    assert!(served.len() >= 20);
    for fixture in served {
        let (code, stdout, stderr) = review(&fixture, dir.path(), false);
        assert_eq!(code, 0, "{}: {stderr}", fixture.name);
        fixture.check_review(&serde_json::from_str(&stdout).unwrap());
    }
}

#[test]
fn chain_runs_mutating_then_validating() {
    let dir = tempfile::tempdir().unwrap();
    // The contact mutator adds the owner, then the validator admits: one combined answer.
    let fixture = fixtures::all()
        .into_iter()
        .find(|f| f.name == "contact-mutate-adds-owner")
        .unwrap();
    let (code, stdout, stderr) = review(&fixture, dir.path(), false);
    assert_eq!(code, 0, "{stderr}");
    fixture.check_review(&serde_json::from_str(&stdout).unwrap());
    // The mutator allows a missing User; the validator then denies it.
    let fixture = fixtures::all()
        .into_iter()
        .find(|f| f.name == "contact-mutate-missing-user-allowed")
        .unwrap();
    let (_, stdout, _) = review(&fixture, dir.path(), false);
    let reply: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(reply["response"]["allowed"], false);
    assert_eq!(
        reply["response"]["status"]["details"]["causes"][0]["field"],
        "spec.subject.name"
    );
}

#[test]
fn yaml_input_from_stdin_is_accepted() {
    let fixture = fixtures::all()
        .into_iter()
        .find(|f| f.name == "removal-create-private-denied")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = fixture.write_state(dir.path());
    let yaml = serde_saphyr::to_string(&fixture.review().unwrap()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_milo-webhook"))
        .args(["review", "--state"])
        .arg(&state)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    fixture.check_review(&serde_json::from_slice(&output.stdout).unwrap());
}

#[test]
fn unknown_path_and_unreadable_state_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("r.json");
    std::fs::write(&input, "{}").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_milo-webhook"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["review", "--path", "/nope", input.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("unknown webhook path \"/nope\"") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let bad_state = dir.path().join("state.yaml");
    std::fs::write(&bad_state, "kind: Contact\napiVersion: notification.miloapis.com/v1alpha1\nmetadata: {name: x}\nspec: {}\n").unwrap();
    let (code, stderr) = run(&[
        "review",
        "--state",
        bad_state.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("missing field `email`") && stderr.contains("state.yaml"),
        "{stderr}"
    );
}
