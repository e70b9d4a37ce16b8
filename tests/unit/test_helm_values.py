"""helm/values.yaml as Helm sees it: merged over the chart's defaults, valid against the chart's
own schema, and with no secret in it.

The chart's values.yaml and values.schema.yaml are read from ../shared/z2jh (never copied into
the project). That folder is steering data beside the project: where it is absent (a user's
checkout, a user's CI) the schema tests skip and say why; that is right in CI too, since the folder
and not CI decides (our CI has it). On a machine with helm, `helm lint`/`helm template` with the
chart check the same and more (helm/README.md).
"""

import copy

import pytest
from jsonschema import Draft7Validator
from opsbook_hub.settings import SECRET_NAMES

from .helm_support import chart_defaults, chart_schema, helm_merge, merged_values, our_values


def schema_errors(values: dict) -> list[str]:
    validator = Draft7Validator(chart_schema())
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in validator.iter_errors(values)
    ]


def test_helm_merge_merges_mappings_replaces_lists_and_scalars_and_null_deletes():
    defaults = {
        "a": {"x": 1, "y": [1, 2], "z": {"deep": True}},
        "b": "kept",
        "c": {"gone": 1},
        "d": 5,
    }
    ours = {"a": {"y": [3], "z": {"more": 1}}, "c": None, "d": 6, "e": {"new": 1}}
    before = copy.deepcopy((defaults, ours))
    assert helm_merge(defaults, ours) == {
        "a": {"x": 1, "y": [3], "z": {"deep": True, "more": 1}},
        "b": "kept",
        "d": 6,
        "e": {"new": 1},
    }
    assert (defaults, ours) == before


def test_our_values_merged_over_the_charts_defaults_validate_against_its_schema():
    values = merged_values()
    Draft7Validator.check_schema(chart_schema())
    assert schema_errors(values) == []
    # What the merge keeps of the chart's defaults: the label that lets user pods reach the hub.
    assert values["singleuser"]["extraLabels"]["hub.jupyter.org/network-access-hub"] == "true"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("singleuser", "memmory"), {"limit": "2G"}),  # a misspelled key
        (("singleuser", "cpu", "limit"), "1 core"),  # a wrong type
        (("cull", "timeout"), "an hour"),
        (("hub", "image", "tag"), 1),  # a tag is a string
        (("singleuser", "networkPolicy", "egressAllowRules", "nonPrivateIP"), False),
    ],
)
def test_the_schema_check_catches_a_wrong_value(path, value):
    values = copy.deepcopy(our_values())
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert schema_errors(helm_merge(chart_defaults(), values)) != []


def test_no_secret_is_written_in_the_values_file():
    """The hub's secrets come from the Secret opsbook-hub; the chart's own ones it generates."""
    values = our_values()
    extra_env = values["hub"]["extraEnv"]
    for name in SECRET_NAMES & set(extra_env):
        assert "secretKeyRef" in extra_env[name]["valueFrom"], name
    plain = {name for name, spec in extra_env.items() if isinstance(spec, str)}
    assert plain == {"RUNS_SERVICE_URL"}
    assert "cookieSecret" not in values["hub"] and "db" not in values["hub"]
    assert "secretToken" not in values.get("proxy", {})
    assert "CryptKeeper" not in values["hub"]["config"]
    assert "existingSecret" not in values["hub"]
