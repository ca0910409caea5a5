//! The compiler against arbitrary profiles, checked three ways: the error
//! it gives is the one the profile's first fault calls for (a one-byte jump spans at most
//! 253 instructions of one rule's conditions); a program it
//! gives passes the kernel's checks for a classic seccomp filter; and run
//! in an interpreter over random `seccomp_data`, the program returns what
//! the profile means under runc: of the rules that count (those not
//! carrying the default action), for the syscall's x86_64 name, the first
//! without conditions, else the first whose conditions hold; the default
//! action otherwise; the process killed for any ABI but x86_64. Names
//! x86_64 lacks (another architecture's, or none's) count for nothing.
//!
//! The interpreter and the model are written from the kernel's, the
//! runtime spec's and runc's definitions, not from the compiler.

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

// Return values, from <linux/seccomp.h>.
const KILL_PROCESS: u32 = 0x8000_0000;
const KILL_THREAD: u32 = 0x0000_0000;
const TRAP: u32 = 0x0003_0000;
const ERRNO: u32 = 0x0005_0000;
const TRACE: u32 = 0x7ff0_0000;
const LOG: u32 = 0x7ffc_0000;
const ALLOW: u32 = 0x7fff_0000;

const ARCH_X86_64: u32 = 0xc000_003e;
const ARCH_I386: u32 = 0x4000_0003;
const ARCH_AARCH64: u32 = 0xc000_00b7;

/// `sizeof(struct seccomp_data)`.
const DATA_LEN: u32 = 64;

/// `struct seccomp_data`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Data {
    pub(crate) nr: u32,
    pub(crate) arch: u32,
    pub(crate) ip: u64,
    pub(crate) args: [u64; 6],
}

impl Data {
    fn bytes(&self) -> [u8; DATA_LEN as usize] {
        let mut b = [0u8; DATA_LEN as usize];
        b[0..4].copy_from_slice(&self.nr.to_ne_bytes());
        b[4..8].copy_from_slice(&self.arch.to_ne_bytes());
        b[8..16].copy_from_slice(&self.ip.to_ne_bytes());
        for (i, a) in self.args.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        b
    }
}

// ---------------------------------------------------------------------------
// What the kernel checks, and what it runs
// ---------------------------------------------------------------------------

/// The kernel's checks of a seccomp program (`bpf_check_classic` and
/// `seccomp_check_filter`), for the instructions a seccomp filter may use:
/// a length of 1 to `BPF_MAXINSNS`, known opcodes, aligned loads inside
/// `seccomp_data`, every jump landing inside the program, a return last.
pub(crate) fn verify(program: &[Insn]) -> Result<(), String> {
    if program.is_empty() || program.len() > 4096 {
        return Err(format!("{} instructions", program.len()));
    }
    for (pc, insn) in program.iter().enumerate() {
        match insn.code {
            0x20 => {
                if insn.k % 4 != 0 || insn.k >= DATA_LEN {
                    return Err(format!("{pc}: load at {}", insn.k));
                }
            }
            0x54 | 0x06 => {}
            0x15 | 0x25 | 0x35 => {
                for off in [insn.jt, insn.jf] {
                    if pc + 1 + off as usize >= program.len() {
                        return Err(format!("{pc}: jump +{off} leaves a program of {}", program.len()));
                    }
                }
            }
            code => return Err(format!("{pc}: opcode {code:#x}")),
        }
    }
    match program.last().map(|i| i.code) {
        Some(0x06) => Ok(()),
        _ => Err("the last instruction is not a return".into()),
    }
}

/// Runs `program` over `data` as the kernel would. Never panics: every
/// fault is an error.
pub(crate) fn interpret(program: &[Insn], data: &Data) -> Result<u32, String> {
    let bytes = data.bytes();
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let insn = *program.get(pc).ok_or_else(|| format!("ran off the end at {pc}"))?;
        pc += 1;
        match insn.code {
            0x20 => {
                let k = insn.k as usize;
                let word = bytes.get(k..k + 4).ok_or_else(|| format!("load at {k}"))?;
                acc = u32::from_ne_bytes(word.try_into().unwrap());
            }
            0x54 => acc &= insn.k,
            0x06 => return Ok(insn.k),
            0x15 | 0x25 | 0x35 => {
                let taken = match insn.code {
                    0x15 => acc == insn.k,
                    0x25 => acc > insn.k,
                    _ => acc >= insn.k,
                };
                pc += if taken { insn.jt } else { insn.jf } as usize;
            }
            code => return Err(format!("opcode {code:#x} at {}", pc - 1)),
        }
    }
}

