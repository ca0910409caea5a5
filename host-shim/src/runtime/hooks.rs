//! OCI hooks run on the host, as a VM runtime runs them (Kata does too):
//! `prestart` and `createRuntime` once the container's pid exists in its
//! network namespace, before the VM boots (docker's libnetwork sets the
//! namespace up in a `prestart` hook, and the VM takes what it set up);
//! `createContainer` once the container is created in its VM,
//! `poststart` after it started, `poststop` once it is deleted.
//! `startContainer` hooks run inside the container, by the agent.
//!
//! Each hook runs as runc runs it: `path` with `args` as its argv (`args[0]`
//! is argv[0]; `[path]` when empty), `env` as its whole environment (this
//! process's when empty, as Go's `exec.Cmd` does for runc), the state
//! JSON on its stdin, its stdout and stderr collected and quoted when it
//! fails, killed once past its `timeout`.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use agent_proto::Hook;
use oci_spec::runtime::Spec;

/// How often a running hook is looked at.
const POLL: Duration = Duration::from_millis(5);

/// The hooks of a bundle that run on the host, by stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostHooks {
    /// `prestart`: run first at create, before `createRuntime`, before the
    /// VM boots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prestart: Vec<Hook>,
    /// `createRuntime`: after `prestart`, before the VM boots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create_runtime: Vec<Hook>,
    /// `createContainer`: once the container is created in its VM, before
    /// `create` returns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create_container: Vec<Hook>,
    /// `poststart`: after `start`; a failure is a warning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststart: Vec<Hook>,
    /// `poststop`: once `delete` has shut the VM down; a failure is a
    /// warning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststop: Vec<Hook>,
}

impl HostHooks {
    /// The host's hooks of `spec` (a bundle's, already translated, so
    /// their timeouts are known to be positive).
    pub fn of(spec: &Spec) -> HostHooks {
        let Some(h) = spec.hooks() else {
            return HostHooks::default();
        };
        let list = |hooks: &Option<Vec<oci_spec::runtime::Hook>>| -> Vec<Hook> {
            hooks
                .iter()
                .flatten()
                .map(|hook| Hook {
                    path: hook.path().to_string_lossy().into_owned(),
                    args: hook.args().clone().unwrap_or_default(),
                    env: hook.env().clone().unwrap_or_default(),
                    timeout: hook.timeout().and_then(|t| u32::try_from(t).ok()),
                })
                .collect()
        };
        HostHooks {
            prestart: list(h.prestart()),
            create_runtime: list(h.create_runtime()),
            create_container: list(h.create_container()),
            poststart: list(h.poststart()),
            poststop: list(h.poststop()),
        }
    }

    /// Those of the bundle in `dir`.
    pub fn of_bundle(dir: &Path) -> Result<HostHooks, String> {
        let path = dir.join("config.json");
        let spec = Spec::load(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(HostHooks::of(&spec))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self == &HostHooks::default()
    }

    /// The hooks that run once the container's pid exists in its network
    /// namespace, before the VM boots (what they set up there, as
    /// libnetwork's hook does, is what the VM's NICs take), in the order
    /// they run, with their stage's name.
    pub fn before_boot(&self) -> [(&'static str, &[Hook]); 2] {
        [("prestart", &self.prestart), ("createRuntime", &self.create_runtime)]
    }

    /// The hooks that run once the container is created in its VM.
    pub fn after_create(&self) -> [(&'static str, &[Hook]); 1] {
        [("createContainer", &self.create_container)]
    }
}

/// Runs `hooks` of stage `stage` in order with `state` (JSON) on their
/// stdin; the first failure ends the run, with runc's message: `error
/// running STAGE hook #I: ...`. Blocks while they run.
pub fn run(stage: &str, hooks: &[Hook], state: &str) -> Result<(), String> {
    for (i, hook) in hooks.iter().enumerate() {
        run_one(hook, state).map_err(|e| format!("error running {stage} hook #{i}: {e}"))?;
    }
    Ok(())
}

/// Runs every one of `hooks`, as the spec runs `poststart` and `poststop`
/// hooks (a failure does not stop the others); returns each failure, in
/// [`run`]'s words. Blocks while they run.
pub fn run_every(stage: &str, hooks: &[Hook], state: &str) -> Vec<String> {
    let failures = hooks.iter().enumerate().filter_map(|(i, hook)| {
        run_one(hook, state)
            .err()
            .map(|e| format!("error running {stage} hook #{i}: {e}"))
    });
    failures.collect()
}

fn run_one(hook: &Hook, state: &str) -> Result<(), String> {
    let mut cmd = Command::new(&hook.path);
    if let Some((argv0, rest)) = hook.args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    if !hook.env.is_empty() {
        cmd.env_clear();
        for entry in &hook.env {
            match entry.split_once('=') {
                Some((k, v)) => cmd.env(k, v),
                None => cmd.env(entry, ""),
            };
        }
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", hook.path))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let state = state.as_bytes().to_vec();
    // A hook that does not read its stdin must not block the runtime.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&state);
    });
    let collect = |stream: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut s) = stream {
                let _ = s.read_to_end(&mut out);
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let stdout = collect(child.stdout.take().map(|s| Box::new(s) as _));
    let stderr = collect(child.stderr.take().map(|s| Box::new(s) as _));
    let timeout = hook.timeout.map(|s| Duration::from_secs(s.into()));
    let status = wait(&mut child, timeout).map_err(|e| format!("cannot wait for {}: {e}", hook.path))?;
    let Some(status) = status else {
        return Err(format!(
            "hook ran past specified timeout of {:.1}s",
            timeout.unwrap_or_default().as_secs_f64()
        ));
    };
    // The output is complete once the hook and whatever it left behind
    // closed it; a timeout's kill leaves those threads to finish alone.
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    match status.success() {
        true => Ok(()),
        false => Err(format!(
            "error running hook: {}, stdout: {stdout}, stderr: {stderr}",
            describe(status)
        )),
    }
}

/// Waits for `child`, killing it once past `timeout`; `None` when it was
/// killed for that.
fn wait(child: &mut std::process::Child, timeout: Option<Duration>) -> std::io::Result<Option<ExitStatus>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// An exit status as Go words it (`exit status 3`, `signal: killed`).
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signo)) => format!("signal: {}", signal_name(signo)),
        (None, None) => "ended".to_owned(),
    }
}

