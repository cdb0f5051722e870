//! Feature `log`: the [`log::Log`] that forwards the app's `log` records to
//! the host (the app library's copy of `log` has no logger otherwise).

use std::borrow::Cow;

use crate::abi::LogLevel;

use super::Level;

/// Forwards each record to [`crate::log()`], which tags it with the request.
struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = match record.args().as_str() {
            Some(text) => Cow::Borrowed(text),
            None => Cow::Owned(record.args().to_string()),
        };
        crate::log(level(record.level()), record.target(), &message);
    }

    fn flush(&self) {}
}

/// The SDK's level for a `log` level.
fn level(level: log::Level) -> Level {
    match level {
        log::Level::Error => Level::Error,
        log::Level::Warn => Level::Warn,
        log::Level::Info => Level::Info,
        log::Level::Debug => Level::Debug,
        log::Level::Trace => Level::Trace,
    }
}

/// The `log` filter for the host's most verbose level.
fn filter(max: LogLevel) -> log::LevelFilter {
    match max {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Sets the logger, and the max level to the host's, unless the app set a
/// logger already (then both stay as the app chose).
pub(super) fn install(max: LogLevel) {
    static LOGGER: HostLogger = HostLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(filter(max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_filters_match_the_abi_numbering() {
        for l in log::Level::iter() {
            assert_eq!(level(l).as_abi(), l as LogLevel);
            assert_eq!(filter(l as LogLevel), l.to_level_filter());
        }
        assert_eq!(filter(0), log::LevelFilter::Off);
    }
}
