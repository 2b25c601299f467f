//! Failed synchronous sends, handed to the worker. `webhook_send_sync` raises WH001 and so rolls
//! back the caller's transaction, attempt rows included; an operator would never see why
//! challenges fail. So the failure is also written into shared memory, with the id of the
//! (sub)transaction that made it, and the worker records it once that transaction has ended
//! without committing (a caller that commits, through `webhook_send_sync_result`, keeps its
//! own rows). The ring is small and best effort, shared by every database, and fair: a worker
//! takes its own database's notes only, a tenant holds at most `PER_TENANT` of them (its
//! oldest goes first), and when the ring is full the oldest note of whoever holds the most
//! goes, so a publisher that fails in a loop only ever pushes out its own notes.

use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::JsonB;
use serde_json::{json, Value};

const SLOTS: usize = 64;
const PER_TENANT: usize = 8;
const NOTE_MAX: usize = 3000;

#[derive(Clone, Copy)]
pub struct Note {
    db: u32,
    xid: u32,
    /// Whose note it is: its database and the event's tenant, hashed.
    owner: u64,
    len: u16,
    text: [u8; NOTE_MAX],
}

#[derive(Clone, Copy)]
pub struct Notes {
    n: usize,
    slots: [Note; SLOTS],
}

impl Default for Notes {
    fn default() -> Self {
        Notes {
            n: 0,
            slots: [Note {
                db: 0,
                xid: 0,
                owner: 0,
                len: 0,
                text: [0; NOTE_MAX],
            }; SLOTS],
        }
    }
}

unsafe impl PGRXSharedMemory for Notes {}

pub static NOTES: PgLwLock<Notes> = unsafe { PgLwLock::new(c"webhooks_sync_failures") };

pub fn init_shmem() {
    pgrx::pg_shmem_init!(NOTES);
}

fn push(db: u32, xid: u32, owner: u64, text: &str) {
    let mut bytes = text.as_bytes();
    if bytes.len() > NOTE_MAX {
        bytes = &bytes[..NOTE_MAX];
    }
    let mut note = Note {
        db,
        xid,
        owner,
        len: bytes.len() as u16,
        text: [0; NOTE_MAX],
    };
    note.text[..bytes.len()].copy_from_slice(bytes);
    let mut ring = NOTES.exclusive();
    let n = ring.n;
    let owners: Vec<u64> = ring.slots[..n].iter().map(|s| s.owner).collect();
    if let Some(i) = victim(&owners, owner, SLOTS, PER_TENANT) {
        ring.slots.copy_within(i + 1..n, i);
        ring.n -= 1;
    }
    let n = ring.n;
    ring.slots[n] = note;
    ring.n += 1;
}

/// Which note (by position, oldest first) goes to make room for one of `owner`: its own oldest
/// once it holds `per` notes, else, in a full ring, the oldest of whoever holds the most.
fn victim(owners: &[u64], owner: u64, cap: usize, per: usize) -> Option<usize> {
    if owners.iter().filter(|o| **o == owner).count() >= per {
        return owners.iter().position(|o| *o == owner);
    }
    if owners.len() < cap {
        return None;
    }
    let most = owners
        .iter()
        .max_by_key(|o| owners.iter().filter(|x| x == o).count())?;
    owners.iter().position(|o| o == most)
}

/// Whose a note is: its database and its event's tenant.
fn owner_of(db: u32, tenant: Option<&str>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&(db, tenant), &mut h);
    std::hash::Hasher::finish(&h)
}

fn text_fits(t: &str) -> bool {
    t.len() <= NOTE_MAX
}

