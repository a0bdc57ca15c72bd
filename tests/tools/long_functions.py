#!/usr/bin/env python3
"""Functions in src/ longer than 80 lines, and whether a comment says why.

Usage: tests/tools/long_functions.py [src] [--limit N]

A function's length is counted from its `fn` line to its closing brace (by
brace matching, strings and comments skipped). It "says why" when the doc
or line comments right above it, or the first lines of its body, contain
"Long:" (the convention: `/// Long: <reason>`). Exit status 1 when a long
function does not say why.
"""
import os
import re
import sys

args = [a for a in sys.argv[1:] if not a.startswith("--")]
root = args[0] if args else "src"
limit = 80
if "--limit" in sys.argv:
    limit = int(sys.argv[sys.argv.index("--limit") + 1])

fn_re = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")
bad = 0
rows = []
for dp, _, fns in os.walk(root):
    for fn in sorted(fns):
        if not fn.endswith(".rs"):
            continue
        p = os.path.join(dp, fn)
        lines = open(p, encoding="utf-8").read().split("\n")
        i = 0
        while i < len(lines):
            m = fn_re.match(lines[i])
            if not m:
                i += 1
                continue
            # find the opening brace, then match
            depth, j, started = 0, i, False
            while j < len(lines):
                code = re.sub(r'"(\\.|[^"\\])*"', '""', lines[j])
                code = re.sub(r"'(\\.|[^'\\])'", "''", code)
                code = code.split("//")[0]
                if ";" in code and not started and "{" not in code:
                    break  # a declaration without a body
                for ch in code:
                    if ch == "{":
                        depth += 1
                        started = True
                    elif ch == "}":
                        depth -= 1
                if started and depth == 0:
                    break
                j += 1
            length = j - i + 1
            if started and length > limit:
                above = []
                k = i - 1
                while k >= 0 and (lines[k].strip().startswith(("//", "#[")) or not lines[k].strip()):
                    above.append(lines[k])
                    k -= 1
                head = lines[i : i + 6]
                says = any("Long:" in l for l in above + head)
                rows.append((length, p, i + 1, m.group(6), says))
                if not says:
                    bad += 1
            i = j + 1 if started else i + 1
for length, p, line, name, says in sorted(rows, reverse=True):
    print(f"{length:4} {p}:{line} {name}{'' if says else '  (no reason given)'}")
print(f"{len(rows)} functions over {limit} lines, {bad} without a reason")
sys.exit(1 if bad else 0)
