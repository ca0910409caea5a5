//! Settings: the command-line flags and, when vminitd is the init of a VM,
//! the `vminitd.*` words of the kernel command line (`/proc/cmdline`).
//!
//! Flags are parsed by hand: an argument parser would cost PID 1 more in
//! size than it saves in code.

use std::path::PathBuf;
use std::time::Duration;

use agent_proto::{DnsConfig, Endpoint, EndpointError, HostEntry, InterfaceConfig, NetworkConfig, AGENT_PORT};

/// How long shutdown waits after SIGTERM before SIGKILL, by default.
pub const DEFAULT_GRACE_MS: u64 = 3000;

/// Where the agent listens by default: every CID, the agent port.
pub fn default_listen() -> Endpoint {
    Endpoint::Vsock {
        cid: agent_proto::endpoint::CID_ANY,
        port: AGENT_PORT,
    }
}

/// What vminitd is running as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of a VM, started by the kernel as `/init` (no `--listen`).
    Machine,
    /// PID 1 of a PID namespace on a host, with `--listen` (for tests).
    Namespace,
    /// An ordinary process: a child subreaper, no mounts.
    Process,
}

impl Mode {
    pub fn detect(pid: i32, listen_flag: bool) -> Mode {
        match (pid, listen_flag) {
            (1, false) => Mode::Machine,
            (1, true) => Mode::Namespace,
            _ => Mode::Process,
        }
    }

    /// The name the `hello` reply carries.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Machine => "machine",
            Mode::Namespace => "namespace",
            Mode::Process => "process",
        }
    }

    pub fn is_pid1(self) -> bool {
        self != Mode::Process
    }
}

/// The last step of a machine's shutdown (`vminitd.halt=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// `reboot(RB_AUTOBOOT)`: ends the VM when the VMM runs with `-no-reboot`
    /// (a `microvm` with `acpi=off` cannot power off).
    Reboot,
    /// `reboot(RB_POWER_OFF)`.
    PowerOff,
}

/// What the flags ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Run(Flags),
    Help,
    Version,
}

/// The flags given; `None` where a flag was absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub listen: Option<Endpoint>,
    /// `--notify URL`: the readiness exchange (and the agent key) there.
    pub notify: Option<Endpoint>,
    pub grace_ms: Option<u64>,
    pub debug: Option<bool>,
}

/// The `vminitd.*` words of the kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdlineSettings {
    pub listen: Option<Endpoint>,
    pub grace_ms: Option<u64>,
    pub debug: Option<bool>,
    pub halt: Option<Halt>,
    /// `vminitd.rootfs=DEVICE`: the block device of the processes' root.
    pub rootfs: Option<PathBuf>,
    /// `vminitd.notify=URL`: where to announce that the agent listens.
    pub notify: Option<Endpoint>,
    /// `vminitd.ip=`, `vminitd.hostname=`, `vminitd.dns=`.
    pub network: NetworkConfig,
    /// `vminitd.share=TAG`: the virtio-fs tag of the host's share.
    pub share: Option<String>,
    /// `vminitd.volume=N,ro|rw,DEST` (repeatable).
    pub volumes: Vec<VolumeBind>,
    /// `vminitd.*` words this version does not know (logged, not fatal).
    pub unknown: Vec<String>,
}

/// The settings in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    pub listen: Endpoint,
    pub grace: Duration,
    pub debug: bool,
    pub halt: Halt,
    /// The block device to mount as the processes' root filesystem.
    pub rootfs: Option<PathBuf>,
    /// Where to announce readiness and receive the agent key (see
    /// `agent_proto::key`).
    pub notify: Option<Endpoint>,
    /// The network settings of the kernel command line.
    pub network: NetworkConfig,
    /// The virtio-fs tag of the host's share, mounted at
    /// [`agent_proto::GUEST_SHARES`].
    pub share: Option<String>,
    /// Shares bound into the processes' root filesystem at boot.
    pub volumes: Vec<VolumeBind>,
}

/// `vminitd.volume=N,ro|rw,DEST`: share N (`GUEST_SHARES/N`) bound at DEST
/// in the processes' root filesystem, for every process that runs there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeBind {
    /// The share's index.
    pub index: u32,
    /// Bound read-only.
    pub readonly: bool,
    /// Where, in the root (absolute; `%XX` escapes decoded).
    pub destination: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown flag \"{flag}\" (see --help)")]
    UnknownFlag { flag: String },
    #[error("flag {flag} needs a value (see --help)")]
    MissingValue { flag: &'static str },
    #[error("unexpected argument \"{arg}\" (see --help)")]
    UnexpectedArgument { arg: String },
    #[error("bad value \"{value}\" for {setting}: {source}")]
    BadEndpoint {
        setting: &'static str,
        value: String,
        source: EndpointError,
    },
    #[error("bad value \"{value}\" for {setting}: expected {expected}")]
    BadValue {
        setting: &'static str,
        value: String,
        expected: &'static str,
    },
}

