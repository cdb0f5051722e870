//! Crash loops after boot (issue 14, item 5): a worker that dies soon after
//! it was ready is restarted after a growing pause, and the loop is logged
//! with a count, not a line per death. A worker is ready only once it can
//! serve (its event loop exists).

use tests::Host;

#[test]
fn workers_that_crash_right_after_boot_are_restarted_after_a_growing_pause() {
    let app = tests::app_arg("crash");
    let mut host = Host::spawn_env(&["-w", "2", &app], &[("CRASH_AFTER_BOOT_MS", "20")]);
    host.wait_listening_addr();
    // The back-off has grown through 8 failures (about 4 s of pauses).
    host.wait_for_log("crash-looping: 8 failures in a row", 1);
    let starts = host.count_log("ready in");
    // Each start is a death (at most the two live workers more); without
    // a back-off this takes hundreds of starts.
    assert!(
        starts <= 12,
        "{starts} workers started: {:#?}",
        host.log_lines()
    );
    let loop_lines = host.count_log("crash-looping");
    assert!(loop_lines <= 3, "{loop_lines} crash-loop lines");
    let death_lines = host.count_log("killed by SIGABRT");
    assert!(death_lines <= 4, "{death_lines} lines about deaths");
    // The master stays up.
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(host.pid()), None).is_ok(),
        "the master is running"
    );
    assert!(host.children().len() <= 3, "{:?}", host.children());
    host.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(host.wait_exit().code(), Some(0));
}

#[test]
fn a_worker_whose_app_closes_its_descriptors_is_never_ready() {
    let app = tests::app_arg("crash");
    let mut host = Host::spawn_env(&[&app], &[("CRASH_INIT_CLOSE_FDS", "1")]);
    // Its event loop cannot be set up: a boot failure, never a ready worker
    // dying at once; so start-up gives up (exit 5) as with any app that
    // never boots.
    assert_eq!(host.wait_exit().code(), Some(5));
    assert_eq!(host.count_log("no worker could boot"), 1);
    assert_eq!(host.count_log("ready in"), 0, "{:#?}", host.log_lines());
}
