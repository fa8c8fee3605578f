//! The fast path of a mutex on its home node: a lock word the home's daemon shares with the
//! node's processes, which they take and give back with one compare-and-swap while nobody else
//! wants the mutex.
//!
//! Each segment has a lock table (a memfd the daemon creates when a process first asks for it,
//! mapped read-write by processes that may write the segment): [`SLOTS`] slots of two words,
//! `tag` (the mutex's offset in the segment plus one; 0: no mutex) and `word`:
//!
//! ```text
//!  63        48 47  44 43             22 21              0
//! +------------+------+-----------------+-----------------+
//! | generation | uses |   session (22)  |    thread (22)  |
//! +------------+------+-----------------+-----------------+
//! holder (bits 0..44): 0 = free for any local thread, all ones = the daemon's (the lock
//! service decides: every lock and unlock goes to it), else the thread holding it.
//! ```
//!
//! The lock service at the home sees a delegated mutex as held by the node's fast path
//! ([`DELEGATE_SESSION`]); it is never asked about it while delegated. The daemon takes it back
//! (*recalls* it) before it gives the lock service any request that names the mutex: a free
//! word becomes the daemon's, a held one the daemon's with its holder made the lock service's
//! holder, all in one compare-and-swap, so a thread's fast lock or unlock and a recall are
//! ordered by the word. A thread whose compare-and-swap fails asks the daemon as before.
//!
//! The daemon changes a slot's tag only while the word is the daemon's, and raises the
//! generation when it hands the word out again: a thread that read the tag after the word and
//! swaps expecting the word it read cannot take a slot that was given to another mutex meanwhile.

/// Slots in a segment's lock table.
pub const SLOTS: usize = 512;
/// Bytes in a segment's lock table.
pub const TABLE_BYTES: usize = SLOTS * 16;

const FIELD_BITS: u32 = 22;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
const HOLDER_MASK: u64 = (1 << (2 * FIELD_BITS)) - 1;
const USES_SHIFT: u32 = 2 * FIELD_BITS;
const USES_MASK: u64 = 0xf;
const GEN_SHIFT: u32 = 48;

/// The holder of a word the daemon keeps (the lock service decides).
pub const DAEMON: u64 = HOLDER_MASK;
/// The holder of a free word.
pub const FREE: u64 = 0;

/// The session the lock service names as holder of a delegated mutex.
pub const DELEGATE_SESSION: u64 = u64::MAX;

/// A session's id as a word holds it: its low 22 bits. The daemon hands out session ids whose
/// low bits are neither 0 nor all ones and differ from every live session's.
pub fn session_bits(session: u64) -> u64 {
    session & FIELD_MASK
}

/// Whether a daemon may hand out `session` (see [`session_bits`]).
pub fn session_usable(session: u64) -> bool {
    let b = session_bits(session);
    b != 0 && b != FIELD_MASK
}

/// The holder value of thread `tid` of `session` (thread ids are below 2²², Linux's limit).
pub fn holder(session: u64, tid: u32) -> u64 {
    (session_bits(session) << FIELD_BITS) | (u64::from(tid) & FIELD_MASK)
}

/// A word's holder.
pub fn holder_of(word: u64) -> u64 {
    word & HOLDER_MASK
}

/// A held word's session bits and thread.
pub fn split(holder: u64) -> (u64, u32) {
    (holder >> FIELD_BITS, (holder & FIELD_MASK) as u32)
}

/// `word` with `holder` in place of its holder.
pub fn with_holder(word: u64, holder: u64) -> u64 {
    (word & !HOLDER_MASK) | (holder & HOLDER_MASK)
}

/// `word` freed by its holder: free, its use count one more (so the daemon sees it was used).
pub fn freed(word: u64) -> u64 {
    let uses = ((word >> USES_SHIFT) + 1) & USES_MASK;
    (word & !(HOLDER_MASK | (USES_MASK << USES_SHIFT))) | (uses << USES_SHIFT)
}

/// A word handed out again by the daemon: free, the next generation.
pub fn reissued(word: u64) -> u64 {
    let generation = (word >> GEN_SHIFT).wrapping_add(1) << GEN_SHIFT;
    generation | FREE
}

/// The tag of the mutex at `offset` (never 0).
pub fn tag(offset: u64) -> u64 {
    offset.wrapping_add(1).max(1)
}

/// The slot of the mutex at `offset` in its segment's lock table (two mutexes may share one:
/// the second is then not delegated).
pub fn slot(offset: u64) -> usize {
    ((offset >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let h = holder(0x1234_5678, 4_194_303);
        assert_eq!(split(h), (0x1234_5678 & FIELD_MASK, 4_194_303));
        assert_ne!(h, FREE);
        assert_ne!(h, DAEMON);
        let w = reissued(with_holder(u64::MAX, DAEMON));
        assert_eq!(holder_of(w), FREE);
        assert_eq!(w >> GEN_SHIFT, 0, "the generation wraps");
        let held = with_holder(w, h);
        assert_eq!(holder_of(held), h);
        let f = freed(held);
        assert_eq!(holder_of(f), FREE);
        assert_ne!(f, w, "a use shows");
        assert_eq!(f >> GEN_SHIFT, w >> GEN_SHIFT);
        assert_ne!(reissued(f) >> GEN_SHIFT, f >> GEN_SHIFT);
    }

    #[test]
    fn sessions_and_slots() {
        assert!(!session_usable(0));
        assert!(!session_usable(FIELD_MASK));
        assert!(!session_usable(1 << 22));
        assert!(session_usable(1));
        assert!((0..1_000_000u64)
            .step_by(40)
            .all(|o| slot(o) < SLOTS && tag(o) != 0));
        // Neighbouring mutexes (40 bytes apart) rarely share a slot.
        let used: std::collections::BTreeSet<usize> = (0..100u64).map(|i| slot(i * 40)).collect();
        assert!(used.len() > 80, "{}", used.len());
    }
}
