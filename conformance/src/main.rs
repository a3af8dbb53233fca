//! staticwire-conformance: checks a StaticWire server against PROTOCOL.md.
//!
//! Exit codes: 0 every MUST passed (with --replay: every request matched the recording, carried
//! its proof of key possession where one is needed and, untampered, every recorded step was
//! asked); 1 at least one failed; 2 usage.

use clap::Parser;
use staticwire_conformance::replay::{Exchange, Tamper};
use staticwire_conformance::{run, Options};
use std::process::ExitCode;

/// Drive a StaticWire server through the rental protocol and report each MUST as pass or fail.
///
/// Payments go through the server's test hook POST /v1/dev/pay when it offers one (a server
/// on a test Lightning backend, e.g. `staticwire-control serve --dev-hooks`), or through
/// --pay-command; without either, the checks that need a payment are skipped. With the clock
/// hook POST /v1/dev/clock, the lifecycle (lapse, back payments, release, unpaid expiry) is
/// checked too — it moves that server's clock forward for good, so use a test server.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The server: http://host:port or https://host:port.
    #[arg(required_unless_present = "replay")]
    server_url: Option<String>,
    /// Client mode: serve the server replies recorded in FILE (e.g. conformance/exchanges/
    /// rent.json) on a loopback port for a client under test, until Ctrl-C; then report
    /// which requests matched the recording.
    #[arg(long, value_name = "FILE", conflicts_with = "server_url")]
    replay: Option<std::path::PathBuf>,
    /// With --replay: make the invoices lie (amount, payee, network, hash); a conforming
    /// client refuses them and asks nothing after the terms.
    #[arg(long, value_name = "HOW", requires = "replay")]
    tamper: Option<String>,
    /// SHA-256 of the server's HTTPS certificate (64 hex characters), pinned.
    #[arg(long, value_name = "SHA256")]
    fingerprint: Option<String>,
    /// Pays an invoice: this command is run with the BOLT11 string as its last argument and
    /// must exit 0 once paid (e.g. "lncli --network regtest payinvoice -f").
    #[arg(long, value_name = "COMMAND")]
    pay_command: Option<String>,
    /// Do not use the server's test hooks even if it offers them.
    #[arg(long)]
    no_hooks: bool,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// Serves a recorded exchange until Ctrl-C and reports what the client asked.
async fn replay(file: &std::path::Path, tamper: Tamper) -> Result<bool, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let exchange = Exchange::parse(&text)?;
    let steps = exchange.steps.clone();
    let r = staticwire_conformance::replay::serve(exchange, tamper)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "replaying {} at {} (payee {}); Ctrl-C to end",
        file.display(),
        r.url,
        r.payee()
    );
    let _ = tokio::signal::ctrl_c().await;
    let (ok, lines) = staticwire_conformance::replay::verdict(&steps, &r.seen(), tamper);
    println!();
    for l in lines {
        println!("{l}");
    }
    Ok(ok)
}

/// Runs `f` on a fresh runtime; a runtime that cannot start is a usage-level failure (2).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, ExitCode> {
    match tokio::runtime::Runtime::new() {
        Ok(rt) => Ok(rt.block_on(f)),
        Err(e) => {
            eprintln!("staticwire-conformance: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(file) = &cli.replay {
        let tamper = match cli.tamper.as_deref() {
            None | Some("none") => Tamper::None,
            Some("amount") => Tamper::Amount,
            Some("payee") => Tamper::Payee,
            Some("network") => Tamper::Network,
            Some("hash") => Tamper::Hash,
            Some(other) => {
                eprintln!(
                    "staticwire-conformance: --tamper {other}: amount, payee, network or hash"
                );
                return ExitCode::from(2);
            }
        };
        return match block_on(replay(file, tamper)) {
            Ok(Ok(true)) => ExitCode::SUCCESS,
            Ok(Ok(false)) => ExitCode::from(1),
            Ok(Err(e)) => {
                eprintln!("staticwire-conformance: {e}");
                ExitCode::from(2)
            }
            Err(code) => code,
        };
    }
    let server_url = cli.server_url.clone().unwrap_or_default();
    if !(server_url.starts_with("http://") || server_url.starts_with("https://")) {
        eprintln!(
            "staticwire-conformance: the server is a URL: http://host:port or https://host:port"
        );
        return ExitCode::from(2);
    }
    let pay_command = cli
        .pay_command
        .as_deref()
        .map(|c| c.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|c| !c.is_empty());
    let opts = Options {
        base: server_url.clone(),
        fingerprint: cli.fingerprint.clone(),
        pay_command,
        use_hooks: !cli.no_hooks,
    };
    let report = match block_on(run(&opts)) {
        Ok(report) => report,
        Err(code) => return code,
    };
    if cli.json {
        println!("{}", report.to_json());
    } else {
        println!("StaticWire conformance: {server_url}\n");
        print!("{}", report.render());
    }
    if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
