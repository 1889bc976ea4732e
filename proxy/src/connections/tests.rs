#![allow(clippy::unwrap_used)]

use std::{net::IpAddr, time::Duration};

use http::{HeaderMap, Method};
use vigil_policy::ProxyPolicy;

use super::*;
use crate::authz::JudgedHttp;

const CLIENT: &str = "spiffe://td/ns/shop/sa/web";

fn policy(yaml: &str) -> Arc<Policy> {
    let model: ProxyPolicy = serde_saphyr::from_str(yaml).unwrap();
    Arc::new(Policy::compile(model).unwrap())
}

const ALLOW_GET: &str = r#"
inbound:
  - {policy: shop/api, rule: 0, action: allow, ports: [8080], from: [{id: "spiffe://td/ns/shop/sa/web"}], http: {methods: [GET]}}
outbound: {passthrough: true}
"#;

fn client() -> SvidInfo {
    SvidInfo {
        id: CLIENT.parse().unwrap(),
        serial: vec![0x0a, 0x1b],
        not_before: std::time::SystemTime::UNIX_EPOCH,
        not_after: std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(u32::MAX.into()),
    }
}

fn judged(method: Method) -> Recheck {
    Recheck::Decision(Box::new(Judged {
        source: Source::Mesh(Arc::new(client())),
        src_ip: IpAddr::from([10, 0, 0, 1]),
        port: 8080,
        http: Some(JudgedHttp {
            method,
            path: "/orders".into(),
            headers: HeaderMap::new(),
        }),
    }))
}

/// A registry with its watcher running, and the sender that publishes policy.
fn registry(initial: &str) -> (Connections, watch::Sender<Arc<Policy>>, Arc<Policy>) {
    let p = policy(initial);
    let (tx, rx) = watch::channel(p.clone());
    let conns = Connections::new(rx);
    tokio::spawn(conns.watch());
    (conns, tx, p)
}

async fn closed_within(live: &Live) -> Option<Closed> {
    tokio::time::timeout(Duration::from_secs(5), live.closed())
        .await
        .ok()
}

/// A change that closes only a sentinel (another peer's certificate is revoked) leaves
/// `live` open. Once the sentinel has closed and the registry's lock (held by the
/// watcher while it checks) is free again, every entry has been checked.
async fn stays_open(conns: &Connections, tx: &watch::Sender<Arc<Policy>>, live: &Live) {
    let mut other = client();
    other.serial = vec![0xff];
    let sentinel = conns.track_now(Recheck::Peer(Source::Mesh(Arc::new(other))));
    tx.send(policy(&format!(
        "{ALLOW_GET}\nrevoked: {{serials: [\"ff\"]}}\n"
    )))
    .unwrap();
    assert_eq!(closed_within(&sentinel).await, Some(Closed::Revoked));
    let _ = conns.len();
    assert_eq!(live.reason(), None);
}

#[tokio::test]
async fn a_decision_is_judged_again_on_every_change() {
    let (conns, tx, p) = registry(ALLOW_GET);
    let get = conns.track(judged(Method::GET), &p);
    assert_eq!(conns.len(), 1);
    stays_open(&conns, &tx, &get).await;
    // Registered without a check (as if judged under the policy in force): a POST is
    // denied now, and allowed by the change below, so it must stay open through it.
    let post = conns.track_now(judged(Method::POST));

    // The rule now allows POST only: the GET tunnel closes for policy.
    tx.send(policy(
        r#"
inbound:
  - {policy: shop/api, rule: 0, action: allow, ports: [8080], from: [{id: "spiffe://td/ns/shop/sa/web"}], http: {methods: [POST]}}
"#,
    ))
    .unwrap();
    assert_eq!(closed_within(&get).await, Some(Closed::Policy));
    let _ = conns.len(); // the watcher's pass is over
    assert_eq!(post.reason(), None);
    drop((get, post));
    assert!(conns.is_empty(), "dropping a handle unregisters it");
}