// ---------------------------------------------------------------------------
// The profile's meaning
// ---------------------------------------------------------------------------

/// An action's return value; its errno, as libseccomp encodes it, the
/// low 16 bits of what is given (EPERM when nothing is). `None`: an
/// action this compiler does not take (unknown, or `SCMP_ACT_NOTIFY`).
fn model_action(name: &str, errno: Option<u32>) -> Option<u32> {
    let data = errno.unwrap_or(1) & 0xffff;
    Some(match name {
        "SCMP_ACT_ALLOW" => ALLOW,
        "SCMP_ACT_ERRNO" => ERRNO | data,
        "SCMP_ACT_TRACE" => TRACE | data,
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => KILL_PROCESS,
        "SCMP_ACT_TRAP" => TRAP,
        "SCMP_ACT_LOG" => LOG,
        _ => return None,
    })
}

fn holds(arg: &SeccompArg, args: &[u64; 6]) -> bool {
    let a = args[arg.index as usize];
    let v = arg.value;
    match arg.op.as_str() {
        "SCMP_CMP_EQ" => a == v,
        "SCMP_CMP_NE" => a != v,
        "SCMP_CMP_LT" => a < v,
        "SCMP_CMP_LE" => a <= v,
        "SCMP_CMP_GT" => a > v,
        "SCMP_CMP_GE" => a >= v,
        "SCMP_CMP_MASKED_EQ" => a & v == arg.value_two,
        op => unreachable!("a compiled profile has no {op}"),
    }
}

/// What the filter of a profile that compiled returns for `data`: runc
/// leaves out the rules whose action is the default one; for one syscall,
/// libseccomp lets a rule without conditions decide over conditional
/// ones, the first such rule if several.
fn model(profile: &Seccomp, data: &Data) -> u32 {
    if data.arch != ARCH_X86_64 || data.nr >= 0x4000_0000 {
        return KILL_PROCESS;
    }
    let default = model_action(&profile.default_action, profile.default_errno_ret).unwrap();
    let counting: Vec<(&SeccompRule, u32)> = profile
        .syscalls
        .iter()
        .map(|r| (r, model_action(&r.action, r.errno_ret).unwrap_or(default)))
        .filter(|&(r, ret)| ret != default && r.names.iter().any(|n| syscall_number(n) == Some(data.nr)))
        .collect();
    if let Some((_, ret)) = counting.iter().find(|(r, _)| r.args.is_empty()) {
        return *ret;
    }
    for (rule, ret) in counting {
        if rule.args.iter().all(|a| holds(a, &data.args)) {
            return ret;
        }
    }
    default
}

/// Instructions of one argument condition.
fn condition_len(op: &str) -> Option<usize> {
    Some(match op {
        "SCMP_CMP_EQ" | "SCMP_CMP_NE" => 4,
        "SCMP_CMP_LT" | "SCMP_CMP_LE" | "SCMP_CMP_GT" | "SCMP_CMP_GE" => 5,
        "SCMP_CMP_MASKED_EQ" => 6,
        _ => return None,
    })
}

