//! A pod's guest is not trusted by the host: root in a pod's VM (a
//! process of the VM's agent, outside every container) tries to turn the
//! pod's directory — where the shim binds each container's root and host
//! mounts, shared with the VM — against the host: a file and a link where
//! the host will later make a container's directory, the container's root
//! renamed away, its directory moved. The directories around the roots
//! are read-only to the guest and a mount point cannot be renamed, so each
//! attempt fails; a write inside the container's root (its own files, as
//! under runc) works, and the container sees it. Removing the pod leaves
//! nothing of the directory, and nothing the guest named, behind.

use std::path::Path;
use std::time::Duration;

use agent_proto::{Capabilities, ProcessSpec, GUEST_ROOTFS};
use host_shim::instance::Instances;
use host_shim::Client;
use vminitd_tests::cri::{container_config, sandbox_config, CriContainerd, CriError, NAMESPACE, VMINITD};
use vminitd_tests::eventually;

fn ok<T>(containerd: &CriContainerd, answer: Result<T, CriError>) -> T {
    answer.unwrap_or_else(|e| panic!("{e}\ncontainerd's log:\n{}", containerd.tail_of_log()))
}

/// What root in the guest tries, outside every container, holding the
/// capabilities of [`ATTACKER`] (`CAP_SYS_PTRACE` among them, which the
/// agent's processes go without unless granted: it reaches
/// `/proc/1/root`); `S` is where the guest's agent sees the VM's shares,
/// and the pod's directory is the last share.
const ATTEMPTS: &str = r#"S=/proc/1/root/run/vminitd/shares
P=$(ls -d $S/* | tail -n 1)
echo "pod=$(ls $P)"
touch $P/planted 2>&1 || true
ln -s /etc $P/linked 2>&1 || true
mv $P/app/rootfs $P/app/elsewhere 2>&1 || true
mv $P/app $P/moved 2>&1 || true
echo from-the-guest > $P/app/rootfs/written-by-the-guest && echo wrote-in-the-root
"#;

/// Every capability that bears on files, mounts and other processes'
/// memory: the attacker's. Each attempt is refused for a reason no
/// capability lifts (a read-only mount, a busy mount point), and the test
/// checks those reasons.
const ATTACKER: [&str; 10] = [
    "CAP_SYS_PTRACE",
    "CAP_SYS_ADMIN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_CHOWN",
    "CAP_MKNOD",
    "CAP_LINUX_IMMUTABLE",
    "CAP_SETPCAP",
];

/// Runs `script` as root of the pod's guest with the [`ATTACKER`]'s
/// capabilities, through the VM's agent (the instance's endpoint and key
/// in `state`): stdout and stderr together, and whether it exited 0.
fn as_root_attacker(state: &Path, pod: &str, script: &str) -> (String, bool) {
    let every: Vec<String> = ATTACKER.iter().map(|name| (*name).to_owned()).collect();
    let spec = ProcessSpec {
        capabilities: Some(Capabilities {
            bounding: every.clone(),
            effective: every.clone(),
            permitted: every,
            ..Default::default()
        }),
        root: Some(GUEST_ROOTFS.into()),
        ..vminitd_tests::sh(script)
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let addr = Instances::at(state).endpoint(pod).expect("the pod's VM");
        let client = Client::connect(&addr).await.expect("the pod VM's agent");
        let out = vminitd_tests::run(&client, spec, None).await.expect("the attempts");
        (out.stdout_str() + &out.stderr_str(), out.status.code == Some(0))
    })
}

#[test]
fn a_pods_guest_cannot_turn_the_pod_directory_against_the_host() {
    let containerd = CriContainerd::start("cri-guest");
    let cri = containerd.client();
    let logs = containerd.path().join("pods");
    std::fs::create_dir_all(&logs).unwrap();
    let sandbox = sandbox_config("guest", &logs);
    let pod = ok(&containerd, cri.run_pod(&sandbox, VMINITD));
    let app = ok(
        &containerd,
        cri.create_container(&pod, &container_config("app", &["sleep", "inf"]), &sandbox),
    );
    ok(&containerd, cri.start_container(&app));

    // The sandbox's bundle holds the pod's directory and the VM's instance.
    let bundle = containerd
        .path()
        .join("state/io.containerd.runtime.v2.task")
        .join(NAMESPACE)
        .join(&pod);
    let pod_dir = bundle.join("pod");
    let app_dir = pod_dir.join(&app);
    assert!(app_dir.join("rootfs").is_dir(), "{} is not there", app_dir.display());
    let script = ATTEMPTS.replace("$P/app", &format!("$P/{app}"));
    let (said, success) = as_root_attacker(&bundle.join("vmshim").join(&pod), &pod, &script);
    assert!(success, "the attempts in the pod's VM: {said}");
    assert!(
        said.contains(&format!("pod={app}")),
        "the guest does not see the pod's directory: {said}"
    );
    for refusal in [
        "planted: Read-only file system",
        "linked: Read-only file system",
        "rootfs': Device or resource busy",
        &format!("{app}': Read-only file system"),
    ] {
        assert!(said.contains(refusal), "expected {refusal:?} in: {said}");
    }
    assert!(said.contains("wrote-in-the-root"), "{said}");
    assert!(!pod_dir.join("planted").exists() && !pod_dir.join("linked").exists());
    assert!(app_dir.join("rootfs").is_dir());

    // The container sees the write in its root.
    let seen = ok(&containerd, cri.exec_sync(&app, &["cat", "/written-by-the-guest"], 30));
    assert_eq!(String::from_utf8_lossy(&seen.stdout), "from-the-guest\n");

    ok(&containerd, cri.stop_pod(&pod));
    ok(&containerd, cri.remove_pod(&pod));
    let gone = eventually(Duration::from_secs(20), || !Path::new(&pod_dir).exists());
    assert!(gone, "{} is left after the pod's removal", pod_dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(bundle.to_str().unwrap()),
        "mounts of the pod are left:\n{mounts}"
    );
    containerd.finish();
}
