//! Connection caps for a listener: at most `global` connections at once and
//! at most `per_peer` from one IP address, so one client (or a crowd of
//! half-sent requests) cannot take every file descriptor.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct ConnLimit {
    global: usize,
    per_peer: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// Connections closed at once for being over a cap.
    pub refused: AtomicU64,
}

/// A held connection slot; dropping it frees the slot.
pub struct Slot {
    limit: Arc<ConnLimit>,
    ip: IpAddr,
}

/// Which connection cap a new connection would go over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverCap {
    #[error("{open} connections open, the cap for all peers")]
    Global { open: usize },
    #[error("{open} connections open from {ip}, the cap per peer")]
    Peer { open: usize, ip: IpAddr },
}

impl ConnLimit {
    pub fn new(global: usize, per_peer: usize) -> Arc<ConnLimit> {
        Arc::new(ConnLimit { global, per_peer, open: Mutex::new((0, HashMap::new())), refused: AtomicU64::new(0) })
    }

    /// A slot for a connection from `ip`, or which cap it is over.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, OverCap> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let from_peer = open.1.get(&ip).copied().unwrap_or(0);
        let over = if open.0 >= self.global {
            Some(OverCap::Global { open: open.0 })
        } else if from_peer >= self.per_peer {
            Some(OverCap::Peer { open: from_peer, ip })
        } else {
            None
        };
        if let Some(why) = over {
            self.refused.fetch_add(1, Relaxed);
            return Err(why);
        }
        open.0 += 1;
        *open.1.entry(ip).or_default() += 1;
        Ok(Slot { limit: self.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// The next connection on `listener` within `limit` (its slot held until
/// dropped); one over a cap is closed at once, logged and reported to
/// `refused`. None once `stop` turns. The one accept loop of both the TLS
/// front and the plain HTTP server.
pub async fn accept(
    listener: &TcpListener,
    limit: Option<&Arc<ConnLimit>>,
    what: &str,
    stop: &mut watch::Receiver<bool>,
    mut refused: impl FnMut(),
) -> Option<(TcpStream, SocketAddr, Option<Slot>)> {
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("{what} listener: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return None,
        };
        match limit.map(|l| l.acquire(peer.ip())).transpose() {
            Ok(slot) => return Some((tcp, peer, slot)),
            Err(why) => {
                refused();
                tracing::warn!(%peer, "{what} connection refused: {why}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_peer_and_overall_and_frees_on_drop() {
        let l = ConnLimit::new(3, 2);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let s1 = l.acquire(a).unwrap();
        let _s2 = l.acquire(a).unwrap();
        assert!(l.acquire(a).err().unwrap().to_string().contains("per peer"));
        let _s3 = l.acquire(b).unwrap();
        assert!(l.acquire(b).err().unwrap().to_string().contains("all peers"));
        drop(s1);
        assert!(l.acquire(b).is_ok());
        assert_eq!(l.refused.load(Relaxed), 2);
    }
}
