//! `vsock-probe CID PORT`: what a workload in the guest sees when it tries
//! to reach a vsock port. It prints one line and exits with its code:
//!
//! | exit | line | meaning |
//! |---|---|---|
//! | 0 | `answered: ...` | a peer accepted and answered a vminitd `hello` |
//! | 2 | `socket: ...` | no vsock socket could be opened (seccomp, no vsock) |
//! | 3 | `connect: ...` | the connection was refused or had no route |
//! | 4 | `closed: ...` | connected, but the peer closed or never answered |
//!
//! Built for the musl target, it runs in the busybox root of a test VM.

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(cid), Some(port)) = (
        args.first().and_then(|a| a.parse::<u32>().ok()),
        args.get(1).and_then(|a| a.parse::<u32>().ok()),
    ) else {
        eprintln!("usage: vsock-probe CID PORT");
        return ExitCode::from(64);
    };
    // SAFETY: socket takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        println!("socket: {}", std::io::Error::last_os_error());
        return ExitCode::from(2);
    }
    // SAFETY: fd is a socket we own from here on.
    let mut stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    // SAFETY: connect reads a sockaddr_vm of the size given.
    let rc = unsafe {
        libc::connect(
            fd,
            &addr as *const libc::sockaddr_vm as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        println!("connect: {}", std::io::Error::last_os_error());
        return ExitCode::from(3);
    }
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let mut sent = Vec::new();
    for body in [
        r#"{"open":"control"}"#,
        r#"{"id":1,"op":"hello","version":2,"client":"vsock-probe"}"#,
    ] {
        sent.extend_from_slice(&(body.len() as u32).to_be_bytes());
        sent.extend_from_slice(body.as_bytes());
    }
    if let Err(e) = stream.write_all(&sent) {
        println!("closed: {e}");
        return ExitCode::from(4);
    }
    let mut answer = vec![0u8; 4096];
    match stream.read(&mut answer) {
        Ok(n) if n > 4 => {
            println!("answered: {}", String::from_utf8_lossy(&answer[4..n]));
            ExitCode::SUCCESS
        }
        Ok(_) => {
            println!("closed: no answer");
            ExitCode::from(4)
        }
        Err(e) => {
            println!("closed: {e}");
            ExitCode::from(4)
        }
    }
}
