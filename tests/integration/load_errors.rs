//! Start-up errors: one clear line on stderr and a distinct exit code.

use tests::{app_lib, Host};

/// Runs host with `args`, expects exit code `code`, and returns the `error:` line.
fn fails(args: &[&str], code: i32) -> String {
    let mut host = Host::spawn(args);
    let status = host.wait_exit();
    assert_eq!(status.code(), Some(code), "exit status");
    let lines = host.log_lines();
    let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line: {lines:#?}");
    assert!(errors[0].len() < 400, "one short line: {}", errors[0]);
    assert_eq!(
        lines.last(),
        Some(errors[0]),
        "the error is the last line: {lines:#?}"
    );
    errors[0].clone()
}

#[test]
fn missing_library() {
    let line = fails(&["/nonexistent/libnothing.so"], 4);
    assert!(
        line.contains("/nonexistent/libnothing.so") && line.contains("no such file"),
        "{line}"
    );
}

#[test]
fn file_that_is_not_a_library() {
    let dir = std::env::temp_dir().join(format!("host-notlib-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("libtext.so");
    std::fs::write(&path, "just text\n").unwrap();
    let line = fails(&[path.to_str().unwrap()], 4);
    assert!(line.contains("not a loadable library"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_export() {
    let spec = format!("{}:nope", app_lib("hello").display());
    let line = fails(&[&spec], 4);
    assert!(line.contains("no app named `nope`"), "{line}");
}

#[test]
fn symbol_of_a_dependency_is_not_an_app() {
    let spec = format!("{}:malloc", app_lib("hello").display());
    let line = fails(&[&spec], 4);
    assert!(line.contains("`malloc` is not an app"), "{line}");
}

#[test]
fn an_app_of_another_abi_line_is_refused() {
    let spec = format!("{}:app", app_lib("abi-mismatch").display());
    let line = fails(&[&spec], 4);
    assert!(
        line.contains("built against app-sdk 0.3.x (ABI line 3)")
            && line.contains("rebuild the app against app-sdk 0.2"),
        "{line}"
    );
}

#[test]
fn an_app_sdk_0_1_app_is_refused() {
    let spec = format!("{}:old", app_lib("abi-mismatch").display());
    let line = fails(&[&spec], 4);
    assert!(
        line.contains("built against app-sdk 0.1, which this host no longer loads")
            && line.contains("rebuild it against app-sdk 0.2"),
        "{line}"
    );
}

#[test]
fn a_newer_app_needing_what_this_host_lacks_is_refused_by_name() {
    let spec = format!("{}:strict", app_lib("abi-future").display());
    let line = fails(&[&spec], 4);
    assert!(
        line.contains("`strict` was built against app-sdk 0.2.9 and needs health hooks (app-sdk 0.2.9), which this host (app-sdk 0.2.")
            && line.contains("lacks; upgrade the host"),
        "{line}"
    );
}

#[test]
fn bad_command_line_exits_2() {
    let mut host = Host::spawn(&["--workers", "abc", "x.so"]);
    assert_eq!(host.wait_exit().code(), Some(2));
    let mut host = Host::spawn(&["--bind", "nonsense", "x.so"]);
    assert_eq!(host.wait_exit().code(), Some(2));
    // Request ids in a header the host writes itself would corrupt framing.
    for (name, why) in [
        ("Content-Length", "a header the host writes itself"),
        ("X Id", "not a header name"),
    ] {
        let mut host = Host::spawn(&["--request-id-header", name, "x.so"]);
        assert_eq!(host.wait_exit().code(), Some(2));
        let lines = host.log_lines();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("error:") && l.contains(why)),
            "{lines:#?}"
        );
    }
}

#[test]
fn busy_port_exits_3() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let app = tests::app_arg("hello");
    let line = fails(&["-b", &addr, &app], 3);
    assert!(line.contains(&addr), "{line}");
}

#[test]
fn init_failure_is_a_load_error() {
    let app = tests::app_arg("crash");
    let mut host = Host::spawn_env(&[&app], &[("CRASH_INIT_FAIL", "always")]);
    assert_eq!(host.wait_exit().code(), Some(4));
    assert!(host
        .log_lines()
        .iter()
        .any(|l| l.starts_with("error:") && l.contains("failed to initialise")));
}

#[test]
fn workers_that_never_boot_exit_5() {
    let dir = std::env::temp_dir().join(format!("host-neverboot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let flag = dir.join("fail");
    std::fs::write(&flag, "").unwrap();
    let app = tests::app_arg("crash");
    let mut host = Host::spawn_env(&[&app], &[("CRASH_INIT_FAIL", flag.to_str().unwrap())]);
    assert_eq!(host.wait_exit().code(), Some(5));
    assert!(host.count_log("no worker could boot") == 1);
    let _ = std::fs::remove_dir_all(&dir);
}
