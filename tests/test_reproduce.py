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
