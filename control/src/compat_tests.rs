//! The original clients on the compat listener cannot prove they hold their key (PROTOCOL.md
//! 3.1, Annex A): `[compat] accept_unproven` decides whether they are served. Both settings,
//! every call that names a key.

use crate::testkit::Builder;

const KEY: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";

async fn calls(accept: bool) -> (crate::testkit::Control, Vec<(String, serde_json::Value)>) {
    let ctl = Builder::new("203.0.113.0/29")
        .compat()
        .config(move |c| c.compat.accept_unproven = accept)
        .serve()
        .await;
    let http = reqwest::Client::new();
    let key = KEY
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let mut out = Vec::new();
    for (path, form) in [
        ("/api/rent/", format!("WireGuardPubKey={key}")),
        ("/api/getstatus/", format!("WireGuardPubKey={key}")),
        ("/api/getconf/", format!("WireGuardPubKey={key}")),
        ("/api/renew/", format!("WireGuardPubKey={key}&months=1")),
        (
            "/api/AddCredit/",
            format!("WireGuardPubKey={key}&amount=30000"),
        ),
    ] {
        let r = http
            .post(ctl.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        out.push((path.to_string(), r.json().await.unwrap()));
    }
    (ctl, out)
}

#[tokio::test]
async fn unproven_original_clients_are_served_by_default() {
    let (_ctl, got) = calls(true).await;
    let rent = &got[0].1;
    assert!(rent["Invoice"].is_string(), "rent: {rent}");
    assert_eq!(got[1].1["state"], "pending", "status: {}", got[1].1);
}

#[tokio::test]
async fn accept_unproven_false_refuses_every_call_that_names_a_key() {
    let (ctl, got) = calls(false).await;
    for (path, v) in got {
        let e = v["Error"].as_str().unwrap_or_default();
        assert!(e.contains("prove"), "{path}: {v}");
    }
    assert!(
        matches!(
            ctl.svc.status(KEY),
            Err(crate::service::ServiceError::NotFound)
        ),
        "nothing was held"
    );
}
