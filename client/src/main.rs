//! staticip: rent a dedicated public static IPv4 address over WireGuard from a StaticWire
//! provider, pay it with Lightning (by hand or automatically through your own node), configure
//! the tunnel, and keep it renewed.

mod api;
mod invoice;
mod pay;
#[cfg(test)]
mod proof_tests;
#[cfg(test)]
mod proptests;
mod state;

use api::{Api, ApiError};
use clap::{Parser, Subcommand};
use invoice::{Action, InvoiceError};
use pay::{LogEntry, Logged, NodeView, PayConfig, PayError, PaymentLog};
use serde_json::{json, Value};
use state::{Saved, Slot, StateError};
use staticwire_api::{InvoiceState, RentalState};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Rent a dedicated public static IPv4 address over WireGuard, paid with Lightning, no account.
///
/// Exit codes: 0 done; 1 local error (state dir, wg-quick, the auto-pay node's configuration);
/// 2 usage; 3 the server refused or is unreachable; 4 an invoice failed the checks against the
/// provider's terms (nothing was paid); 5 payment refused by the caps, failed, or of unknown
/// outcome; 6 the invoice expired unpaid.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Provider: a URL (https://host:port) or a bare domain (DNS SRV _staticwire._tcp.<domain>,
    /// else https://<domain>). Remembered per rental after the first use.
    #[arg(long, global = true)]
    server: Option<String>,
    /// Pin the provider's HTTPS certificate by its SHA-256 (64 hex characters, as
    /// `staticwire-control fingerprint` prints it); remembered per rental.
    #[arg(long, global = true, value_name = "SHA256")]
    fingerprint: Option<String>,
    /// State directory [default: $XDG_CONFIG_HOME/staticip].
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Which rental (one machine can hold several addresses).
    #[arg(long, global = true, default_value = "default")]
    name: String,
    /// Machine-readable JSON on stdout (one object per command).
    #[arg(long, global = true)]
    json: bool,
    /// Pay invoices through your own node ([lnd] or [cln] in <state dir>/config.toml), within
    /// its caps.
    #[arg(short = 'a', long, global = true)]
    auto_pay: bool,
    /// Print the invoice and return without waiting for payment.
    #[arg(long, global = true)]
    no_wait: bool,
    /// Shift this tool's clock by SECS (testing the daemon).
    #[arg(
        long,
        global = true,
        value_name = "SECS",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    clock_offset: i64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rent a new address: key made locally, invoice for activation + first month.
    #[command(name = "RentNewIP", alias = "rent")]
    Rent {
        /// Rent an IPv4 prefix instead of one address: 31, 30 or 29 (see the terms).
        #[arg(long, value_name = "LEN")]
        prefix_len: Option<u8>,
        /// Ask for an IPv6 prefix too (it may cost extra: see the terms).
        #[arg(long, conflicts_with = "no_ipv6")]
        ipv6: bool,
        /// No IPv6 prefix, even where it comes free.
        #[arg(long)]
        no_ipv6: bool,
        /// An IPv6 prefix alone, no IPv4 address (where the provider sells that).
        #[arg(long, conflicts_with_all = ["prefix_len", "no_ipv6"])]
        ipv6_only: bool,
        /// The provider's host to rent on (a server name from the terms).
        #[arg(long)]
        host: Option<String>,
    },
    /// Show the rental: state, address, paid until, what is due.
    #[command(name = "GetRentalStatus", alias = "status")]
    Status,
    /// Write the wg-quick file (0600, private key filled in locally) and print it.
    #[command(name = "GetConf", alias = "conf")]
    Conf {
        /// Print the private key too.
        #[arg(long)]
        reveal: bool,
    },
    /// Pay for more months (plus any back payments owed).
    #[command(name = "Renew", alias = "renew")]
    Renew {
        #[arg(long, default_value_t = 1)]
        months: u32,
    },
    /// Reverse DNS (PTR) of the rental's addresses, on the provider's DNS server. The name
    /// must resolve to the address first (its A or AAAA record).
    Ptr {
        #[command(subcommand)]
        action: PtrAction,
        /// Send through the tunnel, to the provider's tunnel listener (it needs the tunnel up).
        #[arg(long, global = true)]
        tunnel: bool,
    },
    /// Bring the tunnel up with wg-quick.
    Up,
    /// Take the tunnel down with wg-quick.
    Down,
    /// Keep the rental paid: renew with auto-pay when paid-until is near; survives restarts.
    Daemon {
        /// Renew this many days before paid-until.
        #[arg(long, default_value_t = 5)]
        renew_days: u32,
        #[arg(long, default_value_t = 1)]
        months: u32,
        /// One round, then exit (for cron and tests).
        #[arg(long)]
        once: bool,
    },
}

