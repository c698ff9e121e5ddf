//! The README documents every configuration variable and every error code, and its two commands
//! are the scripts that exist (and that CI runs).

const README: &str = include_str!("../README.md");

#[test]
fn every_variable_is_documented() {
    for (name, _, _) in wa_outbox::config::VARS {
        assert!(
            README.contains(&format!("`{name}`")),
            "{name} missing from the README"
        );
    }
}

#[test]
fn every_error_code_is_documented() {
    for code in wa_outbox::error_code::ErrorCode::ALL {
        assert!(
            README.contains(&format!("| `{code}` |")),
            "{code} missing from the README"
        );
    }
}

#[test]
fn the_two_commands_are_at_the_top_and_ci_runs_the_test_one() {
    let head: String = README.lines().take(20).collect::<Vec<_>>().join("\n");
    assert!(head.contains("bash deploy/local/demo.sh"));
    assert!(head.contains("bash deploy/local/test.sh"));
    let ci = include_str!("../.ci/run");
    assert!(ci.contains("deploy/local/test.sh"));
}