fn signal_name(signo: i32) -> String {
    // SAFETY: strsignal returns a pointer to a static or thread-local string.
    let name = unsafe { libc::strsignal(signo) };
    if name.is_null() {
        return format!("signal {signo}");
    }
    // SAFETY: a NUL-terminated string from libc, read at once.
    unsafe { std::ffi::CStr::from_ptr(name) }
        .to_string_lossy()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    fn hook(script: &str) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: Vec::new(),
            timeout: None,
        }
    }

    #[test]
    fn a_hook_gets_the_state_its_args_and_env() {
        let t = TestDir::new("hooks");
        let out = t.path().join("out");
        // argv[0] is args[0]; $0 is the argument after the script.
        let script = "echo \"$(head -c 7 /proc/$$/cmdline) $0 $STAGE $(cat)\"";
        let mut h = hook(&format!("{script} >> {}", out.display()));
        h.args[0] = "hook-sh".into();
        h.args.push("prestart".into());
        h.env = vec!["STAGE=one".into(), "PATH=/bin:/usr/bin".into()];
        run("prestart", &[h.clone(), h], r#"{"id":"c"}"#).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "hook-sh prestart one {\"id\":\"c\"}\n".repeat(2)
        );
    }

    #[test]
    fn failures_as_runc_words_them() {
        let ok = hook("true");
        let err = run("createRuntime", &[ok, hook("echo out; echo err >&2; exit 3")], "{}").unwrap_err();
        assert_eq!(
            err,
            "error running createRuntime hook #1: error running hook: exit status 3, stdout: out\n, stderr: err\n"
        );
        let mut slow = hook("sleep 10");
        slow.timeout = Some(1);
        let started = Instant::now();
        let err = run("poststart", &[slow], "{}").unwrap_err();
        assert_eq!(
            err,
            "error running poststart hook #0: hook ran past specified timeout of 1.0s"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = run("poststop", &[hook("kill -9 $$")], "{}").unwrap_err();
        assert!(err.contains("signal: killed"), "{err}");
        // poststart and poststop: every hook runs, each failure is told.
        let t = TestDir::new("hooks-every");
        let out = t.path().join("out");
        let after = hook(&format!("echo ran > {}", out.display()));
        let failures = run_every("poststop", &[hook("exit 1"), after, hook("exit 2")], "{}");
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].starts_with("error running poststop hook #0: error running hook: exit status 1"));
        assert!(failures[1].starts_with("error running poststop hook #2: error running hook: exit status 2"));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ran\n");
        let missing = Hook {
            path: "/nonexistent/hook".into(),
            ..Default::default()
        };
        let err = run("prestart", &[missing], "{}").unwrap_err();
        assert!(
            err.starts_with("error running prestart hook #0: cannot run /nonexistent/hook"),
            "{err}"
        );
    }

    #[test]
    fn host_hooks_by_stage() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "hooks": {
                "prestart": [{"path": "/p"}],
                "createRuntime": [{"path": "/cr", "args": ["cr", "x"], "env": ["A=1"], "timeout": 3}],
                "startContainer": [{"path": "/sc"}],
                "poststop": [{"path": "/ps"}]
            }
        }))
        .unwrap();
        let hooks = HostHooks::of(&spec);
        assert_eq!(hooks.prestart[0].path, "/p");
        assert_eq!(
            hooks.create_runtime[0],
            Hook {
                path: "/cr".into(),
                args: vec!["cr".into(), "x".into()],
                env: vec!["A=1".into()],
                timeout: Some(3)
            }
        );
        assert!(hooks.create_container.is_empty() && hooks.poststart.is_empty());
        assert_eq!(hooks.poststop.len(), 1);
        let json = serde_json::to_string(&hooks).unwrap();
        assert!(!json.contains("startContainer") && !json.contains("/sc"), "{json}");
        assert_eq!(serde_json::from_str::<HostHooks>(&json).unwrap(), hooks);
    }
}
