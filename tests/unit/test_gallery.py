"""recognizer.gallery with synthetic 128-d vectors: no images, no models."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from recognizer.gallery import AGGREGATIONS, DIM, Gallery, Match, default_rule


def at(distance: float, axis: int) -> npt.NDArray[np.float64]:
    """A vector ``distance`` away from the origin (the probe), along one axis."""
    v = np.zeros(DIM)
    v[axis] = distance
    return v


ORIGIN = np.zeros((1, DIM))


def only(
    gallery: Gallery, tolerance: float = 0.6, margin: float = 0.0, aggregation: str = "min", cohort: int = 1
) -> Match:
    [m] = gallery.match(ORIGIN, default_rule(tolerance, margin, aggregation, cohort))
    return m


def test_empty_gallery_returns_unknowns():
    g = Gallery()
    matches = g.match(np.zeros((3, DIM)), default_rule())
    assert len(matches) == 3
    assert all(m.person_id is None and m.distance is None and m.second_distance is None for m in matches)
    assert g.match(np.empty((0, DIM)), default_rule()) == []
    assert len(g) == 0
    assert g.people == 0


def test_min_and_mean_aggregation_disagree_when_they_should():
    g = Gallery()
    g.set_person("a", "Alice")
    g.set_person("b", "Bob")
    g.add_face("a", "a1", at(0.30, 0))  # one close photo, one far: min 0.30, mean 0.60
    g.add_face("a", "a2", at(0.90, 1))
    g.add_face("b", "b1", at(0.50, 2))  # two middling photos: min 0.50, mean 0.50
    g.add_face("b", "b2", at(0.50, 3))

    by_min = only(g, aggregation="min")
    assert by_min.person_id == "a"
    assert by_min.person_name == "Alice"
    assert by_min.distance == pytest.approx(0.30, abs=1e-4)
    assert by_min.second_distance == pytest.approx(0.50, abs=1e-4)

    by_mean = only(g, aggregation="mean")
    assert by_mean.person_id == "b"
    assert by_mean.person_name == "Bob"
    assert by_mean.distance == pytest.approx(0.50, abs=1e-4)
    assert by_mean.second_distance == pytest.approx(0.60, abs=1e-4)


@pytest.mark.parametrize("aggregation", ["min", "mean"])
def test_margin_rejects_a_near_tie(aggregation):
    g = Gallery()
    g.add_face("a", "a1", at(0.40, 0))
    g.add_face("b", "b1", at(0.42, 1))

    tie = only(g, margin=0.05, aggregation=aggregation)
    assert tie.person_id is None
    assert tie.person_name is None
    assert tie.nearest_person_id == "a"  # still reported, just not named
    assert tie.distance == pytest.approx(0.40, abs=1e-4)
    assert tie.second_distance == pytest.approx(0.42, abs=1e-4)

    assert only(g, margin=0.01, aggregation=aggregation).person_id == "a"
    assert only(g, margin=0.0, aggregation=aggregation).person_id == "a"


@pytest.mark.parametrize("aggregation", ["min", "mean"])
def test_tolerance_rejects_far_faces(aggregation):
    g = Gallery()
    g.add_face("a", "a1", at(0.70, 0))
    g.add_face("b", "b1", at(1.20, 1))

    far = only(g, tolerance=0.6, aggregation=aggregation)
    assert far.person_id is None
    assert far.nearest_person_id == "a"
    assert far.distance == pytest.approx(0.70, abs=1e-4)
    assert only(g, tolerance=0.75, aggregation=aggregation).person_id == "a"


def test_single_person_needs_no_second():
    g = Gallery()
    g.add_face("a", "a1", at(0.2, 0))
    m = only(g, margin=0.5)
    assert m.person_id == "a"
    assert m.second_distance is None


def test_add_is_idempotent_by_face_id():
    g = Gallery()
    g.add_face("a", "f1", at(0.3, 0))
    g.add_face("a", "f1", at(0.3, 0))
    assert len(g) == 1
    assert g.people == 1
    assert only(g).distance == pytest.approx(0.3, abs=1e-4)

    g.add_face("a", "f1", at(0.2, 5))  # the same face id again replaces, never duplicates
    assert len(g) == 1
    assert only(g).distance == pytest.approx(0.2, abs=1e-4)

    g.add_face("a", "f2", list(at(0.4, 1)))  # a plain list is accepted too
    assert len(g) == 2
    assert g.people == 1


def test_remove_face_moves_the_last_row_into_the_hole():
    g = Gallery()
    g.add_face("a", "a1", at(0.30, 0))
    g.add_face("b", "b1", at(0.40, 1))
    g.add_face("c", "c1", at(0.50, 2))

    g.remove_face("a1")  # c1, the last row, moves into a1's row
    assert len(g) == 2
    m = only(g)
    assert m.person_id == "b"
    assert m.second_distance == pytest.approx(0.50, abs=1e-4)

    g.remove_face("b1")
    assert only(g).person_id == "c"  # the moved row still belongs to c
    g.remove_face("b1")  # removing twice, or an unknown id, changes nothing
    g.remove_face("nope")
    assert len(g) == 1

    g.add_face("a", "a1", at(0.30, 0))  # and the removed id can come back
    assert only(g).person_id == "a"


@pytest.mark.parametrize("aggregation", ["min", "mean"])
def test_remove_person(aggregation):
    g = Gallery()
    g.set_person("a", "Alice")
    g.set_person("b", "Bob")
    g.add_face("a", "a1", at(0.30, 0))
    g.add_face("a", "a2", at(0.35, 1))
    g.add_face("b", "b1", at(0.45, 2))
    g.add_face("b", "b2", at(0.55, 3))

    g.remove_person("a")
    assert len(g) == 2
    assert g.people == 1
    assert "a" not in g.names
    m = only(g, aggregation=aggregation)
    assert m.person_id == "b"
    assert m.person_name == "Bob"
    assert m.second_distance is None  # the removed person is no longer a contender

    g.remove_person("a")  # again, and an unknown person: nothing happens
    g.remove_person("zed")
    assert len(g) == 2

    g.remove_person("b")
    assert len(g) == 0
    assert only(g, aggregation=aggregation).person_id is None


def test_growth_beyond_1024_rows():
    rng = np.random.default_rng(7)
    vectors = rng.normal(scale=0.09, size=(2500, DIM))  # norm about 1, like dlib's encodings
    g = Gallery()
    for i, v in enumerate(vectors):
        g.add_face(f"p{i % 1000}", f"f{i}", v)
    assert len(g) == 2500
    assert g.people == 1000

    picks = [0, 1023, 1024, 2047, 2048, 2499]
    dist = g.distances(vectors[picks])
    assert dist.shape == (len(picks), 2500)
    expected = np.linalg.norm(vectors[picks][:, None, :] - vectors[None, :, :], axis=2)
    np.testing.assert_allclose(dist, expected, atol=1e-3)

    matches = g.match(vectors[picks], default_rule(tolerance=0.6, margin=0.0, aggregation="min"))
    assert [m.person_id for m in matches] == [f"p{i % 1000}" for i in picks]
    assert all(m.distance == pytest.approx(0.0, abs=1e-2) for m in matches)

    # 1000 people also outgrow the per-person centroids' first allocation.
    centroids = np.stack(
        [vectors[[j for j in range(2500) if j % 1000 == i % 1000]].mean(axis=0) for i in picks]
    )
    matches = g.match(centroids, default_rule(tolerance=0.6, margin=0.0, aggregation="centroid"))
    assert [m.person_id for m in matches] == [f"p{i % 1000}" for i in picks]
    assert all(m.distance == pytest.approx(0.0, abs=1e-2) for m in matches)


# --- the cohort margin and the centroid aggregation ------------------------------------


def crowd(best: float, others: list[float], aggregation: str = "min") -> Gallery:
    """Person "a" at ``best`` from the probe, then one person per distance in ``others``."""
    g = Gallery()
    g.add_face("a", "a1", at(best, 0))
    for i, d in enumerate(others, 1):
        g.add_face(f"p{i}", f"p{i}", at(d, i))
    return g


def test_default_rule_is_the_cohort_margin_on_centroids():
    rule = default_rule()
    assert rule.name == "cohort-margin-centroid/v1"
    assert (rule.tolerance, rule.margin, rule.aggregation, rule.cohort) == (0.5, 0.1, "centroid", 5)
    # The second-nearest margin keeps its old name, so old events still read the same.
    assert default_rule(0.5, 0.06, "min", 1).name == "nearest-person-min/v1"
    assert default_rule(0.5, 0.06, "mean", 1).name == "nearest-person-mean/v1"
    assert default_rule(0.5, 0.1, "min", 3).name == "cohort-margin-min/v1"
    with pytest.raises(ValueError, match="aggregation"):
        default_rule(aggregation="median")
    with pytest.raises(ValueError, match="cohort"):
        default_rule(cohort=0)


def test_cohort_names_a_face_that_stands_out_from_the_crowd():
    # A look-alike runner-up (0.45) but everyone else far away: an enrolled person.
    g = crowd(0.40, [0.45, 0.90, 0.90, 0.90, 0.90])
    assert only(g, tolerance=0.5, margin=0.10, cohort=1).person_id is None  # 0.05 < 0.10
    m = only(g, tolerance=0.5, margin=0.10, cohort=5)
    assert m.person_id == "a"
    assert m.second_distance == pytest.approx(0.45, abs=1e-4)
    assert m.cohort_distance == pytest.approx((0.45 + 4 * 0.90) / 5, abs=1e-4)


def test_cohort_rejects_a_face_close_to_many_people():
    # A stranger: about as near to five people as to the nearest one.
    g = crowd(0.40, [0.46, 0.47, 0.48, 0.49, 0.50, 1.2])
    m = only(g, tolerance=0.5, margin=0.10, cohort=5)
    assert m.person_id is None
    assert m.nearest_person_id == "a"
    assert m.cohort_distance == pytest.approx(0.48, abs=1e-4)  # the sixth person is not in the cohort
    assert only(g, tolerance=0.5, margin=0.05, cohort=1).person_id == "a"  # the runner-up alone: 0.06
    assert only(g, tolerance=0.5, margin=0.07, cohort=5).person_id == "a"  # 0.48 - 0.40 >= 0.07


def test_cohort_uses_the_people_there_are():
    g = crowd(0.30, [0.50, 0.70])  # cohort 5, but only two other people
    m = only(g, tolerance=0.5, margin=0.25, cohort=5)
    assert m.cohort_distance == pytest.approx(0.60, abs=1e-4)
    assert m.person_id == "a"
    assert only(g, tolerance=0.5, margin=0.31, cohort=5).person_id is None

    lone = crowd(0.30, [])
    m = only(lone, tolerance=0.5, margin=0.5, cohort=5)
    assert m.person_id == "a"  # nobody to stand out from: the tolerance alone decides
    assert m.second_distance is None
    assert m.cohort_distance is None


def test_centroid_is_the_distance_to_the_mean_encoding():
    g = Gallery()
    g.add_face("a", "a1", at(0.4, 0))  # min 0.4, mean 0.4, centroid (0.2, 0.2): 0.283
    g.add_face("a", "a2", at(0.4, 1))
    g.add_face("b", "b1", at(0.35, 2))  # one photo: 0.35 whatever the aggregation
    assert only(g, aggregation="min").person_id == "b"
    assert only(g, aggregation="mean").person_id == "b"
    m = only(g, aggregation="centroid")
    assert m.person_id == "a"
    assert m.distance == pytest.approx(np.hypot(0.2, 0.2), abs=1e-4)
    assert m.second_distance == pytest.approx(0.35, abs=1e-4)


def test_centroid_follows_replacements_and_removals():
    g = Gallery()
    g.add_face("a", "a1", at(0.4, 0))
    g.add_face("a", "a2", at(0.4, 1))
    g.add_face("b", "b1", at(0.55, 2))
    g.add_face("a", "a2", at(0.4, 0))  # replaced: both photos now at (0.4, 0, ...)
    assert only(g, aggregation="centroid").distance == pytest.approx(0.4, abs=1e-4)
    g.remove_face("a1")
    assert only(g, aggregation="centroid").distance == pytest.approx(0.4, abs=1e-4)
    g.remove_face("a2")  # "a" has no photo left: no longer a contender
    m = only(g, aggregation="centroid", cohort=5)
    assert m.person_id == "b"
    assert m.second_distance is None
    assert m.cohort_distance is None
    g.remove_person("b")
    assert only(g, aggregation="centroid").person_id is None
    g.add_face("a", "a3", at(0.3, 3))  # and "a" can come back
    assert only(g, aggregation="centroid").distance == pytest.approx(0.3, abs=1e-4)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("cohort", [1, 3, 5])
def test_match_agrees_with_a_plain_computation(aggregation, cohort):
    rng = np.random.default_rng(11)
    photos = rng.normal(scale=0.09, size=(60, DIM))
    owner = rng.integers(0, 25, size=60)  # 25 people, a varying number of photos each
    g = Gallery()
    for i, (v, p) in enumerate(zip(photos, owner, strict=True)):
        g.add_face(f"p{p}", f"f{i}", v)
    for i in range(0, 60, 7):  # and some removals, which leave holes and empty people
        g.remove_face(f"f{i}")
    kept = [i for i in range(60) if i % 7]
    probes = np.vstack(
        [photos[kept[:10]] + rng.normal(scale=0.02, size=(10, DIM)), rng.normal(scale=0.09, size=(10, DIM))]
    )
    rule = default_rule(0.5, 0.05, aggregation, cohort)
    for probe, m in zip(probes, g.match(probes, rule), strict=True):
        per = {}
        for person in sorted({int(owner[i]) for i in kept}):
            mine = photos[[i for i in kept if owner[i] == person]]
            d = np.linalg.norm(mine - probe, axis=1)
            if aggregation == "centroid":
                per[f"p{person}"] = float(np.linalg.norm(mine.mean(axis=0) - probe))
            else:
                per[f"p{person}"] = float(d.min() if aggregation == "min" else d.mean())
        ranked = sorted(per, key=per.__getitem__)
        best, rest = per[ranked[0]], [per[p] for p in ranked[1 : 1 + cohort]]
        assert m.nearest_person_id == ranked[0]
        assert m.distance == pytest.approx(best, abs=1e-3)
        assert m.second_distance == pytest.approx(rest[0], abs=1e-3)
        assert m.cohort_distance == pytest.approx(np.mean(rest), abs=1e-3)
        named = best <= 0.5 and np.mean(rest) - best >= 0.05
        assert (m.person_id == ranked[0]) if named else (m.person_id is None)
