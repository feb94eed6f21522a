"""The shape of the house: the commands and the reference's files at the top, the library in
packages by layer; no module imports a higher layer, no command imports another; a front page
of at most 200 lines that links every document."""
import ast
import glob
import os

import pytest

from conftest import ROOT

COMMANDS = {'train', 'test', 'colorize', 'export', 'plot', 'bench'}
REFERENCE_FILES = {'models', 'dataset', 'utils', 'spectral'}  # the reference's networks, datasets, helpers, spectral_norm
PACKAGES = ('core', 'metrics', 'storage', 'training')
# What each layer may import besides itself (a command: anything but another command).
MAY_IMPORT = {
    'base': {'base'},  # core/ with the reference's files
    'metrics': {'base', 'metrics'},
    'storage': {'base', 'storage'},
    'training': {'base', 'metrics', 'storage', 'training'},
}


def layer_of(module):
    """'base', 'metrics', 'storage', 'training', 'command', or None for what is not this project's."""
    top = module.split('.')[0]
    if top in REFERENCE_FILES or top == 'core':
        return 'base'
    if top in PACKAGES:
        return top
    if top in COMMANDS:
        return 'command'
    return None


def project_imports(path):
    """Every module of this project that the file imports, at its top or inside a function."""
    tree = ast.parse(open(path).read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            # `from training import gan` imports training.gan
            found.update(f'{node.module}.{alias.name}' for alias in node.names if node.module in PACKAGES)
    return {m for m in found if layer_of(m) is not None}


def library_files():
    """(module name, path) of every Python file of the product: the top level and the packages."""
    files = [(os.path.basename(p)[:-3], p) for p in glob.glob(os.path.join(ROOT, '*.py'))]
    for package in PACKAGES:
        for p in glob.glob(os.path.join(ROOT, package, '*.py')):
            name = os.path.basename(p)[:-3]
            files.append((package if name == '__init__' else f'{package}.{name}', p))
    return files


def test_the_top_level_holds_the_commands_and_the_reference_files_and_at_most_twelve_python_files():
    top = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, '*.py'))}
    assert COMMANDS | REFERENCE_FILES <= top
    assert len(top) <= 12, sorted(top)


@pytest.mark.parametrize('package', PACKAGES)
def test_every_package_says_what_it_holds_and_what_it_may_import(package):
    init = os.path.join(ROOT, package, '__init__.py')
    doc = ast.get_docstring(ast.parse(open(init).read()))
    assert doc and 'Layer' in doc and 'import' in doc
    for path in glob.glob(os.path.join(ROOT, package, '*.py')):
        if not path.endswith('__init__.py'):
            module = f'{package}.{os.path.basename(path)[:-3]}'
            assert module.split('.')[1] in doc, f"{package}/__init__.py does not name {module}"


def test_no_module_imports_a_higher_layer_and_no_command_imports_another():
    wrong = []
    for name, path in library_files():
        layer = layer_of(name)
        for imported in project_imports(path):
            target = layer_of(imported)
            if layer == 'command':
                if target == 'command' and imported.split('.')[0] != name:
                    wrong.append(f'{name} imports the command {imported}')
            elif target not in MAY_IMPORT[layer]:
                wrong.append(f'{name} ({layer}) imports {imported} ({target})')
    assert wrong == []


def base_unit(module):
    """The base layer's units: core/ as one, and each of the reference's files."""
    top = module.split('.')[0]
    return top if layer_of(top) == 'base' else None


def import_cycle(graph):
    """A cycle [a, b, ..., a] in {unit: {units it imports}}, or None."""
    state = {}

    def visit(node, path):
        state[node] = 'open'
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 'open':
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target, path + [target])
                if found:
                    return found
        state[node] = 'done'
    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_the_base_layer_has_no_import_cycle():
    """core/ and the reference's files may import one another, but in one direction: one of
    them is the floor (utils.py, which imports nothing of the project)."""
    graph = {}
    for name, path in library_files():
        unit = base_unit(name)
        if unit:
            graph.setdefault(unit, set()).update(
                target for target in map(base_unit, project_imports(path)) if target and target != unit)
    assert import_cycle(graph) is None


def test_the_cycle_check_sees_a_cycle():
    assert import_cycle({'core': {'utils'}, 'utils': {'core'}, 'models': {'core'}}) == ['core', 'utils', 'core']
    assert import_cycle({'dataset': {'core', 'utils'}, 'core': {'utils'}, 'utils': set()}) is None


def test_the_check_sees_a_wrong_import(tmp_path):
    """The checker itself: a base module importing training, and a command importing another."""
    low = tmp_path / 'low.py'
    low.write_text('def f():\n    from training import gan\nimport train\n')
    assert project_imports(str(low)) == {'training', 'training.gan', 'train'}
    assert layer_of('training.gan') == 'training' and 'training' not in MAY_IMPORT['base']
    assert layer_of('train') == 'command'


def test_the_front_page_is_at_most_200_lines_and_links_every_document():
    readme = open(os.path.join(ROOT, 'README.md')).read()
    assert len(readme.splitlines()) <= 200
    documents = glob.glob(os.path.join(ROOT, 'docs', '*.md')) + glob.glob(os.path.join(ROOT, 'docs', 'notes', '*.md'))
    unlinked = [os.path.relpath(p, ROOT) for p in documents if f'({os.path.relpath(p, ROOT)}' not in readme]
    assert unlinked == []


# The modules that define flags, and so read them off an argparse namespace; the rest of the
# library takes configs and plain parameters (issue 40).
FLAG_MODULES = {'training.options', 'core.cli'}


def namespace_reads(path):
    """'line: code' for every attribute read of a name `args` in the file (`args.x`,
    `getattr(args, ...)`, `hasattr(args, ...)`, `vars(args)`)."""
    source = open(path).read()
    found = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == 'args':
            found.append(node)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ('getattr', 'hasattr', 'vars') and node.args
              and isinstance(node.args[0], ast.Name) and node.args[0].id == 'args'):
            found.append(node)
    return [f"{node.lineno}: {ast.get_source_segment(source, node)}" for node in found]


def test_no_library_module_but_the_flags_own_reads_a_command_line_namespace():
    """The GAN, the data, the layer forms and the files are built from configs and parameters: a
    caller without a command line (a notebook, bench.py) builds them all."""
    checked, wrong = set(), {}
    for name, path in library_files():
        if name in FLAG_MODULES or layer_of(name) == 'command':
            continue
        checked.add(name)
        reads = namespace_reads(path)
        if reads:
            wrong[name] = reads
    assert {'training.gan', 'training.layer_forms', 'storage.checkpoints', 'models', 'dataset'} <= checked
    assert not wrong, wrong


def test_the_namespace_check_finds_each_kind_of_read(tmp_path):
    path = tmp_path / 'm.py'
    path.write_text("def f(args):\n    return args.seed, getattr(args, 'x', 0), args[0], other.args\n")
    assert namespace_reads(str(path)) == ['2: args.seed', "2: getattr(args, 'x', 0)"]


def test_the_networks_colour_scale_is_coded_in_core_pictures_alone():
    """core/pictures.py holds the network scale of a and b (/127); a second 127 elsewhere would
    drift from it unseen (training/remedies.py had its own AB_SCALE = 127.0)."""
    found = []
    for name, path in library_files():
        if name == 'core.pictures':
            continue
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value == 127:
                found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not found, f"the colour scale 127 coded outside core/pictures.py: {', '.join(found)}"
