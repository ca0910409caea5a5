//! A bundle's `config.json` is the user's (or an image's) to write, and
//! `vmshim runtime` and `vmshim run --bundle` translate it, the one way
//! ([`container_spec`]; `Bundle::read` for a VM): any document, and every
//! mutation of a stock `runc spec` and of a spec that uses every carried
//! field, is translated or refused; it never panics, and a refusal names
//! what it refuses. A spec translated for a VM never carries a bind mount
//! of a host path nor a namespace joined by path, and `run --bundle` gets
//! exactly what the runtime gets.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use agent_proto::{ContainerSpec, GUEST_ROOTFS};
use host_shim::image::Bundle as ReadBundle;
use host_shim::image::{container_spec, resources_from_json, ImageError, RootPlacement};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

/// `runc spec` of runc 1.1.
const RUNC_SPEC: &str = r#"{"ociVersion":"1.0.2-dev","process":{"terminal":true,"user":{"uid":0,"gid":0},
"args":["sh"],"env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","TERM=xterm"],"cwd":"/",
"capabilities":{"bounding":["CAP_AUDIT_WRITE","CAP_KILL","CAP_NET_BIND_SERVICE"],"effective":["CAP_AUDIT_WRITE",
"CAP_KILL","CAP_NET_BIND_SERVICE"],"permitted":["CAP_AUDIT_WRITE","CAP_KILL","CAP_NET_BIND_SERVICE"],"ambient":[
"CAP_AUDIT_WRITE","CAP_KILL","CAP_NET_BIND_SERVICE"]},"rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":1024}],
"noNewPrivileges":true},"root":{"path":"rootfs","readonly":true},"hostname":"runc","mounts":[{"destination":"/proc",
"type":"proc","source":"proc"},{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid",
"strictatime","mode=755","size=65536k"]},{"destination":"/dev/pts","type":"devpts","source":"devpts","options":[
"nosuid","noexec","newinstance","ptmxmode=0666","mode=0620","gid=5"]},{"destination":"/dev/shm","type":"tmpfs",
"source":"shm","options":["nosuid","noexec","nodev","mode=1777","size=65536k"]},{"destination":"/dev/mqueue",
"type":"mqueue","source":"mqueue","options":["nosuid","noexec","nodev"]},{"destination":"/sys","type":"sysfs",
"source":"sysfs","options":["nosuid","noexec","nodev","ro"]},{"destination":"/sys/fs/cgroup","type":"cgroup",
"source":"cgroup","options":["nosuid","noexec","nodev","relatime","ro"]}],"linux":{"resources":{"devices":[{
"allow":false,"access":"rwm"}]},"namespaces":[{"type":"pid"},{"type":"network"},{"type":"ipc"},{"type":"uts"},
{"type":"mount"}],"maskedPaths":["/proc/acpi","/proc/asound","/proc/kcore","/proc/keys","/proc/latency_stats",
"/proc/timer_list","/proc/timer_stats","/proc/sched_debug","/sys/firmware","/proc/scsi"],"readonlyPaths":[
"/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger"]}}"#;

