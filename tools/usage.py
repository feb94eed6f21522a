"""Write every command line's --help into docs/usage.md, so that the two never disagree.

`python tools/usage.py` rewrites the blocks between `<!-- help: NAME -->` and `<!-- end help -->`
in docs/usage.md with NAME's --help output; `--check` only says whether they are up to date (the
test suite runs it). The prose around the blocks is kept as written.
"""
import argparse
import contextlib
import importlib.util
import io
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USAGE = os.path.join(ROOT, 'docs', 'usage.md')
COMMANDS = ('train.py', 'test.py', 'colorize.py', 'export.py', 'plot.py', 'bench.py')
WIDTH = '100'  # argparse wraps --help at the terminal's width: fixed, so the text is the same everywhere
BLOCK = re.compile(r'(<!-- help: (\S+) -->\n)(.*?)(<!-- end help -->)', re.S)


def help_text(command):
    """`python COMMAND --help`, computed in this process (the script loaded by path under a name
    of its own, so that test.py cannot shadow the standard library's test package)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    spec = importlib.util.spec_from_file_location('usage_of_' + command[:-3], os.path.join(ROOT, command))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, columns = io.StringIO(), os.environ.get('COLUMNS')
    os.environ['COLUMNS'] = WIDTH
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            module.parse_args(['--help'])
    finally:
        if columns is None:
            del os.environ['COLUMNS']
        else:
            os.environ['COLUMNS'] = columns
    return out.getvalue()


def rendered(text):
    """docs/usage.md's text with every help block filled in from the command itself."""
    def fill(match):
        return f"{match.group(1)}```text\n{help_text(match.group(2))}```\n{match.group(4)}"
    return BLOCK.sub(fill, text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--check', action='store_true', help='exit 1 if docs/usage.md is not up to date')
    args = p.parse_args(argv)
    with open(USAGE) as f:
        text = f.read()
    missing = [c for c in COMMANDS if f'<!-- help: {c} -->' not in text]
    if missing:
        print(f"docs/usage.md has no help block for {', '.join(missing)}", file=sys.stderr)
        return 1
    new = rendered(text)
    if args.check:
        if new != text:
            print("docs/usage.md is out of date: run python tools/usage.py", file=sys.stderr)
            return 1
        return 0
    with open(USAGE, 'w') as f:
        f.write(new)
    print(f"wrote {USAGE}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
