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

use super::seccomp::{
    install_program, jump, stmt, Insn, AUDIT_ARCH_X86_64, JEQ_K, JGE_K, LD_W_ABS, OFFSET_ARCH, OFFSET_ARGS, OFFSET_NR,
    RET_ALLOW, RET_ERRNO, RET_K, X32_SYSCALL_BIT,
};

/// The answer to what the filter refuses.
const DENY: u32 = RET_ERRNO | libc::EPERM as u32;

/// The program; jumps count the instructions skipped.
static PROGRAM: [Insn; 10] = [
    /* 0 */ stmt(LD_W_ABS, OFFSET_ARCH),
    /* 1 */ jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
    /* 2 */ stmt(RET_K, DENY),
    /* 3 */ stmt(LD_W_ABS, OFFSET_NR),
    /* 4 */ jump(JGE_K, X32_SYSCALL_BIT, 3, 0),
    /* 5 */ jump(JEQ_K, libc::SYS_socket as u32, 0, 3),
    // args[0], its low half: the kernel reads the family as an int.
    /* 6 */ stmt(LD_W_ABS, OFFSET_ARGS),
    /* 7 */ jump(JEQ_K, libc::AF_VSOCK as u32, 0, 1),
    /* 8 */ stmt(RET_K, DENY),
    /* 9 */ stmt(RET_K, RET_ALLOW),
];

/// Installs the filter on the calling thread (and what it execs).
/// Async-signal-safe: for the child between fork and exec.
///
/// # Safety
/// One system call on a static program; the caller must hold
/// `CAP_SYS_ADMIN` in its user namespace or have set `no_new_privs`.
pub unsafe fn install() -> Result<(), ()> {
    // SAFETY: the caller's contract is install_program's.
    unsafe { install_program(&PROGRAM) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::seccomp::prop_tests::{interpret, verify, Data};

    fn run(arch: u32, nr: u32, arg0: u64) -> u32 {
        let mut args = [0; 6];
        args[0] = arg0;
        let data = Data {
            arch,
            nr,
            args,
            ..Default::default()
        };
        interpret(&PROGRAM, &data).expect("the program runs")
    }

    #[test]
    fn only_vsock_sockets_and_foreign_abis_are_refused() {
        verify(&PROGRAM).expect("a program the kernel takes");
        let socket = libc::SYS_socket as u32;
        let vsock = libc::AF_VSOCK as u64;
        assert_eq!(run(AUDIT_ARCH_X86_64, socket, vsock), DENY);
        // The high half of the argument is ignored by the kernel's int.
        assert_eq!(run(AUDIT_ARCH_X86_64, socket, vsock | 1 << 40), DENY);
        for family in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK] {
            assert_eq!(run(AUDIT_ARCH_X86_64, socket, family as u64), RET_ALLOW);
        }
        // Another call with AF_VSOCK's number as its first argument.
        assert_eq!(run(AUDIT_ARCH_X86_64, libc::SYS_write as u32, vsock), RET_ALLOW);
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
