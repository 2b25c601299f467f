//! Failed synchronous sends, handed to the worker. `webhook_send_sync` raises WH001 and so rolls
//! back the caller's transaction, attempt rows included; an operator would never see why
//! challenges fail. So the failure is also written into shared memory, with the id of the
//! (sub)transaction that made it, and the worker records it once that transaction has ended
//! without committing (a caller that commits, through `webhook_send_sync_result`, keeps its
//! own rows). The ring is small and best effort: when it is full the oldest note goes.

use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::JsonB;
use serde_json::{json, Value};

const SLOTS: usize = 64;
const NOTE_MAX: usize = 3000;

#[derive(Clone, Copy)]
pub struct Note {
    db: u32,
    xid: u32,
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

fn push(db: u32, xid: u32, text: &str) {
    let mut bytes = text.as_bytes();
    if bytes.len() > NOTE_MAX {
        bytes = &bytes[..NOTE_MAX];
    }
    let mut note = Note {
        db,
        xid,
        len: bytes.len() as u16,
        text: [0; NOTE_MAX],
    };
    note.text[..bytes.len()].copy_from_slice(bytes);
    let mut ring = NOTES.exclusive();
    if ring.n == SLOTS {
        ring.slots.copy_within(1.., 0);
        ring.n -= 1;
    }
    let n = ring.n;
    ring.slots[n] = note;
    ring.n += 1;
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
            push(db, xid, &note);
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
    /// Committed (its own rows exist), or another database's: forget it.
    Drop,
}

/// Whether any note waits (a look without a transaction).
pub fn pending() -> bool {
    crate::wake::shmem_ready() && NOTES.share().n > 0
}

/// Takes every note out of the ring and decides each one's fate; notes to keep go back.
pub fn drain() -> Vec<String> {
    if !crate::wake::shmem_ready() {
        return Vec::new();
    }
    if NOTES.share().n == 0 {
        return Vec::new();
    }
    let taken: Vec<Note> = {
        let mut ring = NOTES.exclusive();
        let n = ring.n;
        ring.n = 0;
        ring.slots[..n].to_vec()
    };
    let mine = unsafe { u32::from(pg_sys::MyDatabaseId) };
    let mut out = Vec::new();
    for note in taken {
        match fate(&note, mine) {
            Fate::Record(t) => out.push(t),
            Fate::Keep => push(note.db, note.xid, &text(&note)),
            Fate::Drop => {}
        }
    }
    out
}

fn text(note: &Note) -> String {
    String::from_utf8_lossy(&note.text[..note.len as usize]).into_owned()
}

fn fate(note: &Note, mine: u32) -> Fate {
    if note.db != mine {
        return Fate::Drop;
    }
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
