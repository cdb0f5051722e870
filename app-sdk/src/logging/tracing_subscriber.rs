//! Feature `tracing`: a global default [`Subscriber`] that forwards the
//! app's `tracing` events to the host, as one line each: the message, then
//! the fields as `key=value`.
//!
//! Only events are forwarded; spans are disabled (the host's log is a line
//! per record, with no place for span context), which also makes them cost
//! nothing. Built on `tracing-core` alone, the crate `tracing` itself sits
//! on, so the SDK pulls in no formatting stack.

use std::{
    fmt::{self, Write as _},
    sync::atomic::{AtomicU64, Ordering},
};

use tracing_core::{
    dispatcher::{self, Dispatch},
    field::{Field, Visit},
    span, Event, Interest, Level as TracingLevel, LevelFilter, Metadata, Subscriber,
};

use crate::abi::LogLevel;

use super::Level;

/// The subscriber the SDK installs: events at `max` or above go to the host.
struct HostSubscriber {
    /// The host's most verbose level.
    max: LevelFilter,
    /// The next span id (spans are disabled, but ids must be non-zero).
    next_span: AtomicU64,
}

impl Subscriber for HostSubscriber {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // The filter never changes, so each callsite's answer is cached.
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _span: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _span: &span::Id, _values: &span::Record<'_>) {}

    fn record_follows_from(&self, _span: &span::Id, _follows: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        let mut line = Line::default();
        event.record(&mut line);
        crate::log(level(metadata.level()), metadata.target(), &line.finish());
    }

    fn enter(&self, _span: &span::Id) {}

    fn exit(&self, _span: &span::Id) {}
}

/// An event's text being built: the `message` field, then ` key=value`
/// for each other field, in the order recorded.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Line {
    /// The message followed by the fields (just the fields when there is
    /// no message).
    fn finish(mut self) -> String {
        if self.message.is_empty() {
            return self.fields.trim_start().to_owned();
        }
        self.message.push_str(&self.fields);
        self.message
    }

    /// The field's name as written in the macro (`r#type` reads `type`).
    fn name(field: &Field) -> &'static str {
        let name = field.name();
        name.strip_prefix("r#").unwrap_or(name)
    }
}

/// Whether a text value can be written bare after `key=` and still be read
/// back unambiguously; else it is quoted (Rust's `{:?}`).
fn is_bare(value: &str) -> bool {
    !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '=' | '\\'))
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if is_bare(value) {
            let _ = write!(self.fields, " {}={value}", Line::name(field));
        } else {
            let _ = write!(self.fields, " {}={value:?}", Line::name(field));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            // The formatted message arrives as `fmt::Arguments`, whose
            // Debug is its text.
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", Line::name(field));
        }
    }
}

/// The SDK's level for a `tracing` level.
fn level(level: &TracingLevel) -> Level {
    if *level == TracingLevel::ERROR {
        Level::Error
    } else if *level == TracingLevel::WARN {
        Level::Warn
    } else if *level == TracingLevel::INFO {
        Level::Info
    } else if *level == TracingLevel::DEBUG {
        Level::Debug
    } else {
        Level::Trace
    }
}

/// The `tracing` filter for the host's most verbose level.
fn filter(max: LogLevel) -> LevelFilter {
    match max {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Sets the global default subscriber unless the app set one already.
pub(super) fn install(max: LogLevel) {
    let subscriber = HostSubscriber {
        max: filter(max),
        next_span: AtomicU64::new(1),
    };
    // Fails, and changes nothing, when a global default is set already.
    let _ = dispatcher::set_global_default(Dispatch::new(subscriber));
}

#[cfg(test)]
mod tests {
    use tracing_core::{callsite::Callsite, field::FieldSet, Kind};

    use super::*;

    /// A callsite for test events with the given field names.
    struct TestSite(&'static Metadata<'static>);
    impl Callsite for TestSite {
        fn set_interest(&self, _: Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            self.0
        }
    }

    #[test]
    fn the_message_comes_first_then_the_fields_as_key_value() {
        let mut line = Line::default();
        static SITE: TestSite = TestSite(&META);
        static META: Metadata<'static> = Metadata::new(
            "test",
            "app::db",
            TracingLevel::WARN,
            None,
            None,
            None,
            FieldSet::new(
                &["user", "message", "n", "path", "r#type", "ok"],
                tracing_core::identify_callsite!(&SITE),
            ),
            Kind::EVENT,
        );
        let fields = META.fields();
        let f = |name| fields.field(name).unwrap();
        line.record_str(&f("user"), "alice");
        line.record_debug(&f("message"), &format_args!("checked {}", "out"));
        line.record_i64(&f("n"), 3);
        line.record_str(&f("path"), "/a b");
        line.record_str(&f("r#type"), "");
        line.record_bool(&f("ok"), true);
        assert_eq!(
            line.finish(),
            r#"checked out user=alice n=3 path="/a b" type="" ok=true"#
        );

        let mut only_fields = Line::default();
        only_fields.record_u64(&f("n"), 7);
        assert_eq!(only_fields.finish(), "n=7");
    }

    #[test]
    fn levels_and_filters_match_the_abi_numbering() {
        let levels = [
            TracingLevel::ERROR,
            TracingLevel::WARN,
            TracingLevel::INFO,
            TracingLevel::DEBUG,
            TracingLevel::TRACE,
        ];
        for (i, l) in levels.iter().enumerate() {
            let n = i as LogLevel + 1;
            assert_eq!(level(l).as_abi(), n);
            assert!(*l <= filter(n));
            if let Some(less) = levels.get(i + 1) {
                assert!(*less > filter(n), "{less} passes {:?}", filter(n));
            }
        }
        assert_eq!(filter(0), LevelFilter::OFF);
    }
}
