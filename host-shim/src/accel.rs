//! Which accelerator QEMU gets: KVM where it really runs a guest, TCG
//! (software emulation) everywhere else.
//!
//! `/dev/kvm` being there proves little. A host that is itself a guest may
//! offer a KVM that cannot run a stock kernel: PVM (`kvm_pvm`), for one, runs
//! an unmodified guest through the kernel's instruction emulator, which is
//! thousands of times slower than the CPU and gives up on instructions it
//! does not know (`lock cmpxchg16b`, which Linux's slab allocator uses early in
//! boot, is one).
//! So [`probe_kvm`] boots a tiny guest the way a kernel runs: 64-bit long
//! mode with paging, a `lock cmpxchg16b` on guest memory, two million
//! instructions of loop, then an `out` the host checks. KVM passes only if
//! the result is right and arrives in well under the time an emulator needs.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// The device the probe opens.
pub const KVM_DEVICE: &str = "/dev/kvm";
/// How long the whole probe may take before KVM is declared unusable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the probe guest may run: hardware virtualization needs about a
/// millisecond for it, KVM's instruction emulator about a second.
pub const PROBE_RUN_LIMIT: Duration = Duration::from_millis(100);
/// The environment variable that overrides the choice: `kvm` or `tcg`.
pub const ACCEL_ENV: &str = "VMSHIM_ACCEL";

/// A QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulation: slower, works everywhere.
    Tcg,
}

impl Accel {
    /// The value of QEMU's `-accel` option.
    pub fn qemu_arg(&self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.qemu_arg())
    }
}

impl FromStr for Accel {
    type Err = String;

    fn from_str(s: &str) -> Result<Accel, String> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(format!("unknown accelerator {s:?}: expected kvm or tcg")),
        }
    }
}

/// Why KVM cannot run a guest here: the step of the probe that failed.
#[derive(Debug, thiserror::Error)]
pub enum KvmUnusable {
    /// The KVM device (`/dev/kvm`) is not there.
    #[error("{} does not exist", .0.display())]
    NoDevice(PathBuf),
    /// The KVM device could not be opened (permissions, most often).
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The device.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The kernel speaks another KVM API than the stable one (12).
    #[error("KVM_GET_API_VERSION returned {got}, expected 12")]
    ApiVersion {
        /// The version it reported.
        got: i32,
    },
    /// No VM could be made.
    #[error("KVM_CREATE_VM failed: {0}")]
    CreateVm(io::Error),
    /// The probe guest's memory could not be mapped or registered.
    #[error("cannot give the probe guest memory ({step}): {source}")]
    GuestMemory {
        /// `mmap` or `KVM_SET_USER_MEMORY_REGION`.
        step: &'static str,
        /// What the system said.
        source: io::Error,
    },
    /// No vCPU could be made.
    #[error("KVM_CREATE_VCPU failed: {0}")]
    CreateVcpu(io::Error),
    /// The vCPU's shared run area could not be mapped.
    #[error("cannot map the vCPU's run area ({step}): {source}")]
    RunArea {
        /// `KVM_GET_VCPU_MMAP_SIZE` or `mmap`.
        step: &'static str,
        /// What the system said.
        source: io::Error,
    },
    /// The vCPU's registers could not be read or set.
    #[error("{ioctl} failed: {source}")]
    Registers {
        /// The ioctl that failed (`KVM_GET_SREGS`, `KVM_SET_REGS`, ...).
        ioctl: &'static str,
        /// What the system said.
        source: io::Error,
    },
    /// `KVM_RUN` itself failed.
    #[error("KVM_RUN failed: {0}")]
    Run(io::Error),
    /// KVM could not run the guest's instructions (nested virtualization
    /// that emulates rather than runs, most often).
    #[error("KVM internal error {suberror} ({}) running the probe guest", internal_error_name(*.suberror))]
    Internal {
        /// KVM's `KVM_INTERNAL_ERROR_*` code.
        suberror: u32,
    },
    /// The hardware refused to enter the guest.
    #[error("KVM failed to enter the probe guest (hardware reason {hardware_reason:#x})")]
    FailEntry {
        /// The hardware's reason code.
        hardware_reason: u64,
    },
    /// The guest stopped for another reason than the port write it ends
    /// with, or a halt.
    #[error("the probe guest stopped with exit reason {reason} ({})", exit_name(*.reason))]
    UnexpectedExit {
        /// KVM's `KVM_EXIT_*` code.
        reason: u32,
    },
    /// The guest ran, but did not do what it was given to do (its
    /// `cmpxchg16b`, its port write).
    #[error("the probe guest computed a wrong result: {what}")]
    WrongResult {
        /// What it did instead.
        what: String,
    },
    /// The guest ran, slowly enough that KVM is emulating it, not running
    /// it in hardware.
    #[error("the probe guest took {elapsed:?} (hardware virtualization needs milliseconds): KVM is emulating it")]
    TooSlow {
        /// How long it took.
        elapsed: Duration,
    },
    /// The thread that runs the probe could not be started.
    #[error("cannot start the probe thread: {0}")]
    Thread(io::Error),
    /// The probe was still running when its time was up.
    #[error("the probe did not finish within {0:?}")]
    Timeout(Duration),
}