/// `runc spec --rootless`: a user namespace with id maps, `/sys` bound
/// from the host.
fn rootless_spec() -> Value {
    let mut spec: Value = serde_json::from_str(RUNC_SPEC).unwrap();
    spec["linux"] = json!({
        "uidMappings": [{"containerID": 0, "hostID": 0, "size": 1}],
        "gidMappings": [{"containerID": 0, "hostID": 0, "size": 1}],
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "user"}],
        "maskedPaths": ["/proc/acpi", "/proc/kcore"],
        "readonlyPaths": ["/proc/bus", "/proc/sys"]
    });
    spec["mounts"][5] = json!({"destination": "/sys", "type": "none", "source": "/sys",
        "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
    spec
}

/// A spec that uses every field the translation carries.
fn full_spec() -> Value {
    let mut spec: Value = serde_json::from_str(RUNC_SPEC).unwrap();
    spec["domainname"] = json!("example.org");
    spec["annotations"] = json!({"org.example.key": "value"});
    spec["process"]["consoleSize"] = json!({"height": 24, "width": 80});
    spec["process"]["user"]["umask"] = json!(18);
    spec["process"]["user"]["additionalGids"] = json!([5, 6]);
    spec["process"]["oomScoreAdj"] = json!(100);
    let mounts = spec["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "ro"]}));
    mounts.push(json!({"destination": "/host-dev", "source": "/dev/fuse", "options": ["bind"]}));
    spec["hooks"] = json!({
        "prestart": [{"path": "/bin/true"}],
        "createRuntime": [{"path": "/bin/true", "args": ["true", "x"], "env": ["A=1"], "timeout": 5}],
        "createContainer": [{"path": "/bin/true"}],
        "startContainer": [{"path": "/bin/true"}],
        "poststart": [{"path": "/bin/true"}],
        "poststop": [{"path": "/bin/true", "timeout": 1}]
    });
    spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    spec["linux"]["cgroupsPath"] = json!("/vminitd/c1");
    spec["linux"]["rootfsPropagation"] = json!("rslave");
    spec["linux"]["devices"] = json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
        "fileMode": 438, "uid": 0, "gid": 0}]);
    spec["linux"]["resources"] = json!({
        "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"}],
        "memory": {"limit": 536870912, "reservation": 268435456, "swap": 1073741824},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
        "pids": {"limit": 100},
        "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 254, "minor": 0, "rate": 1048576}]},
        "unified": {"memory.high": "400M"}
    });
    spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]
    });
    spec
}

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// A bundle directory of its own, removed when dropped.
struct Bundle(PathBuf);

