//! The server key file that seals secrets at rest (core/src/sealing.rs does the sealing).
//!
//! Where it is: webhooks.key_file, or `webhooks.key` in the data directory, which the
//! postmaster makes at a start that finds none (zero configuration), and says so in the log.
//! Nothing else ever makes it: a key file that goes missing while the server runs is an error
//! wherever a key is needed (a new key made then would seal new secrets under a key the file
//! that comes back lacks). A file named by the setting is never made. Either way the file must be the server user's alone (mode 0600 or stricter): a
//! wider one is refused with the reason, since whoever reads it can open every secret.
//!
//! Each process reads the file when it first needs a key and again whenever the file changes
//! (its inode, size, modification or change time), so a key added by a rotation, or put back from a
//! backup, is used without a restart. Nothing here writes a key to a table, a setting, a log
//! line or an error.

use crate::sealing::{self, Keyring};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The default file's name, in the data directory.
pub const DEFAULT_NAME: &str = "webhooks.key";

// (ctime too: a chmod changes nothing else, and a wider mode must be refused at once)
type Stamp = (u64, u64, i64, i64, i64, i64, u64);

static LOADED: Mutex<Option<(PathBuf, Stamp, Arc<Keyring>)>> = Mutex::new(None);

/// The key file's path and whether it is the default one (which may be made when missing).
pub fn path() -> (PathBuf, bool) {
    match crate::guc::key_file() {
        Some(p) => (PathBuf::from(p), false),
        None => {
            // (the data directory, as the postmaster and every backend know it)
            let dir = unsafe {
                let d = pgrx::pg_sys::DataDir;
                if d.is_null() {
                    PathBuf::from(".")
                } else {
                    PathBuf::from(std::ffi::CStr::from_ptr(d).to_string_lossy().into_owned())
                }
            };
            (dir.join(DEFAULT_NAME), true)
        }
    }
}

fn stamp(m: &fs::Metadata) -> Stamp {
    (
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.size(),
    )
}

/// Refuses a file others may read or write, or that is not the server user's.
fn check_private(path: &Path, m: &fs::Metadata) -> Result<(), String> {
    let uid = unsafe { libc::geteuid() };
    if m.uid() != uid {
        return Err(format!(
            "webhooks.key_file {} is owned by uid {}, not by the server's user (uid {uid}): the key that seals endpoint secrets must be that user's alone",
            path.display(),
            m.uid()
        ));
    }
    if m.mode() & 0o077 != 0 {
        return Err(format!(
            "webhooks.key_file {} has mode {:04o}: group or others may read or change it, and whoever reads it opens every endpoint secret; chmod 600 {}",
            path.display(),
            m.mode() & 0o7777,
            path.display()
        ));
    }
    Ok(())
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| format!("no random bytes for a key: {e}"))?;
    Ok(b)
}

const HEADER: &str = "# webhooks: keys that seal endpoint secrets at rest, one per line: <key id> <base64 of 32 bytes>.\n\
# The last line seals; every line opens. Keep a copy with your backups of the database (a dump\n\
# holds only sealed secrets), and never remove a line while a secret is sealed under it\n\
# (SELECT * FROM webhooks.secret_keys in each database says).\n";

/// Writes `text` as the whole file, atomically: a new file beside it (0600), synced, renamed
/// over it, the directory synced.
fn replace(path: &Path, text: &str) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("webhooks.key"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!(
            "cannot write webhooks.key_file {}: {e}; add a line \"<key id> <base64 of 32 random bytes>\" to it yourself (for example: echo \"k$(date +%Y%m%d) $(openssl rand -base64 32)\" >> {})",
            path.display(),
            path.display()
        )
    })
}

/// Makes the default key file with one fresh key, unless it exists (another process may make
/// it at the same moment: the first link wins, the other's file is dropped).
fn create_default(path: &Path) -> Result<bool, String> {
    let id = sealing::new_id(&random::<6>()?);
    let text = format!("{HEADER}{}", sealing::key_line(&id, &random::<32>()?));
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".webhooks.key.{}.new", std::process::id()));
    let made = (|| -> std::io::Result<bool> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        let linked = match fs::hard_link(&tmp, path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        };
        fs::remove_file(&tmp)?;
        File::open(dir)?.sync_all()?;
        Ok(linked)
    })();
    made.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot make webhooks.key_file {}: {e}", path.display())
    })
}

