"""The decode vocabulary (ops/params.py): one parameter object, validated once, that the YAML schema builds
through one method, and the names each option may take defined in one place."""

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from em_chunks.config.base import validate
from em_chunks.config.decode import DecodeConfig
from em_chunks.errors import InputError
from em_chunks.ops.params import (
    BACKENDS,
    MERGE_FUNCTION_NAMES,
    MERGE_FUNCTIONS,
    SEGMENT_ID_MODES,
    DecodeParams,
    Scoring,
)

ROOT = Path(__file__).resolve().parents[1]
PARAM_FIELDS = {f.name for f in dataclasses.fields(DecodeParams)}


def test_every_config_field_is_a_params_field_and_reaches_it_unchanged():
    assert set(DecodeConfig.model_fields) <= PARAM_FIELDS
    cfg = DecodeConfig(aff_threshold=(0.2, 0.9), thresholds=(0.6, 0.3), merge_function="aff50_mean",
                       dust_merge_size=7, dust_remove_size=3, channels=(2, 1, 0), segment_ids="consecutive",
                       agglomeration="python")
    p = cfg.params()
    for name in DecodeConfig.model_fields:
        want = tuple(sorted(cfg.thresholds)) if name == "thresholds" else getattr(cfg, name)
        assert getattr(p, name) == want, name
    assert p.thresholds == (0.3, 0.6)  # ascending: one merging pass serves all; the first is written


def test_the_config_takes_its_names_from_the_vocabulary():
    hints = typing.get_type_hints(DecodeConfig)
    assert typing.get_args(hints["merge_function"]) == MERGE_FUNCTION_NAMES
    assert typing.get_args(hints["segment_ids"]) == SEGMENT_ID_MODES
    assert typing.get_args(hints["agglomeration"]) == BACKENDS
    assert set(MERGE_FUNCTIONS) < set(MERGE_FUNCTION_NAMES)


@pytest.mark.parametrize("field,value,message", [
    ("thresholds", [], "decode.thresholds: expected at least one threshold"),
    ("thresholds", [0.5, 1.5], "decode.thresholds [0.5, 1.5]: expected values in [0, 1]"),
    ("aff_threshold", [0.9, 0.1], "decode.aff_threshold [0.9, 0.1]: expected [low, high]"),
    ("aff_threshold", [0.1, 1.5], "decode.aff_threshold [0.1, 1.5]: expected [low, high]"),
    ("dust_merge_size", -1, "decode.dust_merge_size -1: expected a non-negative voxel count"),
    ("dust_remove_size", -2, "decode.dust_remove_size -2: expected a non-negative voxel count"),
    ("channels", [0, 1], "decode.channels [0, 1]: expected three channel indices"),
    ("channels", [0, 1, -1], "decode.channels [0, 1, -1]: expected three channel indices"),
])
def test_one_set_of_checks_for_the_yaml_and_the_kernels(field, value, message):
    with pytest.raises(InputError, match=re.escape(message)):
        DecodeParams(**{field: tuple(value) if isinstance(value, list) else value})
    with pytest.raises(InputError, match=re.escape(message)) as err:
        validate(DecodeConfig, {field: value}, "wf.yaml", field_prefix="decode.")
    assert str(err.value).startswith("wf.yaml: field 'decode")  # named against the file, one line


def test_waterz_refuses_what_it_cannot_reproduce_before_anything_runs():
    for bad in (dict(merge_function="aff50_mean"), dict(merge_function="aff83_his256"), dict(init_with_max=False)):
        with pytest.raises(InputError, match="decode.agglomeration 'waterz'"):
            DecodeParams(agglomeration="waterz", **bad)
    with pytest.raises(InputError, match="decode.agglomeration 'waterz'"):
        validate(DecodeConfig, {"merge_function": "aff50_mean", "agglomeration": "waterz"}, "wf.yaml")
    assert DecodeParams(agglomeration="waterz").waterz_supported


def test_derived_values_and_a_validated_replace():
    p = DecodeParams(thresholds=(0.2, 0.7), merge_function="aff75_his256", dust_merge_size=20,
                     dust_remove_size=50, segment_ids="consecutive")
    assert p.scoring == Scoring("quantile", 75) and p.max_threshold == 0.7
    assert p.dust_limit == 50 and p.naming == "packed" and p.backend == "distributed"
    assert not p.full_histograms and p.replace(init_with_max=False).full_histograms
    assert DecodeParams(dust_remove_size=50).dust_limit == 0  # removal alone needs no tracking
    spelled = DecodeParams(merge_function="OneMinus<HistogramQuantileAffinity<RegionGraphType,25,ScoreValue,256,false>>")
    assert spelled.init_with_max is False and spelled.scoring == Scoring("quantile", 25)
    with pytest.raises(InputError, match="merge_function"):
        p.replace(merge_function="aff100_his256")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.thresholds = (0.1,)


def test_every_decode_option_has_a_row_in_the_workflow_docs():
    text = (ROOT / "docs" / "workflows.md").read_text()
    section = text.split("## The `decode:` section", 1)[1].split("\n## ", 1)[0]
    documented = {name for row in section.splitlines() if row.startswith("| `")
                  for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert set(DecodeConfig.model_fields) <= documented, set(DecodeConfig.model_fields) - documented
