//! Seccomp filters (OCI `linux.seccomp`), compiled by hand to classic BPF.
//!
//! [`Filter::compile`] checks a [`Seccomp`] profile and turns it into a
//! BPF program in the agent, before fork; [`install`] loads it in the
//! forked child with `prctl(PR_SET_SECCOMP)`, one syscall.
//!
//! The program, over `struct seccomp_data` (`nr` at 0, `arch` at 4, the
//! six 64-bit `args` from 16, low half first):
//!
//! 1. the architecture must be `AUDIT_ARCH_X86_64`, and the number below
//!    the x32 bit (`0x40000000`), else the process is killed: only x86_64
//!    syscall numbers are compiled;
//! 2. for each rule, in order, and each of its syscalls: `nr == N`, then
//!    each argument condition on the two 32-bit halves of the argument,
//!    then the rule's action (a failed condition goes on to the next
//!    syscall, reloading `nr`);
//! 3. the default action.
//!
//! The first matching rule decides.

use agent_proto::{Seccomp, SeccompArg, SeccompRule};

use table::SYSCALLS;

mod table;

/// `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// `struct sock_fprog`.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const Insn,
}

pub(crate) const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
pub(crate) const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
pub(crate) const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
pub(crate) const RET_K: u16 = 0x06; // BPF_RET | BPF_K

pub(crate) const OFFSET_NR: u32 = 0;
pub(crate) const OFFSET_ARCH: u32 = 4;
pub(crate) const OFFSET_ARGS: u32 = 16;

pub(crate) const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `BPF_MAXINSNS`.
const MAX_INSNS: usize = 4096;
/// The most instructions one rule's argument conditions may take: a jump
/// offset is one byte, and a syscall's test jumps over the conditions, the
/// action and the reload of `nr`.
const MAX_CONDITION_INSNS: usize = u8::MAX as usize - 2;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0;
const RET_TRAP: u32 = 0x0003_0000;
pub(crate) const RET_ERRNO: u32 = 0x0005_0000;
const RET_LOG: u32 = 0x7ffc_0000;
pub(crate) const RET_ALLOW: u32 = 0x7fff_0000;

/// The largest errno (`MAX_ERRNO`).
const MAX_ERRNO: u32 = 4095;

/// The architectures a profile may name: the x86 family, as runc accepts
/// on x86_64.
const ARCHITECTURES: [&str; 3] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];

/// Why a profile is refused (`invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    /// An action seccomp does not have (or this agent does not compile).
    #[error("seccomp: unknown action {action:?} in {field}")]
    UnknownAction {
        /// The field: `defaultAction` or `syscalls[N].action`.
        field: String,
        /// As given.
        action: String,
    },
    /// An errno that does not fit `SECCOMP_RET_ERRNO`.
    #[error("seccomp: errno {errno} in {field} is above {MAX_ERRNO}")]
    Errno {
        /// The field.
        field: String,
        /// As given.
        errno: u32,
    },
    /// An architecture other than x86's.
    #[error("seccomp: unsupported architecture {arch:?} (only SCMP_ARCH_X86_64, SCMP_ARCH_X86 and SCMP_ARCH_X32)")]
    UnknownArchitecture {
        /// As given.
        arch: String,
    },
    /// A syscall name x86_64 does not have.
    #[error("seccomp: unknown x86_64 syscall {name:?} in syscalls[{rule}]")]
    UnknownSyscall {
        /// The rule's index.
        rule: usize,
        /// As given.
        name: String,
    },
    /// A rule without names.
    #[error("seccomp: syscalls[{rule}] names no syscall")]
    NoNames {
        /// The rule's index.
        rule: usize,
    },
    /// An argument comparison seccomp does not have.
    #[error("seccomp: unknown comparison {op:?} in syscalls[{rule}].args[{arg}]")]
    UnknownOp {
        /// The rule's index.
        rule: usize,
        /// The condition's index.
        arg: usize,
        /// As given.
        op: String,
    },
    /// An argument index above 5.
    #[error("seccomp: argument index {index} in syscalls[{rule}].args[{arg}] is above 5")]
    ArgIndex {
        /// The rule's index.
        rule: usize,
        /// The condition's index.
        arg: usize,
        /// As given.
        index: u32,
    },
    /// A program longer than the kernel takes.
    #[error("seccomp: the filter has {len} instructions, above the kernel's {MAX_INSNS}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// A rule whose conditions one jump cannot skip.
    #[error(
        "seccomp: the argument conditions of syscalls[{rule}] take {len} instructions, above the \
         {MAX_CONDITION_INSNS} one rule's jumps can span"
    )]
    TooManyConditions {
        /// The rule's index.
        rule: usize,
        /// Its conditions' length.
        len: usize,
    },
}

