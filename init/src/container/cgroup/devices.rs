//! The device allow-list (OCI `linux.resources.devices`), compiled by hand
//! to an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE` and attached to
//! the container's cgroup: cgroup v2 has no `devices.allow` file.
//!
//! The kernel runs the program at every open and mknod of a device node
//! with a `struct bpf_cgroup_dev_ctx` (`access_type` at 0: the device type
//! in the low 16 bits, the access bits in the high 16; `major` at 4;
//! `minor` at 8), and allows the access when it returns 1.
//!
//! The rules are read as cgroup v1 read them: for each access bit asked
//! (read, write, mknod), the last rule that matches the device and names
//! that bit decides; a bit no rule names is denied. The program walks the
//! rules from the last to the first with the undecided bits in `r3`:
//!
//! 1. load the type into `r2`, the access bits into `r3`, the major into
//!    `r4`, the minor into `r5`;
//! 2. for each rule, from the last: when the type, major and minor match,
//!    a deny rule naming an undecided bit returns 0, and an allow rule
//!    marks its bits decided and returns 1 once none is left;
//! 3. return 0.
//!
//! A rule that matches every device and every access ends the walk: the
//! rules before it are never reached, and are left out (the verifier
//! refuses unreachable instructions).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use agent_proto::DeviceRule;

use super::error::CgroupError;

/// `struct bpf_insn`: the destination register in the low nibble of
/// `regs`, the source in the high one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const JMP32_JEQ_K: u8 = 0x16; // BPF_JMP32 | BPF_JEQ | BPF_K
const JMP32_JNE_K: u8 = 0x56; // BPF_JMP32 | BPF_JNE | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

/// `BPF_DEVCG_DEV_BLOCK`, `BPF_DEVCG_DEV_CHAR`.
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;
/// `BPF_DEVCG_ACC_MKNOD`, `_READ`, `_WRITE`.
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// A jump offset not yet known: "to the next rule".
const TO_NEXT: i16 = i16::MIN;

/// One rule, checked: `None` is "any".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    allow: bool,
    kind: Option<u32>,
    major: Option<u32>,
    minor: Option<u32>,
    access: u32,
}

impl Rule {
    fn from_oci(index: usize, rule: &DeviceRule) -> Result<Rule, CgroupError> {
        let field = |name: &str| format!("linux.resources.devices[{index}].{name}");
        let kind = match rule.kind.as_deref() {
            None | Some("a") => None,
            Some("c") => Some(DEV_CHAR),
            Some("b") => Some(DEV_BLOCK),
            Some(other) => {
                return Err(CgroupError::InvalidValue {
                    field: field("type"),
                    why: format!("{other:?} is not a, b or c"),
                })
            }
        };
        let number = |name: &str, value: Option<i64>| match value {
            None | Some(-1) => Ok(None),
            Some(n) => u32::try_from(n).map(Some).map_err(|_| CgroupError::InvalidValue {
                field: field(name),
                why: format!("{n} is neither -1 (any) nor a device number"),
            }),
        };
        let mut access = 0;
        for letter in rule.access.as_deref().unwrap_or("").chars() {
            access |= match letter {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => {
                    return Err(CgroupError::InvalidValue {
                        field: field("access"),
                        why: format!("{letter:?} is not one of r, w and m"),
                    })
                }
            };
        }
        Ok(Rule {
            allow: rule.allow,
            kind,
            major: number("major", rule.major)?,
            minor: number("minor", rule.minor)?,
            // Absent or empty: all three.
            access: if access == 0 { ACC_ALL } else { access },
        })
    }

    /// Matches every device and every access: the rules before it are
    /// never reached.
    fn is_final(&self) -> bool {
        self.kind.is_none() && self.major.is_none() && self.minor.is_none() && self.access == ACC_ALL
    }

