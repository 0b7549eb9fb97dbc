import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_our_kernels_package_does_not_look_like_hf_kernels():
    from transformers.utils import import_utils, is_kernels_available

    import kernels

    assert Path(kernels.__file__).resolve().is_relative_to(REPO)
    # transformers maps the import name to our distribution and reads its version, so this stays False only
    # while that version is below its minimum for the hub package; the test guards exactly that
    import_utils.is_kernels_available.cache_clear()
    assert is_kernels_available() is False


def _imported_packages(path: Path) -> set[str]:
    """Top-level packages that ``path`` imports anywhere: module level, inside functions, under conditions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


LAYERS = {
    "kernels": {"miras", "reports", "experiments", "benchmarks", "data", "slurm", "tests", "lightning"},
    "miras": {"reports", "experiments", "benchmarks", "tests"},
}
"""What each package must not import: the kernels stand alone below the models, and the models below the
experiments, the reports and the benchmarks that use them."""


def test_layers_import_only_downwards():
    for package, banned in LAYERS.items():
        for path in (REPO / package).rglob("*.py"):
            found = _imported_packages(path) & banned
            assert not found, f"{path.relative_to(REPO)} imports {sorted(found)}"


def test_the_layer_check_sees_imports_inside_functions(tmp_path):
    path = tmp_path / "lazy.py"
    path.write_text("def f():\n    from miras.lit.callbacks import git_state\n    import lightning\n")
    assert _imported_packages(path) == {"miras", "lightning"}


def test_the_miras_console_script_is_the_cli():
    import subprocess
    import sys

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    from miras.cli import main

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"miras": "miras.cli:main"} and callable(main)
    script = Path(sys.executable).parent / "miras"
    if script.exists():  # installed by `make install`
        out = subprocess.run([str(script), "list", "--help"], capture_output=True, text=True, check=True).stdout
        assert "experiments" in out
