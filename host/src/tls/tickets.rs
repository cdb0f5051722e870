//! TLS session tickets that every worker can open: a client that got a
//! ticket from one worker resumes on any other, on a worker forked after a
//! reload, and on a worker of the next generation.
//!
//! rustls's own ticketer makes random keys in each process and rotates them
//! on its own, so a ticket would only resume on the worker that issued it —
//! with N workers, almost never. Here the master makes one [`TicketSecret`]
//! at start (from the OS's random source through aws-lc), keeps it across
//! `HUP` reloads, and every worker inherits it through `fork`. The workers
//! never talk to each other about keys:
//!
//! - **Keys rotate by the wall clock.** Time is cut into periods of
//!   [`PERIOD_SECS`] since the Unix epoch; the key of period `n` is
//!   HKDF-SHA256 of the secret with info `"host ticket key v1" || n`
//!   (`n` as 8 big-endian bytes). Every process on the machine reads the
//!   same clock, so they agree on the period and on its key without any
//!   coordination, and a worker forked later derives the same keys.
//! - **A ticket names its period** ([`TICKET_VERSION`], then `n` as 8
//!   big-endian bytes, both authenticated as associated data), so opening
//!   one derives its key directly instead of trying keys in turn.
//! - **It is accepted only in its own period and the next** ([`accepts`]):
//!   a ticket lives between one and two periods, and rustls is told one
//!   period ([`ProducesTickets::lifetime`]), the time it surely lives.
//! - **AES-256-GCM-SIV with a random nonce** (aws-lc's [`RandomizedNonceKey`]).
//!   Many processes seal under the same key for a whole period, each with
//!   nonces from its own random generator and no shared counter; GCM-SIV
//!   keeps even a repeated nonce from exposing the key (a repeat shows only
//!   that two tickets are equal), where plain GCM would lose its
//!   authenticity. The cost is a second pass over a ticket of about a
//!   hundred bytes.
//!
//! What this gives up: a key is derived, not erased, so the secret (in the
//! memory of the master and of every worker) opens every ticket issued
//! under it, for as long as the master runs. rustls asks for erasure to
//! bound the damage to forward secrecy; a ratchet (each period's key
//! hashed from the last one, the old one dropped) would give that, at the
//! price of the master advancing the chain on its tick and the workers
//! deriving forward from the key they were forked with. TLS 1.3 resumption
//! here uses `psk_dhe_ke` (a fresh key exchange on every resumption), so a
//! leaked secret exposes resumed sessions' keys only in TLS 1.2.
//!
//! Opening is bullet-proof: a ticket that is short, empty, of another
//! version, from another secret, too old, from the future, or altered in
//! any byte opens to `None`; nothing on that path panics or allocates
//! before the length checks pass.

use std::{
    fmt,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::{
    aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM_SIV, NONCE_LEN},
    hkdf,
};
use rustls::server::ProducesTickets;
use zeroize::{Zeroize, Zeroizing};

/// How long one ticket key is used for sealing, in seconds (12 hours). A
/// ticket opens in the period it was sealed in and the next one, so it
/// lives between one and two periods; rustls tells clients one period.
pub const PERIOD_SECS: u64 = 12 * 60 * 60;
// rustls takes the lifetime as a u32.
const _: () = assert!(PERIOD_SECS <= u32::MAX as u64);
/// The length of the secret the master makes, in bytes (256 bits).
pub const SECRET_LEN: usize = 32;
/// The first byte of every ticket: the layout and key derivation below.
/// A ticket with any other first byte is refused.
pub const TICKET_VERSION: u8 = 1;
/// The HKDF info that precedes the period number; naming the version keeps
/// keys of a future layout apart from these.
const KEY_INFO: &[u8] = b"host ticket key v1";
/// The HKDF salt for extracting the pseudo-random key from the secret: a
/// fixed label, since the secret is already uniformly random.
const SECRET_SALT: &[u8] = b"host ticket secret";
/// The associated data at the head of a ticket: version and period.
const HEADER_LEN: usize = 1 + 8;
/// The tag AES-256-GCM-SIV appends to the ciphertext.
const TAG_LEN: usize = 16;
/// The shortest ticket that can open (an empty plaintext).
const MIN_TICKET_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// The length of a ticket key (AES-256).
const KEY_LEN: usize = 32;