/// The number of an x86_64 syscall.
pub fn syscall_number(name: &str) -> Option<u32> {
    SYSCALLS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| SYSCALLS[i].1)
}

/// A compiled filter, ready for [`install`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub program: Vec<Insn>,
}

pub(crate) const fn stmt(code: u16, k: u32) -> Insn {
    Insn { code, jt: 0, jf: 0, k }
}

pub(crate) const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// The return value of an action.
fn action(field: String, name: &str, errno: Option<u32>) -> Result<u32, SeccompError> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => RET_ALLOW,
        "SCMP_ACT_ERRNO" => {
            let errno = errno.unwrap_or(libc::EPERM as u32);
            if errno > MAX_ERRNO {
                return Err(SeccompError::Errno { field, errno });
            }
            RET_ERRNO | errno
        }
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => RET_KILL_PROCESS,
        "SCMP_ACT_TRAP" => RET_TRAP,
        "SCMP_ACT_LOG" => RET_LOG,
        _ => {
            return Err(SeccompError::UnknownAction {
                field,
                action: name.to_owned(),
            })
        }
    })
}

/// A jump target inside one syscall's block: so many instructions ahead,
/// or the block's "condition failed" exit.
#[derive(Clone, Copy)]
enum To {
    Ahead(u8),
    Fail,
}

struct Cond {
    code: u16,
    k: u32,
    jt: To,
    jf: To,
}

fn load(k: u32) -> Cond {
    Cond {
        code: LD_W_ABS,
        k,
        jt: To::Ahead(0),
        jf: To::Ahead(0),
    }
}

fn cmp(code: u16, k: u32, jt: To, jf: To) -> Cond {
    Cond { code, k, jt, jf }
}

/// The instructions that fall through when argument condition `arg` holds
/// and jump to `Fail` when it does not.
fn condition(rule: usize, i: usize, arg: &SeccompArg) -> Result<Vec<Cond>, SeccompError> {
    if arg.index > 5 {
        return Err(SeccompError::ArgIndex {
            rule,
            arg: i,
            index: arg.index,
        });
    }
    let lo_at = OFFSET_ARGS + 8 * arg.index;
    let hi_at = lo_at + 4;
    let (hi, lo) = ((arg.value >> 32) as u32, arg.value as u32);
    use To::{Ahead, Fail};
    let next = Ahead(0);
    Ok(match arg.op.as_str() {
        "SCMP_CMP_EQ" => vec![
            load(hi_at),
            cmp(JEQ_K, hi, next, Fail),
            load(lo_at),
            cmp(JEQ_K, lo, next, Fail),
        ],
        // Holds unless both halves are equal.
        "SCMP_CMP_NE" => vec![
            load(hi_at),
            cmp(JEQ_K, hi, next, Ahead(2)),
            load(lo_at),
            cmp(JEQ_K, lo, Fail, next),
        ],
        // High half greater: holds; smaller: fails; equal: the low half decides.
        "SCMP_CMP_GT" | "SCMP_CMP_GE" => {
            let last = if arg.op == "SCMP_CMP_GT" { JGT_K } else { JGE_K };
            vec![
                load(hi_at),
                cmp(JGT_K, hi, Ahead(3), next),
                cmp(JEQ_K, hi, next, Fail),
                load(lo_at),
                cmp(last, lo, next, Fail),
            ]
        }
        // High half greater: fails; smaller: holds; equal: the low half decides.
        "SCMP_CMP_LT" | "SCMP_CMP_LE" => {
            let (last, jt, jf) = if arg.op == "SCMP_CMP_LT" {
                (JGE_K, Fail, next)
            } else {
                (JGT_K, Fail, next)
            };
            vec![
                load(hi_at),
                cmp(JGT_K, hi, Fail, next),
                cmp(JEQ_K, hi, next, Ahead(2)),
                load(lo_at),
                cmp(last, lo, jt, jf),
            ]
        }
        "SCMP_CMP_MASKED_EQ" => {
            let (whi, wlo) = ((arg.value_two >> 32) as u32, arg.value_two as u32);
            vec![
                load(hi_at),
                cmp(AND_K, hi, next, next),
                cmp(JEQ_K, whi, next, Fail),
                load(lo_at),
                cmp(AND_K, lo, next, next),
                cmp(JEQ_K, wlo, next, Fail),
            ]
        }
        op => {
            return Err(SeccompError::UnknownOp {
                rule,
                arg: i,
                op: op.to_owned(),
            })
        }
    })
}

