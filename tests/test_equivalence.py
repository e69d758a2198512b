"""The stored-result rule, both ways (xdrec.equivalence, xdrec.results).

A stored result is current while the code it names by fingerprint is unchanged, or changed in a way
a certificate proved changed nothing: ``certify`` runs the same seeded probe on the old and the new
code and compares everything they stored. Here, on a copy of the library in a throw-away git
repository, with the probe's cheapest step (the ID baselines at the ``ci`` profile on real data):

- a rename (SASRec's ``item_weights`` becomes ``output_embedding``) is certified, and the result
  the old code stored is read back by the new code without training (``XDREC_REQUIRE_STORED=1``);
  so is a change of the module set a runner fingerprints (paired with the base's by where it is used);
- a change of the loss (label smoothing in SASRec's cross-entropy) is refused, naming the result
  that differs, and that result is then stale for the new code, while module sets without the edited
  file (the GenCDR tokenizer's) keep their fingerprints, so their results stay current.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xdrec import equivalence
from xdrec.results import code_fingerprint, load_if_current

ROOT = Path(__file__).resolve().parents[1]
SASREC = "lib/xdrec/baselines/sasrec.py"
RESULT = "id_baseline__amazon18-xcross__Tools__sasrec-ce__seed0"

pytestmark = pytest.mark.realdata


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from xdrec import data

    try:
        data.find_dataset("amazon18-xcross")
    except data.DatasetNotFoundError:
        pytest.skip("shared data not found (../shared/data or $XDREC_DATA)")
    repo = tmp_path_factory.mktemp("equivalence") / "repo"
    files = subprocess.run(["git", "ls-files", "lib"], cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout.split()
    for f in files:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, repo / f)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    return repo


def _edit(repo: Path, old: str, new: str, count: int, file: str = SASREC) -> None:
    path = repo / file
    text = path.read_text()
    assert text.count(old) == count, f"{file} changed: expected {count} x {old!r}"
    path.write_text(text.replace(old, new))


def _stored_check(repo: Path, work: Path) -> subprocess.CompletedProcess:
    """The new code (``repo``'s lib) asked for the result the base probe stored, without training."""
    script = (f"from xdrec.baselines.experiment import run_id_baseline\n"
              f"run_id_baseline('sasrec-ce', 'amazon18-xcross', 'Tools', profile='ci')\n")
    env = {**os.environ, "PYTHONPATH": str(repo / "lib"), "XDREC_RESULTS": str(work / "base" / "results"),
           "XDREC_REQUIRE_STORED": "1", "XDREC_CHECKPOINTS": str(work / "unused-checkpoints")}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=repo)


