//! The UAPI Unix socket: one thread accepts, one short-lived thread per connection.

use super::format::format_get;
use super::parse::{parse_set, UapiError, EINVAL};
use crate::device::{Device, NetControl};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Longest line we accept; a real one is under 100 bytes.
const MAX_LINE: usize = 4096;
/// Idle time after which a connection is dropped, so a stuck client cannot pin a thread.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct UapiSocket {
    pub path: PathBuf,
    listener: UnixListener,
}

impl UapiSocket {
    /// Creates `<dir>/<iface>.sock`, mode 0600. A stale socket (nobody listening) is replaced;
    /// a live one means another process serves this interface.
    pub fn bind(dir: &Path, iface: &str) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{iface}.sock"));
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is served by another process", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        // Create it with no permissions for others from the start: umask, then chmod.
        let old = unsafe { libc::umask(0o077) };
        let bound = UnixListener::bind(&path);
        unsafe { libc::umask(old) };
        let listener = bound?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(UapiSocket { path, listener })
    }

    /// Serves connections until the process exits.
    pub fn serve<N>(self, device: Arc<Device>, net: Arc<N>)
    where
        N: NetControl + Send + Sync + 'static,
    {
        for conn in self.listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (device, net) = (device.clone(), net.clone());
            let spawned = std::thread::Builder::new()
                .name("uapi-conn".into())
                .spawn(move || {
                    if let Err(e) = handle_connection(conn, &device, &*net) {
                        tracing::debug!("uapi connection: {e}");
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("uapi: cannot spawn connection thread: {e}");
            }
        }
    }
}

fn read_line(r: &mut impl BufRead, line: &mut String) -> io::Result<bool> {
    line.clear();
    let n = io::Read::take(&mut *r, MAX_LINE as u64 + 1).read_line(line)?;
    if n == 0 {
        return Ok(false);
    }
    if !line.ends_with('\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "line too long or truncated",
        ));
    }
    line.pop();
    Ok(true)
}

/// Handles requests on one connection until the client closes it.
pub fn handle_connection(
    conn: UnixStream,
    device: &Device,
    net: &dyn NetControl,
) -> io::Result<()> {
    conn.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        if !read_line(&mut reader, &mut line)? {
            return Ok(());
        }
        let answer = match line.as_str() {
            "get=1" => {
                // The request ends with an empty line; anything else in it is an error.
                let mut clean = true;
                while read_line(&mut reader, &mut line)? && !line.is_empty() {
                    clean = false;
                }
                if clean {
                    format_get(&device.view())
                } else {
                    format!("errno={EINVAL}\n\n")
                }
            }
            "set=1" => {
                let mut lines = Vec::new();
                loop {
                    if !read_line(&mut reader, &mut line)? {
                        return Ok(()); // client went away mid-request: apply nothing
                    }
                    if line.is_empty() {
                        break;
                    }
                    lines.push(std::mem::take(&mut line));
                }
                let result = parse_set(lines.iter().map(String::as_str))
                    .and_then(|req| device.apply(&req, net));
                match result {
                    Ok(()) => "errno=0\n\n".to_string(),
                    Err(e) => {
                        tracing::warn!("uapi set refused: {e}");
                        format!("errno={}\n\n", e.errno())
                    }
                }
            }
            other => {
                let e = UapiError::UnknownKey(other.chars().take(80).collect());
                tracing::warn!("uapi: unknown operation: {e}");
                writer.write_all(format!("errno={}\n\n", e.errno()).as_bytes())?;
                return Ok(());
            }
        };
        writer.write_all(answer.as_bytes())?;
    }
}