/// What `Filter::compile` must answer: the program's length, or the error
/// for the first fault in the profile, in runc's order: the
/// architectures, the default action; then each rule's action and, where
/// it names anything, its comparisons and names (the empty name is
/// refused); a rule that can decide nothing (the default's action, or no
/// name x86_64 has) is left out unchecked; of the others, the errno and
/// argument indexes libseccomp checks, and the size of the conditions.
/// Then the size of the whole.
fn expected(profile: &Seccomp) -> Result<usize, SeccompError> {
    if let Some(arch) = profile
        .architectures
        .iter()
        .find(|a| !ARCHITECTURES.contains(&a.as_str()))
    {
        return Err(SeccompError::UnknownArchitecture { arch: arch.clone() });
    }
    let default = check_action(
        "default_action".into(),
        &profile.default_action,
        profile.default_errno_ret,
    )?
    .ok_or_else(|| SeccompError::Notify {
        field: "default_action".into(),
    })?;
    check_errno("default_action".into(), default, profile.default_errno_ret)?;
    // (numbers, whether it has conditions, its block's length per syscall)
    let mut counting: Vec<(Vec<u32>, bool, usize)> = Vec::new();
    for (r, rule) in profile.syscalls.iter().enumerate() {
        let field = format!("syscalls[{r}].action");
        let ret = check_action(field.clone(), &rule.action, rule.errno_ret)?;
        if rule.names.is_empty() {
            continue;
        }
        let mut conds = 0;
        for (i, arg) in rule.args.iter().enumerate() {
            conds += condition_len(&arg.op).ok_or_else(|| SeccompError::UnknownOp {
                rule: r,
                arg: i,
                op: arg.op.clone(),
            })?;
        }
        if rule.names.iter().any(String::is_empty) {
            return Err(SeccompError::EmptyName { rule: r });
        }
        let numbers: Vec<u32> = rule.names.iter().filter_map(|n| syscall_number(n)).collect();
        if ret == Some(default) || numbers.is_empty() {
            continue;
        }
        let ret = ret.ok_or(SeccompError::Notify { field: field.clone() })?;
        check_errno(field, ret, rule.errno_ret)?;
        if let Some((i, arg)) = rule.args.iter().enumerate().find(|(_, a)| a.index > 5) {
            return Err(SeccompError::ArgIndex {
                rule: r,
                arg: i,
                index: arg.index,
            });
        }
        if conds > 253 {
            return Err(SeccompError::TooManyConditions { rule: r, len: conds });
        }
        counting.push((numbers, conds > 0, if conds == 0 { 2 } else { conds + 3 }));
    }
    // A syscall some rule decides without conditions: only the first such
    // rule's block for it. The size is checked after each rule.
    let mut len = 6;
    for (i, (numbers, _, block)) in counting.iter().enumerate() {
        for nr in numbers {
            let decider = counting.iter().position(|(n, c, _)| !c && n.contains(nr));
            if decider.is_none_or(|d| d == i) {
                len += block;
            }
        }
        if len > 4096 {
            return Err(SeccompError::TooLong { len });
        }
    }
    len += 1;
    if len > 4096 {
        return Err(SeccompError::TooLong { len });
    }
    Ok(len)
}

/// An action's return value (`None` for notify), or the error for an
/// unknown name.
fn check_action(field: String, name: &str, errno: Option<u32>) -> Result<Option<u32>, SeccompError> {
    match model_action(name, errno) {
        Some(ret) => Ok(Some(ret)),
        None if name == "SCMP_ACT_NOTIFY" => Ok(None),
        None => Err(SeccompError::UnknownAction {
            field,
            action: name.into(),
        }),
    }
}