pub const HELP: &str = "\
vminitd: the init and agent of vminitd micro-VMs

Usage: vminitd [--listen URL] [--notify URL] [--grace-ms N] [--log info|debug]

  --listen URL     serve the agent protocol at URL: unix:PATH or vsock:CID:PORT
                   (default vsock:any:1024)
  --notify URL     once listening, write READY to URL and read the agent key
                   back (KEY <64 hex digits>); every connection must then show it
  --grace-ms N     on shutdown, wait N ms after SIGTERM before SIGKILL (default 3000)
  --log LEVEL      info (default) or debug
  --help           print this help
  --version        print the version

As the init of a VM (PID 1, no --listen) it also reads vminitd.listen=,
vminitd.grace_ms=, vminitd.log=info|debug, vminitd.halt=reboot|poweroff,
vminitd.rootfs=/dev/DEVICE (the processes' root filesystem) and
vminitd.notify=URL (announce readiness there), vminitd.ip=IFACE,ADDR/PREFIX[,GW]
(repeatable), vminitd.hostname=NAME, vminitd.host=ADDR,NAME[,NAME] (repeatable),
vminitd.dns=IP[,IP], vminitd.share=TAG (the host's virtio-fs share) and
vminitd.volume=N,ro|rw,DEST (share N bound at DEST in the processes' root;
repeatable) from the kernel command line; flags win.
";

/// Whether `args` (without argv[0]) contain `--listen`: with the PID, that
/// decides the mode before the flags are fully parsed.
pub fn has_listen_flag(args: &[String]) -> bool {
    args.iter().any(|a| a == "--listen" || a.starts_with("--listen="))
}

/// Parses the flags (without argv[0]). In machine mode, plain words are
/// ignored: the kernel passes the command-line words it does not know to init.
pub fn parse_flags(args: &[String], machine: bool) -> Result<Invocation, ConfigError> {
    let mut flags = Flags::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if arg.starts_with("--") => (name, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = |flag: &'static str| -> Result<String, ConfigError> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => iter.next().cloned().ok_or(ConfigError::MissingValue { flag }),
            }
        };
        match name {
            "--help" | "-h" => return Ok(Invocation::Help),
            "--version" | "-V" => return Ok(Invocation::Version),
            "--listen" => flags.listen = Some(parse_endpoint("--listen", &value("--listen")?)?),
            "--notify" => flags.notify = Some(parse_endpoint("--notify", &value("--notify")?)?),
            "--grace-ms" => flags.grace_ms = Some(parse_ms("--grace-ms", &value("--grace-ms")?)?),
            "--log" => flags.debug = Some(parse_log("--log", &value("--log")?)?),
            _ if name.starts_with('-') => return Err(ConfigError::UnknownFlag { flag: arg.clone() }),
            _ if machine => {}
            _ => return Err(ConfigError::UnexpectedArgument { arg: arg.clone() }),
        }
    }
    Ok(Invocation::Run(flags))
}

/// Splits a kernel command line into words the way the kernel does: on
/// whitespace, except inside double quotes, which are removed. Words after a
/// lone `--` belong to init's argv and are not returned.
pub fn cmdline_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    if word == "--" {
                        return words;
                    }
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word && word != "--" {
        words.push(word);
    }
    words
}

