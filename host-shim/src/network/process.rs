//! Whether a process named in a lease or pid file still runs, told apart
//! from a later process that reused its pid by its start time.

use std::path::PathBuf;

/// A process as recorded in a lease: its pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// Clock ticks after boot (`/proc/PID/stat` field 22); `None` where
    /// `/proc` cannot say.
    pub started: Option<u64>,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            started: start_time(pid).flatten(),
        }
    }

    /// Whether the process still runs: it exists, is not a zombie, and
    /// started when recorded.
    pub fn alive(&self) -> bool {
        match start_time(self.pid) {
            None => false,
            Some(now) => self.started.is_none() || now.is_none() || now == self.started,
        }
    }
}

/// `None`: no such process (or a zombie); `Some(None)`: it runs, start time
/// unknown; `Some(Some(t))`: it runs and started at `t`.
pub fn start_time(pid: u32) -> Option<Option<u64>> {
    if pid == 0 || pid > i32::MAX as u32 {
        return None;
    }
    match std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/stat"))) {
        Ok(stat) => {
            // The command name (field 2) is in parentheses and may hold
            // anything, spaces and parentheses included: fields are counted
            // after the last ')'.
            let rest = &stat[stat.rfind(')')? + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            match fields.first() {
                Some(&"Z") | Some(&"X") | Some(&"x") => None,
                _ => Some(fields.get(19).and_then(|t| t.parse().ok())),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => {
            // No /proc: signal 0 checks that the pid exists.
            // SAFETY: kill with signal 0 sends nothing; the pid is positive.
            let exists = unsafe { libc::kill(pid as i32, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
            exists.then_some(None)
        }
    }
}

/// The parent of a running process (`/proc/PID/stat` field 4).
pub fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields are counted after the command name's last ')'.
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()
}

/// The command line of a running process, one string per argument.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// The pid of a process that surely no longer exists: a child that has
/// been reaped.
#[cfg(test)]
pub fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness() {
        let me = Owner::current();
        assert!(me.started.is_some());
        assert!(me.alive());
        let reused = Owner {
            started: me.started.map(|t| t + 1),
            ..me
        };
        assert!(!reused.alive(), "a different start time is a different process");
        let dead = Owner {
            pid: dead_pid(),
            started: None,
        };
        assert!(!dead.alive());
        assert!(!Owner { pid: 0, started: None }.alive());
        assert_eq!(cmdline(me.pid).unwrap(), std::env::args().collect::<Vec<_>>());
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert_eq!(parent(child.id()), Some(me.pid));
        assert_eq!(parent(me.pid), Some(std::os::unix::process::parent_id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(parent(dead_pid()), None);
    }

    #[test]
    fn zombies_are_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let owner = Owner {
            pid: child.id(),
            started: None,
        };
        // Not yet reaped: a zombie once it exits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while owner.alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(!owner.alive());
        child.wait().unwrap();
    }
}
