//! The full compare against a router that holds a peer without an endpoint: the endpoint
//! learned earlier is sent again (a peer admitted anew after a removal, by an operator's
//! resume or a lapse, is otherwise unreachable until its customer starts a handshake), and a
//! peer whose endpoint the router knows is left alone.

use crate::feed::{Desired, Endpoints, RouterLink};
use crate::uapi_fake::fake_router;

async fn compare(endpoint: Option<&'static str>) -> (Vec<String>, Endpoints) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sock");
    let key = [1u8; 32];
    // The router holds the peer (with or without an endpoint) and is configured already.
    let router = fake_router(&path);
    router.holding(&hex::encode(key), &["203.0.113.10/32"], endpoint);
    router.configured(&hex::encode([7u8; 32]), 51820);
    let sets = router.sets.clone();
    let link = RouterLink {
        name: "r".into(),
        socket: path,
        listen_port: 51820,
        private_key: [7u8; 32],
        public_key: [8u8; 32],
        socket_uid: None,
    };
    let mut desired = Desired::new();
    desired.insert(key, vec!["203.0.113.10/32".parse().unwrap()]);
    let mut known = Endpoints::new();
    known.insert(key, "198.18.0.2:40000".into());
    link.reconcile(desired, &mut known, "", false)
        .await
        .unwrap();
    let sent = sets.lock().unwrap().clone();
    (sent, known)
}

#[tokio::test]
async fn a_peer_held_without_an_endpoint_gets_the_learned_one_again() {
    let (sent, _) = compare(None).await;
    let all = sent.concat();
    assert!(
        all.contains(&format!("public_key={}", hex::encode([1u8; 32])))
            && all.contains("endpoint=198.18.0.2:40000"),
        "the learned endpoint was not sent: {sent:?}"
    );
}

#[tokio::test]
async fn a_peer_whose_endpoint_the_router_knows_is_left_alone() {
    let (sent, known) = compare(Some("198.18.0.2:41000")).await;
    assert!(sent.is_empty(), "nothing to change, yet sent: {sent:?}");
    // The router's newer endpoint replaces the one learned before.
    assert_eq!(
        known.get(&[1u8; 32]).map(String::as_str),
        Some("198.18.0.2:41000")
    );
}
