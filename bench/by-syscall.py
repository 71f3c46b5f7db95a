#!/usr/bin/env python3
"""Splits a perf profile's samples by the system call they were taken in.

Usage: perf script -i PERF.DATA -F comm,ip,sym | python3 bench/by-syscall.py

The profile must have kernel call chains (`perf record -g`, as
`PERF_ARGS="-e cpu-clock -g" PROFILE=FILE bench/deposit-load.sh` makes). A sample whose
chain passes through a `__x64_sys_*` frame counts to that call (the scheduling a blocking
call does included); one in the kernel outside any call (an interrupt, a preemption) to
"kernel, outside a system call"; the rest to user space.
"""
import collections
import re
import sys

SYSCALL = re.compile(r"(?:__x64_sys_|__do_sys_|__se_sys_)(\w+)")
KERNEL_ENTRY = ("entry_SYSCALL", "asm_", "ret_from_fork", "irqentry")


def samples(lines):
    frames = None
    for line in lines:
        if not line.strip():
            if frames is not None:
                yield frames
            frames = None
        elif not line[0].isspace():
            frames = []
        elif frames is not None:
            parts = line.split(None, 1)
            frames.append(parts[1].strip() if len(parts) > 1 else "?")
    if frames is not None:
        yield frames


def where(frames):
    for f in frames:
        m = SYSCALL.match(f)
        if m:
            return m.group(1)
    if any(f.startswith(KERNEL_ENTRY) for f in frames):
        return "kernel, outside a system call"
    return "user space"


def main():
    count = collections.Counter(where(f) for f in samples(sys.stdin))
    total = sum(count.values())
    if not total:
        sys.exit("no samples: was the profile recorded with -g?")
    for name, n in count.most_common():
        print(f"{100 * n / total:5.1f} %  {name}")
    print(f"{total} samples")


if __name__ == "__main__":
    main()
