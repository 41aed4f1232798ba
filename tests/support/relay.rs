//! A TCP relay the test can cut and restore on the same port: between the gateway
//! and a server it depends on (the Kubernetes API), it makes that server vanish (new
//! connections refused, open ones reset) and come back, as a network blip would.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub struct Relay {
    pub port: u16,
    upstream: SocketAddr,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accepting: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Relay {
    pub fn start(upstream: SocketAddr) -> Relay {
        let port = super::free_port();
        let mut relay = Relay {
            port,
            upstream,
            open: Arc::new(Mutex::new(Vec::new())),
            accepting: None,
        };
        relay.up();
        relay
    }

    /// Accepts again, on the same port.
    pub fn up(&mut self) {
        if self.accepting.is_some() {
            return;
        }
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("relay port");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (upstream, open, stopping) = (self.upstream, self.open.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(upstream) {
                            pipe(client, server, &open);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(_) => return,
                }
            }
            // Dropping the listener here closes the port.
        });
        self.accepting = Some((stop, thread));
    }

    /// Refuses new connections and resets the open ones.
    pub fn down(&mut self) {
        if let Some((stop, thread)) = self.accepting.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(client: TcpStream, server: TcpStream, open: &Mutex<Vec<TcpStream>>) {
    let mut open = open.lock().unwrap();
    for s in [&client, &server] {
        if let Ok(clone) = s.try_clone() {
            open.push(clone);
        }
    }
    for (mut from, mut to) in [
        (client.try_clone().unwrap(), server.try_clone().unwrap()),
        (server, client),
    ] {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.down();
    }
}
