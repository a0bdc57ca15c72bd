#!/usr/bin/env python3
"""Import graph of the crate's modules (files under src/), and its circles.

Usage: tests/tools/import_graph.py [--all] [src]

An edge A -> B means file A names a path `crate::...` (or `super::...`,
`self::...`) that resolves to module file B. `use` groups are expanded. The
strongly connected components of more than one file are printed, largest
first; `--all` prints every file's edges too. The demo (src/demo/) and the
binaries (src/bin/, src/main.rs) are left out, as issue 12 asks.
Exit status 1 when a circle of more than two files exists.
"""
import os
import re
import sys

root = "src"
args = [a for a in sys.argv[1:] if not a.startswith("--")]
if args:
    root = args[0]
show_all = "--all" in sys.argv

files = {}
for dp, _, fns in os.walk(root):
    for fn in fns:
        if fn.endswith(".rs"):
            p = os.path.join(dp, fn)
            rel = os.path.relpath(p, root)
            if rel.startswith("demo" + os.sep) or rel == "demo.rs" or rel.startswith("bin" + os.sep) or rel == "main.rs":
                continue
            files[rel] = p


def mod_path(rel):
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


mods = {mod_path(r): r for r in files}


def resolve(path):
    """Longest prefix of path that is a module file."""
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in mods:
            return mods[tuple(path[:n])]
    return None


def strip_comments(src):
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    return re.sub(r"//[^\n]*", "", src)


def expand_use(tree):
    """Expand `a::{b, c::{d, e}}` into paths."""
    tree = tree.strip()
    out = []
    depth = 0
    i = tree.find("{")
    if i < 0:
        return [tree.split(" as ")[0].strip()]
    prefix = tree[:i]
    inner = tree[i + 1 : tree.rfind("}")]
    parts, cur = [], ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for p in parts:
        p = p.strip()
        if not p:
            continue
        for e in expand_use(p):
            out.append(prefix + e if e != "self" else prefix.rstrip(":"))
    return out


edges = {r: set() for r in files}
for rel, p in files.items():
    me = mod_path(rel)
    src = strip_comments(open(p, encoding="utf-8").read())
    # test modules do not count towards the design's import graph
    src = re.split(r"#\[cfg\(test\)\]\s*mod\s+tests", src)[0]
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", src, flags=re.S):
        paths += expand_use(re.sub(r"\s+", "", m.group(1)))
    for m in re.finditer(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)", src):
        paths.append(m.group(1))
    for path in paths:
        segs = [s for s in path.split("::") if s]
        if not segs:
            continue
        if segs[0] == "crate":
            target = segs[1:]
        elif segs[0] in ("super", "self"):
            # `self` is this module, each `super` one level up
            base = list(me)
            if segs[0] == "self":
                segs = segs[1:]
            while segs and segs[0] == "super":
                base = base[:-1]
                segs = segs[1:]
            target = base + segs
        else:
            continue
        t = resolve(target)
        if t and t != rel:
            edges[rel].add(t)

# Tarjan's strongly connected components
index, low, on, stack, sccs = {}, {}, set(), [], []
counter = [0]
sys.setrecursionlimit(10000)


def strong(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        sccs.append(comp)


for v in sorted(files):
    if v not in index:
        strong(v)

circles = sorted((c for c in sccs if len(c) > 1), key=len, reverse=True)
if show_all:
    for v in sorted(edges):
        print(v, "->", ", ".join(sorted(edges[v])))
for c in circles:
    print(f"circle of {len(c)}: " + " ".join(sorted(c)))
if not circles:
    print("no circles")
sys.exit(1 if circles and len(circles[0]) > 2 else 0)