/// Cuts a string to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Called by `_send_sync` when an endpoint failed: one note per failed answer. The event's
/// data is not kept (the caller rolls it back, and a challenge's code must not outlive it).
#[pg_extern(volatile, schema = "webhooks_internal")]
fn _sync_failed(event: JsonB, answers: JsonB) {
    if !crate::wake::shmem_ready() {
        return;
    }
    let (db, xid) = unsafe {
        (
            u32::from(pg_sys::MyDatabaseId),
            pg_sys::GetCurrentTransactionId().into_inner(),
        )
    };
    let ev = &event.0;
    for a in answers.0.as_array().into_iter().flatten() {
        if a.get("error").is_none_or(Value::is_null) {
            continue;
        }
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let (error, body) = (s(a, "error").unwrap_or_default(), s(a, "raw_body"));
        // A note is never cut (cut JSON would not parse): the receiver's body, then the error,
        // shrink until the whole note, escapes included, fits its slot.
        let mut room = 1000;
        let note = loop {
            let note = json!({
                "event_id": s(ev, "event_id"),
                "event_type": s(ev, "event_type"),
                "version": s(ev, "version"),
                "source": s(ev, "source"),
                "tenant_id": s(ev, "tenant_id"),
                "endpoint_id": s(a, "endpoint_id"),
                "endpoint_tenant": s(a, "endpoint_tenant"),
                "status": a.get("status"),
                "error": cut(&error, room),
                "body": body.as_deref().map(|b| cut(b, room / 4)),
                "started_us": a.get("started_us"),
                "duration_ms": a.get("duration_ms"),
            })
            .to_string();
            if text_fits(&note) || room == 0 {
                break note;
            }
            room /= 2;
        };
        if text_fits(&note) {
            push(
                db,
                xid,
                owner_of(db, ev.get("tenant_id").and_then(Value::as_str)),
                &note,
            );
        }
    }
    crate::wake::wake_worker();
}

/// What the worker does with a note.
#[derive(Debug, PartialEq)]
pub enum Fate {
    /// The transaction rolled back: record it.
    Record(String),
    /// Still running: look again later.
    Keep,
    /// Committed (its own rows exist): forget it.
    Drop,
}

/// Whether a note of this database waits (a look without a transaction).
pub fn pending() -> bool {
    if !crate::wake::shmem_ready() {
        return false;
    }
    let mine = unsafe { u32::from(pg_sys::MyDatabaseId) };
    let ring = NOTES.share();
    ring.slots[..ring.n].iter().any(|n| n.db == mine)
}

/// Takes this database's notes out of the ring (another database's stay for its own worker)
/// and decides each one's fate; notes to keep go back.
pub fn drain() -> Vec<String> {
    if !pending() {
        return Vec::new();
    }
    let mine = unsafe { u32::from(pg_sys::MyDatabaseId) };
    let taken: Vec<Note> = {
        let mut ring = NOTES.exclusive();
        let n = ring.n;
        let (ours, theirs): (Vec<Note>, Vec<Note>) =
            ring.slots[..n].iter().partition(|note| note.db == mine);
        for (i, note) in theirs.iter().enumerate() {
            ring.slots[i] = *note;
        }
        ring.n = theirs.len();
        ours
    };
    let mut out = Vec::new();
    for note in taken {
        match fate(&note) {
            Fate::Record(t) => out.push(t),
            Fate::Keep => push(note.db, note.xid, note.owner, &text(&note)),
            Fate::Drop => {}
        }
    }
    out
}

fn text(note: &Note) -> String {
    String::from_utf8_lossy(&note.text[..note.len as usize]).into_owned()
}

fn fate(note: &Note) -> Fate {
    let xid = pg_sys::TransactionId::from(note.xid);
    unsafe {
        if pg_sys::TransactionIdIsInProgress(xid) {
            Fate::Keep
        } else if pg_sys::TransactionIdDidCommit(xid) {
            Fate::Drop
        } else {
            Fate::Record(text(note))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::victim;

    #[test]
    fn a_flooding_owner_pushes_out_only_its_own_notes() {
        // room left, below its share: nothing goes
        assert_eq!(victim(&[1, 2, 1], 1, 8, 4), None);
        // at its share: its own oldest goes, even with room left
        assert_eq!(victim(&[2, 1, 1, 3, 1, 1], 1, 8, 4), Some(1));
        // full ring, a newcomer: the oldest of whoever holds the most
        assert_eq!(victim(&[2, 1, 1, 3, 1, 2], 4, 6, 4), Some(1));
        // a flood of one owner never takes another's note
        let mut ring: Vec<u64> = vec![7, 8];
        for _ in 0..100 {
            if let Some(i) = victim(&ring, 9, 6, 3) {
                ring.remove(i);
            }
            ring.push(9);
        }
        assert_eq!(ring, [7, 8, 9, 9, 9]);
    }
}
