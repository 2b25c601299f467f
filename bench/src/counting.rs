//! A receiver that answers 200 at once and notes, for every request, its `webhook-id` and the
//! worker process that sent it: what the two-worker run needs to print each worker's rate and
//! to show that no delivery went out twice. The sender is found from the connection's source
//! port, in /proc (the bench runs as root, beside the cluster), once per connection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Seen {
    /// (path and webhook-id, pid of the sender, 0 when it could not be told). The webhook-id is
    /// the event's: endpoints that share a receiver get one path each, or every event of ten
    /// endpoints would look sent ten times.
    requests: Vec<(String, i32)>,
}

pub struct Counting {
    pub url: String,
    seen: Arc<Mutex<Seen>>,
    /// The processes a connection may come from (the workers), looked up at each accept.
    senders: Arc<Mutex<Vec<i32>>>,
}

/// Sum of the requests seen: per sender pid (0: not told), and how many distinct (path, id).
pub struct Tally {
    pub requests: usize,
    pub distinct: usize,
    pub by_sender: Vec<(i32, usize)>,
}

impl Counting {
    pub fn start() -> Counting {
        let l = TcpListener::bind("127.0.0.1:0").expect("a port on 127.0.0.1");
        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
        let url = format!("http://127.0.0.1:{port}/hook");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let senders = Arc::new(Mutex::new(Vec::new()));
        let (s2, p2) = (Arc::clone(&seen), Arc::clone(&senders));
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let from = s
                    .peer_addr()
                    .map(|a| owner_of(a.port(), port, &p2.lock().unwrap()))
                    .unwrap_or(0);
                let seen = Arc::clone(&s2);
                std::thread::spawn(move || serve(s, from, &seen));
            }
        });
        Counting { url, seen, senders }
    }

    /// Starts a count: forgets what came before and takes the processes to attribute to.
    pub fn reset(&self, senders: Vec<i32>) {
        *self.senders.lock().unwrap() = senders;
        self.seen.lock().unwrap().requests.clear();
    }

    pub fn tally(&self) -> Tally {
        let seen = self.seen.lock().unwrap();
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut by: HashMap<i32, usize> = HashMap::new();
        for (id, pid) in &seen.requests {
            *ids.entry(id).or_default() += 1;
            *by.entry(*pid).or_default() += 1;
        }
        let mut by_sender: Vec<(i32, usize)> = by.into_iter().collect();
        by_sender.sort();
        Tally {
            requests: seen.requests.len(),
            distinct: ids.len(),
            by_sender,
        }
    }
}

fn serve(s: std::net::TcpStream, from: i32, seen: &Mutex<Seen>) {
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    loop {
        let (mut len, mut id, mut path) = (0usize, String::new(), None);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if path.is_none() {
                path = Some(line.split(' ').nth(1).unwrap_or("").to_string());
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("webhook-id") {
                    id = v.trim().to_string();
                }
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let key = format!("{} {id}", path.unwrap_or_default());
        seen.lock().unwrap().requests.push((key, from));
        if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

/// The process among `pids` whose socket is 127.0.0.1:`port` connected to our `listening`
/// port (0 when none is).
fn owner_of(port: u16, listening: u16, pids: &[i32]) -> i32 {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |addr: &str| {
        addr.split_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let inode = tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && port_of(f[1]) == Some(port) && port_of(f[2]) == Some(listening))
            .then(|| f[9].to_string())
    });
    let Some(inode) = inode else { return 0 };
    let want = format!("socket:[{inode}]");
    for &pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path())
                .map(|t| t.to_string_lossy() == want)
                .unwrap_or(false)
            {
                return pid;
            }
        }
    }
    0
}
