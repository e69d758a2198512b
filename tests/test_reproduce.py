"""The entry point's argument handling (the stages themselves run in CI through `./reproduce.sh test`)."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return subprocess.run(["bash", str(ROOT / "reproduce.sh"), *args], capture_output=True, text=True, timeout=60)


def test_help_lists_commands_and_profiles():
    r = run("--help")
    assert r.returncode == 0
    for word in ["setup", "test", "--profile ci|book|paper", "--force", "XDREC_DATA"]:
        assert word in r.stdout


def test_bad_arguments_are_refused_before_any_work():
    r = run("--profile", "huge")
    assert r.returncode == 2 and "--profile must be ci, book or paper" in r.stderr
    r = run("deploy")
    assert r.returncode == 2 and "unknown argument 'deploy'" in r.stderr


def stage(cwd, *args):
    """reproduce.sh's `stage` helper, run in ``cwd`` (a project tree of its own) with this Python."""
    import sys

    script = (f'PY={sys.executable}; PROFILE=book\n'
              f'eval "$(sed -n \'/^stage() {{/,/^}}/p\' {ROOT / "reproduce.sh"})"\n'
              'stage "$@"')
    return subprocess.run(["bash", "-c", script, "stage", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_a_stage_reruns_when_results_it_reads_land_but_not_for_its_own_outputs(tmp_path):
    import json

    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "m.py").write_text("x = 1\n")
    (tmp_path / "results" / "book").mkdir(parents=True)
    nb = tmp_path / "16.ipynb"
    nb.write_text(json.dumps({"cells": [{"source": ["print(1)"], "metadata": {}}]}))
    (tmp_path / "results" / "book" / "old.json").write_text("{}")
    before = stage(tmp_path, "snapshot")
    assert before.returncode == 0, before.stderr
    (tmp_path / "before.json").write_text(before.stdout)
    own = tmp_path / "results" / "book" / "own.json"
    own.write_text('{"wall_time_s": 1}')  # what the notebook's run wrote
    stamp = stage(tmp_path, "stamp", "16.ipynb", "before.json")
    assert json.loads(stamp.stdout)["written"] == ["results/book/own.json"]
    (tmp_path / "stamp").write_text(stamp.stdout)
    current = lambda: stage(tmp_path, "current", "16.ipynb", "stamp").returncode == 0
    assert current()
    own.write_text('{"wall_time_s": 2}')  # its own output, rewritten: still current
    assert current()
    new = tmp_path / "results" / "benchmarks" / "new.json"
    new.parent.mkdir()
    new.write_text("{}")  # a result it may read lands
    assert not current()
    new.unlink()
    assert current()
    (tmp_path / "results" / "book" / "old.json").write_text('{"changed": 1}')
    assert not current()
    (tmp_path / "results" / "book" / "old.json").write_text("{}")
    (tmp_path / "lib" / "m.py").write_text("x = 2\n")  # the library changed
    assert not current()
    (tmp_path / "lib" / "m.py").write_text("x = 1\n")
    nb.write_text(json.dumps({"cells": [{"source": ["print(2)"], "metadata": {}}]}))  # the notebook changed
    assert not current()
    (tmp_path / "stamp").write_text("4c9b2fdb261d2cc0\n")  # a stamp of the older format
    assert not current()
