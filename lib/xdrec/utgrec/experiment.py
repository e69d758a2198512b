"""Every UTGRec study on a held-out target of ``amazon18-xcross``, resumable: Tables 2-3, Figures 2-3.

Studies (each run is cached as a result in ``results/<profile>/``; a rerun skips finished ones):

- ``table2``: UTGRec, and TIGER and LETTER on the target alone
  (:func:`~xdrec.utgrec.train_recommender.run_baseline`); SASRec and BERT4Rec are the foundation's
  single-domain results (:mod:`xdrec.baselines.experiment`), run here if missing;
- ``table3``: every variant of :data:`~xdrec.utgrec.train_recommender.VARIANTS`;
- ``depth`` (Figure 2): UTGRec, TIGER and LETTER with 1 .. 6 T5 layers (the profile's
  ``utgrec_studies.depths``);
- ``sweeps`` (Figure 3): the tokenizer's ``mu`` and ``eta`` (and ``alpha``, which weighs the image
  terms and so changes nothing without images: it is swept only with ``image=True``);
- ``seeds``: Table 3's rows (0) and (1), tree-structured against plain codebooks, at every seed of
  the profile's ``utgrec_studies.seeds`` (the question the paper's ablation asks, with its seed noise);
- ``all``: the five in turn.

Command line: ``python -m xdrec.utgrec.experiment all --profile book [--targets Tools]``; one
process per sweep point or seed: ``... sweeps --points mu=0.001``, ``... seeds --seeds 1``.
"""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from ..profiles import get_profile
from ..results import result_path
from . import train_recommender as rec
from . import train_tokenizer as tz

STUDIES = ("table2", "table3", "depth", "sweeps", "seeds")
SEED_VARIANTS = ("full", "no-tree")
ID_BASELINES = ("sasrec-ce", "bert4rec")


def sweep_name(target: str, setting: str, value: float, seed: int) -> str:
    return f"utgrec__{target}__{setting}-{value:g}__seed{seed}"


def sweep_values(profile: str) -> dict[str, list[float]]:
    """The Figure 3 values to run: ``mu`` and ``eta``; ``alpha`` only when the tokenizer has images."""
    sweeps = dict(get_profile(profile)["utgrec_studies"]["sweeps"])
    if not tz.settings(profile).get("image"):
        sweeps.pop("alpha", None)
    return sweeps


def _wanted(name: str, profile: str, stored_only: bool) -> bool:
    """Whether to run (or read back) result ``name``: always, or with ``stored_only`` only if it is stored."""
    return not stored_only or result_path(name, profile).exists()


def run_table2(target: str, profile: str, data_root=None, *, stored_only: bool = False) -> dict[str, Any]:
    """Table 2 on ``target``: SASRec, BERT4Rec, TIGER, LETTER, UTGRec (``stored_only`` as in :func:`run_depth`)."""
    from ..baselines.experiment import result_name as id_name
    from ..baselines.experiment import run_id_baseline

    cfg = tz.settings(profile)
    dataset, seed = cfg["dataset"], cfg["seed"]
    out = {m: run_id_baseline(m, dataset, target, profile=profile, data_root=data_root, seed=seed)
           for m in ID_BASELINES if _wanted(id_name(m, dataset, target, seed), profile, stored_only)}
    for b in rec.BASELINES:
        if _wanted(rec.baseline_result_name(target, b, seed), profile, stored_only):
            out[b] = rec.run_baseline(target, b, profile=profile, data_root=data_root)
    if _wanted(rec.result_name(target, "full", seed), profile, stored_only):
        out["utgrec"] = rec.run_utgrec(target, profile=profile, data_root=data_root)
    return out


def run_table3(target: str, profile: str, data_root=None, *, stored_only: bool = False) -> dict[str, Any]:
    """Table 3 on ``target``: every variant of UTGRec (``stored_only`` as in :func:`run_depth`)."""
    seed = tz.settings(profile)["seed"]
    return {v: rec.run_utgrec(target, variant=v, profile=profile, data_root=data_root) for v in rec.VARIANTS
            if _wanted(rec.result_name(target, v, seed), profile, stored_only)}


def run_depth(target: str, profile: str, data_root=None, *, stored_only: bool = False) -> dict[tuple[str, int], Any]:
    """Figure 2: each model at every depth; the profile's own depth is the Table 2 run.

    ``stored_only``: leave out the runs that have no stored result instead of training them
    (a stored result made by other code or settings is still recomputed).
    """
    main_depth = rec.settings(profile)["recommender"]["t5"]["n_layers"]
    seed = tz.settings(profile)["seed"]
    out = {}
    for n in get_profile(profile)["utgrec_studies"]["depths"]:
        layers = None if n == main_depth else n
        if _wanted(rec.result_name(target, "full", seed, layers), profile, stored_only):
            out["utgrec", n] = rec.run_utgrec(target, profile=profile, data_root=data_root, n_layers=layers)
        for b in rec.BASELINES:
            if _wanted(rec.baseline_result_name(target, b, seed, layers), profile, stored_only):
                out[b, n] = rec.run_baseline(target, b, profile=profile, data_root=data_root, n_layers=layers)
    return out


