//! The current time, formatted once per second for `Date` headers and the access log.
//!
//! Formatting a date costs far more than a request's other header work, and
//! every response carries one, so each worker keeps the two forms it needs and
//! reformats them only when the second changes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use time::{format_description::FormatItem, macros::format_description, OffsetDateTime};

/// Common Log Format time, e.g. `24/Nov/2026:20:22:38 +0000`.
const CLF: &[FormatItem<'static>] =
    format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");

/// ISO 8601 time in UTC, e.g. `2026-11-24T20:22:38Z`.
const ISO: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// The forms of the current second.
pub struct DateCache {
    second: u64,
    /// When, on the monotonic clock, the wall clock's next second begins:
    /// until then the wall clock need not be read.
    next: Option<Instant>,
    http: String,
    clf: String,
    iso: String,
}

impl Default for DateCache {
    fn default() -> Self {
        let mut cache = DateCache {
            second: u64::MAX,
            next: None,
            http: String::new(),
            clf: String::new(),
            iso: String::new(),
        };
        cache.refresh();
        cache
    }
}

impl DateCache {
    /// Reformats if the second changed since the last call.
    pub fn refresh(&mut self) {
        self.refresh_at(Instant::now());
    }

    /// Like [`DateCache::refresh`], given the monotonic time now: within the
    /// second last seen it reads no clock at all.
    pub fn refresh_at(&mut self, now: Instant) {
        if self.next.is_some_and(|next| now < next) {
            return;
        }
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let to_next =
            Duration::from_secs(1) - Duration::from_nanos(since_epoch.subsec_nanos().into());
        self.next = Some(now + to_next);
        let second = since_epoch.as_secs();
        if second == self.second {
            return;
        }
        self.second = second;
        let whole = UNIX_EPOCH + Duration::from_secs(second);
        self.http = httpdate::fmt_http_date(whole);
        let time = OffsetDateTime::from(whole);
        self.clf = time.format(CLF).unwrap_or_default();
        self.iso = time.format(ISO).unwrap_or_default();
    }

    /// IMF-fixdate, e.g. `Tue, 24 Nov 2026 20:22:38 GMT`.
    pub fn http(&self) -> &str {
        &self.http
    }

    /// Common Log Format time.
    pub fn clf(&self) -> &str {
        &self.clf
    }

    /// ISO 8601 time.
    pub fn iso(&self) -> &str {
        &self.iso
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_both_forms() {
        let cache = DateCache::default();
        assert_eq!(cache.http().len(), 29, "{}", cache.http());
        assert!(cache.http().ends_with(" GMT"));
        assert!(cache.clf().ends_with(" +0000"), "{}", cache.clf());
        assert_eq!(cache.clf().len(), 26, "{}", cache.clf());
        assert_eq!(cache.iso().len(), 20, "{}", cache.iso());
    }
}
