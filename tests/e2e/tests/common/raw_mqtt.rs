//! A raw MQTT 3.1.1 client: packets written on a TCP stream in any order,
//! with any client id, login and will, as an attacker would send them.

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, LastWill, Login, Packet, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

/// A will: topic, payload, retained.
pub type Will<'a> = (&'a str, &'a [u8], bool);

impl Raw {
    pub async fn open(url: &str) -> Raw {
        let u = shared::url::BrokerUrl::parse(url).unwrap();
        Raw { s: TcpStream::connect((u.host.as_str(), u.port)).await.unwrap(), buf: BytesMut::new() }
    }

    pub async fn connect(&mut self, client_id: &str, login: Option<(&str, &str)>, will: Option<Will<'_>>) {
        let mut c = rumqttc::mqttbytes::v4::Connect::new(client_id);
        c.keep_alive = 60;
        c.login = login.map(|(u, p)| Login::new(u, p));
        c.last_will = will.map(|(t, m, r)| LastWill::new(t, m.to_vec(), QoS::AtLeastOnce, r));
        let mut b = BytesMut::new();
        c.write(&mut b).unwrap();
        let _ = self.s.write_all(&b).await;
    }

    /// CONNECT, then the broker's answer: Ok on success, the refusal code, or Err(None) when it just closed.
    pub async fn login(url: &str, client_id: &str, login: Option<(&str, &str)>, will: Option<Will<'_>>) -> (Raw, Result<(), Option<ConnectReturnCode>>) {
        let mut r = Raw::open(url).await;
        r.connect(client_id, login, will).await;
        let answer = match r.next().await {
            Some(Packet::ConnAck(a)) if a.code == ConnectReturnCode::Success => Ok(()),
            Some(Packet::ConnAck(a)) => Err(Some(a.code)),
            _ => Err(None),
        };
        (r, answer)
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8], retain: bool) {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
        p.retain = retain;
        p.pkid = 1;
        let mut b = BytesMut::new();
        p.write(&mut b).unwrap();
        let _ = self.s.write_all(&b).await;
    }

    pub async fn subscribe(&mut self, filter: &str) {
        let mut s = Subscribe::new(filter, QoS::AtLeastOnce);
        s.pkid = 7;
        let mut b = BytesMut::new();
        s.write(&mut b).unwrap();
        let _ = self.s.write_all(&b).await;
    }

    /// Drops the socket without DISCONNECT: the broker publishes the will, if it kept one.
    pub fn vanish(self) {}

    /// The next packet, or None once the connection is closed (or silent for 10 s).
    pub async fn next(&mut self) -> Option<Packet> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match Packet::read(&mut self.buf, 1 << 20) {
                    Ok(p) => return Some(p),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(_) => return None,
                }
                match self.s.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Whether the broker closes this connection within 10 s (whatever it sends first).
    pub async fn closed(&mut self) -> bool {
        let mut sink = [0u8; 4096];
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(n) = self.s.read(&mut sink).await {
                if n == 0 {
                    return;
                }
            }
        })
        .await
        .is_ok()
    }
}
