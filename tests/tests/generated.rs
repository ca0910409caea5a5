//! Generated files stay what their generators write: vminitd's table of
//! x86_64 syscall numbers is `scripts/gen-seccomp-table.py`'s output, byte
//! for byte.

use std::path::{Path, PathBuf};
use std::process::Command;

use vminitd_tests::workspace_root;

const GENERATOR: &str = "scripts/gen-seccomp-table.py";

/// The header the committed table was generated from (Debian's
/// `linux-libc-dev`).
const HEADER: &str = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";

/// How the table's file begins, wherever it lives in `init/src`.
const TABLE_FIRST_LINE: &str = "//! x86_64 syscall numbers by name, sorted by name for binary search.";

/// Every `.rs` file under `dir` whose first line is `first_line`.
fn files_beginning_with(dir: &Path, first_line: &str, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_beginning_with(&path, first_line, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().next() == Some(first_line) {
                found.push(path);
            }
        }
    }
}

/// Runs the generator with `args`; `None` (and a note why) where it cannot
/// run here.
fn generate(args: &[&str]) -> Option<String> {
    let root = workspace_root();
    let output = match Command::new("python3").arg(root.join(GENERATOR)).args(args).output() {
        Ok(output) => output,
        Err(e) => {
            eprintln!("skipped: cannot run python3 for {GENERATOR}: {e}");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "{GENERATOR} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).expect("the generator writes UTF-8"))
}

#[test]
fn the_syscall_table_is_what_its_generator_writes() {
    let root = workspace_root();
    let mut tables = Vec::new();
    files_beginning_with(&root.join("init/src"), TABLE_FIRST_LINE, &mut tables);
    assert_eq!(tables.len(), 1, "one syscall table in init/src, found {tables:?}");
    let table = &tables[0];
    if !Path::new(HEADER).exists() {
        eprintln!("skipped: {HEADER} is not here (Debian's linux-libc-dev has it); the table was not checked");
        return;
    }
    let Some(generated) = generate(&["--header", HEADER, "-"]) else {
        return;
    };
    let committed = std::fs::read_to_string(table).expect("the table");
    if generated != committed {
        let first = generated
            .lines()
            .zip(committed.lines())
            .position(|(g, c)| g != c)
            .unwrap_or_else(|| generated.lines().count().min(committed.lines().count()));
        panic!(
            "{} is not what {GENERATOR} writes from {HEADER}: they differ from line {} on \
             (generated {:?}, committed {:?}). Regenerate it: {GENERATOR} {}",
            table.display(),
            first + 1,
            generated.lines().nth(first),
            committed.lines().nth(first),
            table.strip_prefix(&root).unwrap_or(table).display(),
        );
    }
}

#[test]
fn the_generator_adds_a_tables_syscalls_to_the_headers_sorted_by_name() {
    let dir = std::env::temp_dir().join(format!("gen-seccomp-table-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let header = dir.join("unistd_64.h");
    std::fs::write(
        &header,
        "#ifndef _ASM_UNISTD_64_H\n#define _ASM_UNISTD_64_H\n\
         #define __NR_write 1\n#define __NR_read 0\n#define __NR__sysctl 156\n#endif\n",
    )
    .unwrap();
    let table = dir.join("extra.tbl");
    std::fs::write(
        &table,
        "# from: Linux 9.9\n0\tcommon\tread\tsys_read\n\
         500\tcommon\tzap\t\tsys_zap\n501\t64\tbang\tsys_bang\n512\tx32\trt_sigaction\tcompat_sys_rt_sigaction\n",
    )
    .unwrap();
    let (header, table) = (header.to_str().unwrap(), table.to_str().unwrap());
    let Some(text) = generate(&["--header", header, "--table", table, "-"]) else {
        return;
    };
    assert_eq!(
        text,
        "//! x86_64 syscall numbers by name, sorted by name for binary search.\n\
         //!\n\
         //! Generated from `asm/unistd_64.h` of the Linux uapi headers (up to\n\
         //! `_sysctl`, 156), plus 500 (`zap`) to 501 (`bang`) from\n\
         //! `arch/x86/entry/syscalls/syscall_64.tbl` of Linux 9.9: every `#define\n\
         //! __NR_name N`, sorted by name.\n\
         \n\
         pub const SYSCALLS: [(&str, u32); 5] = [\n    \
         (\"_sysctl\", 156),\n    (\"bang\", 501),\n    (\"read\", 0),\n    (\"write\", 1),\n    (\"zap\", 500),\n\
         ];\n"
    );
    // A name whose number the two disagree on is refused, naming both.
    std::fs::write(table, "# from: Linux 9.9\n7\tcommon\tread\tsys_read\n").unwrap();
    let output = Command::new("python3")
        .arg(workspace_root().join(GENERATOR))
        .args(["--header", header, "--table", table, "-"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("read is 0 in the header and 7 in the table"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