#[tokio::test]
async fn revocation_by_serial_and_quarantine_close_with_their_reason() {
    let (conns, tx, p) = registry(ALLOW_GET);
    let inbound = conns.track(Recheck::Peer(Source::Mesh(Arc::new(client()))), &p);
    let tunnel = conns.track(judged(Method::GET), &p);
    let plain = conns.track(Recheck::Peer(Source::Plain), &p);
    let server = conns.track(Recheck::Server(client()), &p);
    tx.send(policy(&format!(
        "{ALLOW_GET}\nrevoked: {{serials: [\"0a1b\"]}}\n"
    )))
    .unwrap();
    assert_eq!(closed_within(&inbound).await, Some(Closed::Revoked));
    assert_eq!(closed_within(&tunnel).await, Some(Closed::Revoked));
    assert_eq!(closed_within(&server).await, Some(Closed::Revoked));
    assert_eq!(plain.reason(), None, "a plaintext peer has no certificate");

    let outbound = conns.track_now(Recheck::Quarantine);
    tx.send(policy("quarantined: true\n")).unwrap();
    assert_eq!(closed_within(&plain).await, Some(Closed::Quarantine));
    assert_eq!(closed_within(&outbound).await, Some(Closed::Quarantine));
    // The first reason stays.
    assert_eq!(inbound.reason(), Some(Closed::Revoked));
}

#[tokio::test]
async fn a_change_between_decision_and_registration_counts() {
    let (conns, tx, judged_under) = registry(ALLOW_GET);
    tx.send(policy("quarantined: true\n")).unwrap();
    // Judged under the old policy, registered under the new one: closed at once,
    // whether or not the watcher got to it.
    let late = conns.track(Recheck::Quarantine, &judged_under);
    let unknown = conns.track_checked(Recheck::Quarantine);
    assert_eq!(unknown.reason(), Some(Closed::Quarantine));
    assert_eq!(late.reason(), Some(Closed::Quarantine));
    // Registered under the policy in force: nothing to check until it changes.
    let now = conns.track_now(Recheck::Peer(Source::Plain));
    assert_eq!(now.reason(), None);
}

#[tokio::test]
async fn passthrough_closes_when_egress_turns_strict() {
    let (conns, tx, p) = registry(ALLOW_GET);
    let egress = conns.track(Recheck::Passthrough, &p);
    stays_open(&conns, &tx, &egress).await;
    tx.send(policy("outbound: {passthrough: false}\n")).unwrap();
    assert_eq!(closed_within(&egress).await, Some(Closed::Policy));
}

/// Counts its wake-ups.
#[derive(Default)]
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// `closed()` polled again with the waker it registered does not poll the `Notify`; polled
/// with another waker it registers that one; either way a close wakes the last waker, and
/// two futures of one connection both see it.
#[tokio::test]
async fn closed_wakes_the_last_waker_it_was_polled_with() {
    let (conns, tx, _) = registry(ALLOW_GET);
    let live = conns.track_now(Recheck::Peer(Source::Mesh(Arc::new(client()))));
    let (a, b, c) = (
        Arc::new(CountingWaker::default()),
        Arc::new(CountingWaker::default()),
        Arc::new(CountingWaker::default()),
    );
    let (wa, wb, wc) = (
        Waker::from(a.clone()),
        Waker::from(b.clone()),
        Waker::from(c.clone()),
    );
    let mut first = Box::pin(live.closed());
    let mut second = Box::pin(live.closed());
    for _ in 0..3 {
        assert!(
            first
                .as_mut()
                .poll(&mut Context::from_waker(&wa))
                .is_pending()
        );
    }
    assert!(
        first
            .as_mut()
            .poll(&mut Context::from_waker(&wb))
            .is_pending()
    );
    assert!(
        second
            .as_mut()
            .poll(&mut Context::from_waker(&wc))
            .is_pending()
    );
    tx.send(policy(&format!(
        "{ALLOW_GET}\nrevoked: {{serials: [\"0a1b\"]}}\n"
    )))
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while b.0.load(Ordering::SeqCst) == 0 || c.0.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a close wakes the registered wakers");
    assert_eq!(
        a.0.load(Ordering::SeqCst),
        0,
        "replaced by the second waker"
    );
    for (f, w) in [(&mut first, &wa), (&mut second, &wc)] {
        assert_eq!(
            f.as_mut().poll(&mut Context::from_waker(w)),
            Poll::Ready(Closed::Revoked)
        );
    }
}
