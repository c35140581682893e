"""CTI_SCORE_WEIGHTS: one file of weight overrides for every scoring run (schedules, the sensor,
backfills of the rescore job), under the run's own `weights`."""

from __future__ import annotations

import json

import pytest

from cti_assets import settings
from cti_assets.scoring.weights import WEIGHTS_FILE_ENV, ScoringWeights, configured_weights


def test_the_file_overrides_the_defaults_and_the_run_config_overrides_the_file(
        tmp_path, monkeypatch):
    defaults = ScoringWeights()
    monkeypatch.delenv(WEIGHTS_FILE_ENV, raising=False)
    assert configured_weights() == defaults
    path = tmp_path / "weights.json"
    path.write_text(json.dumps({"abuse_confidence_weight": 0.1, "gn_suspicious_weight": 0.2}))
    monkeypatch.setenv(WEIGHTS_FILE_ENV, str(path))
    from_file = configured_weights()
    assert (from_file.abuse_confidence_weight, from_file.gn_suspicious_weight) == (0.1, 0.2)
    run = configured_weights({"gn_suspicious_weight": 0.9})
    assert (run.abuse_confidence_weight, run.gn_suspicious_weight) == (0.1, 0.9)
    assert defaults.abuse_confidence_weight != 0.1


@pytest.mark.parametrize("content, words", [
    ("{not json", "a readable JSON file of weights (JSONDecodeError)"),
    ("[1, 2]", "a JSON object of weight names and values"),
    ('{"no_such_weight": 1}', "unknown scoring weight(s): no_such_weight"),
    ('{"abuse_confidence_weight": "high"}', "is not a float"),
])
def test_a_bad_file_is_one_line_naming_the_variable_before_any_command_starts(
        tmp_path, monkeypatch, content, words):
    path = tmp_path / "weights.json"
    path.write_text(content)
    monkeypatch.setenv(WEIGHTS_FILE_ENV, str(path))
    with pytest.raises(settings.SettingsError) as error:
        settings.check_environment()
    assert WEIGHTS_FILE_ENV in str(error.value) and words in str(error.value)
    monkeypatch.setenv(WEIGHTS_FILE_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(settings.SettingsError, match="FileNotFoundError"):
        settings.check_environment()
