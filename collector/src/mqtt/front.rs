//! The broker's front door for the embedded broker when it has users: every
//! client connection passes here (after the TLS front, when configured) on
//! its way to rumqttd on loopback. It checks the login itself and hands the
//! broker a login made for this run, so the loopback port admits no one who
//! did not pass this door; it holds the CONNECT (client id, will,
//! certificate) and every later PUBLISH and SUBSCRIBE to the user's `Grant`,
//! and refuses a second CONNECT (MQTT 3.1.1 §3.1.0-2). Each refusal closes
//! the connection, is logged with peer, user and client id, and is counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
use rumqttc::mqttbytes::{self};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::acl::{Acl, Grant};

/// A client that has not sent its CONNECT by then is dropped: it holds no slot for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the front closed a connection: the label in the log and in `citysense_mqtt_refused_total{reason=…}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Login,
    ClientId,
    Certificate,
    Will,
    SecondConnect,
    Publish,
    Subscribe,
    Malformed,
}

impl Refusal {
    pub const ALL: [Refusal; 8] =
        [Refusal::Login, Refusal::ClientId, Refusal::Certificate, Refusal::Will, Refusal::SecondConnect, Refusal::Publish, Refusal::Subscribe, Refusal::Malformed];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Login => "login",
            Refusal::ClientId => "client_id",
            Refusal::Certificate => "certificate",
            Refusal::Will => "will",
            Refusal::SecondConnect => "second_connect",
            Refusal::Publish => "publish",
            Refusal::Subscribe => "subscribe",
            Refusal::Malformed => "malformed",
        }
    }
}

/// Refusals by reason, for `/metrics`.
#[derive(Default)]
pub struct FrontStats {
    counts: [AtomicU64; Refusal::ALL.len()],
}

impl FrontStats {
    pub fn count(&self, r: Refusal) -> u64 {
        self.counts[r as usize].load(Relaxed)
    }
}

/// The logins the inner broker accepts: derived from a secret made for this
/// run, known only to this process (the front and the collector's own connections).
pub struct InnerLogins {
    secret: String,
}

impl InnerLogins {
    pub fn new(secret: String) -> InnerLogins {
        InnerLogins { secret }
    }

    pub fn password(&self, user: &str) -> String {
        shared::auth::sha256_hex(&format!("{}:{user}", self.secret))
    }
}

/// The front's relay: users' password hashes and grants, and the inner logins.
#[derive(Clone)]
pub struct GrantRelay {
    pub acl: Arc<Acl>,
    /// User → hex SHA-256 of the password.
    pub users: Arc<HashMap<String, String>>,
    pub inner: Arc<InnerLogins>,
    pub max_packet: usize,
    pub stats: Arc<FrontStats>,
}

/// A refused connection: what, by whom, why.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct Refused {
    pub reason: Refusal,
    pub user: String,
    pub client_id: String,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
enum FrontError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Refused(#[from] Refused),
}

impl crate::tls::Relay for GrantRelay {
    async fn relay<S>(&self, client: S, upstream: TcpStream, peer: SocketAddr, cert_names: Option<Vec<String>>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match self.run(client, upstream, cert_names).await {
            Ok(()) | Err(FrontError::Io(_)) => {}
            Err(FrontError::Refused(r)) => {
                self.stats.counts[r.reason as usize].fetch_add(1, Relaxed);
                tracing::warn!(%peer, user = %r.user, client_id = %r.client_id, reason = r.reason.label(), "MQTT connection refused: {}", r.detail);
            }
        }
    }
}

/// The next whole packet from `r` (None at end of stream), with its bytes.
/// Why no packet could be read: the stream failed, or what came is not MQTT.
enum ReadError {
    Io(std::io::Error),
    Malformed(mqttbytes::Error),
}

async fn next_packet<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut, max: usize) -> Result<Option<(BytesMut, Packet)>, ReadError> {
    loop {
        match mqttbytes::check(buf.iter(), max) {
            Ok(h) => {
                let frame = buf.split_to(h.frame_length());
                let mut copy = frame.clone();
                return Packet::read(&mut copy, max).map(|p| Some((frame, p))).map_err(ReadError::Malformed);
            }
            Err(mqttbytes::Error::InsufficientBytes(_)) => {
                if r.read_buf(buf).await.map_err(ReadError::Io)? == 0 {
                    return Ok(None);
                }
            }
            Err(e) => return Err(ReadError::Malformed(e)),
        }
    }
}

