//! The QEMU `microvm` command line.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::accel::Accel;

/// The TCG translation cache, in MiB. QEMU 7.2's default is 1 GiB, filled
/// as code is translated and never given back: a guest's boot alone leaves
/// about 32 MiB of it resident, and a busy guest more, up to the whole.
/// 16 MiB holds what a micro-VM runs over and over (boot times are the
/// same, within their spread here); when it is full QEMU starts it afresh.
pub const TCG_TB_SIZE_MIB: u32 = 16;

/// Everything that shapes the QEMU command line of one VM.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// The QEMU program.
    pub qemu: PathBuf,
    /// KVM or TCG (`-accel`, and the CPU model that goes with it).
    pub accel: Accel,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Guest memory, in MiB.
    pub memory_mib: u32,
    /// The guest kernel: an uncompressed vmlinux with PVH boot.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initramfs: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
    /// Where the serial console goes: a Unix socket that listens there
    /// (vmshim's capture of the console) gets QEMU's connection;
    /// anything else is a file QEMU writes.
    pub console_log: PathBuf,
    /// Read-only block devices, in order: the guest sees /dev/vda, vdb, ...
    pub disks: Vec<PathBuf>,
    /// Device arguments of the vsock backend.
    pub vsock_args: Vec<String>,
    /// Network device arguments.
    pub net_args: Vec<String>,
    /// The virtio-fs share's device arguments (none without shares).
    pub share_args: Vec<String>,
    /// The balloon's device arguments ([`super::memory::balloon_args`]).
    pub balloon_args: Vec<String>,
    /// The QMP socket's arguments ([`super::qmp::QmpListener::qemu_args`]).
    pub qmp_args: Vec<String>,
    /// Under TCG, the guest's clock counts instructions
    /// (`-icount shift=0,sleep=off`): one boot reads the same every time,
    /// about ten times slower.
    pub icount: bool,
}

impl QemuConfig {
    /// The full argument list (without the program).
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        // microvm: virtio-mmio only, no PCI, no firmware tables. acpi=off or
        // a kernel without ACPI never sees the virtio-mmio devices; the
        // devices are announced on the kernel command line instead.
        push("-M");
        push("microvm,acpi=off,x-option-roms=off,memory-backend=mem");
        push("-accel");
        push(&match self.accel {
            Accel::Kvm => self.accel.qemu_arg().to_owned(),
            Accel::Tcg => format!("tcg,tb-size={TCG_TB_SIZE_MIB}"),
        });
        if self.icount && self.accel == Accel::Tcg {
            push("-icount");
            push("shift=0,sleep=off");
        }
        push("-cpu");
        push(match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        });
        push("-smp");
        push(&self.cpus.to_string());
        push("-m");
        push(&format!("{}M", self.memory_mib));
        // vhost-user devices need guest RAM the backend can map.
        push("-object");
        push(&format!(
            "memory-backend-memfd,id=mem,size={}M,share=on",
            self.memory_mib
        ));
        // Modern (virtio 1.0) devices rather than QEMU 7.2's legacy default.
        push("-global");
        push("virtio-mmio.force-legacy=false");
        push("-nodefaults");
        push("-no-user-config");
        // Threads named for what they run (`CPU 0/TCG`, `CPU 0/KVM`): how
        // `--profile` tells the vCPUs' time on the host from QEMU's own.
        push("-name");
        push("vmshim,debug-threads=on");
        push("-nographic");
        // A guest reboot is the end of the VM (microvm cannot power off
        // without ACPI; vminitd reboots).
        push("-no-reboot");
        if is_socket(&self.console_log) {
            a.push("-chardev".into());
            let mut chardev = OsString::from("socket,id=console,path=");
            chardev.push(escape_commas(&self.console_log));
            a.push(chardev);
            a.push("-serial".into());
            a.push("chardev:console".into());
        } else {
            a.push("-serial".into());
            a.push(format!("file:{}", self.console_log.display()).into());
        }
        a.push("-kernel".into());
        a.push(self.kernel.clone().into());
        a.push("-initrd".into());
        a.push(self.initramfs.clone().into());
        a.push("-append".into());
        a.push(self.cmdline.clone().into());
        for (i, disk) in self.disks.iter().enumerate() {
            a.push("-drive".into());
            let mut drive = OsString::from(format!("id=disk{i},if=none,format=raw,readonly=on,file="));
            drive.push(escape_commas(disk));
            a.push(drive);
            a.push("-device".into());
            a.push(format!("virtio-blk-device,drive=disk{i}").into());
        }
        a.push("-device".into());
        a.push("virtio-rng-device".into());
        for arg in self
            .vsock_args
            .iter()
            .chain(&self.net_args)
            .chain(&self.share_args)
            .chain(&self.balloon_args)
            .chain(&self.qmp_args)
        {
            a.push(arg.into());
        }
        a
    }
}

