"""Where a driver's time per trial grew: two py-spy raw profiles (`bench/bookkeeping_study.py
--spy`), each divided by the trials that ended while it was taken, compared frame by frame.

A frame's count is inclusive (every sample with the frame anywhere on its stack, once per
sample), in samples per trial at py-spy's rate (`--rate 50`: a sample is 20 ms of one thread
running). Sorted by growth, largest first.

    python bench/spy_diff.py FIRST.txt N_FIRST LAST.txt N_LAST [--top 40] [--only pipeline/,ray/tune]
    python bench/spy_diff.py WRAPUP.txt 50 --unit second   # one profile, in seconds at --rate 50
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def frame_key(frame: str) -> str:
    """`function (file:line)` → `function (file)`: lines of one function counted together."""
    name, sep, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0].rstrip(')')})" if sep else frame


def inclusive(path: Path) -> tuple[Counter, int]:
    """Inclusive samples per frame, and all samples, of a py-spy `--format raw` file."""
    counts: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack or not n.isdigit():
            continue
        total += int(n)
        for key in {frame_key(f) for f in stack.split(";")}:
            counts[key] += int(n)
    return counts, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("n_first", type=float, help="trials that ended while FIRST was taken")
    ap.add_argument("last", type=Path, nargs="?")
    ap.add_argument("n_last", type=float, nargs="?")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--only", default="", help="comma-separated substrings a frame must contain")
    ap.add_argument("--unit", default="trial", help="what N counts (trial; second: N = the rate)")
    args = ap.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    keep = (lambda k: any(s in k for s in only)) if only else (lambda k: True)  # noqa: E731
    a, ta = inclusive(args.first)
    if args.last is None:
        print(f"all samples per {args.unit}: {ta / args.n_first:.2f}")
        for k, v in [(k, v) for k, v in a.most_common() if keep(k)][: args.top]:
            print(f"{v / args.n_first:9.2f}  {k}")
        return 0
    b, tb = inclusive(args.last)
    print(f"all samples per {args.unit}: {ta / args.n_first:.2f} -> {tb / args.n_last:.2f}")
    print(f"{'first':>9} {'last':>9} {'growth':>9}  frame")
    keys = sorted((k for k in set(a) | set(b) if keep(k)), key=lambda k: -(b[k] / args.n_last - a[k] / args.n_first))
    for k in keys[: args.top]:
        x, y = a[k] / args.n_first, b[k] / args.n_last
        print(f"{x:9.2f} {y:9.2f} {y - x:+9.2f}  {k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