#[derive(Subcommand)]
enum PtrAction {
    /// Name an address: `staticip ptr set mail.example.net [--address 203.0.113.10]`.
    Set {
        /// The host name (its A/AAAA record must already point at the address).
        #[arg(value_name = "NAME")]
        ptr_name: String,
        /// One of the rental's addresses [default: its IPv4 address].
        #[arg(long)]
        address: Option<String>,
    },
    /// Show every address's PTR.
    Show,
    /// Back to the provider's default name.
    Clear {
        /// One address [default: every address of the rental].
        #[arg(long)]
        address: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("refusing this invoice: {0}")]
    Invoice(#[from] InvoiceError),
    #[error("{0}")]
    Pay(#[from] PayError),
    #[error("the invoice expired unpaid")]
    Unpaid,
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Local(String),
}

impl CliError {
    fn code(&self) -> u8 {
        match self {
            CliError::State(_) | CliError::Local(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Api(_) => 3,
            CliError::Invoice(_) => 4,
            CliError::Pay(e) if e.is_local() => 1,
            CliError::Pay(_) => 5,
            CliError::Unpaid => 6,
        }
    }
}

struct Ctx {
    cli: Cli,
    state_dir: PathBuf,
}

impl Ctx {
    fn now(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0) as i64;
        (real + self.cli.clock_offset).max(0) as u64
    }

    /// Human progress goes to stderr so stdout stays clean for --json.
    fn say(&self, msg: impl AsRef<str>) {
        if !self.cli.json {
            eprintln!("{}", msg.as_ref());
        }
    }

    fn slot(&self) -> Result<Slot, CliError> {
        Ok(Slot::open(&self.state_dir, &self.cli.name)?)
    }

    async fn api(&self, slot: &Slot) -> Result<Api, CliError> {
        let saved = slot.saved()?;
        let server = match (&self.cli.server, &saved) {
            (Some(s), _) => api::resolve_server(s).await?,
            (None, Some(saved)) => saved.server.clone(),
            (None, None) => return Err(CliError::Usage("no provider yet: give --server".into())),
        };
        let fingerprint = self
            .cli
            .fingerprint
            .clone()
            .or_else(|| saved.as_ref().and_then(|s| s.fingerprint.clone()));
        let mut api = Api::new(&server, fingerprint.as_deref())?;
        // The terms (over the pinned connection) name the proof key; this rental's pin, when it
        // was made with this server, must agree.
        let (_, offered) = api.terms_and_proof_key().await?;
        let ours = saved.as_ref().filter(|s| s.server == api.base);
        let pinned = ours.and_then(|s| s.proof_key.clone());
        if let Some(key) = api::pin_proof_key(pinned.as_deref(), offered.as_deref())? {
            let (private, _) = slot.keypair()?;
            let private: [u8; 32] =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, private)
                    .ok()
                    .and_then(|k| k.try_into().ok())
                    .ok_or_else(|| CliError::Local("the private key is not 32 bytes".into()))?;
            api.prove_with(&private, &key)?;
            if let Some(s) = ours.filter(|s| s.proof_key.is_none()) {
                slot.save(&Saved {
                    proof_key: Some(key),
                    ..s.clone()
                })?;
            }
        }
        Ok(api)
    }

    /// Checks, shows or pays, then waits for settlement of an invoice.
    /// The activation invoice of our rental that the payment log still has open (the newest),
    /// if the server knows it and the rental is active: what a rerun of `rent` settles.
    async fn activation_in_flight(
        &self,
        api: &Api,
        public_key: &str,
    ) -> Result<Option<staticwire_api::InvoiceResponse>, CliError> {
        let rental = api.status(public_key).await?;
        if rental.state != RentalState::Active {
            return Ok(None);
        }
        let log = PaymentLog::new(self.state_dir.join("payments.log"));
        // Only this rental's payments to this server.
        let ours: std::collections::HashSet<String> = log
            .entries()
            .into_iter()
            .filter(|e| e.public_key == public_key && e.server == api.base)
            .map(|e| e.payment_hash)
            .collect();
        let mut open: Vec<(String, u64)> = log
            .standings()
            .into_iter()
            .filter(|(hash, (standing, _, _))| *standing != Logged::Failed && ours.contains(hash))
            .map(|(hash, (_, _, at))| (hash, at))
            .collect();
        open.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
        for (hash, _) in open {
            // Another server's or another rental's invoice is unknown here: skip it.
            let Ok(invoice) = api.invoice(&hash, 0).await else {
                continue;
            };
            if invoice.purpose == staticwire_api::InvoicePurpose::Activation {
                return Ok(Some(staticwire_api::InvoiceResponse { rental, invoice }));
            }
        }
        Ok(None)
    }

    async fn settle(
        &self,
        api: &Api,
        resp: &staticwire_api::InvoiceResponse,
        action: Action,
        shape: invoice::Shape,
        public_key: &str,
    ) -> Result<Value, CliError> {
        let terms = api.terms().await?;
        let inv = &resp.invoice;
        let checked = invoice::check_for(&inv.bolt11, inv, &terms, action, shape, self.now())?;
        let mut paid_by_us = false;
        if self.cli.auto_pay {
            paid_by_us = self
                .auto_pay(api, &checked, &inv.bolt11, public_key)
                .await?;
        } else if !self.cli.json {
            eprintln!(
                "\nPay {} sat with any Lightning wallet:\n\n{}\n",
                checked.amount_sat, inv.bolt11
            );
            if let Ok(code) = qrcode::QrCode::new(inv.bolt11.to_uppercase().as_bytes()) {
                eprintln!(
                    "{}",
                    code.render::<qrcode::render::unicode::Dense1x2>()
                        .quiet_zone(true)
                        .build()
                );
            }
        }
        if self.cli.no_wait && !paid_by_us {
            return Ok(json!({"invoice": inv, "paid": false}));
        }
        // Wait for the server to see the payment, giving up at the invoice's expiry.
        loop {
            let left = checked.expires_at.saturating_sub(self.now());
            let got = api
                .invoice(&checked.payment_hash, left.clamp(1, 30))
                .await?;
            match got.state {
                InvoiceState::Settled => {
                    self.say("payment received.");
                    return Ok(json!({"invoice": got, "paid": true}));
                }
                InvoiceState::Expired => return Err(CliError::Unpaid),
                InvoiceState::Open if left == 0 => return Err(CliError::Unpaid),
                InvoiceState::Open => self.say(format!("waiting for payment ({left} s left)...")),
            }
        }
    }

    /// Pays through the customer's node within the caps. Payments the log has no outcome for
    /// are first asked about at the node, so an unknown outcome counts until the node says it
    /// failed, and an invoice already paid or still in flight is not paid a second time.
    /// Returns whether this invoice is paid.
    async fn auto_pay(
        &self,
        api: &Api,
        checked: &invoice::Checked,
        bolt11: &str,
        public_key: &str,
    ) -> Result<bool, CliError> {
        let cfg_path = self.state_dir.join("config.toml");
        let cfg = PayConfig::load(&cfg_path)?;
        let log = PaymentLog::new(self.state_dir.join("payments.log"));
        let entry = |hash: &str, amount_sat: u64, status: &str, detail: String| LogEntry {
            at: self.now(),
            payment_hash: hash.to_string(),
            amount_sat,
            server: api.base.clone(),
            public_key: public_key.to_string(),
            status: status.into(),
            detail,
        };
        let standings = log.standings();
        for hash in log.pending(self.now()) {
            let amount = standings.get(&hash).map_or(0, |s| s.1);
            match pay::lookup(&cfg, &cfg_path, &hash).await {
                Ok(NodeView::Succeeded { preimage }) => {
                    let status = match pay::check_preimage(&preimage, &hash) {
                        Ok(()) => "succeeded",
                        Err(_) => "unknown",
                    };
                    log.append(&entry(&hash, amount, status, preimage))?;
                }
                Ok(NodeView::Failed(why)) => log.append(&entry(&hash, amount, "failed", why))?,
                Ok(NodeView::NotFound) => log.append(&entry(
                    &hash,
                    amount,
                    "failed",
                    "the node has no payment of this hash".into(),
                ))?,
                Ok(NodeView::InFlight) => {}
                Err(e) if e.is_local() => return Err(e.into()),
                // Keeps counting; asked again next time.
                Err(e) => self.say(format!("cannot ask the node about {hash}: {e}")),
            }
        }
        match log.standing(&checked.payment_hash) {
            Some(Logged::Succeeded) => {
                self.say("this invoice was already paid through your node.");
                return Ok(true);
            }
            Some(Logged::Pending) => {
                return Err(PayError::InFlight(
                    "an earlier payment of this invoice has not finished; not paying it twice"
                        .into(),
                )
                .into())
            }
            Some(Logged::Failed) | None => {}
        }
        pay::check_caps(&cfg.autopay, &log, checked.amount_sat, self.now())?;
        let this = |status: &str, detail: String| {
            entry(&checked.payment_hash, checked.amount_sat, status, detail)
        };
        log.append(&this("attempt", String::new()))?;
        self.say(format!(
            "paying {} sat through your node...",
            checked.amount_sat
        ));
        match pay::pay(&cfg, &cfg_path, bolt11, &checked.payment_hash).await {
            Ok(preimage) => {
                self.say(format!("paid; preimage {preimage}"));
                log.append(&this("succeeded", preimage))?;
                Ok(true)
            }
            Err(e @ (PayError::InFlight(_) | PayError::BadPreimage { .. })) => {
                log.append(&this("unknown", e.to_string()))?;
                Err(e.into())
            }
            Err(e) => {
                log.append(&this("failed", e.to_string()))?;
                Err(e.into())
            }
        }
    }

    /// Fetches GetConf, fills in the private key, writes the wg-quick file 0600.
    async fn write_conf(&self, api: &Api, slot: &Slot) -> Result<(PathBuf, String), CliError> {
        let (private, public) = slot.keypair()?;
        let conf = api.config(&public).await?;
        let text = state::fill_private_key(&conf.wg_quick, &private);
        let path = slot.conf_path();
        state::write_private(&path, &text)?;
        Ok((path, text))
    }
}

fn print(ctx: &Ctx, v: &Value, human: impl FnOnce() -> String) {
    if ctx.cli.json {
        println!("{}", serde_json::to_string(v).expect("json"));
    } else {
        println!("{}", human());
    }
}

fn describe(r: &staticwire_api::Rental) -> String {
    let when = |t: Option<i64>| {
        t.map(|t| format!("{t} (unix)"))
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "address:     {}\nstate:       {:?}\npaid until:  {}\namount due:  {} sat\nserver:      {} ({})",
        r.address,
        r.state,
        when(r.paid_until),
        r.amount_due_sat,
        r.server.endpoint,
        r.server.public_key
    )
}

/// What a rental holds, for the price of its renewals.
fn shape_of(r: &staticwire_api::Rental) -> invoice::Shape {
    invoice::Shape {
        prefix_len: r.prefix_len,
        ipv6: r.ipv6.is_some(),
        ipv4: !r.address.is_empty(),
    }
}

async fn run(ctx: &Ctx) -> Result<(), CliError> {
    let slot = ctx.slot()?;
    match &ctx.cli.command {
        Command::Rent {
            prefix_len,
            ipv6,
            no_ipv6,
            ipv6_only,
            host,
        } => {
            let (_, public) = slot.keypair()?;
            let req = staticwire_api::RentRequest {
                prefix_len: *prefix_len,
                ipv6: match (ipv6, no_ipv6) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                host: host.clone(),
                ipv4: ipv6_only.then_some(false),
                ..staticwire_api::RentRequest::new(&public)
            };
            let api = ctx.api(&slot).await?;
            ctx.say(format!(
                "renting from {} with public key {public}",
                api.base
            ));
            let resp = match api.rent_with(&req).await {
                Ok(r) => r,
                // Run again after a payment that was in flight when the last run stopped: the
                // server may have it already, so this key rents. Pick up that activation
                // invoice from the payment log and settle it as if the rent had answered it.
                Err(e @ ApiError::Refused { status: 409, .. }) => {
                    match ctx.activation_in_flight(&api, &public).await? {
                        Some(resp) => resp,
                        None => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let asked = req.prefix_len.unwrap_or(32);
            if resp.rental.prefix_len != asked {
                return Err(CliError::Local(format!(
                    "asked for a /{asked}, the server holds a /{} for us: not paying",
                    resp.rental.prefix_len
                )));
            }
            // IPv6 is paid for only when asked for; otherwise it comes free or not at all.
            if *ipv6_only && !resp.rental.address.is_empty() {
                return Err(CliError::Local(
                    "asked for IPv6 only, the server holds an IPv4 address for us: not paying"
                        .into(),
                ));
            }
            let shape = invoice::Shape {
                prefix_len: asked,
                ipv6: req.ipv6 == Some(true),
                ipv4: !ipv6_only,
            };
            slot.save(&Saved {
                server: api.base.clone(),
                public_key: public.clone(),
                address: Some(resp.rental.address.clone()),
                fingerprint: api.fingerprint.clone(),
                proof_key: api.proof_key.clone(),
            })?;
            ctx.say(format!("address held: {}", resp.rental.address));
            let paid = ctx
                .settle(&api, &resp, Action::Rent, shape, &public)
                .await?;
            let conf = if paid["paid"] == true {
                Some(ctx.write_conf(&api, &slot).await?.0)
            } else {
                None
            };
            let rental = api.status(&public).await?;
            let out = json!({"rental": rental, "payment": paid, "config_path": conf});
            print(ctx, &out, || {
                let mut s = describe(&rental);
                if let Some(p) = &conf {
                    s.push_str(&format!(
                        "\nwg-quick file: {} (bring it up: staticip up --name {})",
                        p.display(),
                        slot.name
                    ));
                }
                s
            });
        }
        Command::Status => {
            let (_, public) = slot.keypair()?;
            let r = ctx.api(&slot).await?.status(&public).await?;
            print(ctx, &json!(r), || describe(&r));
        }
        Command::Conf { reveal } => {
            let api = ctx.api(&slot).await?;
            let (path, text) = ctx.write_conf(&api, &slot).await?;
            let shown = if *reveal {
                text.clone()
            } else {
                text.lines()
                    .map(|l| {
                        if l.starts_with("PrivateKey") {
                            "PrivateKey = (hidden; --reveal shows it)"
                        } else {
                            l
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            print(
                ctx,
                &json!({"config_path": path, "wg_quick": shown}),
                || format!("# {}\n{shown}", path.display()),
            );
        }
        Command::Renew { months } => {
            let (_, public) = slot.keypair()?;
            let api = ctx.api(&slot).await?;
            let before = api.status(&public).await?;
            let resp = api.renew(&public, *months).await?;
            ctx.say(format!(
                "renewing {} for {} month(s) (+{} owed)",
                before.address, months, before.months_owed
            ));
            let paid = ctx
                .settle(
                    &api,
                    &resp,
                    Action::Renew {
                        months: *months,
                        owed: before.months_owed,
                        paid_until: before.paid_until,
                    },
                    shape_of(&before),
                    &public,
                )
                .await?;
            let rental = api.status(&public).await?;
            print(ctx, &json!({"rental": rental, "payment": paid}), || {
                describe(&rental)
            });
        }
        Command::Up | Command::Down => {
            let up = matches!(ctx.cli.command, Command::Up);
            let path = slot.conf_path();
            if up && !path.exists() {
                let api = ctx.api(&slot).await?;
                ctx.write_conf(&api, &slot).await?;
            }
            let status = std::process::Command::new("wg-quick")
                .arg(if up { "up" } else { "down" })
                .arg(&path)
                .status()
                .map_err(|e| CliError::Local(format!("cannot run wg-quick: {e}")))?;
            if !status.success() {
                return Err(CliError::Local(format!("wg-quick failed ({status})")));
            }
            print(
                ctx,
                &json!({"interface": slot.interface(), "up": up}),
                || format!("{} is {}", slot.interface(), if up { "up" } else { "down" }),
            );
        }
        Command::Daemon {
            renew_days,
            months,
            once,
        } => daemon(ctx, &slot, *renew_days, *months, *once).await?,
        Command::Ptr { action, tunnel } => {
            let (_, public) = slot.keypair()?;
            let api = ctx.api(&slot).await?;
            let api = if *tunnel {
                // The public listener names the tunnel listener; the request then goes
                // through the tunnel, still proven with this rental's pinned proof key.
                let base = api.ptr(&public).await?.tunnel_api.ok_or_else(|| {
                    CliError::Usage(
                        "this provider has no tunnel listener: leave out --tunnel".into(),
                    )
                })?;
                api.via_tunnel(&base)?
            } else {
                api
            };
            let list = match action {
                PtrAction::Set { ptr_name, address } => {
                    api.set_ptr(&public, address.clone(), ptr_name).await?
                }
                PtrAction::Show => api.ptr(&public).await?,
                PtrAction::Clear { address } => api.clear_ptr(&public, address.clone()).await?,
            };
            print(ctx, &json!(list), || describe_ptr(&list));
        }
    }
    Ok(())
}

fn describe_ptr(list: &staticwire_api::PtrList) -> String {
    list.records
        .iter()
        .map(|r| {
            format!(
                "{:<39} {}{}{}",
                r.address,
                r.name.as_deref().unwrap_or("(no record)"),
                if r.custom { "" } else { "  (provider default)" },
                if r.published {
                    ""
                } else {
                    "  (not published yet: retried)"
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Renews `renew_days` before paid-until (or at once when lapsed), with auto-pay; retries with
/// backoff; all state is on disk and on the server, so a restart just carries on.
async fn daemon(
    ctx: &Ctx,
    slot: &Slot,
    renew_days: u32,
    months: u32,
    once: bool,
) -> Result<(), CliError> {
    if !ctx.cli.auto_pay {
        return Err(CliError::Usage(
            "the daemon pays by itself: give -a/--auto-pay".into(),
        ));
    }
    let (_, public) = slot.keypair()?;
    let mut backoff = Duration::from_secs(5);
    loop {
        let round = async {
            let api = ctx.api(slot).await?;
            let r = api.status(&public).await?;
            let due = match (r.state, r.paid_until) {
                (RentalState::Active, Some(p)) => {
                    (p as u64).saturating_sub(u64::from(renew_days) * 86_400) <= ctx.now()
                }
                (RentalState::Lapsed, _) => true,
                _ => false,
            };
            if !due {
                let next = r
                    .paid_until
                    .map(|p| (p as u64).saturating_sub(u64::from(renew_days) * 86_400));
                return Ok::<_, CliError>((json!({"renewed": false, "rental": r}), next));
            }
            ctx.say(format!(
                "renewing {} ({:?}, paid until {:?})",
                r.address, r.state, r.paid_until
            ));
            let resp = api.renew(&public, months).await?;
            let paid = ctx
                .settle(
                    &api,
                    &resp,
                    Action::Renew {
                        months,
                        owed: r.months_owed,
                        paid_until: r.paid_until,
                    },
                    shape_of(&r),
                    &public,
                )
                .await?;
            let after = api.status(&public).await?;
            Ok((
                json!({"renewed": true, "payment": paid, "rental": after}),
                None,
            ))
        };
        match round.await {
            Ok((out, next)) => {
                backoff = Duration::from_secs(5);
                if once {
                    print(ctx, &out, || format!("{}", out["rental"]["state"]));
                    return Ok(());
                }
                let wait = next.map_or(3600, |n| n.saturating_sub(ctx.now()).clamp(60, 3600));
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            Err(e @ (CliError::Invoice(_) | CliError::Usage(_) | CliError::State(_))) => {
                return Err(e)
            }
            Err(e) => {
                if once {
                    return Err(e);
                }
                eprintln!("staticip daemon: {e}; retrying in {} s", backoff.as_secs());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(600));
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let state_dir = cli.state_dir.clone().unwrap_or_else(state::default_dir);
    let json = cli.json;
    let ctx = Ctx { cli, state_dir };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("staticip: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(&ctx)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!("{}", json!({"error": e.to_string(), "exit_code": e.code()}));
            }
            eprintln!("staticip: {e}");
            ExitCode::from(e.code())
        }
    }
}
