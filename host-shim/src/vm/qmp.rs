//! QEMU's machine protocol (QMP) on a socket of the VM's own: how the host
//! drives the balloon of a running VM.
//!
//! vmshim binds `qmp.sock` (0600, in the VM's 0700 runtime directory) and
//! hands the listening descriptor to QEMU (`-chardev socket,fd=N,server=on`,
//! as libvirt passes its monitor), so the socket is vmshim's from the start
//! and never QEMU's stdio. Whoever may use the VM's runtime directory (its
//! owner: the instance daemon, `vmshim update`, `vmshim stats`) connects
//! there; QEMU serves one client at a time, the next waiting in the
//! listen queue.
//!
//! A session is QEMU's greeting, `qmp_capabilities`, then commands, each
//! answered by one `return` or `error` object; events (`BALLOON_CHANGE`)
//! come between them and are skipped.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The socket's name in the VM's runtime directory.
pub const SOCKET_NAME: &str = "qmp.sock";

/// How long one exchange with QEMU may take: it answers at once unless it
/// is stuck.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be reached, or the connection broke.
    #[error("QEMU's control socket {}: {error}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What the system said.
        error: io::Error,
    },
    /// QEMU did not answer in time.
    #[error("QEMU's control socket {}: no answer to {command} within {TIMEOUT:?}", path.display())]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// The command that went unanswered.
        command: String,
    },
    /// QEMU sent something that is not QMP.
    #[error("QEMU's control socket {}: {detail}", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// QEMU refused a command.
    #[error("QEMU refused {command}: {desc} ({class})")]
    Refused {
        /// The command.
        command: String,
        /// QEMU's error class (`DeviceNotActive`, `GenericError`).
        class: String,
        /// QEMU's words.
        desc: String,
    },
}

/// The listening socket QEMU is handed.
#[derive(Debug)]
pub struct QmpListener {
    path: PathBuf,
    fd: Arc<OwnedFd>,
}

