#!/usr/bin/env python3
"""What a thread's work costs after it sat idle, on this machine.

A deposit at a dozen calls a second passes through several threads (SIP, the call's, the
store's writer and readers, the notifier), each of which then sleeps for tens of
milliseconds. This measures the same work (touching 4 MiB of memory a page at a time, then
a short compute loop) in CPU time (`time.process_time`) after sleeping for longer and
longer. On a dedicated core the figures stay flat; on a shared VM they grow with the sleep,
because the caches (and the host's mappings) went to other work meanwhile.

Usage: python3 bench/cold-after-idle.py [ROUNDS]   (default 7; the median of each is shown)
"""
import statistics
import sys
import time

PAGES = 1024
buf = bytearray(PAGES * 4096)


def touch():
    for i in range(0, len(buf), 4096):
        buf[i] = (buf[i] + 1) & 255


def compute():
    x = 0
    for i in range(20000):
        x += i * i
    return x


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    print("idle before (ms) | touch 1,024 pages (µs CPU) | compute (µs CPU) | both (µs CPU)")
    for idle in (0, 0.005, 0.02, 0.05, 0.2, 1.0):
        cols = []
        for work in (touch, compute, lambda: (touch(), compute())):
            spent = []
            for _ in range(rounds):
                time.sleep(idle)
                t = time.process_time()
                work()
                spent.append((time.process_time() - t) * 1e6)
            cols.append(statistics.median(spent))
        print(f"{idle * 1000:>16.0f} | {cols[0]:>26.0f} | {cols[1]:>16.0f} | {cols[2]:>13.0f}")


if __name__ == "__main__":
    main()