impl Filter {
    /// Checks `profile` and compiles it.
    pub fn compile(profile: &Seccomp) -> Result<Filter, SeccompError> {
        for arch in &profile.architectures {
            if !ARCHITECTURES.contains(&arch.as_str()) {
                return Err(SeccompError::UnknownArchitecture { arch: arch.clone() });
            }
        }
        let default = action(
            "default_action".into(),
            &profile.default_action,
            profile.default_errno_ret,
        )?;
        let mut program = vec![
            stmt(LD_W_ABS, OFFSET_ARCH),
            jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
            stmt(RET_K, RET_KILL_PROCESS),
            stmt(LD_W_ABS, OFFSET_NR),
            jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
            stmt(RET_K, RET_KILL_PROCESS),
        ];
        for (r, rule) in profile.syscalls.iter().enumerate() {
            program.extend(compile_rule(r, rule)?);
            if program.len() > MAX_INSNS {
                return Err(SeccompError::TooLong { len: program.len() });
            }
        }
        program.push(stmt(RET_K, default));
        if program.len() > MAX_INSNS {
            return Err(SeccompError::TooLong { len: program.len() });
        }
        Ok(Filter { program })
    }
}

/// One rule: a block per syscall, entered with `nr` in the accumulator and
/// left with it there.
fn compile_rule(r: usize, rule: &SeccompRule) -> Result<Vec<Insn>, SeccompError> {
    if rule.names.is_empty() {
        return Err(SeccompError::NoNames { rule: r });
    }
    let ret = action(format!("syscalls[{r}].action"), &rule.action, rule.errno_ret)?;
    let mut conds = Vec::new();
    for (i, arg) in rule.args.iter().enumerate() {
        conds.extend(condition(r, i, arg)?);
    }
    let too_many = || SeccompError::TooManyConditions {
        rule: r,
        len: conds.len(),
    };
    if conds.len() > MAX_CONDITION_INSNS {
        return Err(too_many());
    }
    let mut out = Vec::new();
    for name in &rule.names {
        let nr = syscall_number(name).ok_or_else(|| SeccompError::UnknownSyscall {
            rule: r,
            name: name.clone(),
        })?;
        if conds.is_empty() {
            out.push(jump(JEQ_K, nr, 0, 1));
            out.push(stmt(RET_K, ret));
            continue;
        }
        // nr == N, the conditions, the action; on a failed condition, reload nr.
        let fail = conds.len() + 1; // index of the reload, counted from the first condition
        let skip = u8::try_from(fail + 1).map_err(|_| too_many())?;
        out.push(jump(JEQ_K, nr, 0, skip));
        for (i, c) in conds.iter().enumerate() {
            let resolve = |to: To| -> Result<u8, SeccompError> {
                match to {
                    To::Ahead(n) => Ok(n),
                    To::Fail => u8::try_from(fail - i - 1).map_err(|_| too_many()),
                }
            };
            let (jt, jf) = if c.code == LD_W_ABS || c.code == AND_K {
                (0, 0)
            } else {
                (resolve(c.jt)?, resolve(c.jf)?)
            };
            out.push(Insn {
                code: c.code,
                jt,
                jf,
                k: c.k,
            });
        }
        out.push(stmt(RET_K, ret));
        out.push(stmt(LD_W_ABS, OFFSET_NR));
    }
    Ok(out)
}