impl QmpListener {
    /// Binds `qmp.sock` in `dir` (the VM's private runtime directory),
    /// 0600.
    pub fn bind(dir: &Path) -> io::Result<QmpListener> {
        let path = dir.join(SOCKET_NAME);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        Ok(QmpListener {
            path,
            fd: Arc::new(OwnedFd::from(listener)),
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// QEMU's arguments: the chardev on the inherited descriptor, and a
    /// QMP monitor on it.
    pub fn qemu_args(&self) -> Vec<String> {
        vec![
            "-chardev".into(),
            format!("socket,id=qmp,fd={},server=on,wait=off", self.fd.as_raw_fd()),
            "-mon".into(),
            "chardev=qmp,mode=control".into(),
        ]
    }

    /// Lets `cmd` (QEMU) inherit the descriptor.
    pub fn pass(&self, cmd: &mut Command) {
        let fd = self.fd.clone();
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls fcntl, which is async-signal-safe; the descriptor is
        // held by the closure, so it is open then.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// The balloon as QEMU sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balloon {
    /// The guest's memory with the balloon taken out (`query-balloon`'s
    /// `actual`), in bytes: what the guest has given back so far shows as
    /// the VM's memory less this.
    pub actual_bytes: u64,
    /// The VM's memory at boot (`query-memory-size-summary`'s
    /// `base-memory`), in bytes.
    pub base_bytes: u64,
}

impl Balloon {
    /// What the guest has handed back through the balloon, in bytes.
    pub fn inflated_bytes(&self) -> u64 {
        self.base_bytes.saturating_sub(self.actual_bytes)
    }
}

/// One QMP session.
#[derive(Debug)]
pub struct Qmp {
    path: PathBuf,
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    next_id: u64,
}

impl Qmp {
    /// Connects to the socket at `path` and negotiates the session.
    pub async fn connect(path: &Path) -> Result<Qmp, QmpError> {
        let io_err = |error| QmpError::Io {
            path: path.to_owned(),
            error,
        };
        let stream = tokio::time::timeout(TIMEOUT, UnixStream::connect(path))
            .await
            .map_err(|_| QmpError::Timeout {
                path: path.to_owned(),
                command: "the connection".into(),
            })?
            .map_err(io_err)?;
        let (read, writer) = stream.into_split();
        let mut qmp = Qmp {
            path: path.to_owned(),
            reader: BufReader::new(read),
            writer,
            next_id: 1,
        };
        let greeting = qmp.read_message("the greeting").await?;
        if greeting.get("QMP").is_none() {
            return Err(qmp.protocol(format!("expected QEMU's greeting, got {greeting}")));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    fn protocol(&self, detail: String) -> QmpError {
        QmpError::Protocol {
            path: self.path.clone(),
            detail,
        }
    }

    async fn read_message(&mut self, waiting_for: &str) -> Result<Value, QmpError> {
        let mut line = String::new();
        let read = tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut line))
            .await
            .map_err(|_| QmpError::Timeout {
                path: self.path.clone(),
                command: waiting_for.to_owned(),
            })?
            .map_err(|error| QmpError::Io {
                path: self.path.clone(),
                error,
            })?;
        if read == 0 {
            return Err(QmpError::Io {
                path: self.path.clone(),
                error: io::Error::new(io::ErrorKind::UnexpectedEof, "QEMU closed the connection"),
            });
        }
        serde_json::from_str(line.trim_end()).map_err(|e| self.protocol(format!("{e} in {:?}", line.trim_end())))
    }

    /// Runs `command` (with `arguments`) and returns its `return` value.
    pub async fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({"execute": command, "id": id});
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|error| QmpError::Io {
                path: self.path.clone(),
                error,
            })?;
        loop {
            let message = self.read_message(command).await?;
            if message.get("event").is_some() || message.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let field = |name: &str| error.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
                return Err(QmpError::Refused {
                    command: command.to_owned(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            return Err(self.protocol(format!("neither a return nor an error: {message}")));
        }
    }

    /// Asks the guest to bring its memory to `target_bytes` by inflating or
    /// deflating the balloon; the guest does so on its own time.
    pub async fn set_balloon(&mut self, target_bytes: u64) -> Result<(), QmpError> {
        self.execute("balloon", Some(json!({ "value": target_bytes }))).await?;
        Ok(())
    }

    /// The balloon now.
    pub async fn balloon(&mut self) -> Result<Balloon, QmpError> {
        let balloon = self.execute("query-balloon", None).await?;
        let actual_bytes = balloon
            .get("actual")
            .and_then(Value::as_u64)
            .ok_or_else(|| self.protocol(format!("query-balloon without \"actual\": {balloon}")))?;
        let summary = self.execute("query-memory-size-summary", None).await?;
        let base_bytes = summary
            .get("base-memory")
            .and_then(Value::as_u64)
            .ok_or_else(|| self.protocol(format!("query-memory-size-summary without \"base-memory\": {summary}")))?;
        Ok(Balloon {
            actual_bytes,
            base_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use tokio::io::AsyncReadExt;

    /// A QEMU stand-in on `path`: greets, then answers each request with
    /// `answer(request)`, an event before every answer.
    async fn fake_qemu(listener: tokio::net::UnixListener, answer: fn(&Value) -> Value) {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write
            .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
            .await
            .unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            let request: Value = serde_json::from_str(&line).unwrap();
            let mut reply = answer(&request);
            reply["id"] = request["id"].clone();
            let event = "{\"event\": \"BALLOON_CHANGE\", \"data\": {\"actual\": 1}}\r\n";
            write.write_all(event.as_bytes()).await.unwrap();
            write.write_all(format!("{reply}\r\n").as_bytes()).await.unwrap();
        }
    }

    fn qemu_answers(request: &Value) -> Value {
        match request["execute"].as_str().unwrap() {
            "qmp_capabilities" => json!({"return": {}}),
            "balloon" if request["arguments"]["value"] == json!(128u64 << 20) => json!({"return": {}}),
            "balloon" => json!({"error": {"class": "GenericError", "desc": "bad value"}}),
            "query-balloon" => json!({"return": {"actual": 300u64 << 20}}),
            "query-memory-size-summary" => json!({"return": {"base-memory": 512u64 << 20, "plugged-memory": 0}}),
            _ => json!({"error": {"class": "CommandNotFound", "desc": "The command x has not been found"}}),
        }
    }

    #[tokio::test]
    async fn a_session_skips_events_and_names_refusals() {
        let t = TestDir::new("qmp-session");
        let path = t.path().join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(fake_qemu(listener, qemu_answers));
        let mut qmp = Qmp::connect(&path).await.unwrap();
        qmp.set_balloon(128 << 20).await.unwrap();
        let balloon = qmp.balloon().await.unwrap();
        assert_eq!(balloon.actual_bytes, 300 << 20);
        assert_eq!(balloon.inflated_bytes(), 212 << 20);
        let refused = qmp.set_balloon(1).await.unwrap_err().to_string();
        assert_eq!(refused, "QEMU refused balloon: bad value (GenericError)");
        let unknown = qmp.execute("x", None).await.unwrap_err();
        assert!(matches!(unknown, QmpError::Refused { ref class, .. } if class == "CommandNotFound"));
    }

    #[tokio::test]
    async fn no_greeting_and_no_socket_are_errors_naming_the_socket() {
        let t = TestDir::new("qmp-errors");
        let path = t.path().join("qmp.sock");
        let missing = Qmp::connect(&path).await.unwrap_err().to_string();
        assert!(
            missing.contains("qmp.sock") && missing.contains("No such file"),
            "{missing}"
        );
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"{\"return\": {}}\r\n").await.unwrap();
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        });
        let not_qmp = Qmp::connect(&path).await.unwrap_err().to_string();
        assert!(not_qmp.contains("expected QEMU's greeting"), "{not_qmp}");
    }

    #[test]
    fn the_socket_is_private_and_qemu_gets_its_descriptor() {
        let t = TestDir::new("qmp-listener");
        let listener = QmpListener::bind(t.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(listener.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let args = listener.qemu_args();
        assert!(args[1].starts_with("socket,id=qmp,fd=") && args[1].ends_with(",server=on,wait=off"));
        assert_eq!(args[2..], ["-mon", "chardev=qmp,mode=control"]);
    }
}
