//! What a newcomer sees from the binary: errors that name the flag or file to fix, logs without
//! escape codes when they go to a file, and no silent waits.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn milo_webhook(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_milo-webhook"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    command
}

fn run(mut command: Command) -> (i32, String) {
    let Output { status, stderr, .. } = command.stdin(Stdio::null()).output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn a_missing_certificate_names_the_flag_and_says_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("missing.crt");
    let key = dir.path().join("missing.key");
    let (code, err) = run(milo_webhook(&[
        "serve",
        "--state",
        "manifests/samples/state",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
    ]));
    assert_eq!(code, 1, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "milo-webhook: --tls-cert-file: cannot read {}: ",
            cert.display()
        )),
        "{err}"
    );
    assert_eq!(last.matches("os error 2").count(), 1, "{last}");
}

#[test]
fn a_broken_state_file_fails_first_with_the_same_prefix_as_check() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("broken.yaml");
    std::fs::write(&state, "kind: [unclosed\n").unwrap();
    let certs = dir.path().join("certs");
    let (code, err) = run(milo_webhook(&[
        "serve",
        "--state",
        state.to_str().unwrap(),
        "--certs-dir",
        certs.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]));
    // 2, as `check` and `review` exit for input they cannot read.
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "milo-webhook: cannot load state: {}: document 1 is not valid YAML",
            state.display()
        )),
        "{err}"
    );
    assert!(!err.contains("development certificate"), "{err}");
    assert!(
        !certs.exists(),
        "no certificate is generated for a server that cannot start"
    );

    let (code, check_err) = run(milo_webhook(&[
        "check",
        "--state",
        state.to_str().unwrap(),
        "manifests/samples/requests/membership-ok.yaml",
    ]));
    assert_eq!(code, 2);
    assert!(
        check_err.starts_with("milo-webhook: cannot load state: "),
        "{check_err}"
    );
}

