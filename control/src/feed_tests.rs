//! The full compare against a router that holds a peer without an endpoint: the endpoint
//! learned earlier is sent again (a peer admitted anew after a removal, by an operator's
//! resume or a lapse, is otherwise unreachable until its customer starts a handshake), and a
//! peer whose endpoint the router knows is left alone.

use crate::feed::{Desired, Endpoints, RouterLink};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A UAPI socket whose `get=1` answers one peer (`endpoint` optional) and which keeps every
/// `set` it is sent.
fn router(
    path: &std::path::Path,
    key_hex: String,
    endpoint: Option<&'static str>,
) -> Arc<Mutex<Vec<String>>> {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    let sets: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = sets.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (kept, key_hex) = (kept.clone(), key_hex.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while !buf.ends_with(b"\n\n") {
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8(buf).unwrap();
                let mut out = String::new();
                if text.starts_with("get=1") {
                    out.push_str(&format!(
                        "private_key={}\nlisten_port=51820\n",
                        hex::encode([7u8; 32])
                    ));
                    out.push_str(&format!("public_key={key_hex}\n"));
                    if let Some(e) = endpoint {
                        out.push_str(&format!("endpoint={e}\n"));
                    }
                    out.push_str("allowed_ip=203.0.113.10/32\n");
                } else {
                    kept.lock().unwrap().push(text);
                }
                out.push_str("errno=0\n\n");
                let _ = s.write_all(out.as_bytes()).await;
            });
        }
    });
    sets
}

async fn compare(endpoint: Option<&'static str>) -> (Vec<String>, Endpoints) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sock");
    let key = [1u8; 32];
    let sets = router(&path, hex::encode(key), endpoint);
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