impl GrantRelay {
    /// The user's grant if this CONNECT may pass, or the refusal and the CONNACK code that tells the client.
    fn admit(&self, c: &Connect, cert_names: Option<&[String]>) -> Result<Grant, (Refusal, ConnectReturnCode, String)> {
        let Some(login) = &c.login else { return Err((Refusal::Login, ConnectReturnCode::BadUserNamePassword, "no username and password".into())) };
        let known = self.users.get(&login.username).is_some_and(|h| shared::auth::matches_sha256(&login.password, h));
        // The collector's own user is not in the grants: it never comes through the front.
        let Some(grant) = self.acl.get(&login.username).filter(|_| known) else {
            return Err((Refusal::Login, ConnectReturnCode::BadUserNamePassword, "unknown user or wrong password".into()));
        };
        grant.check_client_id(&c.client_id).map_err(|e| (Refusal::ClientId, ConnectReturnCode::BadClientId, e.to_string()))?;
        if let (Grant::Gateway(g), Some(names)) = (grant, cert_names) {
            if !names.iter().any(|n| n == g) {
                return Err((Refusal::Certificate, ConnectReturnCode::NotAuthorized, format!("the TLS client certificate names {names:?}, not gateway {g}")));
            }
        }
        if let Some(w) = &c.last_will {
            grant.check_will(&w.topic, w.qos, w.retain).map_err(|e| (Refusal::Will, ConnectReturnCode::NotAuthorized, e.to_string()))?;
        }
        Ok(grant.clone())
    }

    async fn run<C>(&self, mut client: C, broker: TcpStream, cert_names: Option<Vec<String>>) -> Result<(), FrontError>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let max = self.max_packet;
        let mut buf = BytesMut::with_capacity(4096);
        let refused = |reason, user: &str, client_id: &str, detail: String| Refused { reason, user: user.to_string(), client_id: client_id.to_string(), detail };
        let first = match tokio::time::timeout(CONNECT_TIMEOUT, next_packet(&mut client, &mut buf, max)).await {
            Err(_) => return Err(refused(Refusal::Malformed, "", "", format!("no CONNECT within {CONNECT_TIMEOUT:?}")).into()),
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(ReadError::Io(io))) => return Err(io.into()),
            Ok(Err(ReadError::Malformed(e))) => return Err(refused(Refusal::Malformed, "", "", format!("{e:?}")).into()),
            Ok(Ok(Some((_, p)))) => p,
        };
        let Packet::Connect(mut connect) = first else { return Err(refused(Refusal::Malformed, "", "", format!("first packet is {first:?}, not CONNECT")).into()) };
        let user = connect.login.as_ref().map(|l| l.username.clone()).unwrap_or_default();
        let client_id = connect.client_id.clone();
        let grant = match self.admit(&connect, cert_names.as_deref()) {
            Ok(g) => g,
            Err((reason, code, detail)) => {
                let mut out = BytesMut::new();
                if ConnAck::new(code, false).write(&mut out).is_ok() {
                    let _ = client.write_all(&out).await;
                }
                let _ = client.shutdown().await;
                return Err(refused(reason, &user, &client_id, detail).into());
            }
        };
        // The broker sees the user's name with this run's inner password.
        if let Some(l) = connect.login.as_mut() {
            l.password = self.inner.password(&user);
        }
        let mut out = BytesMut::new();
        connect.write(&mut out).map_err(|e| refused(Refusal::Malformed, &user, &client_id, format!("{e:?}")))?;
        let (mut br, mut bw) = broker.into_split();
        bw.write_all(&out).await?;
        let (mut cr, mut cw) = tokio::io::split(client);
        let down = async move {
            let _ = tokio::io::copy(&mut br, &mut cw).await;
            let _ = cw.shutdown().await;
        };
        let up = async move {
            loop {
                let (frame, packet) = match next_packet(&mut cr, &mut buf, max).await {
                    Ok(Some(f)) => f,
                    Ok(None) => return Ok(()),
                    Err(ReadError::Io(io)) => return Err(FrontError::Io(io)),
                    Err(ReadError::Malformed(e)) => return Err(refused(Refusal::Malformed, &user, &client_id, format!("{e:?}")).into()),
                };
                match packet {
                    Packet::Connect(c) => {
                        let as_user = c.login.map(|l| l.username).unwrap_or_default();
                        return Err(refused(Refusal::SecondConnect, &user, &client_id, format!("a second CONNECT (as {as_user:?}) on one connection")).into());
                    }
                    Packet::Publish(p) => {
                        if let Err(e) = grant.check_publish(&p.topic, p.qos, p.retain) {
                            return Err(refused(Refusal::Publish, &user, &client_id, e.to_string()).into());
                        }
                    }
                    Packet::Subscribe(s) => {
                        if let Some(f) = s.filters.iter().find(|f| !grant.may_subscribe(&f.path)) {
                            return Err(refused(Refusal::Subscribe, &user, &client_id, format!("may not subscribe to {}", f.path)).into());
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
}
