"""Every command in preprocess/ and scripts/ runs as ``python -m …`` and as ``python path.py``.

Starting a fresh interpreter per command and form costs seconds each (torch, transformers and
OpenCV are imported again every time), so one interpreter, started outside the repository,
runs them all with :mod:`runpy`, each with the import path that form gives
(``python path.py``: the script's folder first, the repository not on it; ``python -m``: the
working directory, here the repository, first) and after the project's modules are
forgotten, so that no command finds a module that an earlier one imported.
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# argv[1]: the forms ("path,module"); argv[2]: the repository; argv[3:]: the command files
DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback
from pathlib import Path

forms, repo, files = sys.argv[1].split(","), Path(sys.argv[2]), sys.argv[3:]
base_path = list(sys.path[1:])
project = ("dataset", "engine", "modelling", "preprocess", "scripts", "utils")
results = []
for form, name in [(form, name) for form in forms for name in files]:
    for module in [m for m in sys.modules if m.split(".")[0] in project]:
        del sys.modules[module]
    script = repo / name
    first = str(script.parent) if form == "path" else str(repo)
    sys.path[:] = [first, *base_path]
    sys.argv = [str(script), "--help"]
    output = io.StringIO()
    code, error = 0, ""
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            if form == "path":
                runpy.run_path(str(script), run_name="__main__")
            else:
                module = name[: -len(".py")].replace("/", ".")
                runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        except BaseException:
            code, error = 1, traceback.format_exc()
    results.append({"form": form, "file": name, "code": code, "output": output.getvalue(), "error": error})
print(json.dumps(results))
"""


def command_files() -> list[str]:
    """The Python files of preprocess/ and scripts/ that run as a program."""
    files = sorted([*REPO.glob("preprocess/*.py"), *REPO.glob("scripts/*.py")])
    return [
        str(p.relative_to(REPO))
        for p in files
        if 'if __name__ == "__main__":' in p.read_text(encoding="utf-8")
    ]


def run_driver(forms: str, repo: Path, files: list[str], cwd: Path) -> list[dict]:
    """One result per form and file: ``form``, ``file``, ``code`` (exit status), ``output``."""
    # started in an empty folder: -c puts the working directory first on the import path
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, forms, str(repo), *files],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_the_commands_are_found():
    files = command_files()
    assert {"preprocess/extract_keypoints.py", "scripts/schedule.py"} <= set(files)
    assert "preprocess/holistic_mapping.py" not in files  # a module, not a command


def test_every_command_prints_its_help_both_ways(tmp_path):
    files = command_files()
    results = run_driver("path,module", REPO, files, tmp_path)
    assert len(results) == 2 * len(files)
    failures = []
    for result in results:
        shown = result["output"]
        # a command may instead print one line naming its -m form
        if result["code"] != 0 or not ("usage:" in shown or "python -m" in shown):
            failures.append(
                f"{result['form']} form of {result['file']} (exit {result['code']}):\n"
                + (result["error"] or shown)[-800:]
            )
    assert not failures, "\n\n".join(failures)


def test_the_path_form_fails_without_the_repository_on_the_import_path(tmp_path):
    """The driver itself can fail: a file importing the project without making it importable."""
    probe = tmp_path / "probe" / "command.py"
    probe.parent.mkdir()
    probe.write_text(
        "import argparse\nfrom utils.cli import run_command\n\n"
        'if __name__ == "__main__":\n    argparse.ArgumentParser().parse_args()\n'
    )
    (result,) = run_driver("path", tmp_path, ["probe/command.py"], tmp_path)
    assert result["code"] == 1 and "No module named 'utils'" in result["error"]