/// A secret made once in the master (from the OS's random source),
/// inherited by every worker through fork, kept across HUP reloads. The
/// keys of every period derive from it ([`TicketSecret::ticketer`]).
///
/// It zeroes itself on drop; its `Debug` shows no key bytes.
pub struct TicketSecret {
    /// Boxed so that moving the secret never leaves copies behind.
    bytes: Box<[u8; SECRET_LEN]>,
}

impl TicketSecret {
    /// A new secret from aws-lc's random generator (seeded from the OS,
    /// and fork-safe).
    pub fn generate() -> std::io::Result<TicketSecret> {
        let mut bytes = Box::new([0u8; SECRET_LEN]);
        aws_lc_rs::rand::fill(&mut bytes[..])
            .map_err(|_| std::io::Error::other("no random bytes for the ticket secret"))?;
        Ok(TicketSecret { bytes })
    }

    /// A secret received from elsewhere (the previous master on a binary
    /// upgrade). `None` unless `bytes` is exactly [`SECRET_LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<TicketSecret> {
        let array: &[u8; SECRET_LEN] = bytes.try_into().ok()?;
        Some(TicketSecret {
            bytes: Box::new(*array),
        })
    }

    /// The secret's bytes, to hand over to a new master. Never log them.
    pub fn expose(&self) -> &[u8; SECRET_LEN] {
        &self.bytes
    }

    /// The ticketer for a worker's rustls ServerConfig
    /// (`config.ticketer = secret.ticketer()`).
    pub fn ticketer(&self) -> Arc<dyn ProducesTickets> {
        Arc::new(Ticketer::new(self))
    }
}

impl Drop for TicketSecret {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for TicketSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketSecret(..)")
    }
}

/// Whether a ticket sealed in period `sealed` opens in period `now`: in
/// its own period and the next, never before it was sealed.
pub fn accepts(sealed: u64, now: u64) -> bool {
    now == sealed || now.checked_sub(1) == Some(sealed)
}

/// The period `now` falls in; `None` before the Unix epoch (a clock that
/// far off seals and opens nothing).
fn period_at(now: SystemTime) -> Option<u64> {
    Some(now.duration_since(UNIX_EPOCH).ok()?.as_secs() / PERIOD_SECS)
}

/// Seals and opens tickets with the key of the period the clock says.
struct Ticketer {
    /// HKDF's pseudo-random key, extracted from the secret once; it zeroes
    /// itself on drop.
    prk: hkdf::Prk,
}

impl Ticketer {
    fn new(secret: &TicketSecret) -> Ticketer {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, SECRET_SALT);
        Ticketer {
            prk: salt.extract(&secret.bytes[..]),
        }
    }

    /// The key of `period`.
    fn key(&self, period: u64) -> Option<RandomizedNonceKey> {
        let period = period.to_be_bytes();
        let info: [&[u8]; 2] = [KEY_INFO, &period];
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        self.prk
            .expand(&info, &AES_256_GCM_SIV)
            .ok()?
            .fill(&mut key[..])
            .ok()?;
        RandomizedNonceKey::new(&AES_256_GCM_SIV, &key[..]).ok()
    }

    /// Seals `plain` as a ticket of the period `now` falls in.
    fn encrypt_at(&self, plain: &[u8], now: SystemTime) -> Option<Vec<u8>> {
        let period = period_at(now)?;
        let key = self.key(period)?;
        let mut header = [0u8; HEADER_LEN];
        header[0] = TICKET_VERSION;
        header[1..].copy_from_slice(&period.to_be_bytes());
        let mut sealed = plain.to_vec();
        let nonce = key
            .seal_in_place_append_tag(Aad::from(header), &mut sealed)
            .ok()?;
        let mut ticket = Vec::with_capacity(HEADER_LEN + NONCE_LEN + sealed.len());
        ticket.extend_from_slice(&header);
        ticket.extend_from_slice(nonce.as_ref());
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    /// Opens `ticket` if it is whole, of this version and this secret, and
    /// sealed in the period `now` falls in or the one before.
    fn decrypt_at(&self, ticket: &[u8], now: SystemTime) -> Option<Vec<u8>> {
        if ticket.len() < MIN_TICKET_LEN {
            return None;
        }
        let (header, rest) = ticket.split_at(HEADER_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        if header[0] != TICKET_VERSION {
            return None;
        }
        let sealed_in = u64::from_be_bytes(header[1..].try_into().ok()?);
        if !accepts(sealed_in, period_at(now)?) {
            return None;
        }
        let key = self.key(sealed_in)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut plain = sealed.to_vec();
        let len = key
            .open_in_place(nonce, Aad::from(header), &mut plain)
            .ok()?
            .len();
        plain.truncate(len);
        Some(plain)
    }
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        // Fits: checked at compile time beside the constant.
        PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.encrypt_at(plain, SystemTime::now())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.decrypt_at(cipher, SystemTime::now())
    }
}