/// Whether KVM really runs a guest here: see the module documentation.
/// Gives up after [`PROBE_TIMEOUT`]; a hung `KVM_RUN` is left behind in its
/// thread.
pub fn probe_kvm() -> Result<(), KvmUnusable> {
    probe_device(Path::new(KVM_DEVICE), PROBE_TIMEOUT)
}

/// Picks the accelerator and says why, in one line: `requested` wins, then
/// `$VMSHIM_ACCEL`, then KVM if [`probe_kvm`] passes (probed once per
/// process), else TCG.
pub fn choose(requested: Option<Accel>) -> (Accel, String) {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    let env = std::env::var_os(ACCEL_ENV);
    decide(requested, env.as_deref(), || {
        PROBE
            .get_or_init(|| {
                probe_kvm().map_err(|e| match kvm_module() {
                    Some(module) => format!("{e} (KVM module {module})"),
                    None => e.to_string(),
                })
            })
            .clone()
    })
}

/// [`choose`], given the environment variable's value and the probe.
fn decide(
    requested: Option<Accel>,
    env: Option<&OsStr>,
    probe: impl FnOnce() -> Result<(), String>,
) -> (Accel, String) {
    if let Some(accel) = requested {
        return (accel, format!("{accel}: requested"));
    }
    let mut note = String::new();
    if let Some(value) = env {
        match value.to_str().map(str::parse::<Accel>) {
            Some(Ok(accel)) => return (accel, format!("{accel}: {ACCEL_ENV}={accel}")),
            _ => {
                note = format!(
                    " ({ACCEL_ENV}={} ignored: expected kvm or tcg)",
                    value.to_string_lossy()
                )
            }
        }
    }
    match probe() {
        Ok(()) => (Accel::Kvm, format!("kvm: {KVM_DEVICE} ran a probe guest{note}")),
        Err(e) => (Accel::Tcg, format!("tcg: {e}{note}")),
    }
}

/// The probe of `device`, run in a thread and abandoned after `timeout`.
fn probe_device(device: &Path, timeout: Duration) -> Result<(), KvmUnusable> {
    if !device.exists() {
        return Err(KvmUnusable::NoDevice(device.to_path_buf()));
    }
    let device = device.to_path_buf();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("kvm-probe".into())
        .spawn(move || {
            // The receiver is gone if the probe timed out: nobody to tell.
            let _ = tx.send(probe::run(&device));
        })
        .map_err(KvmUnusable::Thread)?;
    rx.recv_timeout(timeout).unwrap_or(Err(KvmUnusable::Timeout(timeout)))
}

/// The loaded KVM vendor module, for the reason line: `kvm_intel`,
/// `kvm_amd`, or a paravirtual one such as `kvm_pvm`.
fn kvm_module() -> Option<&'static str> {
    ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .find(|m| Path::new("/sys/module").join(m).exists())
}

fn exit_name(reason: u32) -> &'static str {
    match reason {
        0 => "KVM_EXIT_UNKNOWN",
        1 => "KVM_EXIT_EXCEPTION",
        2 => "KVM_EXIT_IO",
        5 => "KVM_EXIT_HLT",
        6 => "KVM_EXIT_MMIO",
        8 => "KVM_EXIT_SHUTDOWN",
        9 => "KVM_EXIT_FAIL_ENTRY",
        10 => "KVM_EXIT_INTR",
        17 => "KVM_EXIT_INTERNAL_ERROR",
        _ => "other",
    }
}

fn internal_error_name(suberror: u32) -> &'static str {
    match suberror {
        1 => "instruction emulation failed",
        2 => "simultaneous exceptions",
        3 => "delivery event failed",
        _ => "other",
    }
}

/// The probe itself: raw KVM ioctls, x86-64 layouts from `linux/kvm.h`.
mod probe {
    use super::*;

