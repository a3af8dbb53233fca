//! `staticwire-router [--foreground] INTERFACE`: creates the TUN interface, serves the UAPI
//! socket, and forwards packets. Drop-in where wireguard-go or boringtun-cli are used.

use clap::Parser;
use staticwire_router::device::Device;
use staticwire_router::io::{self, tun, IoMode, Net};
use staticwire_router::metrics::Exporter;
use staticwire_router::uapi::server::UapiSocket;
use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

/// Handshake messages a second per worker before cookies: 2,000 initiations, each about 0.2 ms of
/// CPU, so a flood can take at most ~40% of a worker's core.
const HANDSHAKE_LIMIT_PER_WORKER: u64 = 4_000;

/// StaticWire's userspace WireGuard data plane.
///
/// Creates the TUN interface INTERFACE and serves the WireGuard configuration protocol on
/// SOCKET_DIR/INTERFACE.sock, so `wg`, `wg-quick` (WG_QUICK_USERSPACE_IMPLEMENTATION=staticwire-router)
/// and staticwire-control configure it. SIGTERM or SIGINT, or deleting the interface, shut it
/// down cleanly: the socket and the interface are removed.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Stay in the foreground. Without it the router daemonizes once the interface and the
    /// socket exist (also with WG_PROCESS_FOREGROUND=1 in the environment).
    #[arg(short, long)]
    foreground: bool,

    /// Worker threads, each with its own TUN queue and UDP socket [default: one per CPU].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,

    /// How packets move: io_uring loops (uring), recvmmsg/sendmmsg threads (batch), or one
    /// syscall per packet (simple). auto takes uring where the kernel allows it, else batch.
    #[arg(long, value_enum, default_value_t = IoMode::Auto, value_name = "MODE")]
    io: IoMode,

    /// Turn off segmentation offloads (TUN TSO/USO with virtio-net headers, UDP GSO/GRO).
    #[arg(long)]
    no_offload: bool,

    /// Pin worker i to CPU i (modulo the CPUs this process may use).
    #[arg(long)]
    pin_cpus: bool,

    /// Handshake messages a second (an initiation counts twice) answered before the router asks
    /// for cookies (MAC2) and then limits each source address to 20 a second [default: 4,000 per
    /// worker, which keeps handshakes to about half of the CPU under a flood].
    #[arg(long)]
    handshake_limit: Option<u64>,

    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9586. Off by default;
    /// keep it on loopback or a management network.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// Leave per-peer series out of /metrics (for hundreds of thousands of peers).
    #[arg(long)]
    no_peer_metrics: bool,

    /// Append logs to this file. A daemon without it logs nowhere.
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,

    /// Log filter in RUST_LOG syntax (RUST_LOG overrides it).
    #[arg(long, default_value = "info", value_name = "FILTER")]
    log_level: String,

    /// Directory of the UAPI socket; `wg` looks in /var/run/wireguard.
    #[arg(long, default_value = "/var/run/wireguard", value_name = "DIR")]
    socket_dir: PathBuf,

    /// MTU of the new interface (wg-quick sets its own).
    #[arg(long, default_value_t = 1420, value_parser = clap::value_parser!(u32).range(576..=65535))]
    mtu: u32,

    /// Name of the interface to create.
    interface: String,
}

fn init_logging(args: &Args) -> std::io::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&args.log_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &args.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init()
        }
        None => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
}

/// Forks. The parent waits until the child reports the interface up (exit 0) or dies (exit 1);
/// the child continues in a new session and gets the pipe to report on.
fn daemonize() -> std::io::Result<File> {
    let mut fds = [0; 2];
    // SAFETY: plain syscalls before any thread exists.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        match libc::fork() {
            -1 => Err(std::io::Error::last_os_error()),
            0 => {
                libc::close(fds[0]);
                libc::setsid();
                Ok(File::from_raw_fd(fds[1]))
            }
            _ => {
                libc::close(fds[1]);
                let mut byte = [0u8; 1];
                let ok = File::from_raw_fd(fds[0]).read(&mut byte).ok() == Some(1);
                std::process::exit(if ok { 0 } else { 1 });
            }
        }
    }
}

fn detach_stdio() {
    // SAFETY: replacing our own stdio descriptors with /dev/null.
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for target in 0..3 {
                libc::dup2(fd, target);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: building a signal set and blocking it for this thread and every thread it spawns.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn run(args: &Args) -> Result<UapiCleanup, String> {
    let threads = args.threads.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let mode = args
        .io
        .resolve()
        .map_err(|e| format!("io_uring refused: {e} (try --io batch)"))?;
    let offload = mode != IoMode::Simple && !args.no_offload;
    let (queues, offloads) = tun::create(&args.interface, threads, args.mtu, offload)
        .map_err(|e| format!("cannot create interface {}: {e}", args.interface))?;
    let net = Arc::new(
        Net::bind(0, 0, threads, offload).map_err(|e| format!("cannot open UDP sockets: {e}"))?,
    );
    let (gso, gro) = net.offloads();
    let device = Arc::new(Device::new());
    device.set_handshake_limit(
        args.handshake_limit
            .unwrap_or(HANDSHAKE_LIMIT_PER_WORKER * threads as u64),
    );
    device.set_bound_port(net.port());
    let uapi = UapiSocket::bind(&args.socket_dir, &args.interface)
        .map_err(|e| format!("cannot create UAPI socket: {e}"))?;
    let cleanup = UapiCleanup(uapi.path.clone());
    if let Some(addr) = args.metrics {
        let exporter = Exporter::new(
            device.clone(),
            args.interface.clone(),
            !args.no_peer_metrics,
        );
        let bound = exporter
            .serve(addr)
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        tracing::info!("metrics on http://{bound}/metrics");
    }
    io::start(
        device.clone(),
        net.clone(),
        queues,
        mode,
        offloads,
        args.pin_cpus,
    )
    .map_err(|e| format!("cannot start workers: {e}"))?;
    let (d, n) = (device, net);
    std::thread::Builder::new()
        .name("uapi".into())
        .spawn(move || uapi.serve(d, n))
        .map_err(|e| e.to_string())?;
    tracing::info!(
        interface = %args.interface,
        threads,
        io = %mode.as_str(),
        tso = offloads.tso,
        uso = offloads.uso,
        gso,
        gro,
        socket = %cleanup.0.display(),
        "staticwire-router up"
    );
    Ok(cleanup)
}

/// Removes the UAPI socket on the way out.
struct UapiCleanup(PathBuf);

impl Drop for UapiCleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = init_logging(&args) {
        eprintln!("staticwire-router: cannot open log file: {e}");
        std::process::exit(1);
    }
    let foreground =
        args.foreground || std::env::var("WG_PROCESS_FOREGROUND").is_ok_and(|v| v == "1");
    let mut notify = if foreground {
        None
    } else {
        match daemonize() {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("staticwire-router: cannot daemonize: {e}");
                std::process::exit(1);
            }
        }
    };
    let signals = shutdown_signals();
    let cleanup = match run(&args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("staticwire-router: {e}");
            std::process::exit(1);
        }
    };
    if let Some(mut pipe) = notify.take() {
        let _ = pipe.write_all(b"1");
        detach_stdio();
    }
    let mut sig: libc::c_int = 0;
    // SAFETY: waiting for one of the signals blocked above.
    unsafe { libc::sigwait(&signals, &mut sig) };
    tracing::info!(signal = sig, "shutting down");
    drop(cleanup);
    // Exiting closes the TUN queues, which removes the interface.
    std::process::exit(0);
}