/// Reads the `vminitd.*` settings of a kernel command line.
pub fn parse_cmdline(cmdline: &str) -> Result<CmdlineSettings, ConfigError> {
    let mut settings = CmdlineSettings::default();
    for word in cmdline_words(cmdline) {
        let Some(rest) = word.strip_prefix("vminitd.") else {
            continue;
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        match key {
            "listen" => settings.listen = Some(parse_endpoint("vminitd.listen", value)?),
            "notify" => settings.notify = Some(parse_endpoint("vminitd.notify", value)?),
            "ip" => settings.network.interfaces.push(parse_ip(value)?),
            "hostname" => settings.network.hostname = Some(value.to_owned()),
            "host" => settings
                .network
                .hosts
                .get_or_insert_with(Vec::new)
                .push(parse_host(value)?),
            "dns" => {
                settings.network.dns = Some(DnsConfig {
                    nameservers: value.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
                    ..Default::default()
                })
            }
            "grace_ms" => settings.grace_ms = Some(parse_ms("vminitd.grace_ms", value)?),
            "log" => settings.debug = Some(parse_log("vminitd.log", value)?),
            "halt" => {
                settings.halt = Some(match value {
                    "reboot" => Halt::Reboot,
                    "poweroff" => Halt::PowerOff,
                    _ => {
                        return Err(ConfigError::BadValue {
                            setting: "vminitd.halt",
                            value: value.to_owned(),
                            expected: "reboot or poweroff",
                        })
                    }
                })
            }
            "rootfs" => {
                if !value.starts_with("/dev/") {
                    return Err(ConfigError::BadValue {
                        setting: "vminitd.rootfs",
                        value: value.to_owned(),
                        expected: "a block device under /dev",
                    });
                }
                settings.rootfs = Some(PathBuf::from(value));
            }
            "share" => {
                if value.is_empty() {
                    return Err(ConfigError::BadValue {
                        setting: "vminitd.share",
                        value: value.to_owned(),
                        expected: "a virtio-fs tag",
                    });
                }
                settings.share = Some(value.to_owned());
            }
            "volume" => settings.volumes.push(parse_volume(value)?),
            _ => settings.unknown.push(word),
        }
    }
    Ok(settings)
}

/// The settings in force: flags first, then the kernel command line (read
/// only in machine mode), then the defaults.
pub fn resolve(mode: Mode, flags: Flags, cmdline: Option<CmdlineSettings>) -> Config {
    let cmdline = cmdline.unwrap_or_default();
    Config {
        mode,
        listen: flags.listen.or(cmdline.listen).unwrap_or_else(default_listen),
        grace: Duration::from_millis(flags.grace_ms.or(cmdline.grace_ms).unwrap_or(DEFAULT_GRACE_MS)),
        debug: flags.debug.or(cmdline.debug).unwrap_or(false),
        halt: cmdline.halt.unwrap_or(Halt::Reboot),
        rootfs: cmdline.rootfs,
        notify: flags.notify.or(cmdline.notify),
        network: cmdline.network,
        share: cmdline.share,
        volumes: cmdline.volumes,
    }
}

/// `vminitd.volume=N,ro|rw,DEST`, DEST absolute with `%XX` escapes.
fn parse_volume(value: &str) -> Result<VolumeBind, ConfigError> {
    let bad = || ConfigError::BadValue {
        setting: "vminitd.volume",
        value: value.to_owned(),
        expected: "N,ro|rw,/DESTINATION",
    };
    let mut parts = value.splitn(3, ',');
    let index = parts.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
    let readonly = match parts.next() {
        Some("ro") => true,
        Some("rw") => false,
        _ => return Err(bad()),
    };
    let destination = parts.next().and_then(percent_decode).ok_or_else(bad)?;
    if !destination.starts_with('/') {
        return Err(bad());
    }
    Ok(VolumeBind {
        index,
        readonly,
        destination,
    })
}

/// `s` with each `%XX` replaced by its byte; `None` for a bad escape or
/// bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex = [bytes.next()?, bytes.next()?];
        out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
    }
    String::from_utf8(out).ok()
}

/// `vminitd.ip=IFACE,ADDRESS/PREFIX[,GATEWAY]` (repeatable; the same
/// interface may be named again for more addresses).
fn parse_ip(value: &str) -> Result<InterfaceConfig, ConfigError> {
    let bad = || ConfigError::BadValue {
        setting: "vminitd.ip",
        value: value.to_owned(),
        expected: "IFACE,ADDRESS/PREFIX[,GATEWAY]",
    };
    let mut parts = value.split(',');
    // An interface name (< 16 bytes) or a MAC address (17).
    let name = parts
        .next()
        .filter(|n| !n.is_empty() && n.len() <= 17)
        .ok_or_else(bad)?;
    let address = parts.next().ok_or_else(bad)?;
    crate::sys::cidr::parse_cidr(address).ok_or_else(bad)?;
    let gateways: Vec<String> = parts.next().map(|g| vec![g.to_owned()]).unwrap_or_default();
    if parts.next().is_some() || gateways.iter().any(|g| g.parse::<std::net::IpAddr>().is_err()) {
        return Err(bad());
    }
    Ok(InterfaceConfig {
        name: name.to_owned(),
        mtu: None,
        addresses: vec![address.to_owned()],
        gateways,
        routes: Vec::new(),
    })
}

