//! The process an image describes, and how the user's flags override an
//! image's or a bundle's process.

use std::fs;
use std::path::Path;

use agent_proto::{ProcessSpec, User};
use oci_spec::image::ImageConfiguration;

use super::ImageError;

/// What an image config gives the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessDefaults {
    /// Always first in the argv (an image's `Entrypoint`).
    pub entrypoint: Vec<String>,
    /// The rest of the argv unless the user gives a command (`Cmd`).
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries under the user's (`Env`).
    pub env: Vec<String>,
    /// The working directory unless the user gives one (`WorkingDir`).
    pub cwd: Option<String>,
    /// The identity unless the user gives one (`User`, looked up in the
    /// image's `/etc/passwd` and `/etc/group`).
    pub user: Option<User>,
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
        })
    }

    /// `spec` (from the user's flags) over these defaults, as [`under_flags`]
    /// lays them: a command replaces `cmd` (the entrypoint stays first),
    /// each `-e` entry replaces the default of its key, `-w` and `-u` win.
    pub fn under(&self, spec: ProcessSpec) -> ProcessSpec {
        let image = ProcessSpec {
            args: self.cmd.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            user: self.user.clone(),
            ..ProcessSpec::default()
        };
        let mut spec = under_flags(image, spec);
        spec.args.splice(0..0, self.entrypoint.iter().cloned());
        spec
    }
}

/// `flags` (the process `vmshim run`'s flags describe: a command, `-e`,
/// `-w`, `-u`, `-t`, `--allow-vsock`) over `base` (an image's or a bundle's
/// process), as `docker run` lays them: a command replaces the args, each
/// `-e` entry replaces the entry of its key, `-w` and `-u` replace the
/// working directory and the identity, `-t` asks for a terminal and
/// `--allow-vsock` lifts the vsock filter. Everything else (umask, rlimits,
/// capabilities, seccomp, ...) is `base`'s.
pub fn under_flags(base: ProcessSpec, flags: ProcessSpec) -> ProcessSpec {
    let key = |e: &String| e.split_once('=').map_or(e.clone(), |(k, _)| k.to_owned());
    let overridden: Vec<String> = flags.env.iter().map(key).collect();
    let mut env: Vec<String> = base.env.into_iter().filter(|e| !overridden.contains(&key(e))).collect();
    env.extend(flags.env);
    ProcessSpec {
        args: if flags.args.is_empty() { base.args } else { flags.args },
        env,
        cwd: flags.cwd.or(base.cwd),
        user: flags.user.or(base.user),
        terminal: base.terminal || flags.terminal,
        size: flags.size.or(base.size),
        allow_vsock: base.allow_vsock || flags.allow_vsock,
        ..base
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
    fn flags_over_a_bundles_process() {
        let bundle = ProcessSpec {
            args: strings(&["sh", "-c", "id"]),
            env: strings(&["PATH=/bin", "A=bundle"]),
            cwd: Some("/".into()),
            user: Some(User {
                uid: 5,
                gid: 6,
                additional_gids: vec![7],
            }),
            umask: Some(0o27),
            no_new_privileges: true,
            ..Default::default()
        };
        // No flags: the bundle's process as it is.
        assert_eq!(under_flags(bundle.clone(), ProcessSpec::default()), bundle);
        let mut flags = spec(&["env"], &["A=flag", "B=1"]);
        flags.cwd = Some("/tmp".into());
        flags.terminal = true;
        flags.allow_vsock = true;
        let p = under_flags(bundle.clone(), flags);
        assert_eq!(p.args, strings(&["env"]));
        assert_eq!(p.env, strings(&["PATH=/bin", "A=flag", "B=1"]));
        assert_eq!(
            (p.cwd.as_deref(), p.terminal, p.allow_vsock),
            (Some("/tmp"), true, true)
        );
        assert_eq!((p.user, p.umask, p.no_new_privileges), (bundle.user, Some(0o27), true));
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
