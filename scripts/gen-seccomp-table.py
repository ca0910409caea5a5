#!/usr/bin/env python3
"""Writes vminitd's table of x86_64 syscall numbers by name.

The seccomp compiler in init/ looks syscall names up in that table (a Rust
array sorted by name, for binary search). It is generated, never edited:
every `#define __NR_name N` of the Linux uapi header `asm/unistd_64.h`, plus
the syscalls of a kernel syscall table (`syscall_64.tbl` format: abi
`common` or `64`; x32 lines are skipped) that the header does not have yet.

Regenerate it (from the repository root, on Debian with linux-libc-dev):

    scripts/gen-seccomp-table.py "$(git grep -l 'x86_64 syscall numbers by name' init/src)"

(the argument is the table's path, wherever it lives; `-` writes to stdout,
--header and --table name other inputs). The test
`tests/tests/generated.rs` fails when the committed table and this script's
output differ. To take in syscalls of a newer kernel, add their lines to
scripts/syscall_64-since-6.1.tbl (and its `# from:` line), or give the
kernel's whole syscall_64.tbl with --table: names the header also has must
have the same numbers there.
"""

import argparse
import re
import sys
import textwrap
from pathlib import Path

DEFAULT_HEADER = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
DEFAULT_TABLE = Path(__file__).resolve().parent / "syscall_64-since-6.1.tbl"

DEFINE = re.compile(r"^#define __NR_(\w+)\s+(\d+)\s*$")


def read_header(path):
    """Every `#define __NR_name N` of a uapi unistd header: {name: number}."""
    syscalls = {}
    for line in Path(path).read_text().splitlines():
        match = DEFINE.match(line)
        if match:
            syscalls[match.group(1)] = int(match.group(2))
    if not syscalls:
        sys.exit(f"{path}: no `#define __NR_name N` lines: is it asm/unistd_64.h?")
    return syscalls


def read_table(path):
    """The x86_64 lines of a kernel syscall table, and where they are from
    (its `# from:` line): ({name: number}, source)."""
    syscalls = {}
    source = None
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.startswith("#"):
            if line.startswith("# from:"):
                source = line[len("# from:"):].strip()
            continue
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 3 or not fields[0].isdigit():
            sys.exit(f"{path}:{number}: expected <number> <abi> <name> [<entry point>], got {line!r}")
        if fields[1] in ("common", "64"):
            syscalls[fields[2]] = int(fields[0])
    if source is None:
        sys.exit(f"{path}: no `# from: ...` line saying which kernel the table is from")
    return syscalls, source


def render(header, table, source):
    """The Rust source of the table, as init/ holds it."""
    merged = dict(header)
    for name, number in table.items():
        if merged.get(name, number) != number:
            sys.exit(f"{name} is {merged[name]} in the header and {number} in the table")
        merged[name] = number
    last_name, last_number = max(header.items(), key=lambda item: item[1])
    added = sorted((number, name) for name, number in table.items() if name not in header)
    origin = (
        f"Generated from `asm/unistd_64.h` of the Linux uapi headers (up to `{last_name}`, {last_number})"
    )
    if added:
        (first, first_name), (last, last_added) = added[0], added[-1]
        origin += (
            f", plus {first} (`{first_name}`) to {last} (`{last_added}`)"
            f" from `arch/x86/entry/syscalls/syscall_64.tbl` of {source}"
        )
    origin += ": every `#define __NR_name N`, sorted by name."
    lines = [
        "//! x86_64 syscall numbers by name, sorted by name for binary search.",
        "//!",
        *textwrap.wrap(
            origin,
            width=76,
            initial_indent="//! ",
            subsequent_indent="//! ",
            break_long_words=False,
            break_on_hyphens=False,
        ),
        "",
        f"pub const SYSCALLS: [(&str, u32); {len(merged)}] = [",
        # Sorted as Rust compares `str`s: byte by byte.
        *(f'    ("{name}", {merged[name]}),' for name in sorted(merged, key=lambda n: n.encode())),
        "];",
    ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="where to write the table (`-`: stdout)")
    parser.add_argument("--header", default=DEFAULT_HEADER, help=f"asm/unistd_64.h (default {DEFAULT_HEADER})")
    parser.add_argument(
        "--table", default=str(DEFAULT_TABLE), help="syscalls the header lacks, in syscall_64.tbl format"
    )
    args = parser.parse_args()
    table, source = read_table(args.table)
    text = render(read_header(args.header), table, source)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
