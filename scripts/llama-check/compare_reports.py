"""Compares the final statistics blocks of two reports line by line, as printed.

    python3 compare_reports.py LLAMA_OUTPUT KLDIV_OUTPUT [--tolerance-digits N] [--relative R]

Both reports are read from "====== Perplexity statistics ======" on; each line
"label: numbers…" is matched by its label, and each number is compared as printed. A number
passes when it is the same text, or differs by at most N units of its last printed digit
(default 0), or by at most R of its value (default 0). Exit 1 when any line is missing or
differs beyond that.
"""

import argparse
import re
import sys

NUM = re.compile(r"[-+]?\d+\.\d+|[-+]?nan|[-+]?inf", re.I)


def block(path):
    lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    start = next((i for i, l in enumerate(lines) if "====== Perplexity statistics" in l), None)
    if start is None:
        sys.exit(f"{path}: no llama.cpp statistics block")
    out = {}
    for line in lines[start:]:
        # llama.cpp prefixes nothing here, but a log line may carry a timestamp: keep the end.
        if ":" not in line or "======" in line:
            continue
        label, _, rest = line.partition(":")
        label = label.strip()
        if label and NUM.search(rest):
            out[label] = NUM.findall(rest)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("llama")
    ap.add_argument("kldiv")
    ap.add_argument("--tolerance-digits", type=int, default=0)
    ap.add_argument("--relative", type=float, default=0.0)
    a = ap.parse_args()
    want, got = block(a.llama), block(a.kldiv)
    bad = 0
    for label, ws in want.items():
        gs = got.get(label)
        if gs is None or len(gs) != len(ws):
            print(f"MISSING  {label}: llama.cpp {ws}, kldiv {gs}")
            bad += 1
            continue
        worst, rel, ok = 0, 0.0, True
        for w, g in zip(ws, gs):
            if w == g:
                continue
            digits = len(w.split(".")[1]) if "." in w else 0
            try:
                diff = abs(float(w) - float(g))
                units = round(diff * 10**digits)
                r = diff / abs(float(w)) if float(w) else float("inf")
            except ValueError:
                units, r = 10**9, float("inf")
            worst, rel = max(worst, units), max(rel, r)
            ok &= units <= a.tolerance_digits or r <= a.relative
        mark = "same" if worst == 0 else (f"{worst} units" if ok else "DIFFERS")
        bad += not ok
        note = f"  (relative {rel:.1e})" if worst else ""
        print(f"{mark:10} {label:32} llama.cpp {' '.join(ws):28} kldiv {' '.join(gs)}{note}")
    print(
        f"{len(want)} lines, {sum(w == got.get(l) for l, w in want.items())} the same text, "
        f"{bad} beyond tolerance ({a.tolerance_digits} in the last digit or {a.relative:g} relative)"
    )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
