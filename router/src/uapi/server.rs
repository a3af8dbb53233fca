//! The UAPI Unix socket: one thread accepts, one short-lived thread per connection.

use super::format::format_get;
use super::parse::parse_set;
use crate::device::{Device, NetControl};
use crate::request::{UapiError, EINVAL};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest line we accept; a real one is under 100 bytes.
const MAX_LINE: usize = 4096;
/// Idle time after which a connection is dropped, so a stuck client cannot pin a thread.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a `set` (or bytes of a `get` answer) after which the memory the request used is
/// handed back to the system at once.
const BIG_REQUEST: usize = 10_000;

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
        let listener = bind_private(&path)?;
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

/// Binds a listening Unix socket at `path` that only its owner can connect to, from the moment
/// the file exists (Linux checks the socket file's write permission at connect time).
///
/// Linux gives the file `bind` creates the mode of the socket's own inode less the umask
/// (`unix_bind` in af_unix.c), so the socket is made 0600 with `fchmod` before it is bound. The
/// umask is process-wide: setting it here, as this did before, would also apply to files other
/// threads create meanwhile. The chmod after `bind` makes the mode exactly 0600 whatever the
/// umask.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    // SAFETY: fchmod on a descriptor we own and keep open; no memory is passed.
    if unsafe { libc::fchmod(socket.as_raw_fd(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    socket.bind(&SockAddr::unix(path)?)?;
    // -1 is the kernel's maximum (net.core.somaxconn), the backlog std's `UnixListener::bind`
    // uses on Linux.
    socket.listen(-1)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(socket.into())
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
        let mut big = false;
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
                    .and_then(|req| device.apply(Instant::now(), &req, net));
                big |= lines.len() > BIG_REQUEST;
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
        if big || answer.len() > BIG_REQUEST * 100 {
            // A million-peer request leaves hundreds of MB freed but held by malloc.
            drop(answer);
            // SAFETY: malloc_trim only releases free memory.
            unsafe { libc::malloc_trim(0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;
    use std::io::Read;

    struct NoNet;
    impl NetControl for NoNet {
        fn rebind(&self, port: u16, _fwmark: u32) -> Result<u16, UapiError> {
            Ok(port)
        }
    }

    /// Sends `requests` over a socket pair and returns everything the server answered.
    fn converse(device: &Device, requests: &str) -> String {
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(requests.as_bytes()).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = handle_connection(server, device, &NoNet);
        let mut out = String::new();
        // A server that hangs up on unread input resets the connection; what came before counts.
        let _ = client.read_to_string(&mut out);
        out
    }

    fn pk(n: u8) -> String {
        Key([n; 32]).to_hex()
    }

    #[test]
    fn set_then_get_on_one_connection() {
        let dev = Device::new();
        let out = converse(
            &dev,
            &format!(
                "set=1\nlisten_port=51820\npublic_key={}\nallowed_ip=203.0.113.10/32\n\nget=1\n\n",
                pk(2)
            ),
        );
        let (set, get) = out.split_once("\n\n").unwrap();
        assert_eq!(set, "errno=0");
        assert!(get.contains("listen_port=51820\n"));
        assert!(get.contains(&format!("public_key={}\n", pk(2))));
        assert!(get.contains("allowed_ip=203.0.113.10/32\n"));
        assert!(get.ends_with("errno=0\n\n"));
    }

    #[test]
    fn bad_lines_answer_einval_and_change_nothing() {
        let dev = Device::new();
        converse(
            &dev,
            &format!(
                "set=1\npublic_key={}\nallowed_ip=203.0.113.10/32\n\n",
                pk(2)
            ),
        );
        let before = dev.view();
        for bad in [
            format!(
                "set=1\npublic_key={}\nallowed_ip=203.0.113.11/32\nbogus=1\n\n",
                pk(3)
            ),
            format!(
                "set=1\nreplace_peers=true\npublic_key={}\nendpoint=nowhere\n\n",
                pk(3)
            ),
            format!("set=1\nlisten_port=99999\npublic_key={}\n\n", pk(3)),
            "set=1\nnot a key value line\n\n".to_string(),
        ] {
            assert_eq!(converse(&dev, &bad), "errno=22\n\n", "{bad}");
            assert_eq!(dev.view(), before, "{bad}");
        }
    }

    #[test]
    fn unknown_operation_and_dirty_get_are_refused() {
        let dev = Device::new();
        assert_eq!(converse(&dev, "delete=1\n\n"), "errno=22\n\n");
        assert_eq!(converse(&dev, "get=1\nextra=1\n\n"), "errno=22\n\n");
    }

    #[test]
    fn overlong_line_closes_the_connection_without_change() {
        let dev = Device::new();
        let out = converse(
            &dev,
            &format!("set=1\nlisten_port={}\n\n", "1".repeat(10_000)),
        );
        assert_eq!(out, "");
        assert_eq!(dev.view(), crate::device::DeviceView::default());
    }

    /// The socket file is 0600 and answers; a second bind while it is served is refused.
    #[test]
    fn socket_is_private_and_served_once() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("swt-uapi-{}", std::process::id()));
        let sock = UapiSocket::bind(&dir, "swt0").unwrap();
        let mode = std::fs::metadata(&sock.path).unwrap().mode();
        assert_eq!(mode & 0o7777, 0o600, "mode {mode:o}");
        assert!(UnixStream::connect(&sock.path).is_ok());
        let again = UapiSocket::bind(&dir, "swt0").err().map(|e| e.kind());
        assert_eq!(again, Some(io::ErrorKind::AddrInUse));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_set_applies_nothing() {
        let dev = Device::new();
        let out = converse(
            &dev,
            &format!("set=1\npublic_key={}\nallowed_ip=10.0.0.1/32\n", pk(2)),
        );
        assert_eq!(out, "");
        assert!(dev.view().peers.is_empty());
    }
}
