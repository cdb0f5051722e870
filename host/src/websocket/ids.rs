//! WebSocket connection ids: unique within a worker for its life, and
//! saying which of the worker's loops holds the connection.
//!
//! An id is the loop's index in its top 16 bits and that loop's count of
//! accepted connections below, so ids are never reused while the worker
//! runs and a message can be routed to the right loop without a lookup.

/// Bits of an id below the loop index.
const SERIAL_BITS: u32 = 48;

/// Makes the ids of one loop's connections.
#[derive(Debug)]
pub struct IdMaker {
    loop_index: u64,
    next: u64,
}

impl IdMaker {
    /// The ids of loop `loop_index`.
    pub fn new(loop_index: usize) -> IdMaker {
        IdMaker {
            loop_index: loop_index as u64,
            next: 1,
        }
    }

    /// The next id.
    pub fn next_id(&mut self) -> u64 {
        let id = (self.loop_index << SERIAL_BITS) | (self.next & ((1 << SERIAL_BITS) - 1));
        self.next += 1;
        id
    }
}

/// The index of the loop whose connection `id` is.
pub fn loop_of(id: u64) -> usize {
    (id >> SERIAL_BITS) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_loop_and_do_not_repeat() {
        let mut a = IdMaker::new(0);
        let mut b = IdMaker::new(3);
        let (a1, a2, b1) = (a.next_id(), a.next_id(), b.next_id());
        assert_ne!(a1, a2);
        assert_eq!((loop_of(a1), loop_of(b1)), (0, 3));
        assert_ne!(a1, b1);
    }
}