def run_sweeps(target: str, profile: str, data_root=None, *, stored_only: bool = False,
               points: Sequence[tuple[str, float]] | None = None) -> dict[tuple[str, float], Any]:
    """Figure 3: one run per value; the profile's own value is the main (``full``) run.

    ``stored_only`` as in :func:`run_depth`; ``points`` (e.g. ``[("mu", 0.001)]``) runs only those
    of the profile's points, so that several processes can share the sweep.
    """
    cfg = tz.settings(profile)
    sweeps = sweep_values(profile)
    unknown = [p for p in points or () if p[1] not in sweeps.get(p[0], ())]
    if unknown:
        raise ValueError(f"sweep point(s) {unknown} are not in the {profile!r} profile's sweeps {sweeps}")
    out = {}
    for setting, values in sweeps.items():
        for value in values:
            if points is not None and (setting, value) not in points:
                continue
            if value == cfg[setting]:
                if _wanted(rec.result_name(target, "full", cfg["seed"]), profile, stored_only):
                    out[setting, value] = rec.run_utgrec(target, profile=profile, data_root=data_root)
            else:
                name = sweep_name(target, setting, value, cfg["seed"])
                if _wanted(name, profile, stored_only):
                    out[setting, value] = rec.run_utgrec(target, profile=profile, data_root=data_root,
                                                         tokenizer_overrides={setting: value}, name=name)
    return out


def study_seeds(profile: str) -> list[int]:
    """The seeds of the ``seeds`` study: the profile's ``utgrec_studies.seeds``, else its one seed."""
    return list(get_profile(profile)["utgrec_studies"].get("seeds", [tz.settings(profile)["seed"]]))


def run_seeds(target: str, profile: str, data_root=None, *, stored_only: bool = False,
              seeds: Sequence[int] | None = None) -> dict[tuple[str, int], Any]:
    """Tree-structured (``full``) and plain (``no-tree``) codebooks at each seed (``seeds``: some of
    :func:`study_seeds`, so that processes can share the study); ``stored_only`` as in :func:`run_depth`."""
    every = study_seeds(profile)
    unknown = sorted(set(seeds or ()) - set(every))
    if unknown:
        raise ValueError(f"seed(s) {unknown} are not in the {profile!r} profile's seeds {every}")
    out = {}
    for seed in every if seeds is None else [s for s in every if s in seeds]:
        for v in SEED_VARIANTS:
            if _wanted(rec.result_name(target, v, seed), profile, stored_only):
                out[v, seed] = rec.run_utgrec(target, variant=v, profile=profile, data_root=data_root, seed=seed)
    return out


RUNNERS = {"table2": run_table2, "table3": run_table3, "depth": run_depth, "sweeps": run_sweeps, "seeds": run_seeds}


def run_all(targets: Sequence[str] | None = None, *, profile: str = "book", studies: Sequence[str] = STUDIES,
            data_root=None, points: Sequence[tuple[str, float]] | None = None,
            seeds: Sequence[int] | None = None) -> None:
    targets = targets or get_profile(profile)["utgrec_studies"]["targets"]
    for target in targets:
        for study in studies:
            if study == "sweeps":
                run_sweeps(target, profile, data_root, points=points)
            elif study == "seeds":
                run_seeds(target, profile, data_root, seeds=seeds)
            else:
                RUNNERS[study](target, profile, data_root)


def parse_point(text: str) -> tuple[str, float]:
    """``"mu=0.001"`` -> ``("mu", 0.001)``."""
    setting, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return setting, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a sweep point is SETTING=VALUE (e.g. mu=0.001), got {text!r}") from None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", choices=list(STUDIES) + ["all"])
    ap.add_argument("--profile", default="book")
    ap.add_argument("--targets", nargs="*", default=None, help="default: the profile's utgrec_studies.targets")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--points", nargs="+", type=parse_point, default=None, metavar="SETTING=VALUE",
                    help="sweeps: run only these points of the profile's sweeps (default: all)")
    ap.add_argument("--seeds", nargs="+", type=int, default=None,
                    help="seeds: run only these of the profile's seeds (default: all)")
    args = ap.parse_args(argv)
    run_all(args.targets, profile=args.profile, studies=STUDIES if args.study == "all" else [args.study],
            data_root=args.data_root, points=args.points, seeds=args.seeds)


if __name__ == "__main__":
    main()