impl Bundle {
    fn new() -> Bundle {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("prop-bundle-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Bundle(dir)
    }

    fn with(&self, config: &[u8]) -> &Path {
        fs::write(self.0.join("config.json"), config).unwrap();
        &self.0
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Whether `field` (`linux.namespaces[1].path`, `process.apparmorProfile`,
/// a top-level key of any spelling) names a value in `doc`.
fn resolves(doc: &Value, field: &str) -> bool {
    fn walk(doc: &Value, rest: &str, first: bool) -> bool {
        if rest.is_empty() {
            return true;
        }
        match doc {
            Value::Array(items) => {
                let Some((i, after)) = rest.strip_prefix('[').and_then(|r| r.split_once(']')) else {
                    return false;
                };
                let item = i.parse::<usize>().ok().and_then(|i| items.get(i));
                item.is_some_and(|v| walk(v, after, false))
            }
            Value::Object(map) => {
                let Some(keys) = (if first { Some(rest) } else { rest.strip_prefix('.') }) else {
                    return false;
                };
                map.iter().any(|(key, value)| {
                    keys.strip_prefix(key.as_str()).is_some_and(|after| {
                        (after.is_empty() || after.starts_with(['.', '['])) && walk(value, after, false)
                    })
                })
            }
            _ => false,
        }
    }
    walk(doc, field, true)
}

/// The field an entry of `UnsupportedSpec` names: up to the reason in
/// parentheses, if any.
fn field_of(entry: &str) -> &str {
    entry.split_once(" (").map_or(entry, |(field, _)| field)
}

/// A refusal names every field it refuses, each one in the document; a
/// malformed document is refused with what is wrong.
fn check_refusal(error: &ImageError, config: Option<&Value>) -> Result<(), TestCaseError> {
    match error {
        ImageError::UnsupportedSpec { fields, .. } => {
            prop_assert!(!fields.is_empty());
            let Some(doc) = config else {
                return Err(TestCaseError::fail("unsupported fields in a document that is not JSON"));
            };
            for entry in fields {
                if entry == "the spec is not a JSON object" {
                    prop_assert!(!doc.is_object());
                } else {
                    prop_assert!(resolves(doc, field_of(entry)), "{:?} is not a field of the spec", entry);
                }
            }
        }
        ImageError::BadBundle { detail, .. } => prop_assert!(!detail.is_empty()),
        other => prop_assert!(false, "unexpected error {}", other),
    }
    Ok(())
}

/// What a translation for a VM must never carry: a bind mount of a host
/// path (the guest kernel's `/proc`, `/sys`, `/dev` excepted), a namespace
/// joined by path, a hook the host runs.
fn check_guest(c: &ContainerSpec) -> Result<(), TestCaseError> {
    prop_assert_eq!(c.root.as_str(), GUEST_ROOTFS);
    for m in &c.mounts {
        let bind = m.kind.as_deref() == Some("bind") || m.options.iter().any(|o| o == "bind" || o == "rbind");
        if bind {
            let source = Path::new(m.source.as_deref().unwrap_or(""));
            let guest = ["/proc", "/sys", "/dev"].iter().any(|p| source.starts_with(p));
            let climbs = source.components().any(|c| c == std::path::Component::ParentDir);
            prop_assert!(guest && !climbs, "a bind mount of {:?} reached a VM's spec", source);
        }
    }
    prop_assert!(
        c.namespaces.iter().all(|n| n.path.is_none()),
        "a namespace path reached a VM's spec"
    );
    let h = &c.hooks;
    prop_assert!(h.create_runtime.is_empty() && h.create_container.is_empty());
    prop_assert!(h.poststart.is_empty() && h.poststop.is_empty());
    Ok(())
}

/// Translates `config` every way the host does, checking each outcome.
fn check_all(bundle: &Bundle, config: &[u8]) -> Result<(), TestCaseError> {
    let doc: Option<Value> = serde_json::from_slice(config).ok();
    let dir = bundle.with(config);
    let (mut for_a_vm, mut on_the_host) = (None, None);
    for placement in [RootPlacement::Guest, RootPlacement::Host] {
        match container_spec(dir, "c1", placement) {
            Ok(c) => {
                prop_assert!(doc.is_some());
                prop_assert_eq!(c.id.as_str(), "c1");
                prop_assert_eq!(Path::new(&c.bundle), std::path::absolute(dir).unwrap());
                if placement == RootPlacement::Guest {
                    check_guest(&c)?;
                    for_a_vm = Some(c);
                } else {
                    on_the_host = Some(c);
                }
            }
            Err(e) => check_refusal(&e, doc.as_ref())?,
        }
    }
    // `vmshim run --bundle` and `vmshim runtime` read a bundle for a VM the
    // one way: the same spec, and its root directory on this host.
    match (ReadBundle::read(dir, "c1"), for_a_vm) {
        (Ok(b), Some(c)) => {
            prop_assert_eq!(&b.spec, &c);
            if let Some(host) = on_the_host {
                prop_assert_eq!(b.rootfs, PathBuf::from(host.root));
            }
        }
        (Err(e), None) => check_refusal(&e, doc.as_ref())?,
        (Ok(_), None) => prop_assert!(false, "run --bundle takes a spec the runtime refuses"),
        (Err(e), Some(_)) => prop_assert!(false, "run --bundle refuses a spec the runtime takes: {}", e),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(vec![
            0i64,
            1,
            -1,
            5,
            255,
            65535,
            65536,
            4294967295,
            4294967296,
            i64::MIN,
            i64::MAX
        ])
        .prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0.5f64, -0.0, 1e300, -1e300]).prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "/",
            "..",
            "/proc/../etc",
            "/dev/../../etc",
            "/etc",
            "rootfs",
            "bind",
            "rbind",
            "none",
            "proc",
            "tmpfs",
            "user",
            "time",
            "pid",
            "c",
            "b",
            "u",
            "p",
            "SCMP_ACT_ALLOW",
            "1.0.2",
            "2.0.0",
            "rwm",
            "0-1",
        ])
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        (0usize..5000).prop_map(|n| Value::from("x".repeat(n))),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Keys the spec knows, in places it may not expect them, and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "path", "readonly", "type", "source", "destination", "options", "args", "env", "cwd", "user", "uid",
            "gid", "umask", "terminal", "consoleSize", "height", "width", "capabilities", "bounding", "rlimits",
            "hard", "soft", "noNewPrivileges", "oomScoreAdj", "apparmorProfile", "selinuxLabel", "ioPriority",
            "namespaces", "uidMappings", "containerID", "hostID", "size", "sysctl", "resources", "memory", "limit",
            "cpu", "shares", "quota", "pids", "blockIO", "weight", "unified", "devices", "allow", "access",
            "major", "minor", "fileMode", "cgroupsPath", "rootfsPropagation", "maskedPaths", "readonlyPaths",
            "seccomp", "defaultAction", "syscalls", "names", "action", "listenerPath", "flags", "hooks",
            "prestart", "createRuntime", "startContainer", "poststop", "timeout", "intelRdt", "personality",
            "timeOffsets", "mountLabel", "hugepageLimits", "network", "kernelMemory", "ociVersion", "root",
            "process", "mounts", "linux", "hostname", "domainname", "annotations", "uidMappings[0]", "a.b",
        ])
        .prop_map(str::to_string),
        1 => ".{0,8}",
    ]
}

