//! staticwire-conformance: checks a StaticWire server against PROTOCOL.md.
//!
//! Exit codes: 0 every MUST passed; 1 at least one failed; 2 usage.

use clap::Parser;
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
    server_url: String,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !(cli.server_url.starts_with("http://") || cli.server_url.starts_with("https://")) {
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
        base: cli.server_url.clone(),
        fingerprint: cli.fingerprint.clone(),
        pay_command,
        use_hooks: !cli.no_hooks,
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("staticwire-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    let report = rt.block_on(run(&opts));
    if cli.json {
        println!("{}", report.to_json());
    } else {
        println!("StaticWire conformance: {}\n", cli.server_url);
        print!("{}", report.render());
    }
    if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