/// `vminitd.host=ADDRESS,NAME[,NAME...]` (repeatable): an `/etc/hosts` line.
fn parse_host(value: &str) -> Result<HostEntry, ConfigError> {
    let mut parts = value.split(',');
    let address = parts.next().filter(|a| a.parse::<std::net::IpAddr>().is_ok());
    let names: Vec<String> = parts.filter(|n| !n.is_empty()).map(str::to_owned).collect();
    match address {
        Some(address) if !names.is_empty() => Ok(HostEntry {
            address: address.to_owned(),
            names,
        }),
        _ => Err(ConfigError::BadValue {
            setting: "vminitd.host",
            value: value.to_owned(),
            expected: "ADDRESS,NAME[,NAME...]",
        }),
    }
}

fn parse_endpoint(setting: &'static str, value: &str) -> Result<Endpoint, ConfigError> {
    value.parse().map_err(|source| ConfigError::BadEndpoint {
        setting,
        value: value.to_owned(),
        source,
    })
}

fn parse_ms(setting: &'static str, value: &str) -> Result<u64, ConfigError> {
    value.parse().map_err(|_| ConfigError::BadValue {
        setting,
        value: value.to_owned(),
        expected: "a number of milliseconds",
    })
}

fn parse_log(setting: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "info" => Ok(false),
        "debug" => Ok(true),
        _ => Err(ConfigError::BadValue {
            setting,
            value: value.to_owned(),
            expected: "info or debug",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn run(s: &[&str]) -> Flags {
        match parse_flags(&args(s), false).unwrap() {
            Invocation::Run(f) => f,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mode_detection() {
        assert_eq!(Mode::detect(1, false), Mode::Machine);
        assert_eq!(Mode::detect(1, true), Mode::Namespace);
        assert_eq!(Mode::detect(42, true), Mode::Process);
        assert_eq!(Mode::detect(42, false), Mode::Process);
        assert!(has_listen_flag(&args(&["--listen=unix:/x"])));
        assert!(has_listen_flag(&args(&["--grace-ms", "1", "--listen", "unix:/x"])));
        assert!(!has_listen_flag(&args(&["--grace-ms", "1"])));
    }

    #[test]
    fn flags_both_spellings() {
        let f = run(&["--listen", "unix:/tmp/v.sock", "--grace-ms=250", "--log", "debug"]);
        assert_eq!(f.listen, Some(Endpoint::Unix("/tmp/v.sock".into())));
        assert_eq!(f.grace_ms, Some(250));
        assert_eq!(f.debug, Some(true));
        let f = run(&["--listen=vsock:3:99"]);
        assert_eq!(f.listen, Some(Endpoint::Vsock { cid: 3, port: 99 }));
        assert_eq!(run(&[]), Flags::default());
        assert_eq!(parse_flags(&args(&["--help"]), false).unwrap(), Invocation::Help);
        assert_eq!(parse_flags(&args(&["--version"]), false).unwrap(), Invocation::Version);
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        let e = parse_flags(&args(&["--frob"]), false).unwrap_err();
        assert!(e.to_string().contains("unknown flag \"--frob\""), "{e}");
        let e = parse_flags(&args(&["--listen"]), false).unwrap_err();
        assert!(e.to_string().contains("--listen needs a value"), "{e}");
        let e = parse_flags(&args(&["--listen", "tcp:1"]), false).unwrap_err();
        assert!(e.to_string().contains("\"tcp:1\" for --listen"), "{e}");
        let e = parse_flags(&args(&["--grace-ms", "soon"]), false).unwrap_err();
        assert!(e.to_string().contains("milliseconds"), "{e}");
        let e = parse_flags(&args(&["stray"]), false).unwrap_err();
        assert!(e.to_string().contains("unexpected argument \"stray\""), "{e}");
        // The kernel hands init the words it does not know: ignored as init.
        assert_eq!(
            parse_flags(&args(&["stray"]), true).unwrap(),
            Invocation::Run(Flags::default())
        );
    }

    #[test]
    fn cmdline_words_like_the_kernel() {
        assert_eq!(
            cmdline_words("console=ttyS0  quiet vminitd.x=\"a b\" \"q=1 2\"\n"),
            ["console=ttyS0", "quiet", "vminitd.x=a b", "q=1 2"]
        );
        assert_eq!(cmdline_words("a -- vminitd.log=debug"), ["a"]);
        assert!(cmdline_words("").is_empty());
    }

    #[test]
    fn cmdline_settings() {
        let s = parse_cmdline(
            "console=hvc0 vminitd.listen=vsock:any:2000 vminitd.grace_ms=50 vminitd.log=debug \
             vminitd.halt=poweroff vminitd.future=1 reboot=t\n",
        )
        .unwrap();
        assert_eq!(
            s.listen,
            Some(Endpoint::Vsock {
                cid: u32::MAX,
                port: 2000
            })
        );
        assert_eq!(s.grace_ms, Some(50));
        assert_eq!(s.debug, Some(true));
        assert_eq!(s.halt, Some(Halt::PowerOff));
        assert_eq!(s.unknown, ["vminitd.future=1"]);
        let e = parse_cmdline("vminitd.halt=explode").unwrap_err();
        assert!(e.to_string().contains("vminitd.halt"), "{e}");
        let e = parse_cmdline("vminitd.log=loud").unwrap_err();
        assert!(e.to_string().contains("info or debug"), "{e}");
    }

    #[test]
    fn flags_win_over_cmdline_over_defaults() {
        let cmdline = parse_cmdline("vminitd.listen=vsock:any:7 vminitd.grace_ms=9 vminitd.log=debug").unwrap();
        let flags = Flags {
            grace_ms: Some(1),
            ..Flags::default()
        };
        let c = resolve(Mode::Machine, flags, Some(cmdline));
        assert_eq!(c.listen, Endpoint::Vsock { cid: u32::MAX, port: 7 });
        assert_eq!(c.grace, Duration::from_millis(1));
        assert!(c.debug);
        assert_eq!(c.halt, Halt::Reboot);
        let d = resolve(Mode::Process, Flags::default(), None);
        assert_eq!(d.listen.to_string(), format!("vsock:{}:1024", u32::MAX));
        assert_eq!(d.grace, Duration::from_millis(DEFAULT_GRACE_MS));
        assert!(!d.debug);
    }

    #[test]
    fn network_words() {
        let s = parse_cmdline(
            "vminitd.ip=02:76:6d:00:02:0f,10.0.2.15/24,10.0.2.2 vminitd.ip=eth1,10.89.0.2/24 \
             vminitd.hostname=web vminitd.dns=10.0.2.3 vminitd.host=10.0.2.2,host.vminitd.internal",
        )
        .unwrap();
        let n = &s.network;
        assert_eq!(n.interfaces.len(), 2);
        assert_eq!(n.interfaces[0].name, "02:76:6d:00:02:0f");
        assert_eq!(n.interfaces[0].gateways, ["10.0.2.2"]);
        assert_eq!(n.interfaces[1].addresses, ["10.89.0.2/24"]);
        assert_eq!(n.hostname.as_deref(), Some("web"));
        assert_eq!(n.dns.as_ref().unwrap().nameservers, ["10.0.2.3"]);
        assert_eq!(n.hosts.as_ref().unwrap()[0].names, ["host.vminitd.internal"]);
        for bad in [
            "vminitd.ip=eth0",
            "vminitd.ip=eth0,10.0.0.1/99",
            "vminitd.ip=eth0,10.0.0.1/8,gw",
            "vminitd.host=x,y",
        ] {
            let e = parse_cmdline(bad).unwrap_err();
            assert!(e.to_string().contains(bad.split('=').nth(1).unwrap()), "{bad}: {e}");
        }
    }

    #[test]
    fn share_words() {
        let s = parse_cmdline("vminitd.share=vmshim vminitd.volume=0,rw,/data vminitd.volume=3,ro,/my%20files,x%25")
            .unwrap();
        assert_eq!(s.share.as_deref(), Some("vmshim"));
        assert_eq!(
            s.volumes,
            [
                VolumeBind {
                    index: 0,
                    readonly: false,
                    destination: "/data".into()
                },
                VolumeBind {
                    index: 3,
                    readonly: true,
                    destination: "/my files,x%".into()
                }
            ]
        );
        let c = resolve(Mode::Machine, Flags::default(), Some(s));
        assert_eq!((c.share.as_deref(), c.volumes.len()), (Some("vmshim"), 2));
        for bad in [
            "vminitd.share=",
            "vminitd.volume=x,rw,/a",
            "vminitd.volume=0,rx,/a",
            "vminitd.volume=0,rw,rel",
            "vminitd.volume=0,rw,/a%2",
            "vminitd.volume=0,rw",
        ] {
            let e = parse_cmdline(bad).unwrap_err().to_string();
            assert!(e.contains(bad.split_once('=').unwrap().0), "{bad}: {e}");
        }
    }
}