/// One change to a document: a value replaced, a key or element removed,
/// a key added.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(Index, Value),
    Remove(Index),
    Add(Index, String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), json_value()).prop_map(|(at, v)| Mutation::Replace(at, v)),
        2 => any::<Index>().prop_map(Mutation::Remove),
        2 => (any::<Index>(), key(), json_value()).prop_map(|(at, k, v)| Mutation::Add(at, k, v)),
    ]
}

/// Every JSON pointer in `doc`, the root's ("") first.
fn pointers(doc: &Value, at: String, out: &mut Vec<String>) {
    match doc {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        _ => {}
    }
}

fn apply(doc: &mut Value, mutation: &Mutation) {
    let mut all = vec![String::new()];
    pointers(doc, String::new(), &mut all);
    let at = |i: &Index| all[i.index(all.len())].as_str();
    match mutation {
        Mutation::Replace(i, value) => *doc.pointer_mut(at(i)).unwrap() = value.clone(),
        Mutation::Remove(i) => {
            let pointer = at(i);
            let Some((parent, last)) = pointer.rsplit_once('/') else {
                return;
            };
            match doc.pointer_mut(parent).unwrap() {
                Value::Object(map) => {
                    map.remove(&last.replace("~1", "/").replace("~0", "~"));
                }
                Value::Array(items) => {
                    items.remove(last.parse::<usize>().unwrap());
                }
                _ => unreachable!("a pointer's parent holds it"),
            }
        }
        Mutation::Add(i, key, value) => {
            if let Value::Object(map) = doc.pointer_mut(at(i)).unwrap() {
                map.insert(key.clone(), value.clone());
            }
        }
    }
}

fn base() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(serde_json::from_str(RUNC_SPEC).unwrap()),
        Just(rootless_spec()),
        Just(full_spec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    /// Any bytes, any JSON document as `config.json`: a translation or a
    /// refusal, never a panic.
    #[test]
    fn prop_any_document_is_translated_or_refused(config in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| v.to_string().into_bytes()),
    ]) {
        let bundle = Bundle::new();
        check_all(&bundle, &config)?;
    }

    /// Stock and full specs with a few values replaced by any JSON, fields
    /// removed or added anywhere: a translation that carries nothing of
    /// the host into a VM, or a refusal naming each field.
    #[test]
    fn prop_mutated_specs_are_translated_or_refused(
        base in base(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut doc = base;
        for m in &mutations {
            apply(&mut doc, m);
        }
        let bundle = Bundle::new();
        check_all(&bundle, &serde_json::to_vec(&doc).unwrap())?;
    }

    /// A spec's text with bytes flipped, cut or repeated: refused as not
    /// JSON, or taken as whatever JSON it became.
    #[test]
    fn prop_damaged_spec_text(
        base in base(),
        edits in prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut text = serde_json::to_vec(&base).unwrap();
        for (at, byte, how) in edits {
            let i = at.index(text.len());
            match how {
                0 => text[i] = byte,
                1 => text.truncate(i),
                _ => text.insert(i, byte),
            }
            if text.is_empty() {
                break;
            }
        }
        let bundle = Bundle::new();
        check_all(&bundle, &text)?;
    }

    /// `vmshim runtime update -r`'s document: any bytes or any JSON, or a
    /// real one mutated: translated or refused as not a resources document.
    #[test]
    fn prop_resources_documents(
        doc in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..48),
            json_value().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(mutation(), 0..3).prop_map(|ms| {
                let mut doc = full_spec()["linux"]["resources"].clone();
                for m in &ms {
                    apply(&mut doc, m);
                }
                serde_json::to_vec(&doc).unwrap()
            }),
        ],
    ) {
        match resources_from_json(&doc, Path::new("resources.json")) {
            Ok(_) => prop_assert!(serde_json::from_slice::<Value>(&doc).is_ok()),
            Err(ImageError::BadBundle { detail, .. }) => prop_assert!(!detail.is_empty()),
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }
}

