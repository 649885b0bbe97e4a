"""Which configuration is best, selection-aware: ``best.best_subset`` (multiple comparison with the best on paired
seeds, Holm) and ``best.prob_best`` (paired bootstrap of seeds), on small synthetic run tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp
from statsmodels.stats.multitest import multipletests

from dropout_lab.analysis.best import best_subset, prob_best, seeds_by_configuration
from dropout_lab.errors import InvalidValueError


def _table(means: dict[str, float], n_seeds: int = 12, seed_sd: float = 0.002, noise_sd: float = 0.002,
           rng: int = 0) -> pd.DataFrame:
    """One run per technique and seed: its mean + a seed effect shared by every technique + its own noise."""
    gen = np.random.default_rng(rng)
    shared = gen.normal(0, seed_sd, n_seeds)
    return pd.DataFrame([{"technique": name, "seed": 700 + s, "acc": mean + shared[s] + gen.normal(0, noise_sd)}
                         for name, mean in means.items() for s in range(n_seeds)])


def test_one_clearly_best_technique_is_the_whole_subset_and_almost_always_the_argmax() -> None:
    table = _table({"none": 0.870, "dropout": 0.884, "gaussian": 0.893, "block": 0.880})
    subset = best_subset(table, "technique", "acc")
    assert subset["technique"].tolist()[0] == "gaussian" and subset["may_be_best"].tolist() == [True, False, False,
                                                                                                 False]
    assert subset.set_index("technique").loc["dropout", "beaten_by"] == "gaussian"
    assert subset.set_index("technique").loc["none", "beaten_by"] == "gaussian, dropout, block"
    p = prob_best(table, "technique", "acc")
    assert p["gaussian"] > 0.99 and p.sum() == pytest.approx(1.0)
    assert p.equals(prob_best(table, "technique", "acc"))  # a fixed generator seed: the same numbers again


def test_the_holm_adjusted_one_sided_paired_tests_are_scipys() -> None:
    table = _table({"a": 0.880, "b": 0.884, "c": 0.885}, n_seeds=6, noise_sd=0.003, rng=3)
    wide = table.pivot(index="seed", columns="technique", values="acc")
    pairs = [(i, j) for i in "abc" for j in "abc" if i != j]
    raw = [sp.ttest_rel(wide[j], wide[i], alternative="greater").pvalue for i, j in pairs]  # H1: j beats i
    adjusted = dict(zip(pairs, multipletests(raw, method="holm")[1]))
    subset = best_subset(table, "technique", "acc").set_index("technique")
    for name in "abc":
        assert subset.loc[name, "p_beaten"] == pytest.approx(min(p for (i, _), p in adjusted.items() if i == name))
        assert subset.loc[name, "may_be_best"] == all(p >= 0.05 for (i, _), p in adjusted.items() if i == name)
        low, high = sp.t.interval(0.95, 5, loc=wide[name].mean(), scale=sp.sem(wide[name]))
        assert (subset.loc[name, "ci_low"], subset.loc[name, "ci_high"]) == pytest.approx((low, high))
    assert set(subset["n_seeds"]) == {6}


def test_two_tied_techniques_both_may_be_best_and_share_p_best() -> None:
    table = _table({"dropout": 0.886, "uniform": 0.886, "none": 0.872})
    subset = best_subset(table, "technique", "acc").set_index("technique")
    assert subset["may_be_best"].to_dict() == {"dropout": True, "uniform": True, "none": False}
    p = prob_best(table, "technique", "acc")
    assert p["none"] == 0 and 0.1 < p["dropout"] < 0.9 and p["dropout"] + p["uniform"] == pytest.approx(1.0)
    # Exact ties split each resample between the tied: two identical columns get exactly half each.
    twin = pd.concat([table, table[table["technique"] == "dropout"].assign(technique="twin")])
    p = prob_best(twin, "technique", "acc", resamples=500)
    assert p["twin"] == p["dropout"] and p["twin"] + p["dropout"] + p["uniform"] == pytest.approx(1.0)
    assert best_subset(twin, "technique", "acc").set_index("technique").loc["twin", "may_be_best"]


def test_pairing_on_seeds_separates_what_the_seed_effect_hides() -> None:
    """A shared seed effect (sd 2 pp) ten times the techniques' difference (0.3 pp): unpaired, the two cannot be told
    apart; paired on seeds, the better one is the only one that may be best."""
    table = _table({"gamma": 0.883, "dropconnect": 0.886}, n_seeds=10, seed_sd=0.02, noise_sd=0.0005, rng=1)
    gamma, dropconnect = (table.loc[table["technique"] == t, "acc"] for t in ("gamma", "dropconnect"))
    assert sp.ttest_ind(dropconnect, gamma, alternative="greater").pvalue > 0.3  # the seed effect hides it
    subset = best_subset(table, "technique", "acc").set_index("technique")
    assert subset["may_be_best"].to_dict() == {"dropconnect": True, "gamma": False}
    assert prob_best(table, "technique", "acc")["dropconnect"] > 0.99


def test_only_the_seeds_every_technique_has_are_used() -> None:
    table = _table({"a": 0.88, "b": 0.89}, n_seeds=5)
    extra = pd.DataFrame([{"technique": "a", "seed": 999, "acc": 0.1}])  # b has no run of seed 999
    wide = seeds_by_configuration(pd.concat([table, extra]), "technique", "acc")
    assert 999 not in wide.index and len(wide) == 5
    assert best_subset(pd.concat([table, extra]), "technique", "acc").equals(best_subset(table, "technique", "acc"))


def test_bad_input_is_named() -> None:
    table = _table({"a": 0.88, "b": 0.89}, n_seeds=4)
    with pytest.raises(InvalidValueError, match=r"^table=.* allowed a run table with the columns 'technique', 'x'"):
        best_subset(table, "technique", "x")
    with pytest.raises(InvalidValueError, match=r"^technique=\['a'\] is invalid: allowed at least two configurations"):
        prob_best(table[table["technique"] == "a"], "technique", "acc")
    with pytest.raises(InvalidValueError, match=r"^seed=\[700\] is invalid: allowed at least two seeds"):
        best_subset(table[table["seed"] == 700], "technique", "acc")
    with pytest.raises(InvalidValueError, match=r"^alpha=1\.5 is invalid"):
        best_subset(table, "technique", "acc", alpha=1.5)
    with pytest.raises(InvalidValueError, match=r"^resamples=0 is invalid: allowed an integer >= 1"):
        prob_best(table, "technique", "acc", resamples=0)


def test_after_sequential_seeds_the_tests_and_intervals_are_anytime_valid_and_wider() -> None:
    """With n_opt (a sequential design's first look) the p-values are the mixture's one-sided ones and the
    intervals confidence sequences: never more optimistic than the fixed-n reading, still separating a clear best."""
    table = _table({"none": 0.870, "dropout": 0.884, "gaussian": 0.893}, n_seeds=20)
    fixed = best_subset(table, "technique", "acc").set_index("technique")
    anytime = best_subset(table, "technique", "acc", n_opt=10).set_index("technique")
    assert (anytime["p_beaten"] >= fixed["p_beaten"]).all()
    assert (anytime["ci_low"] < fixed["ci_low"]).all() and (anytime["ci_high"] > fixed["ci_high"]).all()
    assert anytime["may_be_best"].to_dict() == {"gaussian": True, "dropout": False, "none": False}
