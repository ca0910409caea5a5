//! Seccomp filters (OCI `linux.seccomp`), compiled by hand to classic BPF.
//!
//! [`Filter::compile`] checks a [`Seccomp`] profile and turns it into a
//! BPF program in the agent, before fork; [`install`] loads it in the
//! forked child with `prctl(PR_SET_SECCOMP)`, one syscall.
//!
//! What a profile means is what runc 1.1 (with libseccomp 2.5) makes of
//! it on x86_64 (`libcontainer/seccomp/seccomp_linux.go`, `matchCall`):
//!
//! - a rule is one rule per name; a rule that names nothing is no rule;
//! - a rule whose action (with its errno) is the default action is
//!   skipped: libseccomp refuses it, and it could decide nothing;
//! - a name x86_64 has no number for is skipped, and so are its rule's
//!   arguments: runc asks libseccomp for the name's number, and on an
//!   error logs `unknown seccomp syscall "NAME" ignored` at debug level and
//!   goes on. That covers another architecture's syscalls (Docker's and
//!   podman's default profiles list `chown32`, `_llseek`, `socketcall`,
//!   ...) and a name in no table at all, a typo included: a misspelt name
//!   in a deny rule denies nothing, under runc as here. Only the empty name
//!   is refused, as runc refuses it;
//! - for one syscall, a rule without argument conditions decides whatever
//!   the order of the rules (libseccomp replaces the syscall's conditional
//!   rules with it), the first such rule if there are several; else the
//!   first rule whose conditions hold. (Where conditional rules overlap with
//!   different actions, libseccomp orders them in its own tree, and
//!   refuses two with the same conditions; vminitd takes the first.)
//! - `errnoRet` is taken as libseccomp encodes it, its low 16 bits, and an
//!   errno above 4095 is refused, as libseccomp refuses it.
//!
//! The program, over `struct seccomp_data` (`nr` at 0, `arch` at 4, the
//! six 64-bit `args` from 16, low half first):
//!
//! 1. the architecture must be `AUDIT_ARCH_X86_64`, and the number below
//!    the x32 bit (`0x40000000`), else the process is killed: only x86_64
//!    syscall numbers are compiled (the guest kernel has neither the i386
//!    nor the x32 ABI; the other architectures a profile may name are
//!    never a guest's);
//! 2. for each rule left, in order, and each of its syscalls: `nr == N`,
//!    then each argument condition on the two 32-bit halves of the
//!    argument, then the rule's action (a failed condition goes on to the
//!    next syscall, reloading `nr`);
//! 3. the default action.

use std::collections::BTreeMap;

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
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
pub(crate) const RET_ALLOW: u32 = 0x7fff_0000;

/// The largest errno (`MAX_ERRNO`).
const MAX_ERRNO: u32 = 4095;

/// The architectures a profile may name: those runc 1.1 knows (its
/// `runc features`, libseccomp's names). Only x86_64's syscalls are
/// compiled: the guest kernel has no other ABI.
const ARCHITECTURES: [&str; 16] = [
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
];

/// The argument comparisons seccomp has.
const OPERATORS: [&str; 7] = [
    "SCMP_CMP_EQ",
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_GT",
    "SCMP_CMP_GE",
    "SCMP_CMP_MASKED_EQ",
];