/// libseccomp refuses an errno above 4095.
fn check_errno(field: String, ret: u32, errno: Option<u32>) -> Result<(), SeccompError> {
    if ret & 0xffff_0000 == ERRNO && ret & 0xffff > 4095 {
        return Err(SeccompError::Errno {
            field,
            errno: errno.unwrap_or_default(),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Profiles and syscalls
// ---------------------------------------------------------------------------

/// A few syscalls most rules draw from, so that rules overlap and the
/// order of rules matters.
const COMMON: [&str; 8] = [
    "read",
    "write",
    "openat",
    "mkdir",
    "personality",
    "clone",
    "ioctl",
    "socket",
];

/// Names of Docker's and podman's default profiles that x86_64 has no
/// number for (i386's), and misspellings: rules skip them.
const FOREIGN: [&str; 8] = [
    "chown32",
    "_llseek",
    "socketcall",
    "umount",
    "mmap2",
    "waitpid",
    "mkdri",
    "sys_read",
];

const ACTIONS: [&str; 8] = [
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_LOG",
];

const OPS: [&str; 7] = [
    "SCMP_CMP_EQ",
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_GT",
    "SCMP_CMP_GE",
    "SCMP_CMP_MASKED_EQ",
];

fn table_name() -> impl Strategy<Value = String> {
    (0..SYSCALLS.len()).prop_map(|i| SYSCALLS[i].0.to_string())
}

fn syscall_name() -> impl Strategy<Value = String> {
    prop_oneof![
        60 => prop::sample::select(&COMMON[..]).prop_map(str::to_string),
        30 => table_name(),
        6 => prop::sample::select(&FOREIGN[..]).prop_map(str::to_string),
        2 => prop::sample::select(vec!["", "READ", "read ", "mkdir\0", "x32_read"]).prop_map(str::to_string),
        2 => "[a-z_0-9]{0,12}",
    ]
}

fn action_name() -> impl Strategy<Value = String> {
    prop_oneof![
        98 => prop::sample::select(&ACTIONS[..]).prop_map(str::to_string),
        1 => prop::sample::select(vec!["SCMP_ACT_NOTIFY", "SCMP_ACT_NOTIFY", "scmp_act_allow", ""]).prop_map(str::to_string),
        1 => "[A-Z_]{0,16}",
    ]
}

fn errno() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        3 => Just(None),
        4 => (0u32..200).prop_map(Some),
        1 => (4090u32..4100).prop_map(Some),
        // Modulo 65536, as libseccomp takes it: 1 to 63 again.
        1 => (65_537u32..65_600).prop_map(Some),
        1 => any::<u32>().prop_map(Some),
    ]
}

/// Argument values where comparisons turn: the edges of each 32-bit half.
fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![
            0u64,
            1,
            2,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_fffe,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0001,
            0x1_ffff_ffff,
            0x7fff_ffff_ffff_ffff,
            0x8000_0000_0000_0000,
            u64::MAX - 1,
            u64::MAX,
        ]),
        any::<u64>(),
        (any::<u32>(), any::<u32>()).prop_map(|(hi, lo)| (u64::from(hi % 3) << 32) | u64::from(lo % 3)),
    ]
}

fn seccomp_arg() -> impl Strategy<Value = SeccompArg> {
    let index = prop_oneof![97 => 0u32..=5, 2 => 6u32..10, 1 => any::<u32>()];
    let op = prop_oneof![
        98 => prop::sample::select(&OPS[..]).prop_map(str::to_string),
        2 => prop::sample::select(vec!["SCMP_CMP_MASKED_NE", "SCMP_CMP_EQ ", "==", ""]).prop_map(str::to_string),
    ];
    (index, value(), value(), any::<bool>(), op).prop_map(|(index, value, value_two, masked_in, op)| SeccompArg {
        index,
        value,
        // A masked comparison that can hold: the wanted bits inside the mask.
        value_two: if masked_in { value_two & value } else { value_two },
        op,
    })
}

fn rule() -> impl Strategy<Value = SeccompRule> {
    let names = prop_oneof![
        98 => prop::collection::vec(syscall_name(), 1..4),
        1 => Just(vec![]),
        // Many names at once: towards the size limit.
        1 => prop::sample::subsequence(SYSCALLS.iter().map(|s| s.0.to_string()).collect::<Vec<_>>(), 100..=SYSCALLS.len()),
    ];
    let args = prop_oneof![
        97 => prop::collection::vec(seccomp_arg(), 0..4),
        // Past what one rule's jumps can span.
        3 => prop::collection::vec(seccomp_arg(), 40..64),
    ];
    (names, action_name(), errno(), args).prop_map(|(names, action, errno_ret, args)| SeccompRule {
        names,
        action,
        errno_ret,
        args,
    })
}

