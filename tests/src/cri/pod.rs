//! What the kubelet sends for a pod and its containers, in the fields it
//! fills by default (the pod's network and IPC namespaces shared, each
//! container's PID namespace its own), and the container logs containerd
//! writes for it.

use std::path::Path;

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, LinuxContainerConfig, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata,
};

use crate::engines::IMAGE;

/// The namespaces the kubelet asks for by default: the pod's network and
/// IPC, a PID namespace per container (no `shareProcessNamespace`).
fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The config of pod `name` in the `default` namespace, its hostname its
/// name, its containers' logs under `log_dir`.
pub fn sandbox_config(name: &str, log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_owned(),
            uid: format!("{name}-{}", std::process::id()),
            namespace: "default".to_owned(),
            attempt: 0,
        }),
        hostname: name.to_owned(),
        log_directory: log_dir.display().to_string(),
        labels: [("app".to_owned(), name.to_owned())].into(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The config of container `name` of the tests' busybox image running
/// `command`, its log `NAME.log` in the pod's log directory.
pub fn container_config(name: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.to_owned(),
            ..Default::default()
        }),
        command: command.iter().map(|a| (*a).to_owned()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What a container wrote, from the log containerd keeps for it (CRI's
/// format: `TIMESTAMP STREAM TAG CONTENT` a line, `F` a full line, `P`
/// the part of a longer one), stdout and stderr in the order written;
/// empty where there is no log yet.
pub fn read_log(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let mut text = String::new();
    for line in log.lines() {
        let mut fields = line.splitn(4, ' ');
        let (_time, _stream, tag) = (fields.next(), fields.next(), fields.next());
        text.push_str(fields.next().unwrap_or(""));
        if tag != Some("P") {
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_reads_as_written() {
        let dir = crate::TempDir::new("cri-log");
        let path = dir.path().join("c.log");
        std::fs::write(
            &path,
            "2024-01-02T03:04:05.000000001Z stdout F hello world\n\
             2024-01-02T03:04:05.000000002Z stderr P par\n\
             2024-01-02T03:04:05.000000003Z stderr F tial\n\
             2024-01-02T03:04:05.000000004Z stdout F \n",
        )
        .unwrap();
        assert_eq!(read_log(&path), "hello world\npartial\n\n");
        assert_eq!(read_log(&dir.path().join("none.log")), "");
    }
}
