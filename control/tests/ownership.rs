//! Only the holder of a WireGuard key can act on its rental (issue 20, cases 2-4), on the real
//! binary with the dev Lightning backend: a stranger who knows a customer's public key, or a
//! payment hash of the customer's, cannot hold the key, cannot put an invoice into its status and
//! learns nothing from the hash, whether it sends no proof, a proof of its own key, a forged one
//! or a replayed one (PROTOCOL.md section 3.1). The control runs with its default config: the
//! proof is required without being asked for.

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use serde_json::{json, Value};
use staticwire_api::proof::{proof_public_key, Prover};
use staticwire_control::testkit::{Process, ProcessBuilder};
use std::path::Path;
use std::time::{Duration, Instant};

struct Control {
    // Killed on drop.
    _process: Process,
    base: String,
    http: reqwest::Client,
    proof_key: Option<[u8; 32]>,
}

async fn start(dir: &Path) -> Control {
    let process = ProcessBuilder::new(
        dir,
        &format!(
            "invoice_poll_millis = 50\n\
             [[routers]]\nname = \"wg0\"\nsocket = \"{}\"\nendpoint = \"198.18.0.1:51820\"\n\
             pools = [\"203.0.113.0/28\"]\nreserved = [\"203.0.113.1\"]\n",
            dir.join("no-router.sock").display()
        ),
    )
    .data_dir(&dir.join("data"))
    .arg("--dev-hooks")
    .write()
    .start();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut c = Control {
        base: process.url(),
        _process: process,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        proof_key: None,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let terms = loop {
        if let Ok(r) = c.http.get(format!("{}/v1/terms", c.base)).send().await {
            break r.json::<Value>().await.unwrap();
        }
        assert!(Instant::now() < deadline, "control did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    c.proof_key = terms["proof_key"]
        .as_str()
        .map(|k| STANDARD.decode(k).unwrap().try_into().unwrap());
    c
}

/// A WireGuard key pair: the private key stays in the test, the public key is what everyone
/// may know.
struct Key {
    private: [u8; 32],
    public: String,
}

impl Key {
    fn new() -> Key {
        let mut private = [0u8; 32];
        private.copy_from_slice(&rand_bytes());
        Key {
            public: STANDARD.encode(proof_public_key(&private)),
            private,
        }
    }

    fn url(&self) -> String {
        URL_SAFE.encode(STANDARD.decode(&self.public).unwrap())
    }
}

fn rand_bytes() -> Vec<u8> {
    use std::io::Read;
    let mut b = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b
}

/// How a request is (not) proven.
enum As<'a> {
    /// No Authorization header, as anyone could send.
    Nobody,
    /// A valid proof of this key.
    Holder(&'a Key),
    /// A proof made with `made_by`'s private key that claims `claims`'s public key.
    Forged { made_by: &'a Key, claims: &'a Key },
}

struct Reply {
    status: u16,
    body: Value,
    text: String,
    authorization: Option<String>,
}

impl Control {
    async fn call(&self, method: &str, path: &str, body: Option<Value>, who: As<'_>) -> Reply {
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if !text.is_empty() {
            req = req
                .header("content-type", "application/json")
                .body(text.clone());
        }
        let prove = |k: &Key| {
            self.proof_key.map(|s| {
                Prover::new(&k.private, &s)
                    .unwrap()
                    .prove(method, path, text.as_bytes())
            })
        };
        let proof = match who {
            As::Nobody => None,
            As::Holder(k) => prove(k),
            As::Forged { made_by, claims } => prove(made_by).map(|mut p| {
                p.key = STANDARD.decode(&claims.public).unwrap().try_into().unwrap();
                p
            }),
        };
        let authorization = proof.map(|p| p.header_value());
        if let Some(a) = &authorization {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            authorization,
        }
    }

    /// Sends a recorded request again, header and all.
    async fn replay(&self, method: &str, path: &str, authorization: &str) -> Reply {
        let resp = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .header("authorization", authorization)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            authorization: None,
        }
    }

    async fn rent(&self, k: &Key) -> Reply {
        let r = self
            .call(
                "POST",
                "/v1/rentals",
                Some(json!({"public_key": k.public})),
                As::Holder(k),
            )
            .await;
        assert_eq!(r.status, 201, "the holder rents: {}", r.text);
        r
    }

    async fn status(&self, k: &Key) -> Reply {
        self.call(
            "GET",
            &format!("/v1/rentals/{}", k.url()),
            None,
            As::Holder(k),
        )
        .await
    }
}

fn refused(r: &Reply, code: &str, what: &str) {
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (401, Some(code)),
        "{what}: {}",
        r.text
    );
}

/// Case 2: a stranger names the customer's key (before the customer's first rent) with options
/// the customer did not choose; the customer's own rent must still get its own hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squatting_a_strangers_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path()).await;
    let (victim, stranger) = (Key::new(), Key::new());
    let squat = json!({"public_key": victim.public, "ipv6": false});
    for (who, code) in [
        (As::Nobody, "proof_required"),
        (As::Holder(&stranger), "proof_key_mismatch"),
        (
            As::Forged {
                made_by: &stranger,
                claims: &victim,
            },
            "proof_invalid",
        ),
    ] {
        let r = c
            .call("POST", "/v1/rentals", Some(squat.clone()), who)
            .await;
        refused(&r, code, "a stranger rents with the customer's key");
    }
    let st = c.status(&victim).await;
    assert_eq!(st.status, 404, "nothing was held for the key: {}", st.text);
    let terms: Value = c
        .http
        .get(format!("{}/v1/terms", c.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let own = c.rent(&victim).await;
    assert_eq!(
        own.body["invoice"]["amount_sat"], terms["first_payment_sat"],
        "the customer's own hold and first payment, not a squatter's: {}",
        own.text
    );
}

/// Case 3: a stranger asks for a year's renewal of the customer's rental; no invoice may appear
/// in the customer's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_cannot_be_injected_into_a_strangers_status() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path()).await;
    let (victim, stranger) = (Key::new(), Key::new());
    let rented = c.rent(&victim).await;
    let bolt11 = rented.body["invoice"]["bolt11"].as_str().unwrap();
    let paid = c
        .call(
            "POST",
            "/v1/dev/pay",
            Some(json!({"bolt11": bolt11})),
            As::Nobody,
        )
        .await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    let path = format!("/v1/rentals/{}/renewals", victim.url());
    for (who, code) in [
        (As::Nobody, "proof_required"),
        (As::Holder(&stranger), "proof_key_mismatch"),
        (
            As::Forged {
                made_by: &stranger,
                claims: &victim,
            },
            "proof_invalid",
        ),
    ] {
        let r = c
            .call("POST", &path, Some(json!({"months": 12})), who)
            .await;
        refused(&r, code, "a stranger renews the customer's rental");
    }
    let st = c.status(&victim).await;
    assert_eq!(st.status, 200, "{}", st.text);
    assert_eq!(st.body["state"], "active");
    assert!(
        st.body["open_invoice"].is_null() && st.body["amount_due_sat"] == 0,
        "no invoice was put into the customer's status: {}",
        st.text
    );
    // Reading the status needs the proof too (it shows the open invoice).
    let peek = c
        .call(
            "GET",
            &format!("/v1/rentals/{}", victim.url()),
            None,
            As::Nobody,
        )
        .await;
    refused(&peek, "proof_required", "a stranger reads the status");
    let conf = c
        .call(
            "GET",
            &format!("/v1/rentals/{}/config", victim.url()),
            None,
            As::Holder(&stranger),
        )
        .await;
    refused(
        &conf,
        "proof_key_mismatch",
        "a stranger reads the configuration",
    );
    // The holder renews.
    let own = c
        .call(
            "POST",
            &path,
            Some(json!({"months": 1})),
            As::Holder(&victim),
        )
        .await;
    assert_eq!(own.status, 201, "{}", own.text);
}

/// Case 4: a payment hash, which every routing node on the payment's path sees, must not lead to
/// the customer: the look-up needs the proof of the invoice's own key, and the invoice's
/// description names neither the key nor the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_hash_reveals_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path()).await;
    let (victim, stranger) = (Key::new(), Key::new());
    let rented = c.rent(&victim).await;
    let hash = rented.body["invoice"]["payment_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let address = rented.body["rental"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let bolt11 = rented.body["invoice"]["bolt11"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/invoices/{hash}");

    let anyone = c.call("GET", &path, None, As::Nobody).await;
    refused(&anyone, "proof_required", "the hash alone");
    let other = c.call("GET", &path, None, As::Holder(&stranger)).await;
    assert_eq!(
        (other.status, other.body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "another key's proof: as if no such invoice: {}",
        other.text
    );
    let forged = c
        .call(
            "GET",
            &path,
            None,
            As::Forged {
                made_by: &stranger,
                claims: &victim,
            },
        )
        .await;
    refused(
        &forged,
        "proof_invalid",
        "a forged proof of the owner's key",
    );
    for r in [&anyone, &other, &forged] {
        assert!(
            !r.text.contains(&bolt11) && !r.text.contains(&victim.public),
            "a refusal shows nothing: {}",
            r.text
        );
    }

    let own = c.call("GET", &path, None, As::Holder(&victim)).await;
    assert_eq!(own.status, 200, "{}", own.text);
    assert_eq!(own.body["bolt11"], bolt11.as_str());

    let invoice: lightning_invoice::Bolt11Invoice = bolt11.parse().unwrap();
    let description = match invoice.description() {
        lightning_invoice::Bolt11InvoiceDescriptionRef::Direct(d) => d.to_string(),
        lightning_invoice::Bolt11InvoiceDescriptionRef::Hash(_) => String::new(),
    };
    let raw = STANDARD.decode(&victim.public).unwrap();
    for (what, s) in [
        ("the key", victim.public.clone()),
        ("the URL-safe key", victim.url()),
        (
            "the key in hex",
            raw.iter().map(|b| format!("{b:02x}")).collect(),
        ),
        ("the address", address.clone()),
    ] {
        assert!(
            !description.contains(&s),
            "the description {description:?} names {what}"
        );
    }

    // A proof is good once: the same request again, inside the window, is refused.
    let replayed = c
        .replay("GET", &path, own.authorization.as_deref().unwrap())
        .await;
    refused(&replayed, "proof_replayed", "the owner's look-up replayed");
}
