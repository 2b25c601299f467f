//! A small HTTP CONNECT proxy on 127.0.0.1 for tests of proxied HTTPS delivery.
//!
//! `CONNECT host:port` dials the target, answers `200 Connection established` and relays bytes
//! both ways until either side closes. Any other request (e.g. an absolute-form
//! `POST http://host/path`) is answered `501` so misuse is visible in the test.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(30);
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 16 * 1024;

pub struct ConnectProxy {
    url: String,
    shared: Arc<Shared>,
}

struct Shared {
    refuse: bool,
    stop: AtomicBool,
    connects: Mutex<Vec<String>>,
    others: Mutex<Vec<String>>,
    /// Open sockets (client and target sides), shut down on drop.
    socks: Mutex<HashMap<u64, TcpStream>>,
    next: AtomicU64,
}

impl ConnectProxy {
    /// A proxy that tunnels every CONNECT.
    pub fn start() -> ConnectProxy {
        ConnectProxy::run(false)
    }

    /// A proxy that answers every CONNECT with `403 Forbidden` (targets are still recorded).
    pub fn refusing() -> ConnectProxy {
        ConnectProxy::run(true)
    }

    fn run(refuse: bool) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("local_addr"));
        let shared = Arc::new(Shared {
            refuse,
            stop: AtomicBool::new(false),
            connects: Mutex::new(Vec::new()),
            others: Mutex::new(Vec::new()),
            socks: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        });
        let sh = Arc::clone(&shared);
        std::thread::spawn(move || {
            while !sh.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let sh = Arc::clone(&sh);
                        std::thread::spawn(move || handle(s, &sh));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ConnectProxy { url, shared }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host:port` targets of the CONNECT requests received, in order.
    pub fn connects(&self) -> Vec<String> {
        lock(&self.shared.connects).clone()
    }

    /// Request lines of non-CONNECT requests (answered 501), in order.
    pub fn others(&self) -> Vec<String> {
        lock(&self.shared.others).clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in lock(&self.shared.socks).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers a socket clone for shutdown on drop; returns its key.
fn register(sh: &Shared, s: &TcpStream) -> Option<u64> {
    let id = sh.next.fetch_add(1, Ordering::SeqCst);
    let c = s.try_clone().ok()?;
    lock(&sh.socks).insert(id, c);
    Some(id)
}

fn unregister(sh: &Shared, id: Option<u64>) {
    if let Some(id) = id {
        lock(&sh.socks).remove(&id);
    }
}

fn handle(client: TcpStream, sh: &Shared) {
    let _ = client.set_nonblocking(false);
    let _ = client.set_read_timeout(Some(IO_TIMEOUT));
    let _ = client.set_write_timeout(Some(IO_TIMEOUT));
    let id = register(sh, &client);
    if !sh.stop.load(Ordering::SeqCst) {
        proxy(client, sh);
    }
    unregister(sh, id);
}

fn proxy(mut client: TcpStream, sh: &Shared) {
    let Some(head) = read_head(&mut client) else {
        return;
    };
    let first = head.lines().next().unwrap_or("").to_string();
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !method.eq_ignore_ascii_case("CONNECT") {
        lock(&sh.others).push(first.clone());
        reply(
            &mut client,
            "501 Not Implemented",
            "only CONNECT is supported\n",
        );
        return;
    }
    lock(&sh.connects).push(target.to_string());
    if sh.refuse {
        reply(
            &mut client,
            "403 Forbidden",
            "CONNECT refused by test proxy\n",
        );
        return;
    }
    let Some(upstream) = dial(target) else {
        reply(&mut client, "502 Bad Gateway", "cannot reach target\n");
        return;
    };
    let up_id = register(sh, &upstream);
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_ok()
    {
        tunnel(client, upstream);
    }
    unregister(sh, up_id);
}

/// Reads the request head byte by byte (so nothing after it is consumed) up to `\r\n\r\n`.
fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD || s.read(&mut b).ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn reply(s: &mut TcpStream, status: &str, body: &str) {
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes());
    let _ = s.shutdown(Shutdown::Write);
}

fn dial(target: &str) -> Option<TcpStream> {
    let addrs = target.to_socket_addrs().ok()?;
    for a in addrs {
        if let Ok(s) = TcpStream::connect_timeout(&a, DIAL_TIMEOUT) {
            let _ = s.set_read_timeout(Some(IO_TIMEOUT));
            let _ = s.set_write_timeout(Some(IO_TIMEOUT));
            return Some(s);
        }
    }
    None
}

/// Copies bytes both ways until either side closes or times out, then closes both.
fn tunnel(client: TcpStream, upstream: TcpStream) {
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pump(c2, u2));
    pump(upstream, client);
    let _ = up.join();
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    // Either side ending ends the tunnel: this also wakes the other pump.
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