/// Runs `serve` against a port that is taken, so it logs its start-up and then fails.
fn serve_logs(extra: &[&str]) -> String {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let mut args = vec![
        "serve",
        "--state",
        "manifests/samples/state",
        "--certs-dir",
        certs.to_str().unwrap(),
        "--listen",
        &addr,
        "--admin-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let (code, err) = run(milo_webhook(&args));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    drop(taken);
    err
}

#[test]
fn logs_to_a_file_have_no_colour_codes_and_json_is_one_object_per_line() {
    let text = serve_logs(&[]);
    assert!(text.contains("offline mode: state loaded"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in {text:?}");

    let json = serve_logs(&["--log-format", "json"]);
    let (logs, last) = json.trim_end().rsplit_once('\n').unwrap();
    assert!(last.starts_with("milo-webhook: cannot listen on"), "{last}");
    let messages: Vec<String> = logs
        .lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            entry["fields"]["message"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        messages.iter().any(|m| m == "offline mode: state loaded"),
        "{messages:?}"
    );
}

#[test]
fn review_says_it_reads_standard_input_when_that_is_a_terminal() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, slave) = {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two new descriptors, which are owned from here on.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and nothing else owns them.
        unsafe {
            (
                std::fs::File::from(OwnedFd::from_raw_fd(master)),
                OwnedFd::from_raw_fd(slave),
            )
        }
    };
    let mut child = milo_webhook(&["review"])
        .stdin(Stdio::from(slave))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A line and end-of-file (Ctrl-D), typed before anything is read: the child cannot hang.
    master.write_all(b"not a review\n\x04").unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    drop(master);
    assert_eq!(status.code(), Some(2), "{err}");
    let mut lines = err.lines();
    assert_eq!(
        lines.next(),
        Some(
            "milo-webhook: reading the AdmissionReview from standard input (end it with Ctrl-D, or pass a FILE)"
        )
    );
    assert!(
        lines.next().unwrap_or_default().contains("not valid JSON"),
        "{err}"
    );

    // From a pipe it stays quiet: scripts get only the answer or the error.
    let (code, err) = run(milo_webhook(&["review"]));
    assert_eq!(code, 2);
    assert!(!err.contains("standard input ("), "{err}");
    assert!(err.contains("the AdmissionReview is empty"), "{err}");
}

fn serve_args(args: &[&str]) -> milo_webhook::cmd::serve::ServeArgs {
    use clap::Parser;
    use milo_webhook::cmd::{Cli, Command};
    let argv = ["milo-webhook", "serve"].iter().chain(args);
    match Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{e}"))
        .command
    {
        Command::Serve(args) => args,
        other => panic!("parsed {other:?}"),
    }
}

/// Operators replace Milo's controllers with this server without editing their objects or their
/// Deployment's flags: Milo's defaults, and Milo's flag names as aliases.
#[test]
fn milo_controller_manager_defaults_and_flag_names_are_accepted() {
    let defaults = serve_args(&[]).controllers.settings();
    assert_eq!(
        defaults.invitation.email_template,
        "emailtemplates.notification.miloapis.com-userinvitationemailtemplate"
    );
    assert_eq!(
        defaults.invitation.get_role,
        "iam.miloapis.com-getinvitation"
    );
    assert_eq!(
        defaults.invitation.accept_role,
        "iam.miloapis.com-acceptinvitation"
    );
    assert_eq!(defaults.invitation.role_namespace, "milo-system");
    assert_eq!(defaults.contact_namespace, "milo-system");

    let milo = serve_args(&[
        "--user-invitation-email-template",
        "custom-template",
        "--get-invitation-role-name",
        "get-role",
        "--accept-invitation-role-name",
        "accept-role",
        "--system-namespace",
        "datum-system",
        "--leader-elect-resource-namespace",
        "lease-ns",
        "--leader-elect-resource-name",
        "lease",
        "--leader-elect-lease-duration",
        "30s",
        "--tls-cert-file",
        "tls.crt",
        "--tls-private-key-file",
        "tls.key",
        "--cert-dir",
        "/var/run/certs",
    ]);
    let settings = milo.controllers.settings();
    assert_eq!(settings.invitation.email_template, "custom-template");
    assert_eq!(settings.invitation.get_role, "get-role");
    assert_eq!(settings.invitation.accept_role, "accept-role");
    assert_eq!(settings.invitation.role_namespace, "datum-system");
    assert_eq!(settings.contact_namespace, "datum-system");
    let controllers = &milo.controllers;
    assert_eq!(
        controllers.leader_election_namespace.as_deref(),
        Some("lease-ns")
    );
    assert_eq!(controllers.leader_election_lease, "lease");
    assert_eq!(controllers.leader_election_lease_seconds, 30);
    assert_eq!(
        milo.tls_key_file.as_deref(),
        Some(std::path::Path::new("tls.key"))
    );
    assert_eq!(milo.certs_dir, std::path::Path::new("/var/run/certs"));

    // Our own names still work, and an explicit namespace wins over --system-namespace.
    let ours = serve_args(&[
        "--system-namespace",
        "datum-system",
        "--contact-namespace",
        "contacts",
        "--leader-election-lease-seconds",
        "20",
    ]);
    assert_eq!(ours.controllers.settings().contact_namespace, "contacts");
    assert_eq!(
        ours.controllers.settings().invitation.role_namespace,
        "datum-system"
    );
    assert_eq!(ours.controllers.leader_election_lease_seconds, 20);
}

#[test]
fn controllers_default_to_all_and_help_shows_the_default_as_the_flag_takes_it() {
    use milo_webhook::controllers::ControllerKind;
    let mut all = ControllerKind::ALL.to_vec();
    all.sort();
    assert_eq!(serve_args(&[]).controllers.selected(), all);
    let names: Vec<&str> = ControllerKind::ALL.iter().map(|k| k.as_str()).collect();

    let out = milo_webhook(&["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains(&format!("[default: {}]", names.join(","))),
        "{help}"
    );
}

#[test]
fn max_connection_age_defaults_to_five_minutes_and_zero_turns_it_off() {
    use std::time::Duration;
    assert_eq!(
        serve_args(&[]).max_connection_age(),
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        serve_args(&["--max-connection-age", "90s"]).max_connection_age(),
        Some(Duration::from_secs(90))
    );
    assert_eq!(
        serve_args(&["--max-connection-age", "0"]).max_connection_age(),
        None
    );
    assert_eq!(
        serve_args(&["--max-connection-age", "0s"]).max_connection_age(),
        None
    );
}

/// The listeners' bounds default to what keeps a replica under its memory limit, and take
/// Kubernetes' binary suffixes.
#[test]
fn limit_flags_default_to_the_bounds_and_take_binary_suffixes() {
    use milo_webhook::server::budget::ReviewLimits;
    let defaults = serve_args(&[]).limits;
    assert_eq!(defaults.review_limits(), ReviewLimits::default());
    assert_eq!(defaults.review_limits().max_body, 3 * 1024 * 1024);
    assert_eq!(defaults.max_connections, 512);
    assert_eq!(defaults.events().max_connections, 256);
    let set = serve_args(&[
        "--max-review-bytes=512Ki",
        "--max-in-flight-review-bytes=8Mi",
        "--max-concurrent-reviews=16",
        "--max-connections=10",
        "--provider-events-max-connections=5",
        "--provider-events-idle-timeout=30s",
    ])
    .limits;
    let limits = set.review_limits();
    assert_eq!(
        (
            limits.max_body,
            limits.max_in_flight_bytes,
            limits.max_concurrent
        ),
        (512 * 1024, 8 * 1024 * 1024, 16)
    );
    assert_eq!(set.max_connections, 10);
    assert_eq!(set.events().max_connections, 5);
    assert_eq!(set.events().idle_timeout.as_secs(), 30);
    use clap::Parser;
    for bad in ["--max-review-bytes=3MB", "--max-concurrent-reviews=0"] {
        let parsed = milo_webhook::cmd::Cli::try_parse_from(["milo-webhook", "serve", bad]);
        assert!(parsed.is_err(), "{bad}");
    }
}

/// Older unsubscribe keys verify, the signing key signs; the email sender and the events
/// listener share one set of keys (and so one reload).
#[test]
fn unsubscribe_verification_keys_need_a_signing_key_and_are_shared() {
    let dir = tempfile::tempdir().unwrap();
    let (current, previous) = (dir.path().join("current"), dir.path().join("previous"));
    std::fs::write(&current, [2u8; 32]).unwrap();
    std::fs::write(&previous, [1u8; 32]).unwrap();
    let (current, previous) = (current.to_str().unwrap(), previous.to_str().unwrap());
    use clap::Parser;
    let alone = milo_webhook::cmd::Cli::try_parse_from([
        "milo-webhook",
        "serve",
        &format!("--unsubscribe-verification-key-file={previous}"),
    ]);
    assert!(alone.is_err(), "a verification key needs a signing key");
    let args = serve_args(&[
        &format!("--unsubscribe-signing-key-file={current}"),
        &format!("--unsubscribe-verification-key-file={previous}"),
    ]);
    let keys = args.providers.unsubscribe_keys().unwrap().unwrap();
    let set = keys.current();
    assert_eq!(set.verifying.len(), 1);
    let again = args.providers.unsubscribe_keys().unwrap().unwrap();
    assert!(std::sync::Arc::ptr_eq(&keys, &again), "read once, shared");
    std::fs::write(dir.path().join("short"), b"short").unwrap();
    let short = dir.path().join("short");
    let bad = serve_args(&[
        &format!("--unsubscribe-signing-key-file={current}"),
        &format!("--unsubscribe-verification-key-file={}", short.display()),
    ]);
    let error = bad.providers.unsubscribe_keys().unwrap_err().to_string();
    assert!(
        error.contains("short") && error.contains("at least 32"),
        "{error}"
    );
}

#[test]
fn check_needs_no_state_and_its_output_format_has_an_environment_variable() {
    let out = milo_webhook(&["check", "manifests/samples/requests/membership-ok.yaml"])
        .env("MILO_WEBHOOK_CHECK_OUTPUT", "json")
        .env_remove("MILO_WEBHOOK_STATE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let outcomes: Value = serde_json::from_slice(&out.stdout).unwrap();
    // An empty cluster: the membership's contact and group do not exist.
    assert_eq!(outcomes[0]["allowed"], false);
    assert!(
        outcomes[0]["message"]
            .as_str()
            .unwrap()
            .contains("spec.contactRef.name"),
        "{outcomes}"
    );
}

#[test]
fn provider_events_offline_are_refused_before_anything_is_generated_or_bound() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let (code, err) = run(milo_webhook(&[
        "serve",
        "--state",
        "manifests/samples/state",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--certs-dir",
        certs.to_str().unwrap(),
        "--provider-events-listen",
        "127.0.0.1:0",
    ]));
    assert_eq!(code, 1, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "milo-webhook: {}",
            milo_webhook::cmd::provider::EVENTS_NEED_CLUSTER
        )
    );
    assert!(!certs.exists(), "no development certificate was generated");
}

#[test]
fn a_rate_limit_that_is_not_positive_is_refused_by_name() {
    let (code, err) = run(milo_webhook(&[
        "serve",
        "--state",
        "manifests/samples/state",
        "--resend-rate-limit",
        "0",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--resend-rate-limit"), "{err}");
    assert!(err.contains("not a positive number"), "{err}");
}

#[test]
fn serve_exits_2_for_a_state_path_that_does_not_exist_like_review_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-state");
    let certs = dir.path().join("certs");
    let (code, err) = run(milo_webhook(&[
        "serve",
        "--state",
        missing.to_str().unwrap(),
        "--certs-dir",
        certs.to_str().unwrap(),
    ]));
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "milo-webhook: cannot load state: cannot read {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    assert!(
        !certs.exists(),
        "nothing generated for a server that cannot start"
    );
    for command in ["review", "check"] {
        let (code, _) = run(milo_webhook(&[
            command,
            "--state",
            missing.to_str().unwrap(),
            "manifests/samples/requests/membership-ok.yaml",
        ]));
        assert_eq!(code, 2, "{command}");
    }
}

#[test]
fn review_names_the_file_that_is_not_an_admission_review() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("review.json");
    std::fs::write(&file, "not a review\n").unwrap();
    let (code, err) = run(milo_webhook(&["review", file.to_str().unwrap()]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with(&format!(
            "milo-webhook: {}: the AdmissionReview is not valid JSON",
            file.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn webhook_config_with_a_url_and_no_ca_file_warns_and_names_the_dev_ca() {
    let out = milo_webhook(&["webhook-config", "--url", "https://127.0.0.1:9443"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("milo-webhook: warning: no --ca-file"),
        "{err}"
    );
    assert!(err.contains("--ca-file certs/ca.crt"), "{err}");
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("url: https://127.0.0.1:9443/"), "{yaml}");
    assert!(!yaml.contains("caBundle"), "{yaml}");

    // The way manifests/webhook/ is rendered: cert-manager injects the CA, nothing to warn about.
    let out = milo_webhook(&[
        "webhook-config",
        "--service",
        "milo-webhook",
        "--namespace",
        "milo-system",
        "--inject-ca-from",
        "milo-system/milo-webhook-tls",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A kubeconfig whose current context `ctx` points at `server`.
fn write_kubeconfig(path: &std::path::Path, server: &str) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: \"{server}\"}}
users:
- name: u
  user: {{token: t}}
contexts:
- name: ctx
  context: {{cluster: c, user: u}}
current-context: ctx
"
        ),
    )
    .unwrap();
}

/// `serve` with `args`, `KUBECONFIG` set to `kubeconfig`, a home of its own and no in-cluster
/// variables, against a webhook port that is taken: it logs how it starts, then fails.
fn serve_start(args: &[&str], kubeconfig: &std::path::Path) -> (i32, String) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let mut all = vec![
        "serve",
        "--certs-dir",
        certs.to_str().unwrap(),
        "--listen",
        &addr,
        "--admin-listen",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(args);
    let mut command = milo_webhook(&all);
    command
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("MILO_WEBHOOK_STATE")
        .env_remove("MILO_WEBHOOK_KUBECONFIG")
        .env_remove("MILO_WEBHOOK_USE_CURRENT_CONTEXT")
        .env_remove("RESEND_API_KEY");
    let result = run(command);
    drop(taken);
    result
}

/// The start line: which cluster (or none) and which controllers.
fn start_line(err: &str) -> &str {
    err.lines()
        .find(|l| l.contains("serve: offline: ") || l.contains("serve: cluster "))
        .unwrap_or_else(|| panic!("no start line in {err}"))
}

#[test]
fn serve_writes_only_to_a_cluster_it_was_told_to_use_and_says_which_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(&kubeconfig, "https://127.0.0.1:6443");

    // A current context alone is not a reason to write to its cluster.
    let (code, err) = serve_start(&[], &kubeconfig);
    assert_eq!(code, 1, "{err}");
    let line = start_line(&err);
    assert!(
        line.ends_with(
            "offline: no --state, an empty cluster; controllers: none (offline: they need a cluster)"
        ),
        "{err}"
    );
    let warning = err
        .lines()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning in {err}"));
    assert!(
        warning.ends_with(&format!(
            "no cluster named: serving offline with an empty state (--state PATH loads manifests; --kubeconfig PATH or --use-current-context serves a cluster); {} is not used without --use-current-context",
            kubeconfig.display()
        )),
        "{warning}"
    );
    assert!(!warning.contains('"'), "{warning}");

    // Named: by --kubeconfig, or by --use-current-context for the one kubectl would use.
    let (code, err) = serve_start(&["--kubeconfig", kubeconfig.to_str().unwrap()], &kubeconfig);
    assert_eq!(code, 1, "{err}");
    assert!(
        start_line(&err).ends_with(&format!(
            "cluster https://127.0.0.1:6443/ (--kubeconfig {}); controllers while leading: enrollment,removal,membership,usercontact,invitation; off: resend (no Resend API key), loops (no Loops API key), email (needs a Resend API key and --email-from-address)",
            kubeconfig.display()
        )),
        "{err}"
    );
    let (code, err) = serve_start(
        &[
            "--use-current-context",
            "--controllers",
            "removal,enrollment",
        ],
        &kubeconfig,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        start_line(&err).ends_with(&format!(
            "cluster https://127.0.0.1:6443/ (current context ctx of {}); controllers while leading: enrollment,removal",
            kubeconfig.display()
        )),
        "{err}"
    );
    let (code, err) = serve_start(&["--use-current-context", "--no-controllers"], &kubeconfig);
    assert_eq!(code, 1, "{err}");
    assert!(
        start_line(&err).ends_with("controllers: none (--no-controllers)"),
        "{err}"
    );

    // Asked for, but not there: exit 2 with one line.
    let missing = dir.path().join("missing");
    let (code, err) = serve_start(&["--use-current-context"], &missing);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "milo-webhook: --use-current-context: no kubeconfig at {}",
            missing.display()
        )
    );
    let (code, err) = serve_start(&["--kubeconfig", missing.to_str().unwrap()], &kubeconfig);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "milo-webhook: --kubeconfig: cannot read {}: No such file or directory (os error 2)",
            missing.display()
        )
    );

    // The flags that name a source exclude each other.
    let (code, _) = serve_start(
        &[
            "--state",
            "manifests/samples/state",
            "--use-current-context",
        ],
        &kubeconfig,
    );
    assert_eq!(code, 2);
}

#[test]
fn in_a_pod_serve_uses_the_pod_s_service_account_and_says_so_when_it_cannot() {
    if std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount").exists() {
        return; // a real pod: the in-cluster configuration would load
    }
    let dir = tempfile::tempdir().unwrap();
    let mut command = milo_webhook(&[
        "serve",
        "--certs-dir",
        dir.path().join("certs").to_str().unwrap(),
    ]);
    command
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", "6443")
        .env_remove("MILO_WEBHOOK_STATE")
        .env_remove("MILO_WEBHOOK_KUBECONFIG");
    let (code, err) = run(command);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("milo-webhook: KUBERNETES_SERVICE_HOST is set, but this is not a pod"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status code of `GET path` on the admin port, `None` while nothing answers.
fn admin_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}

#[test]
fn an_offline_server_with_a_kube_context_around_never_calls_it_and_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // The "cluster" of the current context: a listener that records whether anyone calls.
    let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    api.set_nonblocking(true).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(
        &kubeconfig,
        &format!("https://{}", api.local_addr().unwrap()),
    );
    let (listen, admin) = (free_port(), free_port());
    let log = dir.path().join("stderr");
    let mut child = milo_webhook(&[
        "serve",
        "--listen",
        &format!("127.0.0.1:{listen}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
        "--certs-dir",
        dir.path().join("certs").to_str().unwrap(),
    ])
    .env("KUBECONFIG", &kubeconfig)
    .env("HOME", dir.path())
    .env_remove("KUBERNETES_SERVICE_HOST")
    .env_remove("MILO_WEBHOOK_STATE")
    .env_remove("MILO_WEBHOOK_KUBECONFIG")
    .env_remove("MILO_WEBHOOK_USE_CURRENT_CONTEXT")
    .env_remove("MILO_WEBHOOK_SHUTDOWN_DELAY")
    .stdin(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let started = std::time::Instant::now();
    while admin_status(admin, "/readyz") != Some(200) {
        assert!(child.try_wait().unwrap().is_none(), "exited early");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "not ready: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Ready at once (offline), and the current context's server was never called.
    assert!(
        matches!(api.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "serve connected to the current context's cluster"
    );

    // SIGTERM: no 5 s drain offline, where no load balancer has to notice.
    // SAFETY: kill(2) on the child this test started and still owns.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let stopping = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < std::time::Duration::from_secs(3),
            "still running 3 s after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("delay_seconds=0.0"), "{err}");
    assert!(
        err.contains("offline: no --state, an empty cluster"),
        "{err}"
    );
}

#[test]
fn the_shutdown_delay_is_five_seconds_in_a_cluster_none_offline_unless_given() {
    use std::time::Duration;
    assert_eq!(serve_args(&[]).shutdown_delay(true), Duration::from_secs(5));
    assert_eq!(serve_args(&[]).shutdown_delay(false), Duration::ZERO);
    let given = serve_args(&["--shutdown-delay", "2s"]);
    assert_eq!(given.shutdown_delay(true), Duration::from_secs(2));
    assert_eq!(given.shutdown_delay(false), Duration::from_secs(2));
}

/// A Svix signing secret shorter than what Resend hands out (24 bytes) is refused at start,
/// naming the flag and the length.
#[test]
fn short_svix_signing_secrets_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "whsec_c2VjcmV0\n").unwrap();
    let args = serve_args(&[&format!(
        "--resend-webhook-signing-key-file={}",
        short.display()
    )]);
    let error = args.providers.events_config().unwrap_err().to_string();
    assert!(
        error.contains("--resend-webhook-signing-key-file")
            && error.contains("6 bytes")
            && error.contains("24"),
        "{error}"
    );
    let good = dir.path().join("good");
    std::fs::write(&good, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
    let args = serve_args(&[&format!(
        "--resend-webhook-signing-key-file={}",
        good.display()
    )]);
    assert!(args.providers.events_config().unwrap().email_key.is_some());
}

/// The Loops signing secret (Milo's flag) is refused at start under 24 bytes, naming the flag;
/// a good one configures the Loops path.
#[test]
fn short_loops_signing_secrets_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    // 23 bytes: `abcdefghijklmnopqrstuvw`.
    std::fs::write(&short, "whsec_YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnc=\n").unwrap();
    let args = serve_args(&[&format!("--loops-signing-secret-file={}", short.display())]);
    let error = args.providers.events_config().unwrap_err().to_string();
    assert!(
        error.contains("--loops-signing-secret-file")
            && error.contains("LOOPS_SIGNING_SECRET")
            && error.contains("23 bytes")
            && error.contains("24"),
        "{error}"
    );
    let good = dir.path().join("good");
    std::fs::write(
        &good,
        "whsec_YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU=\n",
    )
    .unwrap();
    let args = serve_args(&[&format!("--loops-signing-secret-file={}", good.display())]);
    let config = args.providers.events_config().unwrap();
    assert!(config.loops_key.is_some());
    assert!(config.email_key.is_none() && config.contact_key.is_none());
}
