"""NodeAffinity as kube-scheduler v1.34 reads it: nodeSelector, and required node selector terms
with matchExpressions (In, NotIn, Exists, DoesNotExist, Gt, Lt) and matchFields."""

from __future__ import annotations

import pytest

from tsunagu.api.scheduling import (
    NodeSelectorTerm,
    PodRequirements,
    SelectorOperator,
    SelectorRequirement,
)
from tsunagu.placement.noderules import affinity_matches, requirement_matches, term_matches

Op = SelectorOperator


@pytest.mark.parametrize(
    ("requirement", "value", "expected"),
    [
        pytest.param(SelectorRequirement("zone", Op.In, ("a", "b")), "b", True, id="in"),
        pytest.param(SelectorRequirement("zone", Op.In, ("a", "b")), "c", False, id="in-other"),
        pytest.param(SelectorRequirement("zone", Op.In, ("a",)), None, False, id="in-absent"),
        pytest.param(SelectorRequirement("zone", Op.NotIn, ("a",)), "b", True, id="notin"),
        pytest.param(SelectorRequirement("zone", Op.NotIn, ("a",)), "a", False, id="notin-listed"),
        pytest.param(SelectorRequirement("zone", Op.NotIn, ("a",)), None, True, id="notin-absent"),
        pytest.param(SelectorRequirement("zone", Op.Exists), "", True, id="exists-empty-value"),
        pytest.param(SelectorRequirement("zone", Op.Exists), None, False, id="exists-absent"),
        pytest.param(SelectorRequirement("zone", Op.DoesNotExist), None, True, id="doesnotexist"),
        pytest.param(
            SelectorRequirement("zone", Op.DoesNotExist), "a", False, id="doesnotexist-present"
        ),
        pytest.param(SelectorRequirement("gen", Op.Gt, ("3",)), "4", True, id="gt"),
        pytest.param(SelectorRequirement("gen", Op.Gt, ("3",)), "3", False, id="gt-equal"),
        pytest.param(SelectorRequirement("gen", Op.Gt, ("3",)), "-4", False, id="gt-negative"),
        pytest.param(SelectorRequirement("gen", Op.Gt, ("3",)), "four", False, id="gt-not-integer"),
        pytest.param(SelectorRequirement("gen", Op.Gt, ("3",)), None, False, id="gt-absent"),
        pytest.param(SelectorRequirement("gen", Op.Lt, ("3",)), "2", True, id="lt"),
        pytest.param(SelectorRequirement("gen", Op.Lt, ("3",)), "3", False, id="lt-equal"),
        pytest.param(SelectorRequirement("gen", Op.Lt, ("3",)), None, False, id="lt-absent"),
        pytest.param(SelectorRequirement("gen", Op.Lt, ("x",)), "2", False, id="lt-bad-bound"),
    ],
)
def test_requirement_matches(
    requirement: SelectorRequirement, value: str | None, expected: bool
) -> None:
    assert requirement_matches(requirement, value) is expected


ZONE_A = SelectorRequirement("zone", Op.In, ("a",))
GEN_GT_3 = SelectorRequirement("gen", Op.Gt, ("3",))
NAMED_N1 = SelectorRequirement("metadata.name", Op.In, ("n1",))
NOT_N1 = SelectorRequirement("metadata.name", Op.NotIn, ("n1",))


@pytest.mark.parametrize(
    ("term", "labels", "name", "expected"),
    [
        pytest.param(
            NodeSelectorTerm(), {"zone": "a"}, "n1", False, id="empty-term-matches-nothing"
        ),
        pytest.param(NodeSelectorTerm((ZONE_A,)), {"zone": "a"}, "n1", True, id="expression"),
        pytest.param(
            NodeSelectorTerm((ZONE_A, GEN_GT_3)),
            {"zone": "a", "gen": "3"},
            "n1",
            False,
            id="expressions-anded",
        ),
        pytest.param(
            NodeSelectorTerm((ZONE_A, GEN_GT_3)),
            {"zone": "a", "gen": "5"},
            "n1",
            True,
            id="expressions-all-hold",
        ),
        pytest.param(NodeSelectorTerm((), (NAMED_N1,)), {}, "n1", True, id="field-name-in"),
        pytest.param(NodeSelectorTerm((), (NAMED_N1,)), {}, "n2", False, id="field-name-other"),
        pytest.param(NodeSelectorTerm((), (NOT_N1,)), {}, "n2", True, id="field-name-notin"),
        pytest.param(
            NodeSelectorTerm((ZONE_A,), (NAMED_N1,)),
            {"zone": "b"},
            "n1",
            False,
            id="fields-and-expressions-anded",
        ),
        pytest.param(
            NodeSelectorTerm((ZONE_A,), (NAMED_N1,)),
            {"zone": "a"},
            "n1",
            True,
            id="fields-and-expressions",
        ),
        pytest.param(
            NodeSelectorTerm((SelectorRequirement("metadata.name", Op.In, ("n1",)),)),
            {},
            "n1",
            False,
            id="expression-reads-labels-not-the-name",
        ),
    ],
)
def test_term_matches(
    term: NodeSelectorTerm, labels: dict[str, str], name: str, expected: bool
) -> None:
    assert term_matches(term, labels, name) is expected


@pytest.mark.parametrize(
    ("requirements", "labels", "expected"),
    [
        pytest.param(PodRequirements.of({}), {}, True, id="no-rules"),
        pytest.param(
            PodRequirements.of({}, node_selector={"zone": "a"}),
            {"zone": "a", "x": "y"},
            True,
            id="selector",
        ),
        pytest.param(
            PodRequirements.of({}, node_selector={"zone": "a", "gen": "5"}),
            {"zone": "a"},
            False,
            id="selector-all-labels",
        ),
        pytest.param(
            PodRequirements.of({}, required_terms=()),
            {"zone": "a"},
            False,
            id="empty-term-list-matches-nothing",
        ),
        pytest.param(
            PodRequirements.of(
                {}, required_terms=(NodeSelectorTerm((GEN_GT_3,)), NodeSelectorTerm((ZONE_A,)))
            ),
            {"zone": "a"},
            True,
            id="terms-ored",
        ),
        pytest.param(
            PodRequirements.of(
                {}, node_selector={"zone": "b"}, required_terms=(NodeSelectorTerm((ZONE_A,)),)
            ),
            {"zone": "a"},
            False,
            id="selector-anded-with-affinity",
        ),
    ],
)
def test_affinity_matches(
    requirements: PodRequirements, labels: dict[str, str], expected: bool
) -> None:
    assert affinity_matches(requirements, labels, "n1") is expected
