//! A userspace WireGuard interface built into the program that uses it (Linux, feature
//! `userspace`): [`Implementation::Builtin`](crate::apply::Implementation::Builtin).
//!
//! It is a drop-in for `wireguard-go`: a TUN interface and the control socket
//! `/var/run/wireguard/NAME.sock` that `wg` speaks to, so [`WgHost`](crate::apply::WgHost)
//! configures and reads it exactly as it does the others. The WireGuard protocol itself
//! (handshakes, sessions, timers, cookies) is boringtun's; around it are three threads and
//! no async runtime: interface to network, network to interface, timers.
//!
//! The interface runs in its own process, so it outlives a restart of the program that made
//! it, as the other daemons do. That process is the program itself, started again with
//! [`DAEMON_ARG`]: a program that offers the built-in implementation calls [`run_if_asked`]
//! first thing in `main`, before it starts any thread.
//!
//! ```no_run
//! // First thing in main:
//! kokoa_wg::userspace::run_if_asked();
//! // ... the program's own work, which may use Implementation::Builtin.
//! ```

mod device;
mod recv;
mod tun;
mod uapi;

use std::{
    fs,
    io::{self, BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixListener},
    path::{Path, PathBuf},
    sync::Arc,
    thread,
};

use self::device::Device;
use crate::InterfaceName;

/// The first argument that turns a program into the daemon of one interface:
/// `PROGRAM --kokoa-wireguard NAME [--foreground]`.
pub const DAEMON_ARG: &str = "--kokoa-wireguard";

/// Where `wg` looks for the control sockets of userspace interfaces.
const SOCKET_DIR: &str = "/var/run/wireguard";
/// How long a control connection may wait between two lines.
const CONTROL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// When the program was started as a daemon ([`DAEMON_ARG`] first), runs the interface and
/// never returns: the process exits 0 once its interface is deleted, 1 when it cannot make
/// it (with the reason on standard error). Otherwise returns at once.
///
/// Without `--foreground` (and without `WG_PROCESS_FOREGROUND=1`, as for `wireguard-go`), the
/// process returns to its caller once the interface and its control socket exist and goes
/// on in the background. Call it before any thread starts: going to the background forks.
pub fn run_if_asked() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(DAEMON_ARG.as_ref()) {
        return;
    }
    let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    run_daemon(&rest)
}

/// Runs the daemon of the interface `args` name (`NAME [--foreground]`) and exits the
/// process: 0 once the interface is deleted, 1 when it cannot be made, 2 on bad arguments,
/// with the reason on standard error. [`run_if_asked`] passes what follows [`DAEMON_ARG`].
pub fn run_daemon(args: &[String]) -> ! {
    let foreground = args.iter().any(|a| a == "--foreground")
        || std::env::var_os("WG_PROCESS_FOREGROUND").is_some_and(|v| v == "1");
    let names: Vec<&String> = args.iter().filter(|a| *a != "--foreground").collect();
    let code = match names.as_slice() {
        [name] => match InterfaceName::new(name) {
            Ok(name) => match serve(&name, foreground) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("kokoa-wireguard {name}: {e}");
                    1
                }
            },
            Err(e) => {
                eprintln!("kokoa-wireguard: {e}");
                2
            }
        },
        _ => {
            eprintln!(
                "kokoa-wireguard: expected one interface name and at most --foreground, got {args:?}"
            );
            2
        }
    };
    std::process::exit(code);
}

/// The control socket's path for interface `name`.
fn socket_path(name: &InterfaceName) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{name}.sock"))
}

/// Makes the interface and its control socket, goes to the background unless told not to,
/// and serves until the interface is deleted.
fn serve(name: &InterfaceName, foreground: bool) -> io::Result<()> {
    let path = socket_path(name);
    fs::create_dir_all(SOCKET_DIR)?;
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is served by another process", path.display()),
        ));
    }
    // A socket file nobody answers on is left over from a daemon that died.
    let _ = fs::remove_file(&path);
    let device = Arc::new(Device::create(name)?);
    let listener = UnixListener::bind(&path)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    if !foreground {
        detach()?;
    }
    let control = Arc::clone(&device);
    thread::spawn(move || {
        // A thread per connection, each bounded in time: a client that stalls holds up
        // neither the others nor itself for long.
        for stream in listener.incoming().flatten() {
            let device = Arc::clone(&control);
            let _ = stream.set_read_timeout(Some(CONTROL_TIMEOUT));
            thread::spawn(move || answer(&device, stream));
        }
    });
    let gone = device.run();
    let _ = fs::remove_file(&path);
    // Reading fails once the interface is deleted (the error varies with the kernel):
    // that is the normal end. A failure while it still exists is a real one.
    if exists(name) { Err(gone) } else { Ok(()) }
}

/// Whether interface `name` exists in this process's network namespace.
fn exists(name: &InterfaceName) -> bool {
    let Ok(c_name) = std::ffi::CString::new(name.as_str()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    unsafe { libc::if_nametoindex(c_name.as_ptr()) != 0 }
}

/// Forks: the parent exits 0 (its caller sees a ready interface), the child leaves the
/// caller's session and standard streams.
fn detach() -> io::Result<()> {
    // SAFETY: called before any thread exists (documented on `run_if_asked`), so the child
    // is a complete copy of this single-threaded process.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: plain system calls on descriptors this process owns.
            unsafe {
                libc::setsid();
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    for fd in 0..3 {
                        libc::dup2(null, fd);
                    }
                    if null > 2 {
                        libc::close(null);
                    }
                }
            }
            Ok(())
        }
        _ => std::process::exit(0),
    }
}

/// Serves one control connection: any number of `get=1` / `set=1` requests.
fn answer(device: &Device, stream: std::os::unix::net::UnixStream) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut lines = BufReader::new(stream).lines();
    while let Some(first) = lines.next() {
        match first?.as_str() {
            "get=1" => {
                // The request ends with an empty line.
                for line in lines.by_ref() {
                    if line?.is_empty() {
                        break;
                    }
                }
                writer.write_all(device.get().as_bytes())?;
            }
            "set=1" => {
                let mut body = Vec::new();
                for line in lines.by_ref() {
                    let line = zeroize::Zeroizing::new(line?);
                    if line.is_empty() {
                        break;
                    }
                    body.push(line);
                }
                let result =
                    uapi::parse_set(body.iter().map(|l| l.as_str())).and_then(|s| device.set(s));
                let errno = result.err().map_or(0, |r| r.errno);
                writer.write_all(format!("errno={errno}\n\n").as_bytes())?;
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}
