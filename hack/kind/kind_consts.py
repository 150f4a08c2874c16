#!/usr/bin/env python3
"""Print a string constant of kind's Go source, with its `+`-concatenations resolved.

kind keeps its default CNI and storage manifests, and the image references they name, as Go
string constants in pkg/build/nodeimage/const_*.go; `kind build node-image` writes them into the
node image. Reading them from the kind module of the pinned version keeps the offline node image
identical to what kind would build.

Usage: kind_consts.py KIND_MODULE_DIR NAME   (e.g. defaultCNIManifest, kindnetdImage)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_TOKEN = re.compile(r'\s*(?:`(?P<raw>[^`]*)`|"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<ident>[A-Za-z_]\w*))')


def constants(source: str) -> dict[str, str]:
    """NAME -> value of every `const NAME = <string expression>` in ``source``."""
    raw: dict[str, list[tuple[str, str]]] = {}
    for match in re.finditer(r"^(?:const|var)\s+(\w+)\s*=", source, re.MULTILINE):
        name, pos, parts = match.group(1), match.end(), []
        while True:
            token = _TOKEN.match(source, pos)
            if token is None:
                break
            if token.group("raw") is not None:
                parts.append(("lit", token.group("raw")))
            elif token.group("quoted") is not None:
                parts.append(("lit", bytes(token.group("quoted"), "utf-8").decode("unicode_escape")))
            else:
                parts.append(("ref", token.group("ident")))
            pos = token.end()
            plus = re.match(r"[ \t]*\+", source[pos:])
            if plus is None:
                break
            pos += plus.end()
        if parts:
            raw[name] = parts

    resolved: dict[str, str] = {}

    def resolve(name: str, depth: int = 0) -> str:
        if name in resolved:
            return resolved[name]
        if depth > 10 or name not in raw:
            raise KeyError(name)
        value = "".join(text if kind == "lit" else resolve(text, depth + 1) for kind, text in raw[name])
        resolved[name] = value
        return value

    out: dict[str, str] = {}
    for name in raw:
        try:
            out[name] = resolve(name)
        except KeyError:
            continue
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    source_dir = Path(argv[1]) / "pkg" / "build" / "nodeimage"
    source = "\n".join(path.read_text() for path in sorted(source_dir.glob("const*.go")))
    values = constants(source)
    if argv[2] not in values:
        print(f"kind_consts.py: no string constant {argv[2]} in {source_dir}", file=sys.stderr)
        return 1
    sys.stdout.write(values[argv[2]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