/// Installs `filter` on the calling thread.
///
/// # Safety
/// Async-signal-safe (one syscall); for the forked child. Without
/// `no_new_privs` the caller needs `CAP_SYS_ADMIN`.
pub unsafe fn install(filter: &Filter) -> Result<(), ()> {
    // SAFETY: the caller's contract is install_program's.
    unsafe { install_program(&filter.program) }
}

/// Installs a classic BPF `program` on the calling thread.
///
/// # Safety
/// As [`install`].
pub unsafe fn install_program(program: &[Insn]) -> Result<(), ()> {
    let prog = SockFprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points at a valid program that outlives the call.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const SockFprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(names: &[&str], action: &str, args: Vec<SeccompArg>) -> SeccompRule {
        SeccompRule {
            names: names.iter().map(|s| s.to_string()).collect(),
            action: action.into(),
            errno_ret: None,
            args,
        }
    }

    #[test]
    fn the_table_is_sorted_and_complete() {
        assert!(SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("mkdir"), Some(libc::SYS_mkdir as u32));
        assert_eq!(syscall_number("personality"), Some(libc::SYS_personality as u32));
        assert_eq!(syscall_number("clone3"), Some(435));
        assert_eq!(syscall_number("nope"), None);
        let mut numbers: Vec<u32> = SYSCALLS.iter().map(|s| s.1).collect();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), SYSCALLS.len());
    }

    #[test]
    fn a_small_profile_compiles_to_the_expected_program() {
        let profile = Seccomp {
            default_action: "SCMP_ACT_ALLOW".into(),
            architectures: vec!["SCMP_ARCH_X86_64".into(), "SCMP_ARCH_X86".into()],
            syscalls: vec![SeccompRule {
                errno_ret: Some(1),
                ..rule(&["mkdir", "mkdirat"], "SCMP_ACT_ERRNO", vec![])
            }],
            ..Default::default()
        };
        let f = Filter::compile(&profile).unwrap();
        assert_eq!(
            f.program,
            vec![
                stmt(LD_W_ABS, 4),
                jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
                stmt(RET_K, RET_KILL_PROCESS),
                stmt(LD_W_ABS, 0),
                jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
                stmt(RET_K, RET_KILL_PROCESS),
                jump(JEQ_K, 83, 0, 1),
                stmt(RET_K, RET_ERRNO | 1),
                jump(JEQ_K, 258, 0, 1),
                stmt(RET_K, RET_ERRNO | 1),
                stmt(RET_K, RET_ALLOW),
            ]
        );
    }

    #[test]
    fn argument_conditions_jump_to_the_reload() {
        let arg = |op: &str| SeccompArg {
            index: 0,
            value: 0xffff_ffff,
            value_two: 0,
            op: op.into(),
        };
        let profile = Seccomp {
            default_action: "SCMP_ACT_ERRNO".into(),
            syscalls: vec![rule(&["personality"], "SCMP_ACT_ALLOW", vec![arg("SCMP_CMP_EQ")])],
            ..Default::default()
        };
        let p = Filter::compile(&profile).unwrap().program;
        assert_eq!(
            p[6..],
            [
                jump(JEQ_K, 135, 0, 6),
                stmt(LD_W_ABS, 20),
                jump(JEQ_K, 0, 0, 3),
                stmt(LD_W_ABS, 16),
                jump(JEQ_K, 0xffff_ffff, 0, 1),
                stmt(RET_K, RET_ALLOW),
                stmt(LD_W_ABS, 0),
                stmt(RET_K, RET_ERRNO | 1),
            ]
        );
        for op in [
            "SCMP_CMP_NE",
            "SCMP_CMP_LT",
            "SCMP_CMP_LE",
            "SCMP_CMP_GT",
            "SCMP_CMP_GE",
            "SCMP_CMP_MASKED_EQ",
        ] {
            let mut profile = profile.clone();
            profile.syscalls[0].args = vec![arg(op), SeccompArg { index: 5, ..arg(op) }];
            let p = Filter::compile(&profile).unwrap().program;
            // Every jump stays inside the program and lands on an instruction.
            for (i, insn) in p.iter().enumerate() {
                if insn.code & 0x07 == 0x05 {
                    assert!(i + 1 + (insn.jt.max(insn.jf) as usize) < p.len(), "{op}: {i}");
                }
            }
            assert_eq!(p[p.len() - 2], stmt(LD_W_ABS, 0), "{op}");
        }
    }

    /// Runs the program over one `seccomp_data` in a tiny interpreter.
    fn run(p: &[Insn], nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&AUDIT_ARCH_X86_64.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let insn = p[pc];
            pc += 1;
            match insn.code {
                LD_W_ABS => {
                    let k = insn.k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                AND_K => acc &= insn.k,
                RET_K => return insn.k,
                JEQ_K | JGT_K | JGE_K => {
                    let taken = match insn.code {
                        JEQ_K => acc == insn.k,
                        JGT_K => acc > insn.k,
                        _ => acc >= insn.k,
                    };
                    pc += if taken { insn.jt } else { insn.jf } as usize;
                }
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn comparisons_on_64_bit_arguments() {
        let values = [0u64, 1, 0xffff_ffff, 0x1_0000_0000, 0x1_0000_0001, u64::MAX];
        for op in ["EQ", "NE", "LT", "LE", "GT", "GE", "MASKED_EQ"] {
            for &v in &values {
                let profile = Seccomp {
                    default_action: "SCMP_ACT_ERRNO".into(),
                    syscalls: vec![rule(
                        &["personality"],
                        "SCMP_ACT_ALLOW",
                        vec![SeccompArg {
                            index: 2,
                            value: v,
                            value_two: v & 0x1_0000_0001,
                            op: format!("SCMP_CMP_{op}"),
                        }],
                    )],
                    ..Default::default()
                };
                let p = Filter::compile(&profile).unwrap().program;
                for &a in &values {
                    let expected = match op {
                        "EQ" => a == v,
                        "NE" => a != v,
                        "LT" => a < v,
                        "LE" => a <= v,
                        "GT" => a > v,
                        "GE" => a >= v,
                        _ => a & v == v & 0x1_0000_0001,
                    };
                    let got = run(&p, 135, [0, 0, a, 0, 0, 0]) == RET_ALLOW;
                    assert_eq!(got, expected, "{a:#x} {op} {v:#x}");
                }
                assert_eq!(run(&p, 83, [0; 6]), RET_ERRNO | 1);
            }
        }
    }

    #[test]
    fn bad_profiles_name_the_value() {
        let base = Seccomp {
            default_action: "SCMP_ACT_ALLOW".into(),
            ..Default::default()
        };
        let e = Filter::compile(&Seccomp {
            default_action: "SCMP_ACT_NOPE".into(),
            ..base.clone()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "seccomp: unknown action \"SCMP_ACT_NOPE\" in default_action"
        );
        let e = Filter::compile(&Seccomp {
            syscalls: vec![rule(&["read", "no_such_call"], "SCMP_ACT_ERRNO", vec![])],
            ..base.clone()
        })
        .unwrap_err();
        assert!(e.to_string().contains("\"no_such_call\""), "{e}");
        let e = Filter::compile(&Seccomp {
            architectures: vec!["SCMP_ARCH_AARCH64".into()],
            ..base.clone()
        })
        .unwrap_err();
        assert!(e.to_string().contains("SCMP_ARCH_AARCH64"), "{e}");
        let e = Filter::compile(&Seccomp {
            syscalls: vec![rule(
                &["read"],
                "SCMP_ACT_ALLOW",
                vec![SeccompArg {
                    index: 6,
                    value: 0,
                    value_two: 0,
                    op: "SCMP_CMP_EQ".into(),
                }],
            )],
            ..base
        })
        .unwrap_err();
        assert!(e.to_string().contains("index 6"), "{e}");
    }
}

#[cfg(test)]
pub(crate) mod prop_tests;