/// Why a profile is refused (`invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    /// An action seccomp does not have.
    #[error("seccomp: unknown action {action:?} in {field}")]
    UnknownAction {
        /// The field: `defaultAction` or `syscalls[N].action`.
        field: String,
        /// As given.
        action: String,
    },
    /// `SCMP_ACT_NOTIFY`: it hands the syscall to a seccomp agent over a
    /// listener socket, and vminitd has none.
    #[error("seccomp: SCMP_ACT_NOTIFY in {field}: vminitd has no seccomp agent to notify")]
    Notify {
        /// The field.
        field: String,
    },
    /// An errno that does not fit `SECCOMP_RET_ERRNO`.
    #[error("seccomp: errno {errno} in {field} is above {MAX_ERRNO}")]
    Errno {
        /// The field.
        field: String,
        /// As given.
        errno: u32,
    },
    /// An architecture runc does not know.
    #[error("seccomp: unknown architecture {arch:?}")]
    UnknownArchitecture {
        /// As given.
        arch: String,
    },
    /// An empty syscall name.
    #[error("seccomp: syscalls[{rule}] names the empty string, not a syscall")]
    EmptyName {
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

/// The return value of an action, its errno (`EPERM` when not given) in
/// the low 16 bits as libseccomp encodes `SCMP_ACT_ERRNO(x)` and
/// `SCMP_ACT_TRACE(x)`; `None` for `SCMP_ACT_NOTIFY`.
fn action(field: &str, name: &str, errno: Option<u32>) -> Result<Option<u32>, SeccompError> {
    let data = || errno.unwrap_or(libc::EPERM as u32) & 0xffff;
    Ok(Some(match name {
        "SCMP_ACT_ALLOW" => RET_ALLOW,
        "SCMP_ACT_ERRNO" => RET_ERRNO | data(),
        "SCMP_ACT_TRACE" => RET_TRACE | data(),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => RET_KILL_PROCESS,
        "SCMP_ACT_TRAP" => RET_TRAP,
        "SCMP_ACT_LOG" => RET_LOG,
        "SCMP_ACT_NOTIFY" => return Ok(None),
        _ => {
            return Err(SeccompError::UnknownAction {
                field: field.to_owned(),
                action: name.to_owned(),
            })
        }
    }))
}

/// `ret` of [`action`], refused where libseccomp refuses it: notify, or an
/// errno above `MAX_ERRNO`. `errno` is the one the profile gave.
fn usable(field: &str, ret: Option<u32>, errno: Option<u32>) -> Result<u32, SeccompError> {
    let field = field.to_owned();
    match ret {
        None => Err(SeccompError::Notify { field }),
        Some(ret) if ret & 0xffff_0000 == RET_ERRNO && ret & 0xffff > MAX_ERRNO => Err(SeccompError::Errno {
            field,
            errno: errno.unwrap_or_default(),
        }),
        Some(ret) => Ok(ret),
    }
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
        let field = "default_action";
        let errno = profile.default_errno_ret;
        let default = usable(field, action(field, &profile.default_action, errno)?, errno)?;
        let mut rules = Vec::new();
        for (r, rule) in profile.syscalls.iter().enumerate() {
            rules.extend(check_rule(r, rule, default)?);
        }
        // For each syscall, the first rule without conditions: it alone
        // decides that syscall.
        let mut decides: BTreeMap<u32, usize> = BTreeMap::new();
        for (i, rule) in rules.iter().enumerate() {
            if rule.conds.is_empty() {
                for &nr in &rule.numbers {
                    decides.entry(nr).or_insert(i);
                }
            }
        }
        let mut program = vec![
            stmt(LD_W_ABS, OFFSET_ARCH),
            jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
            stmt(RET_K, RET_KILL_PROCESS),
            stmt(LD_W_ABS, OFFSET_NR),
            jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
            stmt(RET_K, RET_KILL_PROCESS),
        ];
        for (i, rule) in rules.iter().enumerate() {
            for &nr in &rule.numbers {
                if decides.get(&nr).is_none_or(|&d| d == i) {
                    program.extend(compile_syscall(rule, nr)?);
                }
            }
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

/// A rule that decides something, checked: its index, its action's
/// return value, the numbers of its x86_64 names, its conditions.
struct Checked {
    index: usize,
    ret: u32,
    numbers: Vec<u32>,
    conds: Vec<Cond>,
}

/// Checks rule `r` in runc's order: its action, and where it names
/// anything, its comparisons and names; then leaves it out where it can
/// decide nothing (its action is `default`, or x86_64 has none of its
/// syscalls), or checks what libseccomp would check of it: its errno, its
/// argument indexes, and here the size of its conditions.
fn check_rule(r: usize, rule: &SeccompRule, default: u32) -> Result<Option<Checked>, SeccompError> {
    let field = format!("syscalls[{r}].action");
    let ret = action(&field, &rule.action, rule.errno_ret)?;
    if rule.names.is_empty() {
        return Ok(None);
    }
    for (i, arg) in rule.args.iter().enumerate() {
        if !OPERATORS.contains(&arg.op.as_str()) {
            return Err(SeccompError::UnknownOp {
                rule: r,
                arg: i,
                op: arg.op.clone(),
            });
        }
    }
    if rule.names.iter().any(String::is_empty) {
        return Err(SeccompError::EmptyName { rule: r });
    }
    if ret == Some(default) {
        return Ok(None);
    }
    let numbers: Vec<u32> = rule.names.iter().filter_map(|n| syscall_number(n)).collect();
    if numbers.is_empty() {
        return Ok(None);
    }
    let ret = usable(&field, ret, rule.errno_ret)?;
    let mut conds = Vec::new();
    for (i, arg) in rule.args.iter().enumerate() {
        conds.extend(condition(r, i, arg)?);
    }
    if conds.len() > MAX_CONDITION_INSNS {
        return Err(SeccompError::TooManyConditions {
            rule: r,
            len: conds.len(),
        });
    }
    Ok(Some(Checked {
        index: r,
        ret,
        numbers,
        conds,
    }))
}

/// One syscall `nr` of a checked rule: a block entered with `nr` in the
/// accumulator and left with it there.
fn compile_syscall(rule: &Checked, nr: u32) -> Result<Vec<Insn>, SeccompError> {
    let conds = &rule.conds;
    let too_many = || SeccompError::TooManyConditions {
        rule: rule.index,
        len: conds.len(),
    };
    if conds.is_empty() {
        return Ok(vec![jump(JEQ_K, nr, 0, 1), stmt(RET_K, rule.ret)]);
    }
    // nr == N, the conditions, the action; on a failed condition, reload nr.
    let fail = conds.len() + 1; // index of the reload, counted from the first condition
    let skip = u8::try_from(fail + 1).map_err(|_| too_many())?;
    let mut out = vec![jump(JEQ_K, nr, 0, skip)];
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
    out.push(stmt(RET_K, rule.ret));
    out.push(stmt(LD_W_ABS, OFFSET_NR));
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
            syscalls: vec![rule(&["read", ""], "SCMP_ACT_ERRNO", vec![])],
            ..base.clone()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "seccomp: syscalls[0] names the empty string, not a syscall"
        );
        // runc 1.1 knows no RISC-V; it knows AArch64, which is not refused.
        let e = Filter::compile(&Seccomp {
            architectures: vec!["SCMP_ARCH_RISCV64".into()],
            ..base.clone()
        })
        .unwrap_err();
        assert!(e.to_string().contains("SCMP_ARCH_RISCV64"), "{e}");
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
            default_action: "SCMP_ACT_ERRNO".into(),
            ..base.clone()
        })
        .unwrap_err();
        assert!(e.to_string().contains("index 6"), "{e}");
        let e = Filter::compile(&Seccomp {
            syscalls: vec![rule(&["mkdir"], "SCMP_ACT_NOTIFY", vec![])],
            ..base.clone()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "seccomp: SCMP_ACT_NOTIFY in syscalls[0].action: vminitd has no seccomp agent to notify"
        );
        let e = Filter::compile(&Seccomp {
            syscalls: vec![SeccompRule {
                errno_ret: Some(5000),
                ..rule(&["mkdir"], "SCMP_ACT_ERRNO", vec![])
            }],
            ..base
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "seccomp: errno 5000 in syscalls[0].action is above 4095");
    }

    /// The names x86_64 has no number for (Docker's and podman's default
    /// profiles list i386's; a typo is in no table) are skipped, as runc
    /// skips them, and the rest of the rule still holds.
    #[test]
    fn names_x86_64_lacks_are_skipped_and_the_rest_enforced() {
        let profile = Seccomp {
            default_action: "SCMP_ACT_ALLOW".into(),
            architectures: vec![
                "SCMP_ARCH_X86_64".into(),
                "SCMP_ARCH_X86".into(),
                "SCMP_ARCH_X32".into(),
            ],
            syscalls: vec![rule(
                &[
                    "chown32",
                    "_llseek",
                    "mkdri",
                    "mkdir",
                    "socketcall",
                    "umount",
                    "mkdirat",
                ],
                "SCMP_ACT_ERRNO",
                vec![],
            )],
            ..Default::default()
        };
        let p = Filter::compile(&profile).unwrap().program;
        assert_eq!(
            p[6..],
            [
                jump(JEQ_K, 83, 0, 1),
                stmt(RET_K, RET_ERRNO | 1),
                jump(JEQ_K, 258, 0, 1),
                stmt(RET_K, RET_ERRNO | 1),
                stmt(RET_K, RET_ALLOW),
            ]
        );
        // A rule of unknown names alone is no rule, whatever else it says;
        // so is a rule without names.
        let profile = Seccomp {
            syscalls: vec![
                SeccompRule {
                    errno_ret: Some(9999),
                    ..rule(&["chown32"], "SCMP_ACT_ERRNO", vec![])
                },
                rule(&[], "SCMP_ACT_KILL", vec![]),
            ],
            ..profile
        };
        assert_eq!(Filter::compile(&profile).unwrap().program.len(), 7);
    }

    /// runc leaves out a rule whose action is the default one (libseccomp
    /// refuses it): it cannot shadow a later rule. KILL is KILL_THREAD, and
    /// ERRNO without errnoRet is EPERM, in that comparison too.
    #[test]
    fn a_rule_with_the_default_action_decides_nothing() {
        let profile = Seccomp {
            default_action: "SCMP_ACT_ALLOW".into(),
            syscalls: vec![
                rule(&["mkdir"], "SCMP_ACT_ALLOW", vec![]),
                rule(&["mkdir"], "SCMP_ACT_ERRNO", vec![]),
            ],
            ..Default::default()
        };
        let p = Filter::compile(&profile).unwrap().program;
        assert_eq!(run(&p, 83, [0; 6]), RET_ERRNO | 1);
        let profile = Seccomp {
            default_action: "SCMP_ACT_ERRNO".into(),
            default_errno_ret: Some(1),
            syscalls: vec![
                rule(&["mkdir"], "SCMP_ACT_ERRNO", vec![]),
                rule(&["mkdir", "read"], "SCMP_ACT_ALLOW", vec![]),
                rule(&["read"], "SCMP_ACT_KILL", vec![]),
            ],
            ..Default::default()
        };
        let p = Filter::compile(&profile).unwrap().program;
        assert_eq!((run(&p, 83, [0; 6]), run(&p, 0, [0; 6])), (RET_ALLOW, RET_ALLOW));
        let kill = Seccomp {
            default_action: "SCMP_ACT_KILL".into(),
            syscalls: vec![rule(&["mkdir"], "SCMP_ACT_KILL_THREAD", vec![])],
            ..Default::default()
        };
        assert_eq!(Filter::compile(&kill).unwrap().program.len(), 7);
    }

    /// For one syscall, a rule without conditions decides whatever comes
    /// before it; the first such rule, whatever comes after (libseccomp's
    /// order, as runc 1.1 showed it on this project's host).
    #[test]
    fn a_rule_without_conditions_decides_its_syscalls() {
        let mode = |op: &str| SeccompArg {
            index: 1,
            value: 0o777,
            value_two: 0,
            op: op.into(),
        };
        let errno = |n, names: &[&str], args| SeccompRule {
            errno_ret: Some(n),
            ..rule(names, "SCMP_ACT_ERRNO", args)
        };
        let answer = |rules: Vec<SeccompRule>| {
            let profile = Seccomp {
                default_action: "SCMP_ACT_ALLOW".into(),
                syscalls: rules,
                ..Default::default()
            };
            let p = Filter::compile(&profile).unwrap().program;
            run(&p, 83, [0, 0o777, 0, 0, 0, 0]) & 0xffff
        };
        // Conditional first, then unconditional: the unconditional one.
        assert_eq!(
            answer(vec![
                errno(13, &["mkdir"], vec![mode("SCMP_CMP_EQ")]),
                errno(1, &["mkdir"], vec![])
            ]),
            1
        );
        // The other way round.
        assert_eq!(
            answer(vec![
                errno(1, &["mkdir"], vec![]),
                errno(13, &["mkdir"], vec![mode("SCMP_CMP_EQ")])
            ]),
            1
        );
        // Two unconditional ones: the first.
        assert_eq!(
            answer(vec![errno(13, &["mkdir"], vec![]), errno(1, &["mkdir"], vec![])]),
            13
        );
        // Conditional ones: the first that holds.
        assert_eq!(
            answer(vec![
                errno(13, &["mkdir"], vec![mode("SCMP_CMP_NE")]),
                errno(1, &["mkdir"], vec![mode("SCMP_CMP_EQ")])
            ]),
            1
        );
        // Only the syscall the later rule names loses its earlier rule.
        let profile = Seccomp {
            default_action: "SCMP_ACT_ALLOW".into(),
            syscalls: vec![
                errno(13, &["mkdir", "rmdir"], vec![mode("SCMP_CMP_EQ")]),
                errno(1, &["mkdir"], vec![]),
            ],
            ..Default::default()
        };
        let p = Filter::compile(&profile).unwrap().program;
        let rmdir = libc::SYS_rmdir as u32;
        assert_eq!(run(&p, rmdir, [0, 0o777, 0, 0, 0, 0]), RET_ERRNO | 13);
        assert_eq!(run(&p, 83, [0, 0o777, 0, 0, 0, 0]), RET_ERRNO | 1);
    }

    /// SCMP_ACT_TRACE without a tracer: the kernel answers ENOSYS; its
    /// errno goes to the tracer. errnoRet is taken modulo 65536, as
    /// libseccomp encodes it.
    #[test]
    fn trace_and_errno_are_encoded_as_libseccomp_encodes_them() {
        let profile = Seccomp {
            default_action: "SCMP_ACT_ALLOW".into(),
            syscalls: vec![
                rule(&["mkdir"], "SCMP_ACT_TRACE", vec![]),
                SeccompRule {
                    errno_ret: Some(65536 + 13),
                    ..rule(&["rmdir"], "SCMP_ACT_ERRNO", vec![])
                },
            ],
            ..Default::default()
        };
        let p = Filter::compile(&profile).unwrap().program;
        assert_eq!(run(&p, 83, [0; 6]), RET_TRACE | 1);
        assert_eq!(run(&p, libc::SYS_rmdir as u32, [0; 6]), RET_ERRNO | 13);
    }
}

#[cfg(test)]
pub(crate) mod prop_tests;
