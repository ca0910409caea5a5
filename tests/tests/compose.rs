//! Compose drives `vminitd-runtime` through podman and docker: a
//! two-service project (a web server, and a client that fetches from it
//! by its service name) brought up detached with `podman-compose up -d`
//! and `docker-compose up -d`, the client's output and status read, then
//! `down`, after which nothing of the project is left on the host. Each
//! with runc and with vminitd, each engine a test's own (see
//! `vminitd_tests::engines`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use vminitd_tests::engines::{describe, text, Docker, Engine, Podman, Runtime, IMAGE, INDEX_HTML};

/// The project: `web` serves the image's web root; `client` fetches it
/// from `http://web/` (retrying while web starts) and exits 0, or says so
/// and exits 1.
fn compose_file(dir: &Path) -> PathBuf {
    let file = dir.join("compose.yaml");
    let yaml = format!(
        r#"version: "3"
services:
  web:
    image: {IMAGE}
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
  client:
    image: {IMAGE}
    depends_on: [web]
    command:
      - sh
      - -c
      - for i in $$(seq 1 100); do wget -qO- http://web/ && exit 0; sleep 0.3; done; echo no answer from web; exit 1
"#
    );
    std::fs::write(&file, yaml).unwrap();
    file
}

/// `cmd ARGS` (a compose), which must succeed.
fn compose(mut cmd: Command, args: &[&str]) -> Output {
    let out = cmd.args(args).stdin(Stdio::null()).output().expect("run compose");
    assert!(out.status.success(), "compose {}: {}", args.join(" "), describe(&out));
    out
}

/// Waits for container NAME to exit; its status.
fn wait<E: Engine>(engine: &E, name: &str) -> String {
    let exited = vminitd_tests::eventually(Duration::from_secs(120), || {
        engine.run(&["inspect", "--format", "{{.State.Status}}", name]).stdout == b"exited\n"
    });
    assert!(
        exited,
        "{name} did not exit: {}",
        describe(&engine.run(&["logs", name]))
    );
    engine.inspect(name, "{{.State.ExitCode}}")
}

fn podman_compose(runtime: Runtime) {
    let mut podman = Podman::start(runtime);
    let file = compose_file(podman.path());
    let (project, prefix) = podman.compose_project();
    let file = file.to_str().unwrap();
    let up = |args: &[&str]| {
        let mut all = vec!["-p", project.as_str(), "-f", file];
        all.extend_from_slice(args);
        compose(podman.compose(), &all)
    };
    up(&["up", "-d"]);
    let client = format!("{project}_client_1");
    let web = format!("{project}_web_1");
    assert_eq!(
        wait(&podman, &client),
        "0",
        "{}",
        describe(&podman.run(&["logs", &client]))
    );
    assert_eq!(podman.ok(&["logs", &client]), INDEX_HTML);
    let address = podman.inspect(&web, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
    assert!(
        address.starts_with(&prefix),
        "web's address {address:?} is not on {prefix}0/24"
    );
    podman.track_netns(&web);
    let status = podman.ok(&["ps", "--filter", &format!("name={web}"), "--format", "{{.Status}}"]);
    assert!(status.starts_with("Up"), "web: {status:?}");

    up(&["down"]);
    assert_eq!(podman.ok(&["ps", "-aq"]), "", "down left containers");
    assert_eq!(podman.ok(&["pod", "ps", "-q"]), "", "down left pods");
    podman.finish();
}

fn docker_compose(runtime: Runtime) {
    let docker = Docker::start(runtime);
    let file = compose_file(docker.path());
    let project = "vmcompose";
    let file = file.to_str().unwrap();
    let up = |args: &[&str]| {
        let mut all = vec!["-p", project, "-f", file];
        all.extend_from_slice(args);
        compose(docker.compose(), &all)
    };
    up(&["up", "-d"]);
    let client = format!("{project}_client_1");
    let web = format!("{project}_web_1");
    assert_eq!(
        wait(&docker, &client),
        "0",
        "{}",
        describe(&docker.run(&["logs", &client]))
    );
    assert_eq!(docker.ok(&["logs", &client]), INDEX_HTML);
    let status = docker.ok(&["ps", "--filter", &format!("name={web}"), "--format", "{{.Status}}"]);
    assert!(status.starts_with("Up"), "web: {status:?}");
    let runtimes = docker.ok(&["inspect", "--format", "{{.HostConfig.Runtime}}", &web]);
    assert_eq!(runtimes.trim(), docker.runtime_name());

    up(&["down"]);
    assert_eq!(docker.ok(&["ps", "-aq"]), "", "down left containers");
    let networks = docker.ok(&["network", "ls", "--filter", &format!("name={project}"), "-q"]);
    assert_eq!(text(networks.as_bytes()), "", "down left the project's network");
    docker.finish();
}

mod podman_compose {
    #[test]
    fn runc() {
        super::podman_compose(vminitd_tests::engines::Runtime::Runc)
    }

    #[test]
    fn vminitd() {
        super::podman_compose(vminitd_tests::engines::Runtime::Vminitd)
    }
}

mod docker_compose {
    #[test]
    fn runc() {
        super::docker_compose(vminitd_tests::engines::Runtime::Runc)
    }

    #[test]
    fn vminitd() {
        super::docker_compose(vminitd_tests::engines::Runtime::Vminitd)
    }
}
