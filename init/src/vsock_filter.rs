//! The seccomp filter that keeps the agent's processes off vsock.
//!
//! vsock is how the host talks to the agent, and, with the kernel's
//! vhost-vsock, a guest can connect to any vsock service of its host. The
//! agent itself refuses every peer but the host, and the guest kernel has
//! no loopback transport; this filter is the third layer: a process the
//! agent starts cannot even open an `AF_VSOCK` socket unless its spec allows
//! it ([`agent_proto::ProcessSpec::allow_vsock`], or a container's
//! [`agent_proto::VSOCK_ANNOTATION`]). `socket(AF_VSOCK, ..)` fails with
//! `EPERM`, as under Docker's default profile; every other call passes.
//!
//! It is installed between fork and exec, while the child is still
//! privileged (seccomp without `no_new_privs` needs `CAP_SYS_ADMIN`), and
//! stacks with the spec's own filter: the stricter answer wins. The guest
//! kernel has neither the i386 nor the x32 ABI; a call through another
//! architecture, or an x32 number, fails with `EPERM` too, so there is no way
//! around the check.

/// `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// `struct sock_fprog`.
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const DENY: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;

/// Offsets in `struct seccomp_data`: nr, arch, args[0] (low half on x86_64).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0: u32 = 16;

const fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter { code, jt: 0, jf: 0, k }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// The program; jumps count the instructions skipped.
static PROGRAM: [SockFilter; 10] = [
    /* 0 */ stmt(BPF_LD_W_ABS, OFF_ARCH),
    /* 1 */ jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
    /* 2 */ stmt(BPF_RET_K, DENY),
    /* 3 */ stmt(BPF_LD_W_ABS, OFF_NR),
    /* 4 */ jump(BPF_JGE_K, X32_SYSCALL_BIT, 3, 0),
    /* 5 */ jump(BPF_JEQ_K, libc::SYS_socket as u32, 0, 3),
    /* 6 */ stmt(BPF_LD_W_ABS, OFF_ARG0),
    /* 7 */ jump(BPF_JEQ_K, libc::AF_VSOCK as u32, 0, 1),
    /* 8 */ stmt(BPF_RET_K, DENY),
    /* 9 */ stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
];

/// Installs the filter on the calling thread (and what it execs).
/// Async-signal-safe: for the child between fork and exec.
///
/// # Safety
/// Plain system calls on a static program; the caller must hold
/// `CAP_SYS_ADMIN` in its user namespace or have set `no_new_privs`.
pub unsafe fn install() -> Result<(), ()> {
    let prog = SockFprog {
        len: PROGRAM.len() as u16,
        filter: PROGRAM.as_ptr(),
    };
    // SAFETY: a valid sock_fprog pointing at a static program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const SockFprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(())
    }
}

/// Runs [`PROGRAM`] on one `seccomp_data` (for the tests): a classic BPF
/// interpreter for the few instructions it uses.
#[cfg(test)]
fn run(arch: u32, nr: u32, arg0: u64) -> u32 {
    let word = |off: u32| match off {
        OFF_NR => nr,
        OFF_ARCH => arch,
        OFF_ARG0 => arg0 as u32,
        _ => panic!("load at {off}"),
    };
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let insn = PROGRAM[pc];
        pc += 1;
        match insn.code {
            BPF_LD_W_ABS => acc = word(insn.k),
            BPF_RET_K => return insn.k,
            BPF_JEQ_K | BPF_JGE_K => {
                let taken = if insn.code == BPF_JEQ_K { acc == insn.k } else { acc >= insn.k };
                pc += if taken { insn.jt } else { insn.jf } as usize;
            }
            code => panic!("opcode {code:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vsock_sockets_and_foreign_abis_are_refused() {
        let socket = libc::SYS_socket as u32;
        let vsock = libc::AF_VSOCK as u64;
        assert_eq!(run(AUDIT_ARCH_X86_64, socket, vsock), DENY);
        // The high half of the argument is ignored by the kernel's int.
        assert_eq!(run(AUDIT_ARCH_X86_64, socket, vsock | 1 << 40), DENY);
        for family in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK] {
            assert_eq!(run(AUDIT_ARCH_X86_64, socket, family as u64), SECCOMP_RET_ALLOW);
        }
        // Another call with AF_VSOCK's number as its first argument.
        assert_eq!(
            run(AUDIT_ARCH_X86_64, libc::SYS_write as u32, vsock),
            SECCOMP_RET_ALLOW
        );
        // x32 numbers and other architectures.
        assert_eq!(run(AUDIT_ARCH_X86_64, socket | X32_SYSCALL_BIT, vsock), DENY);
        assert_eq!(run(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, 0), DENY);
        assert_eq!(run(0x4000_0003, 359, vsock), DENY); // i386 socket
    }

    #[test]
    fn installed_in_a_child_it_refuses_vsock_and_allows_the_rest() {
        // SAFETY: the child only makes raw system calls, then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: in the forked child; prctl and socket take no pointers.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if install().is_err() {
                    libc::_exit(10);
                }
                let v = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0);
                if v >= 0 || *libc::__errno_location() != libc::EPERM {
                    libc::_exit(11);
                }
                if libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) < 0 {
                    libc::_exit(12);
                }
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "{status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