    const KVM_API_VERSION: i32 = 12;
    // _IO(0xAE, n): no argument struct.
    const KVM_GET_API_VERSION: u32 = 0xAE00;
    const KVM_CREATE_VM: u32 = 0xAE01;
    const KVM_GET_VCPU_MMAP_SIZE: u32 = 0xAE04;
    const KVM_CREATE_VCPU: u32 = 0xAE41;
    const KVM_RUN: u32 = 0xAE80;
    // _IOW / _IOR (0xAE, n, struct): bits 16..30 hold the struct's size,
    // checked against the Rust type in `ioctl_with`.
    const KVM_SET_USER_MEMORY_REGION: u32 = 0x4020_AE46;
    const KVM_SET_REGS: u32 = 0x4090_AE82;
    const KVM_GET_SREGS: u32 = 0x8138_AE83;
    const KVM_SET_SREGS: u32 = 0x4138_AE84;

    const KVM_EXIT_IO: u32 = 2;
    const KVM_EXIT_INTR: u32 = 10;
    const KVM_EXIT_FAIL_ENTRY: u32 = 9;
    const KVM_EXIT_INTERNAL_ERROR: u32 = 17;
    const KVM_EXIT_IO_OUT: u8 = 1;

    #[repr(C)]
    struct KvmUserspaceMemoryRegion {
        slot: u32,
        flags: u32,
        guest_phys_addr: u64,
        memory_size: u64,
        userspace_addr: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct KvmRegs {
        rax: u64,
        rbx: u64,
        rcx: u64,
        rdx: u64,
        rsi: u64,
        rdi: u64,
        rsp: u64,
        rbp: u64,
        r8_15: [u64; 8],
        rip: u64,
        rflags: u64,
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct KvmSegment {
        base: u64,
        limit: u32,
        selector: u16,
        type_: u8,
        present: u8,
        dpl: u8,
        db: u8,
        s: u8,
        l: u8,
        g: u8,
        avl: u8,
        unusable: u8,
        padding: u8,
    }

    #[repr(C)]
    #[derive(Default)]
    struct KvmDtable {
        base: u64,
        limit: u16,
        padding: [u16; 3],
    }

    #[repr(C)]
    #[derive(Default)]
    struct KvmSregs {
        cs: KvmSegment,
        ds: KvmSegment,
        es: KvmSegment,
        fs: KvmSegment,
        gs: KvmSegment,
        ss: KvmSegment,
        tr: KvmSegment,
        ldt: KvmSegment,
        gdt: KvmDtable,
        idt: KvmDtable,
        cr0: u64,
        cr2: u64,
        cr3: u64,
        cr4: u64,
        cr8: u64,
        efer: u64,
        apic_base: u64,
        interrupt_bitmap: [u64; 4],
    }

    /// `struct kvm_run` up to and including its 256-byte exit union.
    #[repr(C)]
    struct KvmRun {
        request_interrupt_window: u8,
        immediate_exit: u8,
        padding1: [u8; 6],
        exit_reason: u32,
        ready_for_interrupt_injection: u8,
        if_flag: u8,
        flags: u16,
        cr8: u64,
        apic_base: u64,
        exit: [u64; 32],
    }

    const _: () = assert!(size_of::<KvmUserspaceMemoryRegion>() == 0x20);
    const _: () = assert!(size_of::<KvmRegs>() == 0x90);
    const _: () = assert!(size_of::<KvmSegment>() == 24);
    const _: () = assert!(size_of::<KvmSregs>() == 0x138);
    const _: () = assert!(size_of::<KvmRun>() == 32 + 256);

    // Guest physical layout: one 64 KiB slot at 0x1000.
    const MEM_BASE: u64 = 0x1000;
    const MEM_SIZE: usize = 0x10000;
    const CODE: u64 = 0x1000;
    const PML4: u64 = 0x2000;
    const PDPT: u64 = 0x3000;
    const PD: u64 = 0x4000;
    const DATA: u64 = 0x5000;
    const RESULT_PORT: u16 = 0x10;
    const RESULT: u8 = 0x42;
    /// Loop iterations: about a millisecond on hardware; 0.56 s through
    /// KVM's instruction emulator on a PVM host, so that emulation is caught
    /// by the clock ([`PROBE_RUN_LIMIT`]) well before the probe's timeout.
    const LOOP: u32 = 1 << 20;
    const RBX: u64 = 0x1122_3344_5566_7788;
    const RCX: u64 = 0x99aa_bbcc_ddee_ff00;

    /// The probe guest, 64-bit code. rax = rdx = 0 and memory at DATA is
    /// zero, so the compare succeeds and stores rcx:rbx there.
    #[rustfmt::skip]
    fn code() -> Vec<u8> {
        let mut c = vec![
            0xF0, 0x48, 0x0F, 0xC7, 0x0C, 0x25, // lock cmpxchg16b [disp32]
        ];
        c.extend_from_slice(&(DATA as u32).to_le_bytes());
        c.push(0xB9); // mov ecx, imm32
        c.extend_from_slice(&LOOP.to_le_bytes());
        c.extend_from_slice(&[
            0xFF, 0xC9,             // 1: dec ecx
            0x75, 0xFC,             //    jnz 1b
            0xB0, RESULT,           // mov al, RESULT
            0xE6, RESULT_PORT as u8, // out RESULT_PORT, al
            0xF4,                   // hlt
        ]);
        c
    }

    /// A memory mapping, unmapped on drop.
    struct Mapping {
        ptr: *mut libc::c_void,
        len: usize,
    }

    impl Mapping {
        fn anonymous(len: usize) -> io::Result<Mapping> {
            // SAFETY: a fresh anonymous mapping; no existing memory is touched.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            Mapping::checked(ptr, len)
        }

        fn of_fd(fd: &OwnedFd, len: usize) -> io::Result<Mapping> {
            // SAFETY: maps the vCPU fd's run area, which the kernel owns and
            // keeps alive while mapped; no existing memory is touched.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            Mapping::checked(ptr, len)
        }

        fn checked(ptr: *mut libc::c_void, len: usize) -> io::Result<Mapping> {
            if ptr == libc::MAP_FAILED {
                Err(io::Error::last_os_error())
            } else {
                Ok(Mapping { ptr, len })
            }
        }

        fn write(&mut self, offset: usize, bytes: &[u8]) {
            assert!(offset + bytes.len() <= self.len);
            // SAFETY: in bounds (checked above) of a mapping we own; the
            // guest is not running while the host writes.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.cast::<u8>().add(offset), bytes.len()) }
        }

        fn read<const N: usize>(&self, offset: usize) -> [u8; N] {
            assert!(offset + N <= self.len);
            let mut out = [0; N];
            // SAFETY: in bounds (checked above); the guest is stopped.
            unsafe { std::ptr::copy_nonoverlapping(self.ptr.cast::<u8>().add(offset), out.as_mut_ptr(), N) }
            out
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: ptr/len are exactly what mmap returned, unmapped once.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }

    /// An ioctl whose argument is a plain integer (or nothing).
    fn ioctl(fd: &OwnedFd, request: u32, arg: libc::c_ulong) -> io::Result<i32> {
        // SAFETY: these requests take no pointer: the kernel reads no user
        // memory through `arg` (KVM_RUN writes only the run area it mapped).
        let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, arg) };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    /// An `_IOR`/`_IOW` ioctl on `T`, whose size the request number encodes.
    fn ioctl_with<T>(fd: &OwnedFd, request: u32, arg: &mut T) -> io::Result<i32> {
        assert_eq!(
            ((request >> 16) & 0x3fff) as usize,
            size_of::<T>(),
            "ioctl {request:#x}: size of argument"
        );
        // SAFETY: `arg` is a valid, exclusive T of exactly the size the
        // request number tells the kernel to read or write.
        let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, arg as *mut T) };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    /// Takes ownership of a file descriptor an ioctl returned.
    fn owned(fd: i32) -> OwnedFd {
        // SAFETY: KVM_CREATE_VM / KVM_CREATE_VCPU return a new descriptor
        // that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    pub(super) fn run(device: &Path) -> Result<(), KvmUnusable> {
        let kvm: OwnedFd = File::options()
            .read(true)
            .write(true)
            .open(device) // std opens with O_CLOEXEC
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => KvmUnusable::NoDevice(device.to_path_buf()),
                _ => KvmUnusable::Open {
                    path: device.to_path_buf(),
                    source,
                },
            })?
            .into();
        let version = ioctl(&kvm, KVM_GET_API_VERSION, 0).map_err(KvmUnusable::Run)?;
        if version != KVM_API_VERSION {
            return Err(KvmUnusable::ApiVersion { got: version });
        }
        let vm = owned(ioctl(&kvm, KVM_CREATE_VM, 0).map_err(KvmUnusable::CreateVm)?);

