//! Changes asked of the master (a reload, a deploy, a rollback, an
//! upgrade) and how each ended, so whoever asked can wait for the end
//! (`host ctl reload --wait`).
//!
//! Asking for a change takes a [`Ticket`]. The code that carries the change
//! out keeps the tickets it serves (several requests may fold into one
//! reload) and, when the change is over, calls [`Changes::finish`] with
//! them: complete, or refused, abandoned, rolled back or superseded, with
//! one line saying so. The control socket takes the outcomes each turn of
//! the loop ([`Changes::take_done`]) and answers the clients waiting on
//! them; an outcome nobody waits for is dropped there.

/// One request for a change, as its asker knows it.
pub type Ticket = u64;

/// How a change ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The request it answers.
    pub ticket: Ticket,
    /// Complete (`true`), or refused, rolled back or superseded.
    pub ok: bool,
    /// One line on how it ended, as the log says it.
    pub message: String,
}

/// Tickets given out, and outcomes not taken yet.
#[derive(Debug, Default)]
pub struct Changes {
    last: Ticket,
    done: Vec<Outcome>,
}

impl Changes {
    /// A new ticket.
    pub fn ticket(&mut self) -> Ticket {
        self.last += 1;
        self.last
    }

    /// Records how the change behind `tickets` ended.
    pub fn finish(&mut self, tickets: &[Ticket], ok: bool, message: &str) {
        self.done.extend(tickets.iter().map(|&ticket| Outcome {
            ticket,
            ok,
            message: message.to_owned(),
        }));
    }

    /// The outcomes recorded since the last call.
    pub fn take_done(&mut self) -> Vec<Outcome> {
        std::mem::take(&mut self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_reach_each_ticket_once() {
        let mut changes = Changes::default();
        let (a, b) = (changes.ticket(), changes.ticket());
        assert_ne!(a, b);
        changes.finish(&[a, b], false, "refused");
        changes.finish(&[], true, "nobody asked");
        let done = changes.take_done();
        assert_eq!(done.len(), 2);
        assert!(done.iter().all(|o| !o.ok && o.message == "refused"));
        assert!(changes.take_done().is_empty());
    }
}
