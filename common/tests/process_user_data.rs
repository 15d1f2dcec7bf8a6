//! End-to-end runs of the `process-user-data` binary on sample cloud-config user data.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::agent_config::AgentConfig;

/// The registry credential inside the sample daemon.json; it must never reach a log.
const AUTH_SECRET: &str = "dXNlcjpwYXNz";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn process_user_data(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_process-user-data"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn provision(user_data: &Path, root: &Path) -> Output {
    process_user_data(&[
        "provision-files",
        "--user-data",
        user_data.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ])
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn comment_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn good_user_data_is_provisioned_and_the_agent_config_updated() {
    let root = tempfile::tempdir().unwrap();
    let peerpod = root.path().join("run/peerpod");

    let output = provision(&fixture("user-data-good.yaml"), root.path());
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains(AUTH_SECRET));

    let daemon = peerpod.join("daemon.json");
    assert!(fs::read_to_string(&daemon).unwrap().contains(AUTH_SECRET));
    assert_eq!(mode_of(&daemon), 0o600);
    let aa = peerpod.join("aa.toml");
    assert_eq!(
        fs::read_to_string(&aa).unwrap(),
        "[token_configs.kbs]\nurl = \"http://10.0.0.2:8080\"\n"
    );
    assert_eq!(mode_of(&aa), 0o640);
    let note = peerpod.join("nested/deeper/note.txt");
    assert_eq!(
        fs::read_to_string(&note).unwrap(),
        "created with its parent directories\n"
    );
    assert_eq!(mode_of(&note), 0o644);
    assert_eq!(mode_of(&peerpod.join("nested")), 0o755);
    assert_eq!(mode_of(&peerpod.join("nested/deeper")), 0o755);
    let agent_config = peerpod.join("agent-config.toml");
    let template = fs::read_to_string(&agent_config).unwrap();
    assert_eq!(mode_of(&agent_config), 0o644);
    assert_eq!(
        names_in(&peerpod),
        vec!["aa.toml", "agent-config.toml", "daemon.json", "nested"]
    );

    let auth = peerpod.join("auth.json");
    let output = process_user_data(&[
        "update-agent-config",
        "--agent-config-file",
        agent_config.to_str().unwrap(),
        "--daemon-config-path",
        daemon.to_str().unwrap(),
        "--auth-json-path",
        auth.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains(AUTH_SECRET));

    let updated = fs::read_to_string(&agent_config).unwrap();
    let config = AgentConfig::parse(&updated, &agent_config).unwrap();
    assert_eq!(config.aa_kbc_params(), Some("cc_kbc::http://10.0.0.2:8080"));
    assert_eq!(
        config.image_registry_auth_file(),
        Some(format!("file://{}", auth.display()).as_str())
    );
    assert_eq!(config.guest_components_procs(), Some("none"));
    assert_eq!(comment_lines(&updated), comment_lines(&template));
    assert_eq!(comment_lines(&updated).len(), 6);
    assert!(updated.contains("log_level = \"debug\""));
    assert!(updated.contains("server_addr = \"vsock://-1:1024\""));
    assert!(updated.contains("enable_signature_verification = false"));
    assert!(updated.contains("\"CreateContainerRequest\",\n\"PullImageRequest\","));
    assert_eq!(mode_of(&agent_config), 0o644);

    assert_eq!(
        fs::read_to_string(&auth).unwrap(),
        format!("{{\"auths\": {{\"registry.example\": {{\"auth\": \"{AUTH_SECRET}\"}}}}}}")
    );
    assert_eq!(mode_of(&auth), 0o600);
    assert_eq!(
        names_in(&peerpod),
        vec![
            "aa.toml",
            "agent-config.toml",
            "auth.json",
            "daemon.json",
            "nested"
        ]
    );
}

#[test]
fn update_can_write_to_another_path_and_leave_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("agent-config.toml");
    let text =
        "# kept\naa_kbc_params = \"offline_fs_kbc::null\"\nguest_components_procs = \"none\"\n";
    fs::write(&template, text).unwrap();
    let daemon = dir.path().join("daemon.json");
    fs::write(
        &daemon,
        r#"{"aa-kbc-params": "cc_kbc::https://kbs.example:8080"}"#,
    )
    .unwrap();
    let destination = dir.path().join("out.toml");

    let output = process_user_data(&[
        "update-agent-config",
        "-a",
        template.to_str().unwrap(),
        "-d",
        daemon.to_str().unwrap(),
        "--to",
        destination.to_str().unwrap(),
    ]);

    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(fs::read_to_string(&template).unwrap(), text);
    assert_eq!(
        fs::read_to_string(&destination).unwrap(),
        "# kept\naa_kbc_params = \"cc_kbc::https://kbs.example:8080\"\n\
         guest_components_procs = \"none\"\n"
    );
}

#[test]
fn rejected_entries_are_named_and_nothing_is_written() {
    let root = tempfile::tempdir().unwrap();
    let peerpod = root.path().join("run/peerpod");
    fs::create_dir_all(&peerpod).unwrap();
    let outside = root.path().join("outside");
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, peerpod.join("linked")).unwrap();

    let output = provision(&fixture("user-data-bad.yaml"), root.path());

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("user-data-bad.yaml"), "{message}");
    assert!(
        message.contains("3 of 4 write_files entries rejected, nothing written"),
        "{message}"
    );
    assert!(
        message.contains("\"/etc/passwd\": path is outside /run/peerpod/"),
        "{message}"
    );
    assert!(
        message.contains("\"/run/peerpod/../x\": path has a '.' or '..' component"),
        "{message}"
    );
    assert!(
        message.contains("/run/peerpod/linked is a symlink"),
        "{message}"
    );
    assert!(!message.contains("fine.txt"), "{message}");

    assert_eq!(names_in(&peerpod), vec!["linked"]);
    assert!(names_in(&outside).is_empty());
    assert_eq!(names_in(root.path()), vec!["outside", "run"]);
    assert_eq!(names_in(&root.path().join("run")), vec!["peerpod"]);
}

#[test]
fn missing_user_data_is_an_error_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("no-user-data");

    let output = provision(&missing, root.path());

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains(&format!("failed to read user data {}", missing.display())),
        "{message}"
    );
    assert!(message.contains("caused by:"), "{message}");
    assert!(names_in(root.path()).is_empty());
}

#[test]
fn update_fails_cleanly_on_a_malformed_template() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("agent-config.toml");
    fs::write(&template, "server_addr = \"vsock://-1:1024\"\n[endpoints\n").unwrap();

    let output = process_user_data(&[
        "update-agent-config",
        "-a",
        template.to_str().unwrap(),
        "-d",
        dir.path().join("absent.json").to_str().unwrap(),
    ]);

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "malformed kata-agent config {} at line 2",
            template.display()
        )),
        "{message}"
    );
    assert_eq!(names_in(dir.path()), vec!["agent-config.toml"]);
}
