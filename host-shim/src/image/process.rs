//! The process an image or bundle describes, and how the user's flags
//! override it.

use std::fs;
use std::path::Path;

use agent_proto::{Capabilities, ProcessSpec, Rlimit, Seccomp, User};
use oci_spec::image::ImageConfiguration;

use super::ImageError;

/// What an image config (or a bundle's `process`) gives the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessDefaults {
    /// Always first in the argv (an image's `Entrypoint`).
    pub entrypoint: Vec<String>,
    /// The rest of the argv unless the user gives a command (`Cmd`).
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries under the user's.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub user: Option<User>,
    pub terminal: bool,
    /// A bundle's `process.user.umask`, `rlimits`, `noNewPrivileges`,
    /// `capabilities` and `oomScoreAdj`, and its `linux.seccomp`.
    pub umask: Option<u32>,
    pub rlimits: Vec<Rlimit>,
    pub no_new_privileges: bool,
    pub capabilities: Option<Capabilities>,
    pub oom_score_adj: Option<i32>,
    pub seccomp: Option<Seccomp>,
}

impl ProcessDefaults {
    /// The defaults of an image config; a user name is looked up in the
    /// image's `/etc/passwd` and `/etc/group` under `tree`.
    pub fn from_image_config(config: &ImageConfiguration, tree: &Path) -> Result<ProcessDefaults, ImageError> {
        let Some(c) = config.config() else {
            return Ok(ProcessDefaults::default());
        };
        let user = match c.user().as_deref() {
            None | Some("") => None,
            Some(user) => Some(resolve_user(user, tree)?),
        };
        Ok(ProcessDefaults {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            cwd: c.working_dir().clone().filter(|d| !d.is_empty()),
            user,
            ..ProcessDefaults::default()
        })
    }

    /// `spec` (from the user's flags) over these defaults: a command
    /// replaces `cmd` (the entrypoint stays), each `-e` entry replaces the
    /// default of its key, `-w`, `-u` and `-t` win.
    pub fn under(&self, mut spec: ProcessSpec) -> ProcessSpec {
        let rest = if spec.args.is_empty() {
            self.cmd.clone()
        } else {
            spec.args
        };
        spec.args = self.entrypoint.iter().cloned().chain(rest).collect();
        let key = |e: &String| e.split_once('=').map_or(e.clone(), |(k, _)| k.to_owned());
        let overridden: Vec<String> = spec.env.iter().map(key).collect();
        let mut env: Vec<String> = self
            .env
            .iter()
            .filter(|e| !overridden.contains(&key(e)))
            .cloned()
            .collect();
        env.append(&mut spec.env);
        spec.env = env;
        spec.cwd = spec.cwd.or_else(|| self.cwd.clone());
        spec.user = spec.user.or_else(|| self.user.clone());
        spec.terminal |= self.terminal;
        spec.umask = spec.umask.or(self.umask);
        if spec.rlimits.is_empty() {
            spec.rlimits = self.rlimits.clone();
        }
        spec.no_new_privileges |= self.no_new_privileges;
        spec.capabilities = spec.capabilities.or_else(|| self.capabilities.clone());
        spec.oom_score_adj = spec.oom_score_adj.or(self.oom_score_adj);
        spec.seccomp = spec.seccomp.or_else(|| self.seccomp.clone().map(Box::new));
        spec
    }
}

/// An image's `User`: `UID`, `UID:GID`, `NAME`, `NAME:GROUP` (names looked
/// up in the tree's `/etc/passwd` and `/etc/group`). A user without a group
/// gets the primary group of its passwd entry (0 when it has none).
fn resolve_user(user: &str, tree: &Path) -> Result<User, ImageError> {
    let fail = |detail: String| ImageError::User {
        user: user.to_owned(),
        detail,
    };
    let (name, group) = match user.split_once(':') {
        Some((n, g)) => (n, Some(g)),
        None => (user, None),
    };
    let passwd = || read_db(tree, "etc/passwd");
    let (uid, primary) = match name.parse::<u32>() {
        Ok(uid) => {
            let gid = passwd()
                .iter()
                .find(|f| f.get(2).and_then(|u| u.parse().ok()) == Some(uid))
                .and_then(|f| f.get(3)?.parse().ok());
            (uid, gid)
        }
        Err(_) => {
            let entries = passwd();
            let entry = entries
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(name))
                .ok_or_else(|| fail(format!("no user {name:?} in the image's /etc/passwd")))?;
            let uid = entry.get(2).and_then(|u| u.parse().ok());
            let uid = uid.ok_or_else(|| fail(format!("the /etc/passwd entry of {name:?} has no numeric uid")))?;
            (uid, entry.get(3).and_then(|g| g.parse().ok()))
        }
    };
    let gid = match group {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read_db(tree, "etc/group")
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(g))
                .and_then(|f| f.get(2)?.parse().ok())
                .ok_or_else(|| fail(format!("no group {g:?} in the image's /etc/group")))?,
        },
    };
    Ok(User {
        uid,
        gid,
        additional_gids: Vec::new(),
    })
}

/// The colon-separated lines of a passwd-style file (none when it is
/// missing, or a symbolic link: it is never followed out of the tree).
fn read_db(tree: &Path, rel: &str) -> Vec<Vec<String>> {
    let path = tree.join(rel);
    let is_file = fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
    let text = if is_file {
        fs::read_to_string(&path).unwrap_or_default()
    } else {
        String::new()
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_owned).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    fn spec(args: &[&str], env: &[&str]) -> ProcessSpec {
        ProcessSpec {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            cwd: None,
            user: None,
            terminal: false,
            size: None,
            ..Default::default()
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_over_defaults_like_docker_run() {
        let d = ProcessDefaults {
            entrypoint: strings(&["/entry"]),
            cmd: strings(&["default", "args"]),
            env: strings(&["PATH=/bin", "A=image", "B=image"]),
            cwd: Some("/srv".into()),
            user: Some(User {
                uid: 7,
                gid: 8,
                additional_gids: vec![],
            }),
            ..Default::default()
        };
        let s = d.under(spec(&[], &["A=user"]));
        assert_eq!(s.args, strings(&["/entry", "default", "args"]));
        assert_eq!(s.env, strings(&["PATH=/bin", "B=image", "A=user"]));
        assert_eq!((s.cwd.as_deref(), s.user.map(|u| u.uid)), (Some("/srv"), Some(7)));
        let mut mine = spec(&["mine"], &[]);
        mine.cwd = Some("/tmp".into());
        let s = d.under(mine);
        assert_eq!(s.args, strings(&["/entry", "mine"]));
        assert_eq!(s.cwd.as_deref(), Some("/tmp"));
    }

    #[test]
    fn users_by_number_and_by_name() {
        let t = TestDir::new("image-user");
        fs::create_dir(t.path().join("etc")).unwrap();
        fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(t.path().join("etc/group"), "root:x:0:\nstaff:x:50:app\n").unwrap();
        let user = |u: &str| resolve_user(u, t.path()).map(|u| (u.uid, u.gid));
        assert_eq!(user("1000").unwrap(), (1000, 1001));
        assert_eq!(user("12:34").unwrap(), (12, 34));
        assert_eq!(user("55").unwrap(), (55, 0));
        assert_eq!(user("app").unwrap(), (1000, 1001));
        assert_eq!(user("app:staff").unwrap(), (1000, 50));
        assert!(user("nobody").unwrap_err().to_string().contains("no user \"nobody\""));
        assert!(user("app:wheel")
            .unwrap_err()
            .to_string()
            .contains("no group \"wheel\""));
    }
}
