//! PROTOCOL.md §10 Test hooks: which of `/v1/dev/pay` and `/v1/dev/clock` the server offers,
//! and paying (through the hook, or the `--pay-command` in its place) and moving the clock.

use super::harness::{ensure, state_is, Check, Suite};
use serde_json::json;
use staticwire_api as api;

/// Finds the hooks, when the run may use them: a pay hook refuses an empty BOLT11 with 400, a
/// clock hook answers a move of 0 seconds.
pub(super) async fn detect(s: &mut Suite<'_>) {
    if s.opts.use_hooks {
        let r = s
            .http
            .post_json("/v1/dev/pay", &json!({ "bolt11": "" }))
            .await;
        s.pay_hook = matches!(&r, Ok(r) if r.status == 400);
        let r = s
            .http
            .post_json("/v1/dev/clock", &json!({ "seconds": 0 }))
            .await;
        s.clock_hook = matches!(&r, Ok(r) if r.status == 200);
    }
}

impl Suite<'_> {
    pub(super) async fn pay(&self, bolt11: &str) -> Check {
        if let Some(cmd) = &self.opts.pay_command {
            let out = tokio::process::Command::new(&cmd[0])
                .args(&cmd[1..])
                .arg(bolt11)
                .output()
                .await
                .map_err(|e| format!("pay command {}: {e}", cmd[0]))?;
            return ensure(out.status.success(), || {
                format!(
                    "pay command failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            });
        }
        let r = self
            .http
            .post_json("/v1/dev/pay", &json!({ "bolt11": bolt11 }))
            .await;
        self.expect(&r, 200, "DevPayResponse").map(|_| ())
    }

    /// Pays `i` once `ready` (what was checked before paying) holds, then long-polls it: it
    /// must come back settled. The long-poll is asked either way.
    pub(super) async fn settle(&self, i: &api::Invoice, ready: Check) -> Check {
        let paid = match ready {
            Ok(()) => self.pay(&i.bolt11).await,
            Err(e) => Err(e),
        };
        let r = self.long_poll(&i.payment_hash).await;
        paid.and_then(|_| self.expect(&r, 200, "Invoice"))
            .and_then(|v| state_is(&v, "settled"))
    }

    pub(super) fn can_pay(&self) -> bool {
        self.opts.pay_command.is_some() || self.pay_hook
    }

    /// Moves the server's clock by `secs`; returns its time now.
    pub(super) async fn advance(&self, secs: i64) -> Result<i64, String> {
        let r = self
            .http
            .post_json("/v1/dev/clock", &json!({ "seconds": secs }))
            .await;
        let v = self.expect(&r, 200, "DevClockResponse")?;
        v["now"]
            .as_i64()
            .ok_or_else(|| "no time in the answer".into())
    }
}