    /// The instructions of one rule; jumps marked [`TO_NEXT`] go past its
    /// end.
    fn block(&self) -> Vec<Insn> {
        let mut block = Vec::with_capacity(8);
        let checks = [(R2, self.kind), (R4, self.major), (R5, self.minor)];
        for (reg, value) in checks {
            if let Some(value) = value {
                block.push(jmp32_k(JMP32_JNE_K, reg, value as i32, TO_NEXT));
            }
        }
        // With all three access bits the rule decides whatever is left.
        if self.access != ACC_ALL && self.allow {
            // The bits it allows are decided; go on while others are not.
            block.extend([
                alu32_k(ALU32_AND_K, R3, !self.access as i32),
                jmp32_k(JMP32_JNE_K, R3, 0, TO_NEXT),
            ]);
        } else if self.access != ACC_ALL {
            // Deny when it names a bit still undecided.
            block.extend([
                alu32_x(ALU32_MOV_X, R1, R3),
                alu32_k(ALU32_AND_K, R1, self.access as i32),
                jmp32_k(JMP32_JEQ_K, R1, 0, TO_NEXT),
            ]);
        }
        block.extend(ret(self.allow));
        let len = block.len();
        for (i, insn) in block.iter_mut().enumerate() {
            if insn.off == TO_NEXT {
                insn.off = (len - 1 - i) as i16;
            }
        }
        block
    }
}

/// Checks the rules (types, numbers, access letters).
pub fn validate(rules: &[DeviceRule]) -> Result<(), CgroupError> {
    for (index, rule) in rules.iter().enumerate() {
        Rule::from_oci(index, rule)?;
    }
    Ok(())
}

/// The program that enforces `rules`.
pub fn program(rules: &[DeviceRule]) -> Result<Vec<Insn>, CgroupError> {
    let rules = rules
        .iter()
        .enumerate()
        .map(|(index, rule)| Rule::from_oci(index, rule))
        .collect::<Result<Vec<_>, _>>()?;
    let mut insns = vec![
        ldx_w(R2, R1, 0),
        alu32_k(ALU32_AND_K, R2, 0xffff),
        ldx_w(R3, R1, 0),
        alu32_k(ALU32_RSH_K, R3, 16),
        ldx_w(R4, R1, 4),
        ldx_w(R5, R1, 8),
    ];
    for rule in rules.iter().rev() {
        insns.extend(rule.block());
        if rule.is_final() {
            return Ok(insns);
        }
    }
    insns.extend(ret(false));
    Ok(insns)
}

/// Loads `program` into the kernel.
pub fn load(program: &[Insn]) -> Result<OwnedFd, CgroupError> {
    match prog_load(program, None) {
        Ok(fd) => Ok(fd),
        Err(source) => {
            // Again with the verifier's log, to say why.
            let mut log = vec![0u8; 64 * 1024];
            let _ = prog_load(program, Some(&mut log));
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]).trim().to_owned();
            Err(CgroupError::DeviceFilterLoad { source, log })
        }
    }
}

/// Attaches the loaded program to the cgroup open at `dir` (at `path`),
/// beside the ones its ancestors have.
pub fn attach(program: &OwnedFd, dir: BorrowedFd<'_>, path: &Path) -> Result<(), CgroupError> {
    #[repr(C)]
    struct AttachAttr {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
        replace_bpf_fd: u32,
    }
    let attr = AttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: BPF_PROG_ATTACH reads `size_of::<AttachAttr>()` bytes of a
    // valid attribute struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const AttachAttr,
            std::mem::size_of::<AttachAttr>(),
        )
    };
    if rc < 0 {
        return Err(CgroupError::DeviceFilterAttach {
            path: path.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn prog_load(program: &[Insn], log: Option<&mut [u8]>) -> Result<OwnedFd, std::io::Error> {
    #[repr(C)]
    struct LoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }
    let mut prog_name = [0u8; 16];
    prog_name[..11].copy_from_slice(b"vminitd_dev");
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let attr = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: c"GPL".as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_DEVICE,
    };
    // SAFETY: BPF_PROG_LOAD reads the attribute struct, the instructions
    // and the license it points to, and writes at most `log_size` bytes to
    // the log buffer; all outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const LoadAttr,
            std::mem::size_of::<LoadAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new program fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
    Insn {
        code: LDX_MEM_W,
        regs: src << 4 | dst,
        off,
        imm: 0,
    }
}

fn alu32_k(code: u8, dst: u8, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst,
        off: 0,
        imm,
    }
}

fn alu32_x(code: u8, dst: u8, src: u8) -> Insn {
    Insn {
        code,
        regs: src << 4 | dst,
        off: 0,
        imm: 0,
    }
}

fn jmp32_k(code: u8, dst: u8, imm: i32, off: i16) -> Insn {
    Insn {
        code,
        regs: dst,
        off,
        imm,
    }
}

