#!/usr/bin/env python3
"""Compiles every C++ example in README.md and in the public headers.

  check_examples.py --compiler c++ --source-dir . --include DIR... [--keep FILE]

Where examples are found:
  - README.md (and any other Markdown file given with --markdown): every
    ```cpp fenced block;
  - each public header's leading comment: a run of lines indented three
    spaces after "//" ("//   code") that reads as code (most of its lines
    end with ';', '{' or '}', after any trailing // comment). Prose in that
    indentation (lists, tables) is left alone.

How an example compiles: after tests/docs/example_prelude.hpp (which
declares what a reader supplies: Order, handle(), xs, ...), each example
becomes `namespace example_N { <leading definitions> void run() { <rest> } }`.
Leading lines of the form `T name(args) { body }` (one-line functions),
leading `struct X {` ... `};` definitions and #include / using lines stay
at namespace scope. A `#line` directive points
each error at the README or header line it came from.

Writing an example that compiles: use the real API, declare what you use
(or use a prelude name), put statements in order as a function body would
hold them, and give each handle its own name (no `auto x = ...` twice).
"""
import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

DEF_RE = re.compile(r"^[A-Za-z_][\w:<>,\s\*&]*\s+[A-Za-z_]\w*\([^;]*\)\s*\{.*\}\s*$")
TYPE_RE = re.compile(r"^(struct|class)\s+[A-Za-z_]\w*\s*\{\s*$")


def markdown_blocks(path):
    blocks, current, start = [], None, 0
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if current is None and line.strip() == "```cpp":
            current, start = [], i + 1
        elif current is not None and line.strip() == "```":
            blocks.append((path, start, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def reads_as_code(lines):
    code = [re.sub(r"\s*//.*$", "", l).rstrip() for l in lines]
    code = [l for l in code if l.strip()]
    if not code:
        return False
    ends = sum(1 for l in code if l.endswith((";", "{", "}")))
    return ends * 2 >= len(code)


def header_blocks(path):
    blocks, run, start = [], [], 0
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.startswith("//"):
            break
        if line.startswith("//   "):
            if not run:
                start = i
            run.append(line[5:])
            continue
        if line.rstrip() == "//" and run:  # a blank line inside an example
            run.append("")
            continue
        if run:
            while run and not run[-1].strip():
                run.pop()
            if reads_as_code(run):
                blocks.append((path, start, run))
            run = []
    return blocks


def render(index, block):
    path, start, lines = block
    head, body, i = [], [], 0
    while i < len(lines):
        if DEF_RE.match(lines[i]) or lines[i].startswith(("#include", "using ")) \
                or not lines[i].strip():
            head.append((start + i, lines[i]))
            i += 1
        elif TYPE_RE.match(lines[i]):  # a leading struct/class, up to its `};`
            while i < len(lines):
                head.append((start + i, lines[i]))
                i += 1
                if lines[i - 1].rstrip() == "};":
                    break
        else:
            break
    body = [(start + j, lines[j]) for j in range(i, len(lines))]
    out = []
    includes = [(n, l) for n, l in head if l.startswith("#include")]
    for n, l in includes:
        out += [f'#line {n} "{path}"', l]
    out.append(f"namespace example_{index} {{")
    for n, l in head:
        if not l.startswith("#include"):
            out += [f'#line {n} "{path}"', l]
    out.append("[[maybe_unused]] void run() {")
    if body:
        out.append(f'#line {body[0][0]} "{path}"')
        out += [l for _, l in body]
    out.append("}")
    out.append(f"}}  // namespace example_{index}")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compiler", required=True)
    ap.add_argument("--source-dir", required=True, type=Path)
    ap.add_argument("--include", action="append", default=[])
    ap.add_argument("--markdown", action="append", default=[])
    ap.add_argument("--keep", type=Path)
    args = ap.parse_args()
    src = args.source_dir
    blocks = []
    for md in ["README.md"] + args.markdown:
        blocks += markdown_blocks(src / md)
    for header in sorted(list((src / "primitives/include/shmbus").glob("*.hpp")) +
                         list((src / "bus/include/shmbus").glob("*.hpp")) +
                         list((src / "bridge/include/shmbus/bridge").glob("*.hpp"))):
        blocks += header_blocks(header)
    unit = ['#include "example_prelude.hpp"']
    unit += [render(i, b) for i, b in enumerate(blocks)]
    text = "\n".join(unit) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "examples.cpp"
        out.write_text(text)
        cmd = [args.compiler, "-std=c++20", "-fsyntax-only", "-Wall", "-Wno-unused",
               f"-I{src / 'tests/docs'}"] + [f"-I{d}" for d in args.include] + [str(out)]
        r = subprocess.run(cmd)
    print(f"{len(blocks)} examples compiled" if r.returncode == 0 else
          f"an example does not compile (of {len(blocks)}); see the errors above")
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