fn is_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// QEMU option values escape a comma by doubling it.
fn escape_commas(path: &std::path::Path) -> OsString {
    path.to_string_lossy().replace(',', ",,").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let cfg = QemuConfig {
            qemu: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            cpus: 2,
            memory_mib: 256,
            kernel: "/k/vmlinux".into(),
            initramfs: "/k/initramfs.cpio".into(),
            cmdline: "console=ttyS0".into(),
            console_log: "/run/x/console.log".into(),
            disks: vec!["/img/a,b.ext4".into()],
            vsock_args: vec!["-device".into(), "vhost-vsock-device,guest-cid=9".into()],
            net_args: Vec::new(),
            share_args: Vec::new(),
            balloon_args: vec!["-device".into(), "virtio-balloon-device".into()],
            qmp_args: vec!["-mon".into(), "chardev=qmp,mode=control".into()],
            icount: false,
        };
        let args: Vec<String> = cfg.args().into_iter().map(|a| a.into_string().unwrap()).collect();
        let joined = args.join(" ");
        assert!(
            joined.contains("-accel tcg,tb-size=16 -cpu max -smp 2 -m 256M"),
            "{joined}"
        );
        assert!(joined.contains("memory-backend-memfd,id=mem,size=256M,share=on"));
        assert!(joined.contains("-serial file:/run/x/console.log"));
        assert!(joined.contains("file=/img/a,,b.ext4"), "commas escaped: {joined}");
        assert!(joined.ends_with(
            "-device vhost-vsock-device,guest-cid=9 -device virtio-balloon-device -mon chardev=qmp,mode=control"
        ));
        assert!(args.iter().any(|a| a == "-no-reboot"));
        assert!(!joined.contains("-icount"));
        let counted = QemuConfig {
            icount: true,
            ..cfg.clone()
        };
        let joined = counted
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            joined.contains("-accel tcg,tb-size=16 -icount shift=0,sleep=off -cpu max"),
            "{joined}"
        );
        let kvm = QemuConfig {
            icount: true,
            accel: Accel::Kvm,
            ..cfg
        };
        let joined = kvm
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(!joined.contains("-icount"), "KVM counts no instructions: {joined}");
    }

    #[test]
    fn a_listening_console_socket_gets_the_serial_port() {
        let t = crate::test_dir::TestDir::new("qemu-serial");
        let socket = t.path().join("con,sole.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let cfg = QemuConfig {
            qemu: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            cpus: 1,
            memory_mib: 128,
            kernel: "/k/vmlinux".into(),
            initramfs: "/k/initramfs.cpio".into(),
            cmdline: "console=ttyS0".into(),
            console_log: socket.clone(),
            disks: Vec::new(),
            vsock_args: Vec::new(),
            net_args: Vec::new(),
            share_args: Vec::new(),
            balloon_args: Vec::new(),
            qmp_args: Vec::new(),
            icount: false,
        };
        let joined = cfg
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        let escaped = socket.display().to_string().replace(',', ",,");
        assert!(
            joined.contains(&format!(
                "-chardev socket,id=console,path={escaped} -serial chardev:console"
            )),
            "{joined}"
        );
        assert!(!joined.contains("file:"), "{joined}");
    }
}