/// The bases translate as they are: the stock and rootless specs for a VM
/// and for the host (the rootless one binds `/sys`, which in a VM is the
/// guest kernel's), the full one for the host.
#[test]
fn the_base_specs_translate() {
    let bundle = Bundle::new();
    for (name, spec) in [
        ("runc spec", serde_json::from_str::<Value>(RUNC_SPEC).unwrap()),
        ("runc spec --rootless", rootless_spec()),
    ] {
        let dir = bundle.with(&serde_json::to_vec(&spec).unwrap());
        for placement in [RootPlacement::Guest, RootPlacement::Host] {
            let c = container_spec(dir, "c1", placement).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.process.args, ["sh"], "{name}");
        }
        // And for `vmshim run --bundle`: its root is the bundle's rootfs.
        let b = ReadBundle::read(dir, "c1").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(b.rootfs, std::path::absolute(dir).unwrap().join("rootfs"), "{name}");
    }
    let dir = bundle.with(&serde_json::to_vec(&full_spec()).unwrap());
    let c = container_spec(dir, "c1", RootPlacement::Host).unwrap();
    assert_eq!(c.mounts[7].kind.as_deref(), Some("bind"));
    assert_eq!(c.mounts[7].source.as_deref(), Some(dir.join("data").to_str().unwrap()));
    assert_eq!(c.hooks.create_runtime.len(), 2);
    assert!(c.process.seccomp.is_some() && c.resources.as_ref().unwrap().memory.is_some());
    // For a VM, the relative bind source is a host path that the VM
    // shares: one that is not there is refused, the mount named.
    match container_spec(dir, "c1", RootPlacement::Guest) {
        Err(ImageError::BadBundle { detail, .. }) => {
            assert!(detail.starts_with("mounts[7] ("), "{detail}");
            assert!(detail.contains("No such file or directory"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // Once it is there, it is the VM's share 0, and the mount a bind
    // from where the guest sees it.
    fs::create_dir_all(dir.join("data")).unwrap();
    let b = ReadBundle::read(dir, "c1").unwrap();
    assert_eq!(b.shares.len(), 1);
    assert_eq!(
        b.spec.mounts[7].source.as_deref(),
        Some(format!("{}/0", agent_proto::GUEST_SHARES).as_str())
    );
    fs::remove_dir(dir.join("data")).unwrap();
}

#[test]
fn the_field_resolver_finds_what_refusals_name() {
    let doc = json!({
        "process": {"a.b": 1},
        "linux": {"namespaces": [{"type": "user"}, {"path": "/x"}]},
        "x.y": 1,
        "[": 0
    });
    // Keys are named as written, dots and brackets included.
    for field in [
        "process.a.b",
        "linux.namespaces[1].path",
        "linux.namespaces[0]",
        "x.y",
        "linux",
        "[",
    ] {
        assert!(resolves(&doc, field), "{field}");
    }
    for field in [
        "process.b",
        "linux.namespaces[2]",
        "linux.namespaces.0",
        "x",
        "processa.b",
    ] {
        assert!(!resolves(&doc, field), "{field}");
    }
}

/// A value of the wrong type is refused naming its field (the spec is read
/// through `serde_path_to_error`): `process.user.uid: invalid type: map,
/// expected u32`, not a bare "invalid type".
#[test]
fn a_wrong_type_is_refused_naming_its_field() {
    let bundle = Bundle::new();
    for (pointer, field) in [
        ("/process/user/uid", "process.user.uid"),
        ("/process/rlimits/0/hard", "process.rlimits[0].hard"),
        ("/mounts/1/options", "mounts[1].options"),
        ("/linux/namespaces/0/type", "linux.namespaces[0].type"),
    ] {
        let mut spec: Value = serde_json::from_str(RUNC_SPEC).unwrap();
        *spec.pointer_mut(pointer).unwrap() = json!({"wrong": "type"});
        let dir = bundle.with(&serde_json::to_vec(&spec).unwrap());
        match container_spec(dir, "c1", RootPlacement::Host) {
            Err(ImageError::BadBundle { detail, .. }) => assert!(detail.contains(field), "{field}: {detail}"),
            other => panic!("{field}: {other:?}"),
        }
    }
}
