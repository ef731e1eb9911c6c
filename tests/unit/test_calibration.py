"""recognizer.calibration on synthetic populations: people are clusters of 128-d vectors,
strangers are fresh clusters drawn the same way, so the rate the derived rule names them
at can be counted and compared with the target it was derived for."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import numpy.typing as npt
import pytest

from recognizer import calibration as cal
from recognizer.gallery import DIM, Gallery, default_rule

#: Person centres and faces around them, spread like dlib's encodings (docs/MATCHING.md):
#: people about 0.8 apart give or take 0.09 (the centres vary in ``SPAN`` directions, so
#: distances spread as much as real ones), a person's photos about 0.45 from each other.
SPAN = 20
BETWEEN, WITHIN = 0.75 / np.sqrt(2 * SPAN), 0.3 / np.sqrt(DIM)


def centres(n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    out = np.zeros((n, DIM))
    out[:, :SPAN] = rng.normal(0, BETWEEN, (n, SPAN))
    return out


def population(people: int, photos: int, seed: int) -> tuple[Gallery, npt.NDArray[np.float64]]:
    """A gallery of ``people`` with ``photos`` faces each, and their centres."""
    rng = np.random.default_rng(seed)
    middles = centres(people, rng)
    g = Gallery(ann_threshold=0)
    for p, centre in enumerate(middles):
        g.set_person(f"p{p}", f"P{p}")
        for f in range(photos):
            g.add_face(f"p{p}", f"p{p}-{f}", centre + rng.normal(0, WITHIN, DIM))
    return g, middles


def strangers(n: int, seed: int) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    return centres(n, rng) + rng.normal(0, WITHIN, (n, DIM))


def named(g: Gallery, probes: npt.NDArray[np.float64], rule: object) -> float:
    return float(np.mean([m.person_id is not None for m in g.match(probes, rule)]))  # type: ignore[arg-type]


def test_normal_quantile_matches_the_standard_library() -> None:
    u = np.array([1e-300, 1e-9, 1e-4, 0.02, 0.02425, 0.3, 0.5, 0.8, 0.999, 1 - 1e-12])
    want = [NormalDist().inv_cdf(x) for x in u]
    assert np.allclose(cal.normal_quantile(u), want, atol=1e-7)


def test_from_enough_faces_the_derived_rule_names_strangers_at_about_the_target() -> None:
    g, _ = population(1500, 2, seed=1500)
    probes = strangers(4000, seed=1)
    for target in (0.01, 0.05):
        rule = cal.calibrated_rule(g, target, "centroid", 5)
        assert rule.calibration == "leave-one-out"
        rate = named(g, probes, rule)
        # 4,000 strangers measure 1% to about +-0.3%: a factor of two is the estimate's error.
        assert target / 2 <= rate <= target * 2, (target, rate, rule)
        assert rule.false_accept_target == target
        assert rule.calibrated_people == 1500


@pytest.mark.parametrize("people", [40, 150])
def test_from_few_faces_the_model_keeps_strangers_within_the_target(people: int) -> None:
    """The model is fitted to dlib's distances (on real faces it follows the target within
    about 1.6x, docs/MATCHING.md); on these synthetic ones it errs on the strict side."""
    g, _ = population(people, 1, seed=people)
    probes = strangers(4000, seed=2)
    for target in (0.01, 0.05):
        rule = cal.calibrated_rule(g, target, "centroid", 5)
        assert rule.calibration == "model"
        assert named(g, probes, rule) <= target * 2, (people, target, rule)


def test_the_same_gallery_gives_the_same_rule_and_a_stricter_target_names_fewer() -> None:
    g, _ = population(60, 1, seed=3)
    loose, strict = cal.calibrated_rule(g, 0.05, "centroid", 5), cal.calibrated_rule(g, 0.005, "centroid", 5)
    assert cal.calibrated_rule(g, 0.05, "centroid", 5) == loose
    probes = strangers(4000, seed=4)
    assert named(g, probes, strict) < named(g, probes, loose)
    assert strict.false_accept_estimate is not None
    assert loose.false_accept_estimate is not None
    assert strict.false_accept_estimate <= 0.005 < loose.false_accept_estimate <= 0.05


def test_a_larger_gallery_gets_its_own_rule() -> None:
    """More people, more chances for a stranger: the rule that holds 5% among 300 people
    names far more among 3,000 (here ten times as many); each gallery's derived rule holds
    it."""
    small, _ = population(300, 1, seed=5)
    large, _ = population(3000, 1, seed=6)
    probes = strangers(4000, seed=7)
    for_small = cal.calibrated_rule(small, 0.05, "centroid", 5)
    for_large = cal.calibrated_rule(large, 0.05, "centroid", 5)
    assert (for_small.tolerance, for_small.margin) != (for_large.tolerance, for_large.margin)
    assert named(small, probes, for_small) <= 0.1
    assert named(large, probes, for_large) <= 0.1
    assert named(large, probes, for_small) > 5 * named(small, probes, for_small)
    assert named(large, probes, for_small) > 0.05


def test_known_faces_are_still_named() -> None:
    g, middles = population(200, 2, seed=7)
    rng = np.random.default_rng(8)
    probes = middles + rng.normal(0, WITHIN, middles.shape)
    rule = cal.calibrated_rule(g, 0.01, "centroid", 5)
    matches = g.match(probes, rule)
    correct = np.mean([m.person_id == f"p{i}" for i, m in enumerate(matches)])
    assert correct >= 0.9, (correct, rule)


def test_tiny_and_empty_galleries_get_a_rule() -> None:
    empty = cal.calibrated_rule(Gallery(), 0.01, "centroid", 5)
    assert empty.calibrated_people == 0
    assert empty.calibration == "empty gallery"
    g, _ = population(2, 1, seed=9)
    rule = cal.calibrated_rule(g, 0.01, "centroid", 5)
    assert rule.calibration == "model"
    assert 0 < rule.tolerance <= cal.MAX_TOLERANCE
    assert named(g, strangers(2000, seed=10), rule) <= 0.02


def test_other_aggregations_leave_the_face_s_own_person_out() -> None:
    g, _ = population(100, 3, seed=11)
    probes = strangers(3000, seed=12)
    for aggregation in ("min", "mean"):
        rule = cal.calibrated_rule(g, 0.02, aggregation, 5)
        assert rule.aggregation == aggregation
        assert named(g, probes, rule) <= 0.04, aggregation


def test_the_rule_source_derives_again_only_when_faces_change() -> None:
    g, _ = population(30, 1, seed=13)
    source = cal.RuleSource(default_rule(), 0.01)
    first = source.rule(g)
    g.set_person("p0", "renamed")  # names do not move the rule
    assert source.rule(g) is first
    rng = np.random.default_rng(14)
    for i in range(300):
        g.add_face(f"n{i}", f"n{i}", centres(1, rng)[0])
    again = source.rule(g)
    assert again is not first
    assert again.calibrated_people == 330
    assert cal.RuleSource(default_rule(), None).rule(g) == default_rule()


def test_a_very_large_gallery_derives_again_only_after_a_real_change() -> None:
    g, _ = population(30, 1, seed=15)
    source = cal.RuleSource(default_rule(), 0.01)
    source.LARGE = 10  # as if 30 people were many
    first = source.rule(g)
    g.add_face("late", "late", np.zeros(DIM))  # one more person in 30 (over 1%): derived again
    second = source.rule(g)
    assert second is not first
    source.CHANGE = 0.1  # as if one face in 31 were little
    g.add_face("p0", "p0-extra", np.zeros(DIM))
    assert source.rule(g) is second
    for i in range(3):  # 4 faces in 31: enough
        g.add_face("p1", f"p1-extra-{i}", np.zeros(DIM))
    assert source.rule(g) is not second


def test_a_person_enrolled_twice_is_not_taken_for_a_stranger() -> None:
    """The same face under two names (a test entry, a duplicate enrollment) is one person
    twice, not a stranger who came within a hair of somebody: it must not make the rule
    stricter for everybody."""
    g, _ = population(80, 1, seed=21)
    alone = cal.calibrated_rule(g, 0.01, "centroid", 5)
    faces, _ = g.faces(80)
    for i in range(0, 80, 4):  # every fourth person enrolled again under another name
        g.add_face(f"again{i}", f"again{i}", faces[i] + 0.001)
    twice = cal.calibrated_rule(g, 0.01, "centroid", 5)
    probes = strangers(4000, seed=22)
    assert named(g, probes, twice) >= named(g, probes, alone) / 2
    assert abs(twice.tolerance - alone.tolerance) <= 0.05
    assert abs(twice.margin - alone.margin) <= 0.03