        let memory_err = |step| move |source| KvmUnusable::GuestMemory { step, source };
        let mut mem = Mapping::anonymous(MEM_SIZE).map_err(memory_err("mmap"))?;
        let mut region = KvmUserspaceMemoryRegion {
            slot: 0,
            flags: 0,
            guest_phys_addr: MEM_BASE,
            memory_size: MEM_SIZE as u64,
            userspace_addr: mem.ptr as u64,
        };
        ioctl_with(&vm, KVM_SET_USER_MEMORY_REGION, &mut region).map_err(memory_err("KVM_SET_USER_MEMORY_REGION"))?;
        let at = |gpa: u64| (gpa - MEM_BASE) as usize;
        mem.write(at(CODE), &code());
        // Identity-map the first 2 MiB with one large page.
        mem.write(at(PML4), &(PDPT | 0x3).to_le_bytes()); // present, writable
        mem.write(at(PDPT), &(PD | 0x3).to_le_bytes());
        mem.write(at(PD), &0x83u64.to_le_bytes()); // present, writable, 2 MiB

        let vcpu = owned(ioctl(&vm, KVM_CREATE_VCPU, 0).map_err(KvmUnusable::CreateVcpu)?);
        let run_err = |step| move |source| KvmUnusable::RunArea { step, source };
        let run_size = ioctl(&kvm, KVM_GET_VCPU_MMAP_SIZE, 0).map_err(run_err("KVM_GET_VCPU_MMAP_SIZE"))? as usize;
        if run_size < size_of::<KvmRun>() {
            return Err(run_err("size")(io::Error::other(format!(
                "run area of {run_size} bytes"
            ))));
        }
        let run_area = Mapping::of_fd(&vcpu, run_size).map_err(run_err("mmap"))?;