/// `r0 = verdict; exit`.
fn ret(allow: bool) -> [Insn; 2] {
    [
        alu32_k(ALU32_MOV_K, R0, allow as i32),
        Insn {
            code: EXIT,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: bool, kind: &str, major: i64, minor: i64, access: &str) -> DeviceRule {
        DeviceRule {
            allow,
            kind: Some(kind.into()),
            major: Some(major),
            minor: Some(minor),
            access: Some(access.into()),
        }
    }

    fn deny_all() -> DeviceRule {
        DeviceRule {
            allow: false,
            access: Some("rwm".into()),
            ..Default::default()
        }
    }

    /// Runs `program` on a device context, as the kernel would, over the
    /// instructions this module emits.
    fn run(program: &[Insn], kind: u32, major: u32, minor: u32, access: u32) -> u32 {
        let ctx = [kind | access << 16, major, minor];
        let mut regs = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let insn = program[pc];
            let (dst, src) = ((insn.regs & 0xf) as usize, (insn.regs >> 4) as usize);
            pc += 1;
            match insn.code {
                LDX_MEM_W => {
                    assert_eq!(src, R1 as usize, "loads only from the context");
                    regs[dst] = ctx[insn.off as usize / 4] as u64;
                }
                ALU32_AND_K => regs[dst] = (regs[dst] as u32 & insn.imm as u32) as u64,
                ALU32_RSH_K => regs[dst] = (regs[dst] as u32 >> insn.imm) as u64,
                ALU32_MOV_K => regs[dst] = insn.imm as u32 as u64,
                ALU32_MOV_X => regs[dst] = regs[src] as u32 as u64,
                JMP32_JEQ_K | JMP32_JNE_K => {
                    let equal = regs[dst] as u32 == insn.imm as u32;
                    if equal == (insn.code == JMP32_JEQ_K) {
                        pc = (pc as i64 + insn.off as i64) as usize;
                    }
                }
                EXIT => return regs[0] as u32,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
        panic!("the program does not end");
    }

    /// The verdict as cgroup v1 reads the rules: per access bit, the last
    /// matching rule naming it decides.
    fn reference(rules: &[DeviceRule], kind: u32, major: u32, minor: u32, access: u32) -> u32 {
        let rules: Vec<Rule> = rules
            .iter()
            .enumerate()
            .map(|(i, r)| Rule::from_oci(i, r).unwrap())
            .collect();
        let bits = [ACC_MKNOD, ACC_READ, ACC_WRITE].into_iter().filter(|b| access & b != 0);
        let allowed = bits.into_iter().all(|bit| {
            rules
                .iter()
                .rev()
                .find(|r| {
                    (r.kind.is_none() || r.kind == Some(kind))
                        && (r.major.is_none() || r.major == Some(major))
                        && (r.minor.is_none() || r.minor == Some(minor))
                        && r.access & bit != 0
                })
                .is_some_and(|r| r.allow)
        });
        allowed as u32
    }

    /// Every device of a small set and every access, program against
    /// reference.
    fn check_against_reference(rules: &[DeviceRule]) {
        let program = program(rules).unwrap();
        for kind in [DEV_BLOCK, DEV_CHAR] {
            for (major, minor) in [(1, 3), (1, 5), (1, 9), (5, 1), (8, 0), (136, 2), (4095, 1_048_575)] {
                for access in 1..=ACC_ALL {
                    assert_eq!(
                        run(&program, kind, major, minor, access),
                        reference(rules, kind, major, minor, access),
                        "type {kind} {major}:{minor} access {access:#b} with {rules:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn deny_all_is_two_instructions_after_the_loads() {
        let p = program(&[deny_all()]).unwrap();
        assert_eq!(p.len(), 6 + 2);
        assert_eq!(&p[6..], &ret(false));
        assert_eq!(run(&p, DEV_CHAR, 1, 3, ACC_READ), 0);
        // No rule at all: the default, deny.
        let p = program(&[]).unwrap();
        assert_eq!(p.len(), 6 + 2);
        assert_eq!(run(&p, DEV_CHAR, 1, 3, ACC_READ), 0);
    }

    #[test]
    fn one_full_rule_checks_type_major_minor() {
        let p = program(&[deny_all(), rule(true, "c", 1, 3, "rwm")]).unwrap();
        // Loads, then c 1:3 (three checks, verdict), then deny all.
        assert_eq!(p.len(), 6 + 5 + 2);
        assert_eq!(p[6], jmp32_k(JMP32_JNE_K, R2, DEV_CHAR as i32, 4));
        assert_eq!(p[7], jmp32_k(JMP32_JNE_K, R4, 1, 3));
        assert_eq!(p[8], jmp32_k(JMP32_JNE_K, R5, 3, 2));
        assert_eq!(&p[9..11], &ret(true));
        assert_eq!(run(&p, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE), 1);
        assert_eq!(run(&p, DEV_BLOCK, 1, 3, ACC_READ), 0);
        assert_eq!(run(&p, DEV_CHAR, 1, 5, ACC_READ), 0);
    }

    #[test]
    fn rules_before_a_final_one_are_left_out() {
        let allow_all = DeviceRule {
            allow: true,
            ..Default::default()
        };
        let p = program(&[rule(true, "c", 1, 3, "rwm"), deny_all(), rule(true, "b", 8, 0, "r")]).unwrap();
        assert_eq!(p.len(), 6 + (3 + 2 + 2) + 2);
        let p = program(&[deny_all(), rule(false, "c", 1, 3, "r"), allow_all]).unwrap();
        assert_eq!(p.len(), 6 + 2);
        assert_eq!(run(&p, DEV_CHAR, 1, 3, ACC_READ), 1);
    }

    #[test]
    fn wildcards_skip_their_checks() {
        // c *:* m, as runc's defaults have it.
        let p = program(&[deny_all(), rule(true, "c", -1, -1, "m")]).unwrap();
        assert_eq!(p.len(), 6 + (1 + 2 + 2) + 2);
        assert_eq!(run(&p, DEV_CHAR, 42, 7, ACC_MKNOD), 1);
        assert_eq!(run(&p, DEV_CHAR, 42, 7, ACC_MKNOD | ACC_READ), 0);
        assert_eq!(run(&p, DEV_BLOCK, 42, 7, ACC_MKNOD), 0);
    }

    #[test]
    fn the_last_matching_rule_decides_each_access() {
        let docker_like = vec![
            deny_all(),
            rule(true, "c", -1, -1, "m"),
            rule(true, "b", -1, -1, "m"),
            rule(true, "c", 1, 3, "rwm"),
            rule(true, "c", 1, 5, "rwm"),
            rule(true, "c", 1, 9, "rwm"),
            rule(true, "c", 5, 1, "rwm"),
            rule(true, "c", 136, -1, "rwm"),
            rule(false, "c", 1, 9, "w"),
        ];
        check_against_reference(&docker_like);
        check_against_reference(&[rule(true, "a", -1, -1, "rwm"), rule(false, "c", 1, 3, "r")]);
        // A later read allow over an earlier read deny: a read-write open
        // is decided bit by bit.
        let layered = [
            rule(true, "a", -1, -1, "rwm"),
            rule(false, "c", 1, 3, "r"),
            rule(true, "c", 1, 3, "r"),
        ];
        check_against_reference(&layered);
        assert_eq!(
            run(&program(&layered).unwrap(), DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE),
            1
        );
        check_against_reference(&[deny_all(), rule(true, "a", 1, -1, "rw"), rule(false, "b", -1, 0, "m")]);
        check_against_reference(&[rule(true, "c", 4095, 1_048_575, "r")]);
    }

    #[test]
    fn the_verifier_says_why_it_refuses() {
        // The loads alone: the program runs off its end.
        let p = program(&[deny_all()]).unwrap();
        let e = load(&p[..6]).unwrap_err();
        let CgroupError::DeviceFilterLoad { log, .. } = &e else {
            panic!("{e}");
        };
        assert!(!log.is_empty(), "no verifier log: {e}");
        assert!(e
            .to_string()
            .starts_with("cannot load the device filter (linux.resources.devices): "));
        assert!(e.to_string().contains("(verifier: "), "{e}");
        load(&p).expect("the whole program loads");
    }

    #[test]
    fn bad_rules_are_named() {
        let e = program(&[deny_all(), rule(true, "x", 1, 3, "r")]).unwrap_err();
        assert_eq!(e.to_string(), "linux.resources.devices[1].type: \"x\" is not a, b or c");
        let e = validate(&[rule(true, "c", 1, 3, "rwx")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "linux.resources.devices[0].access: 'x' is not one of r, w and m"
        );
        let e = validate(&[rule(true, "c", -2, 3, "r")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "linux.resources.devices[0].major: -2 is neither -1 (any) nor a device number"
        );
        let e = validate(&[rule(true, "c", 1, 1 << 32, "r")]).unwrap_err();
        assert!(e.to_string().starts_with("linux.resources.devices[0].minor: "), "{e}");
    }
}