impl fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticketer")
            .field("period_secs", &PERIOD_SECS)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The start of period `n`, plus `secs`.
    fn at(n: u64, secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(n * PERIOD_SECS + secs)
    }

    /// A period well after the epoch, as the clock reads today.
    const N: u64 = 40_000;

    const PLAIN: &[u8] = b"a resumption secret and the session's parameters";

    #[test]
    fn accepts_its_own_period_and_the_next_only() {
        let cases = [
            (N, N, true),
            (N, N + 1, true),
            (N, N + 2, false),
            (N, N + 1000, false),
            (N + 1, N, false),
            (0, 0, true),
            (0, 1, true),
            (u64::MAX, u64::MAX, true),
            (u64::MAX, 0, false),
            (0, u64::MAX, false),
        ];
        for (sealed, now, want) in cases {
            assert_eq!(accepts(sealed, now), want, "sealed {sealed}, now {now}");
        }
    }

    #[test]
    fn period_follows_the_wall_clock() {
        let cases = [
            (UNIX_EPOCH, Some(0)),
            (at(0, PERIOD_SECS - 1), Some(0)),
            (at(1, 0), Some(1)),
            (at(N, 17), Some(N)),
            (UNIX_EPOCH - Duration::from_secs(1), None),
        ];
        for (now, want) in cases {
            assert_eq!(period_at(now), want, "{now:?}");
        }
    }

    #[test]
    fn a_ticket_from_one_worker_opens_on_another_within_two_periods() {
        let secret = TicketSecret::generate().unwrap();
        // Two workers: each builds its own ticketer from the inherited secret.
        let (one, two) = (Ticketer::new(&secret), Ticketer::new(&secret));
        let ticket = one.encrypt_at(PLAIN, at(N, 5)).unwrap();
        let cases = [
            (at(N, 5), true),
            (at(N, PERIOD_SECS - 1), true),
            (at(N + 1, 0), true),
            (at(N + 1, PERIOD_SECS - 1), true),
            (at(N + 2, 0), false),
            (at(N + 9, 0), false),
            (at(N - 1, PERIOD_SECS - 1), false),
            (UNIX_EPOCH - Duration::from_secs(1), false),
        ];
        for (now, opens) in cases {
            let got = two.decrypt_at(&ticket, now);
            assert_eq!(got.as_deref(), opens.then_some(PLAIN), "{now:?}");
        }
    }

    #[test]
    fn a_ticket_from_another_secret_is_refused() {
        let ours = Ticketer::new(&TicketSecret::generate().unwrap());
        let theirs = Ticketer::new(&TicketSecret::generate().unwrap());
        let ticket = theirs.encrypt_at(PLAIN, at(N, 0)).unwrap();
        assert_eq!(ours.decrypt_at(&ticket, at(N, 0)), None);
        assert_eq!(theirs.decrypt_at(&ticket, at(N, 0)).as_deref(), Some(PLAIN));
    }

    #[test]
    fn a_secret_handed_over_opens_the_same_tickets() {
        let secret = TicketSecret::generate().unwrap();
        let handed = TicketSecret::from_bytes(secret.expose()).unwrap();
        let ticket = Ticketer::new(&secret).encrypt_at(PLAIN, at(N, 0));
        let opened = Ticketer::new(&handed).decrypt_at(&ticket.unwrap(), at(N, 1));
        assert_eq!(opened.as_deref(), Some(PLAIN));
        for len in [0, 1, SECRET_LEN - 1, SECRET_LEN + 1] {
            assert!(TicketSecret::from_bytes(&vec![7; len]).is_none(), "{len}");
        }
    }

    #[test]
    fn every_single_byte_flip_is_refused() {
        let ticketer = Ticketer::new(&TicketSecret::generate().unwrap());
        let ticket = ticketer.encrypt_at(PLAIN, at(N, 0)).unwrap();
        assert_eq!(ticket.len(), MIN_TICKET_LEN + PLAIN.len());
        for i in 0..ticket.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = ticket.clone();
                bad[i] ^= flip;
                assert_eq!(
                    ticketer.decrypt_at(&bad, at(N, 0)),
                    None,
                    "byte {i} ^ {flip:#x}"
                );
            }
        }
    }

    #[test]
    fn short_long_and_foreign_inputs_are_refused() {
        let ticketer = Ticketer::new(&TicketSecret::generate().unwrap());
        let ticket = ticketer.encrypt_at(PLAIN, at(N, 0)).unwrap();
        let mut longer = ticket.clone();
        longer.push(0);
        let mut other_version = ticket.clone();
        other_version[0] = TICKET_VERSION + 1;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("one byte", vec![TICKET_VERSION]),
            ("header only", ticket[..HEADER_LEN].to_vec()),
            (
                "one short of the minimum",
                ticket[..MIN_TICKET_LEN - 1].to_vec(),
            ),
            ("cut at the minimum", ticket[..MIN_TICKET_LEN].to_vec()),
            ("last byte cut", ticket[..ticket.len() - 1].to_vec()),
            ("a byte appended", longer),
            ("another version", other_version),
            ("zeros", vec![0; ticket.len()]),
            ("rustls's own ticket size of zeros", vec![0; 200]),
        ];
        for (what, input) in cases {
            assert_eq!(ticketer.decrypt_at(&input, at(N, 0)), None, "{what}");
        }
    }

    #[test]
    fn an_empty_plaintext_round_trips() {
        let ticketer = Ticketer::new(&TicketSecret::generate().unwrap());
        let ticket = ticketer.encrypt_at(b"", at(N, 0)).unwrap();
        assert_eq!(ticket.len(), MIN_TICKET_LEN);
        assert_eq!(ticketer.decrypt_at(&ticket, at(N, 0)), Some(vec![]));
    }

    #[test]
    fn two_tickets_of_the_same_session_differ() {
        let ticketer = Ticketer::new(&TicketSecret::generate().unwrap());
        let (a, b) = (
            ticketer.encrypt_at(PLAIN, at(N, 0)).unwrap(),
            ticketer.encrypt_at(PLAIN, at(N, 0)).unwrap(),
        );
        assert_ne!(a, b, "the nonce is random");
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let secret = TicketSecret::from_bytes(&[0xab; SECRET_LEN]).unwrap();
        let shown = format!("{secret:?} {:?}", secret.ticketer());
        assert!(
            !shown.to_lowercase().contains("ab, ") && !shown.contains("171"),
            "{shown}"
        );
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
    }

    #[test]
    fn the_ticketer_says_what_rustls_needs() {
        let ticketer = TicketSecret::generate().unwrap().ticketer();
        assert!(ticketer.enabled());
        assert_eq!(u64::from(ticketer.lifetime()), PERIOD_SECS);
        let ticket = ticketer.encrypt(PLAIN).unwrap();
        assert_eq!(ticketer.decrypt(&ticket).as_deref(), Some(PLAIN));
    }
}