        set_long_mode(&vcpu)?;
        let mut regs = KvmRegs {
            rip: CODE,
            rflags: 0x2,
            rbx: RBX,
            rcx: RCX,
            ..Default::default()
        };
        ioctl_with(&vcpu, KVM_SET_REGS, &mut regs).map_err(|source| KvmUnusable::Registers {
            ioctl: "KVM_SET_REGS",
            source,
        })?;

        let started = Instant::now();
        let (port, value) = run_until_io(&vcpu, &run_area)?;
        let elapsed = started.elapsed();
        if port != RESULT_PORT || value != RESULT {
            return Err(KvmUnusable::WrongResult {
                what: format!("wrote {value:#x} to port {port:#x}"),
            });
        }
        let stored = mem.read::<16>(at(DATA));
        let mut expected = RBX.to_le_bytes().to_vec();
        expected.extend_from_slice(&RCX.to_le_bytes());
        if stored[..] != expected[..] {
            return Err(KvmUnusable::WrongResult {
                what: format!("cmpxchg16b stored {stored:02x?}"),
            });
        }
        if elapsed > PROBE_RUN_LIMIT {
            return Err(KvmUnusable::TooSlow { elapsed });
        }
        Ok(())
    }

    /// 64-bit mode, paging on, flat segments; the rest as KVM set it up.
    fn set_long_mode(vcpu: &OwnedFd) -> Result<(), KvmUnusable> {
        let mut sregs = KvmSregs::default();
        ioctl_with(vcpu, KVM_GET_SREGS, &mut sregs).map_err(|source| KvmUnusable::Registers {
            ioctl: "KVM_GET_SREGS",
            source,
        })?;
        let code = KvmSegment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x8,
            type_: 11, // execute/read, accessed
            present: 1,
            s: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        let data = KvmSegment {
            selector: 0x10,
            type_: 3,
            l: 0,
            db: 1,
            ..code
        }; // read/write, accessed
        sregs.cs = code;
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
        sregs.cr3 = PML4;
        sregs.cr4 = 1 << 5; // PAE
        sregs.cr0 = 0x8005_0033; // PE MP ET NE WP AM PG
        sregs.efer = 0x500; // LME LMA
        ioctl_with(vcpu, KVM_SET_SREGS, &mut sregs).map_err(|source| KvmUnusable::Registers {
            ioctl: "KVM_SET_SREGS",
            source,
        })?;
        Ok(())
    }

    /// Runs the vCPU to its `out`; returns the port and the byte written.
    fn run_until_io(vcpu: &OwnedFd, run_area: &Mapping) -> Result<(u16, u8), KvmUnusable> {
        loop {
            match ioctl(vcpu, KVM_RUN, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(KvmUnusable::Run(e)),
                Ok(_) => {}
            }
            // SAFETY: the run area is at least size_of::<KvmRun>() bytes
            // (checked when mapped) and the vCPU is stopped, so the kernel
            // does not write it concurrently.
            let run = unsafe { std::ptr::read_volatile(run_area.ptr.cast::<KvmRun>()) };
            match run.exit_reason {
                KVM_EXIT_INTR => continue,
                KVM_EXIT_IO => {
                    let io = run.exit[0];
                    let (direction, size, port) = (io as u8, (io >> 8) as u8, (io >> 16) as u16);
                    let data_offset = run.exit[1] as usize;
                    if direction != KVM_EXIT_IO_OUT || size != 1 || data_offset >= run_area.len {
                        return Err(KvmUnusable::WrongResult {
                            what: format!("port I/O direction {direction} size {size} at {port:#x}"),
                        });
                    }
                    let [value] = run_area.read::<1>(data_offset);
                    return Ok((port, value));
                }
                KVM_EXIT_INTERNAL_ERROR => {
                    return Err(KvmUnusable::Internal {
                        suberror: run.exit[0] as u32,
                    })
                }
                KVM_EXIT_FAIL_ENTRY => {
                    return Err(KvmUnusable::FailEntry {
                        hardware_reason: run.exit[0],
                    })
                }
                reason => return Err(KvmUnusable::UnexpectedExit { reason }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requested_accelerator_wins() {
        let (accel, reason) = choose(Some(Accel::Tcg));
        assert_eq!(accel, Accel::Tcg);
        assert_eq!(reason, "tcg: requested");
        assert_eq!(choose(Some(Accel::Kvm)).0, Accel::Kvm);
    }

    #[test]
    fn the_environment_comes_next_then_the_probe() {
        let never = || -> Result<(), String> { panic!("probed") };
        assert_eq!(
            decide(None, Some(OsStr::new("tcg")), never),
            (Accel::Tcg, "tcg: VMSHIM_ACCEL=tcg".into())
        );
        assert_eq!(
            decide(None, Some(OsStr::new("kvm")), never),
            (Accel::Kvm, "kvm: VMSHIM_ACCEL=kvm".into())
        );
        assert_eq!(decide(Some(Accel::Tcg), Some(OsStr::new("kvm")), never).0, Accel::Tcg);

        let unusable = || Err("KVM_RUN failed: Operation not supported".to_string());
        assert_eq!(
            decide(None, None, unusable),
            (Accel::Tcg, "tcg: KVM_RUN failed: Operation not supported".into())
        );
        assert_eq!(
            decide(None, None, || Ok(())),
            (Accel::Kvm, "kvm: /dev/kvm ran a probe guest".into())
        );
        let (accel, reason) = decide(None, Some(OsStr::new("hvf")), || Ok(()));
        assert_eq!(accel, Accel::Kvm);
        assert!(
            reason.ends_with("(VMSHIM_ACCEL=hvf ignored: expected kvm or tcg)"),
            "{reason}"
        );
    }

    #[test]
    fn without_a_request_the_probe_decides() {
        if std::env::var_os(ACCEL_ENV).is_some() {
            eprintln!("skipped: {ACCEL_ENV} is set");
            return;
        }
        let (accel, reason) = choose(None);
        eprintln!("choose(None) = {accel}, because {reason}");
        assert!(reason.starts_with(&format!("{accel}: ")), "{reason}");
        if !Path::new(KVM_DEVICE).exists() {
            assert_eq!(accel, Accel::Tcg);
        }
    }

    #[test]
    fn names_round_trip() {
        for accel in [Accel::Kvm, Accel::Tcg] {
            assert_eq!(accel.qemu_arg().parse::<Accel>(), Ok(accel));
            assert_eq!(accel.to_string(), accel.qemu_arg());
        }
        assert!("hvf".parse::<Accel>().is_err());
    }

    #[test]
    fn a_missing_device_is_no_device() {
        let path = Path::new("/nonexistent/kvm");
        let err = probe_device(path, PROBE_TIMEOUT).unwrap_err();
        assert!(matches!(&err, KvmUnusable::NoDevice(p) if p == path), "{err}");
    }

    #[test]
    fn the_probe_answers_within_three_seconds() {
        let started = Instant::now();
        let answer = probe_kvm();
        let elapsed = started.elapsed();
        eprintln!("probe_kvm: {answer:?} after {elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
        if !Path::new(KVM_DEVICE).exists() {
            assert!(matches!(answer, Err(KvmUnusable::NoDevice(_))));
        }
    }
}
