"""Packaging: pyproject.toml, requirements*.txt and environment.yml agree, and the package
lists cover the source tree (a module or data file left out would be missing after
`pip install .`)."""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tomllib = pytest.importorskip('tomllib')
packaging_req = pytest.importorskip('packaging.requirements')


def _pyproject():
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        return tomllib.load(f)


def _req_lines(name):
    out = []
    with open(os.path.join(ROOT, name)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                out.append(packaging_req.Requirement(line))
    return out


def _canon(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def test_requirements_txt_equals_pyproject_dependencies_and_extras():
    project = _pyproject()['project']
    declared = {}
    for spec in project['dependencies']:
        r = packaging_req.Requirement(spec)
        declared[_canon(r.name)] = str(r.specifier)
    for extra, specs in project['optional-dependencies'].items():
        if extra in ('dev', 'all'):
            continue
        for spec in specs:
            r = packaging_req.Requirement(spec)
            assert _canon(r.name) not in declared, f'{r.name} listed twice'
            declared[_canon(r.name)] = str(r.specifier)
    listed = {_canon(r.name): str(r.specifier) for r in _req_lines('requirements.txt')}
    assert listed == declared


def test_dev_pins_satisfy_the_library_ranges_and_cover_every_package():
    project = _pyproject()['project']
    ranges = {}
    for spec in project['dependencies'] + [s for specs in project['optional-dependencies'].values() for s in specs
                                           if not s.startswith('apa-gan')]:
        r = packaging_req.Requirement(spec)
        ranges[_canon(r.name)] = r.specifier
    pins = {}
    for r in _req_lines('requirements-dev.txt'):
        spec = list(r.specifier)
        assert len(spec) == 1 and spec[0].operator == '==', f'{r} is not pinned'
        pins[_canon(r.name)] = spec[0].version
    missing = sorted(set(ranges) - set(pins))
    assert not missing, f'not pinned in requirements-dev.txt: {missing}'
    for name, spec in ranges.items():
        assert spec.contains(pins[name], prereleases=True), f'{name}=={pins[name]} outside {spec}'
    assert pins['torch'] == '2.14.1' and pins['torchvision'] == '0.29.1'
    assert pins['pyspng'] == '0.1.4' and pins['lmdb'] == '3.0.0'
    # GPU machines carry torch 2.11: the library range must admit it.
    assert ranges['torch'].contains('2.11.0')


def test_environment_yml_installs_requirements_txt():
    with open(os.path.join(ROOT, 'environment.yml')) as f:
        text = f.read()
    assert re.search(r'^\s*-\s*-r requirements\.txt\s*$', text, re.M)


def _imports(path):
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split('.')[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split('.')[0])
    return names


def _library_files():
    cfg = _pyproject()['tool']['setuptools']
    for pkg in cfg['packages']:
        d = os.path.join(ROOT, *pkg.split('.'))
        for name in os.listdir(d):
            if name.endswith('.py'):
                yield os.path.join(d, name)
    for mod in cfg['py-modules']:
        path = os.path.join(ROOT, mod + '.py')
        if os.path.isfile(path):
            yield path


def test_packages_cover_the_source_tree():
    cfg = _pyproject()['tool']['setuptools']
    found = set()
    for base in ('dnnlib', 'torch_utils', 'training', 'metrics'):
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, base)):
            dirnames[:] = [d for d in dirnames if d != '__pycache__']
            if '__init__.py' in filenames:
                found.add(os.path.relpath(dirpath, ROOT).replace(os.sep, '.'))
    assert found == set(cfg['packages'])
    data = cfg['package-data']
    for pkg in cfg['packages']:
        d = os.path.join(ROOT, *pkg.split('.'))
        for name in os.listdir(d):
            path = os.path.join(d, name)
            if os.path.isfile(path) and not name.endswith(('.py', '.pyc')):
                patterns = data.get(pkg, [])
                assert any(re.fullmatch(p.replace('.', r'\.').replace('*', '.*'), name) for p in patterns), \
                    f'{pkg}/{name} is not package data'
    # Every top-level tool with a main() is an installed module with a console script.
    scripts = _pyproject()['project']['scripts']
    targets = {v.split(':')[0] for v in scripts.values()}
    for name in os.listdir(ROOT):
        if name.endswith('.py'):
            with open(os.path.join(ROOT, name), encoding='utf-8') as f:
                if re.search(r'^def main\(', f.read(), re.M):
                    assert name[:-3] in cfg['py-modules'] and name[:-3] in targets, name
    for target in targets:
        assert target in cfg['py-modules'] or target.rsplit('.', 1)[0] in cfg['packages'], target


def test_library_imports_are_declared():
    """What the installed code imports at all is the standard library, our packages, or a
    declared dependency (core or extra); torchvision is not among them."""
    import sys
    project = _pyproject()['project']
    declared = {_canon(packaging_req.Requirement(s).name) for s in project['dependencies']}
    for specs in project['optional-dependencies'].values():
        declared |= {_canon(packaging_req.Requirement(s).name) for s in specs if not s.startswith('apa-gan')}
    import_names = {'PIL': 'pillow', 'sklearn': 'scikit-learn', 'open_clip': 'open-clip-torch',
                    'imageio_ffmpeg': 'imageio-ffmpeg'}
    cfg = _pyproject()['tool']['setuptools']
    ours = {p.split('.')[0] for p in cfg['packages']} | set(cfg['py-modules'])
    used = set()
    for path in _library_files():
        used |= _imports(path)
    third = {n for n in used if n not in ours and n not in sys.stdlib_module_names and n != '__future__'}
    undeclared = sorted(n for n in third if _canon(import_names.get(n, n)) not in declared)
    assert not undeclared, undeclared
    assert 'torchvision' not in used