fn profile() -> impl Strategy<Value = Seccomp> {
    let arch = prop_oneof![
        98 => prop::sample::select(&ARCHITECTURES[..]).prop_map(str::to_string),
        2 => prop::sample::select(vec!["SCMP_ARCH_RISCV64", "SCMP_ARCH_X86_64 ", "x86_64", ""]).prop_map(str::to_string),
    ];
    (
        action_name(),
        errno(),
        prop::collection::vec(arch, 0..3),
        prop::collection::vec(rule(), 0..8),
    )
        .prop_map(|(default_action, default_errno_ret, architectures, syscalls)| Seccomp {
            default_action,
            default_errno_ret,
            architectures,
            syscalls,
        })
}

/// One syscall to run the filter on, drawn against the profile: mostly a
/// syscall it names, arguments at and around the values it compares with,
/// now and then another ABI, another number or anything at all.
#[derive(Debug, Clone)]
struct Call {
    nr: (u8, Index, u32),
    arch: (u8, u32),
    args: [(u8, Index, u64); 6],
}

fn call() -> impl Strategy<Value = Call> {
    let arg = (any::<u8>(), any::<Index>(), any::<u64>());
    (
        (any::<u8>(), any::<Index>(), any::<u32>()),
        (any::<u8>(), any::<u32>()),
        [arg.clone(), arg.clone(), arg.clone(), arg.clone(), arg.clone(), arg],
    )
        .prop_map(|(nr, arch, args)| Call { nr, arch, args })
}

impl Call {
    fn data(&self, profile: &Seccomp) -> Data {
        let named: Vec<u32> = profile
            .syscalls
            .iter()
            .flat_map(|r| &r.names)
            .filter_map(|n| syscall_number(n))
            .collect();
        let (kind, pick, raw) = self.nr;
        let nr = match kind % 10 {
            0..=6 if !named.is_empty() => *pick.get(&named),
            7 | 8 => SYSCALLS[pick.index(SYSCALLS.len())].1,
            _ => raw,
        };
        let arch = match self.arch.0 % 20 {
            0 => ARCH_I386,
            1 => ARCH_AARCH64,
            2 => self.arch.1,
            _ => ARCH_X86_64,
        };
        let mut values: Vec<u64> = profile
            .syscalls
            .iter()
            .flat_map(|r| &r.args)
            .flat_map(|a| [a.value, a.value_two])
            .collect();
        values.extend([0, u64::MAX]);
        let args = self.args.map(|(kind, pick, raw)| {
            let v = *pick.get(&values);
            match kind % 8 {
                0 | 1 => v,
                2 => v.wrapping_add(1),
                3 => v.wrapping_sub(1),
                4 => v ^ (1 << (raw % 64)),
                5 => v.rotate_left(32),
                _ => raw,
            }
        });
        Data {
            nr,
            arch,
            ip: self.args[0].2,
            args,
        }
    }
}