def _fingerprints(repo: Path) -> dict[str, str]:
    """What ``repo``'s code fingerprints the ID baselines' and the GenCDR tokenizer's modules to."""
    script = ("import json\nfrom xdrec.results import code_fingerprint\n"
              "from xdrec.gencdr.train_tokenizer import FINGERPRINT_MODULES as G\n"
              "print(json.dumps({'baselines': code_fingerprint('xdrec.baselines', 'xdrec.data', 'xdrec.metrics',"
              " 'xdrec.training'), 'gencdr_tokenizer': code_fingerprint(*G)}))\n")
    env = {**os.environ, "PYTHONPATH": str(repo / "lib")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=repo, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_rename_is_certified_and_a_loss_change_is_refused(repo, tmp_path_factory):
    work = tmp_path_factory.mktemp("probes")
    certificates = repo / "lib" / "xdrec" / "code_equivalence.json"
    before = json.loads(certificates.read_text())
    base_prints = _fingerprints(repo)

    _edit(repo, "item_weights", "output_embedding", 3)  # a rename: definition and every use
    cert = equivalence.certify("HEAD", repo=repo, only="id_baselines", keep=work)
    assert RESULT in cert["results_compared"] and cert["fingerprints"], cert
    assert json.loads(certificates.read_text())["certificates"][:-1] == before["certificates"]
    done = _stored_check(repo, work)
    assert done.returncode == 0, done.stderr[-2000:]  # read back: no StaleResult, nothing trained
    assert _fingerprints(repo) == base_prints  # the certified fingerprint maps back to the base's

    # a module set that changes its members (as when a module moves or is renamed) is paired with the
    # base's by where the probe uses it, not by its name, and certified while every result is the same
    _edit(repo, '"xdrec.metrics", "xdrec.training")', '"xdrec.metrics", "xdrec.progress", "xdrec.training")', 1,
          file="lib/xdrec/baselines/experiment.py")
    cert = equivalence.certify("HEAD", repo=repo, only="id_baselines", keep=work)
    assert any("xdrec.progress" in m for m in cert["modules"]), cert["modules"]
    assert _stored_check(repo, work).returncode == 0  # still read back without training

    _edit(repo, 'reduction="sum")', 'reduction="sum", label_smoothing=0.1)', 1)  # a loss change
    with pytest.raises(SystemExit, match=rf"refused: result {RESULT} differs at /"):
        equivalence.certify("HEAD", repo=repo, only="id_baselines", keep=work)
    assert len(json.loads(certificates.read_text())["certificates"]) == len(before["certificates"]) + 2
    stale = _stored_check(repo, work)
    assert stale.returncode != 0 and "StaleResult" in stale.stderr and "made by code" in stale.stderr
    prints = _fingerprints(repo)  # only the module sets that hold the edited file change
    assert prints["baselines"] != base_prints["baselines"]
    assert prints["gencdr_tokenizer"] == base_prints["gencdr_tokenizer"]


def test_settings_are_part_of_the_key(tmp_path, monkeypatch):
    """A stored result is read back only for the settings it was made with: a changed default is a
    new result, and ``XDREC_REQUIRE_STORED=1`` names the setting that differs."""
    from xdrec.results import StaleResult, save_result

    monkeypatch.setenv("XDREC_RESULTS", str(tmp_path))
    monkeypatch.delenv("XDREC_REQUIRE_STORED", raising=False)
    save_result("r", {"all": {"recall@10": 0.1}}, profile="ci", dataset="d", split="s", seed=0, wall_time_s=1.0,
                trainable_params=0, config={"lr": 0.001, "epochs": 2}, code_fingerprint="abc")
    assert load_if_current("r", "ci", "abc", {"lr": 0.001, "epochs": 2}) is not None
    assert load_if_current("r", "ci", "abc", {"lr": 0.001, "epochs": 3}) is None  # a default changed
    assert load_if_current("r", "ci", "abd", {"lr": 0.001, "epochs": 2}) is None  # the code changed
    monkeypatch.setenv("XDREC_REQUIRE_STORED", "1")
    with pytest.raises(StaleResult, match=r"settings differ: /epochs: 2 vs 3"):
        load_if_current("r", "ci", "abc", {"lr": 0.001, "epochs": 3})


def test_settings_added_at_none_or_retired_keep_results_current_and_any_other_change_does_not(tmp_path, monkeypatch):
    """Typed settings (xdrec.profiles) add fields at None where a runner read a missing key as None,
    and drop a block nobody read: neither may make a stored result stale, while a changed value must."""
    from xdrec.equivalence import RETIRED_SETTINGS
    from xdrec.results import save_result

    monkeypatch.setenv("XDREC_RESULTS", str(tmp_path))
    monkeypatch.delenv("XDREC_REQUIRE_STORED", raising=False)
    retired = next(iter(RETIRED_SETTINGS))  # e.g. ("recommender", "t5", "epochs")
    old = {"universal": {"epochs": 2}, retired[0]: {retired[1]: {"d_model": 8, retired[2]: 50}}}
    save_result("r", {"all": {}}, profile="ci", dataset="d", split="s", seed=0, config=old, code_fingerprint="abc")
    now = {"universal": {"epochs": 2, "max_users": None}, retired[0]: {retired[1]: {"d_model": 8}}}
    assert load_if_current("r", "ci", "abc", now) is not None
    capped = {"universal": {"epochs": 2, "max_users": 300}, retired[0]: {retired[1]: {"d_model": 8}}}
    assert load_if_current("r", "ci", "abc", capped) is None  # a cap where there was none
    wider = {"universal": {"epochs": 2}, retired[0]: {retired[1]: {"d_model": 16}}}
    assert load_if_current("r", "ci", "abc", wider) is None  # a setting the model reads