/// Makes the default key file if it is missing; called by the postmaster as it loads the
/// library, so that a fresh cluster seals from its first endpoint on. Says where.
pub fn ensure_at_start() {
    let (p, default) = path();
    if !default || p.exists() {
        return;
    }
    match create_default(&p) {
        Ok(true) => pgrx::log!(
            "webhooks: made {} (mode 0600), the key that seals endpoint secrets at rest; keep a copy with your backups",
            p.display()
        ),
        Ok(false) => {}
        Err(e) => pgrx::warning!("webhooks: {e}"),
    }
}

/// The keys, read again when the file changed.
pub fn keyring() -> Result<Arc<Keyring>, String> {
    let (p, default) = path();
    let meta = match fs::metadata(&p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && default => {
            return Err(format!(
                "webhooks.key_file {} does not exist: put it back (a copy from your backups), or restart the server with webhooks in shared_preload_libraries, which makes a new key (secrets sealed under the old one then wait for it)",
                p.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "webhooks.key_file {} does not exist: endpoint secrets cannot be sealed or opened until it is there",
                p.display()
            ))
        }
        Err(e) => return Err(format!("webhooks.key_file {}: {e}", p.display())),
    };
    let st = stamp(&meta);
    if let Ok(g) = LOADED.lock() {
        if let Some((lp, ls, ring)) = g.as_ref() {
            if *lp == p && *ls == st {
                return Ok(ring.clone());
            }
        }
    }
    check_private(&p, &meta)?;
    let mut text = String::new();
    File::open(&p)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| format!("cannot read webhooks.key_file {}: {e}", p.display()))?;
    let ring =
        Keyring::parse(&text).map_err(|e| format!("webhooks.key_file {}: {e}", p.display()))?;
    if ring.current().is_none() {
        return Err(format!("webhooks.key_file {} holds no key", p.display()));
    }
    let ring = Arc::new(ring);
    if let Ok(mut g) = LOADED.lock() {
        *g = Some((p, st, ring.clone()));
    }
    Ok(ring)
}

/// Seals a value under the current key; a value already sealed is checked to open and kept.
pub fn seal(v: &str) -> Result<String, String> {
    let ring = keyring()?;
    if sealing::is_sealed(v) {
        ring.open(v).map_err(|e| e.to_string())?;
        return Ok(v.to_string());
    }
    ring.seal(v, random::<12>()?)
        .ok_or_else(|| "the key file holds no key".to_string())
}

/// Opens a sealed value (a plain one comes back as it is).
pub fn open(v: &str) -> Result<String, String> {
    if !sealing::is_sealed(v) {
        return Ok(v.to_string());
    }
    keyring()?.open(v).map_err(|e| e.to_string())
}

/// Adds a fresh key as the file's last line, which then seals; returns its id. The file is
/// locked while it is read and replaced, so two rotations at once keep both keys.
pub fn rotate() -> Result<String, String> {
    keyring()?;
    // (through a symbolic link to the file itself: the link stays, the file it names changes)
    let (p, _) = path();
    let p = fs::canonicalize(&p).map_err(|e| format!("webhooks.key_file {}: {e}", p.display()))?;
    loop {
        let f = File::open(&p).map_err(|e| format!("webhooks.key_file {}: {e}", p.display()))?;
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) } != 0 {
            return Err(format!("cannot lock webhooks.key_file {}", p.display()));
        }
        // Replaced by another rotation while this one waited for the lock: read the new one.
        let same = fs::metadata(&p)
            .ok()
            .zip(f.metadata().ok())
            .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
        if !same {
            continue;
        }
        let mut text = String::new();
        (&f).read_to_string(&mut text)
            .map_err(|e| format!("cannot read webhooks.key_file {}: {e}", p.display()))?;
        Keyring::parse(&text).map_err(|e| format!("webhooks.key_file {}: {e}", p.display()))?;
        let id = sealing::new_id(&random::<6>()?);
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&sealing::key_line(&id, &random::<32>()?));
        replace(&p, &text)?;
        return Ok(id);
    }
}