/// A filter on a profile that compiled: the kernel would load it, and it
/// answers every call as the profile says.
fn check_semantics(profile: &Seccomp, program: &[Insn], calls: &[Call]) -> Result<(), TestCaseError> {
    if let Err(e) = verify(program) {
        return Err(TestCaseError::fail(format!("the kernel would refuse the program: {e}")));
    }
    for call in calls {
        let data = call.data(profile);
        let got = interpret(program, &data).map_err(TestCaseError::fail)?;
        let want = model(profile, &data);
        prop_assert_eq!(got, want, "for {:x?}", data);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    /// Any profile: refused with the error of its first fault (which names
    /// the field, the rule, the argument and the value), or compiled into
    /// a program of the expected length that the kernel would load and
    /// that decides every call as the profile says.
    #[test]
    fn prop_seccomp_compiles_as_the_profile_says(
        profile in profile(),
        calls in prop::collection::vec(call(), 1..24),
    ) {
        let compiled = Filter::compile(&profile);
        match (&compiled, expected(&profile)) {
            (Ok(filter), Ok(len)) => {
                prop_assert_eq!(filter.program.len(), len);
                check_semantics(&profile, &filter.program, &calls)?;
            }
            (Err(got), Err(want)) => {
                prop_assert_eq!(got, &want);
                let message = got.to_string();
                prop_assert!(message.starts_with("seccomp: "), "{}", message);
            }
            (got, want) => prop_assert!(false, "compiled to {:?}, expected {:?}", got.as_ref().map(|f| f.program.len()), want),
        }
    }

    /// Profiles that are valid by construction (known names, actions, ops,
    /// small rules): they always compile, and the program agrees with the
    /// profile on every call.
    #[test]
    fn prop_seccomp_valid_profiles_agree_with_the_model(
        default in prop::sample::select(&ACTIONS[..]),
        default_errno in prop::option::of(0u32..=4095),
        rules in prop::collection::vec(
            (
                prop::collection::vec(
                    prop_oneof![
                        6 => prop::sample::select(&COMMON[..]).prop_map(str::to_string),
                        2 => table_name(),
                        1 => prop::sample::select(&FOREIGN[..]).prop_map(str::to_string),
                    ],
                    1..4,
                ),
                prop::sample::select(&ACTIONS[..]),
                prop::option::of(0u32..=4095),
                prop::collection::vec(
                    (0u32..=5, value(), value(), prop::sample::select(&OPS[..])),
                    0..4,
                ),
            ),
            0..10,
        ),
        calls in prop::collection::vec(call(), 1..32),
    ) {
        let profile = Seccomp {
            default_action: default.into(),
            default_errno_ret: default_errno,
            architectures: vec!["SCMP_ARCH_X86_64".into()],
            syscalls: rules
                .into_iter()
                .map(|(names, action, errno_ret, args)| SeccompRule {
                    names,
                    action: action.into(),
                    errno_ret,
                    args: args
                        .into_iter()
                        .map(|(index, value, value_two, op)| SeccompArg { index, value, value_two, op: op.into() })
                        .collect(),
                })
                .collect(),
        };
        let filter = Filter::compile(&profile).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_semantics(&profile, &filter.program, &calls)?;
    }

    /// The interpreter itself never panics, whatever the program: faults
    /// are errors, so the checks above cannot pass by crashing.
    #[test]
    fn prop_interpreter_survives_any_program(
        program in prop::collection::vec(
            (prop::sample::select(vec![0x20u16, 0x54, 0x06, 0x15, 0x25, 0x35, 0x07, 0x00]), any::<u8>(), any::<u8>(), prop_oneof![0u32..80, any::<u32>()])
                .prop_map(|(code, jt, jf, k)| Insn { code, jt, jf, k }),
            0..32,
        ),
        call in call(),
    ) {
        let data = call.data(&Seccomp::default());
        let ran = interpret(&program, &data);
        if verify(&program).is_ok() {
            prop_assert!(ran.is_ok(), "a verified program faulted: {:?}", ran);
        }
    }
}

/// A rule whose conditions take more instructions than a one-byte jump
/// spans is refused naming the rule, not as a program over the kernel's
/// limit (it was: "the filter has 256 instructions, above the kernel's
/// 4096").
#[test]
fn too_many_conditions_name_the_rule() {
    let arg = SeccompArg {
        index: 1,
        value: 7,
        value_two: 0,
        op: "SCMP_CMP_NE".into(),
    };
    let profile = |n: usize| Seccomp {
        default_action: "SCMP_ACT_ALLOW".into(),
        syscalls: vec![SeccompRule {
            names: vec!["ioctl".into()],
            action: "SCMP_ACT_ERRNO".into(),
            errno_ret: None,
            args: vec![arg.clone(); n],
        }],
        ..Default::default()
    };
    // 63 conditions of 4 instructions: 252, the most that fits.
    let filter = Filter::compile(&profile(63)).unwrap();
    verify(&filter.program).unwrap();
    let data = Data {
        nr: 16,
        arch: ARCH_X86_64,
        ip: 0,
        args: [0, 8, 0, 0, 0, 0],
    };
    assert_eq!(interpret(&filter.program, &data), Ok(ERRNO | 1));
    let e = Filter::compile(&profile(64)).unwrap_err();
    assert_eq!(e, SeccompError::TooManyConditions { rule: 0, len: 256 });
    assert!(e.to_string().contains("syscalls[0]"), "{e}");
}
