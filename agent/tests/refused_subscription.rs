//! The uplink's broker list and a broker that refuses the ack subscription at
//! first, as a NATS node does while JetStream elects leaders after another
//! node died. The first broker of the list is dead: the agent moves on to the
//! second at once. The link does not count as up on a refused subscription
//! (no ack could reach the agent), and the agent asks again.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(20);

/// One MQTT packet: its first byte and its body.
async fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let first = s.read_u8().await?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = s.read_u8().await?;
        len |= ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).await?;
    Ok((first, body))
}

/// A broker that answers CONNECT, PUBLISH and PINGREQ, and SUBSCRIBE with the
/// codes of `subacks` in turn; reports each SUBSCRIBE it gets, and answers
/// every one after the first only once `answer` is notified, so the test
/// sees the agent between the refusal and the grant.
async fn broker(listener: TcpListener, subacks: Vec<u8>, subscribed: tokio::sync::mpsc::UnboundedSender<()>, answer: std::sync::Arc<tokio::sync::Notify>) {
    let (mut s, _) = listener.accept().await.unwrap();
    let mut codes = subacks.into_iter();
    let mut first_subscribe = true;
    while let Ok((first, body)) = read_packet(&mut s).await {
        let answer: Vec<u8> = match first >> 4 {
            1 => vec![0x20, 2, 0, 0],
            8 => {
                let _ = subscribed.send(());
                if !std::mem::take(&mut first_subscribe) {
                    answer.notified().await;
                }
                vec![0x90, 3, body[0], body[1], codes.next().unwrap_or(1)]
            }
            3 if (first >> 1) & 3 > 0 => {
                let at = 2 + u16::from_be_bytes([body[0], body[1]]) as usize;
                vec![0x40, 2, body[at], body[at + 1]]
            }
            12 => vec![0xd0, 0],
            _ => continue,
        };
        s.write_all(&answer).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_broker_is_passed_over_and_a_refused_subscription_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = format!("mqtt://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (subscribed_tx, mut subscribed) = tokio::sync::mpsc::unbounded_channel();
    // 0x80: the subscription is refused; 1: granted at QoS 1.
    let grant = std::sync::Arc::new(tokio::sync::Notify::new());
    tokio::spawn(broker(listener, vec![0x80, 1], subscribed_tx, grant.clone()));
    let text = format!(
        "gateway = \"gw-list\"\n[uplink]\nbroker = [\"mqtt://127.0.0.1:{dead}\", \"{live}\"]\n[buffer]\npath = \"{}\"\n[status]\nlisten = \"127.0.0.1:0\"\n\
         [[mqtt]]\nbroker = \"mqtt://127.0.0.1:{dead}\"\ntopic = \"x/+\"\nsensor = \"topic:1\"\n  [mqtt.fields]\n  v = \"$\"\n",
        dir.path().join("outbox").display()
    );
    let cfg: agent::config::AgentConfig = shared::config::parse("test agent", &text, dir.path()).unwrap_or_else(|d| panic!("{d}"));
    let agent = agent::Agent::start(cfg).await.unwrap();

    tokio::time::timeout(LIMIT, subscribed.recv()).await.expect("the agent to subscribe at the second broker");
    tokio::time::timeout(LIMIT, subscribed.recv()).await.expect("the agent to ask again after the refusal");
    let link = agent.link.borrow().clone();
    assert!(!link.connected, "a refused subscription counted as a link that acks can reach: {link:?}");
    assert_eq!(link.broker.as_deref(), Some(live.as_str()));

    grant.notify_one();
    let mut l = agent.link.clone();
    tokio::time::timeout(LIMIT, l.wait_for(|l| l.connected)).await.expect("the link to come up once the subscription is granted").unwrap();
    // Status names the broker in use and the whole list.
    let status = agent::status::fetch(&agent.status_addr.to_string()).await.unwrap();
    assert_eq!(status.broker, live);
    assert_eq!(status.brokers, Some(format!("mqtt://127.0.0.1:{dead}, {live}")));
    agent.shutdown().await;
}
