//! Topic isolation on the embedded broker. rumqttd checks passwords but has
//! no ACLs, so the listener in front of it reads each client packet and
//! drops the connection of a client that publishes or subscribes outside its
//! grant: a gateway only to its own `up`/`state`/`health` and its own `ack`.

use std::collections::HashMap;

use bytes::BytesMut;
use rumqttc::mqttbytes::{self, v4::Packet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use shared::topics;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A gateway: its own uplink topics, its own acks.
    Gateway(String),
    /// A feed consumer: reads alerts, live readings, gateway state and health.
    Reader,
}

impl Grant {
    pub fn may_publish(&self, topic: &str) -> bool {
        match self {
            Grant::Gateway(g) => [topics::up(g), topics::state(g), topics::health(g)].iter().any(|t| t == topic),
            Grant::Reader => false,
        }
    }

    pub fn may_subscribe(&self, filter: &str) -> bool {
        match self {
            Grant::Gateway(g) => filter == topics::ack(g),
            Grant::Reader => ["alerts/", "live/", "state/", "health/"].iter().any(|p| filter.starts_with(&format!("{}{p}", topics::PREFIX))),
        }
    }
}

pub type Acl = HashMap<String, Grant>;

/// The front's relay for the embedded broker: every connection goes
/// through `relay` with the users' grants.
#[derive(Clone)]
pub struct GrantRelay {
    pub acl: std::sync::Arc<Acl>,
    pub max_packet: usize,
}

impl crate::tls::Relay for GrantRelay {
    async fn relay<S>(&self, client: S, upstream: tokio::net::TcpStream, peer: std::net::SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if let Err(e) = relay(client, upstream, &self.acl, self.max_packet).await {
            tracing::warn!(%peer, "MQTT connection dropped: {e}");
        }
    }
}

/// Why a client's connection was dropped.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed MQTT from {user:?}: {detail}")]
    Malformed { user: String, detail: String },
    #[error("user {user:?} may not publish to {topic}")]
    Publish { user: String, topic: String },
    #[error("user {user:?} may not subscribe to {filter}")]
    Subscribe { user: String, filter: String },
}

/// Relays one client connection to the broker, enforcing `acl` on what the
/// client sends. Ends when either side closes or the client oversteps.
pub async fn relay<C>(client: C, broker: tokio::net::TcpStream, acl: &Acl, max_packet: usize) -> Result<(), GrantError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut br, mut bw) = broker.into_split();
    let down = async move {
        let _ = tokio::io::copy(&mut br, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    let up = async move {
        let mut buf = BytesMut::with_capacity(4096);
        let mut grant: Option<Grant> = None;
        let mut user = String::new();
        loop {
            // Whole packets only: parse what is buffered, read more when short.
            let frame_len = match mqttbytes::check(buf.iter(), max_packet) {
                Ok(h) => h.frame_length(),
                Err(mqttbytes::Error::InsufficientBytes(_)) => {
                    if cr.read_buf(&mut buf).await? == 0 {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(GrantError::Malformed { user, detail: format!("{e:?}") }),
            };
            let frame = buf.split_to(frame_len);
            let mut copy = frame.clone();
            match Packet::read(&mut copy, max_packet).map_err(|e| GrantError::Malformed { user: user.clone(), detail: format!("{e:?}") })? {
                Packet::Connect(c) => {
                    user = c.login.map(|l| l.username).unwrap_or_default();
                    // Unknown users go on to the broker, which refuses them.
                    grant = acl.get(&user).cloned();
                }
                Packet::Publish(p) if !grant.as_ref().is_some_and(|g| g.may_publish(&p.topic)) => {
                    return Err(GrantError::Publish { user, topic: p.topic });
                }
                Packet::Subscribe(s) => {
                    if let Some(f) = s.filters.iter().find(|f| !grant.as_ref().is_some_and(|g| g.may_subscribe(&f.path))) {
                        return Err(GrantError::Subscribe { user, filter: f.path.clone() });
                    }
                }
                _ => {}
            }
            bw.write_all(&frame).await?;
        }
    };
    tokio::select! {
        r = up => r,
        _ = down => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_is_confined_to_its_own_topics() {
        let g = Grant::Gateway("gw-a".into());
        assert!(g.may_publish(&topics::up("gw-a")) && g.may_publish(&topics::state("gw-a")) && g.may_publish(&topics::health("gw-a")));
        assert!(!g.may_publish(&topics::up("gw-b")) && !g.may_publish(&topics::ack("gw-a")) && !g.may_publish("sensors/x"));
        assert!(g.may_subscribe(&topics::ack("gw-a")));
        assert!(!g.may_subscribe(&topics::ack("gw-b")) && !g.may_subscribe(&format!("{}ack/+", topics::PREFIX)) && !g.may_subscribe("#"));
        let r = Grant::Reader;
        assert!(r.may_subscribe(&format!("{}alerts/#", topics::PREFIX)) && !r.may_subscribe(&format!("{}ack/#", topics::PREFIX)) && !r.may_subscribe("#"));
        assert!(!r.may_publish(&topics::up("gw-a")));
    }
}
