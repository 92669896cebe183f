"""The judge without a daemon: its settings decide the lines it draws, and a broken schema stops start-up."""

import json

import pytest

from modelrepo.git.runner import GitRunner
from modelrepo.push.judge import Judge
from modelrepo.settings import ConfigError, PushSettings


async def _nothing(*_args):
    return {}


def judge(**push) -> Judge:
    return Judge(PushSettings(**push), base_url="https://models.example/", git=GitRunner(), pins=_nothing,
                 linked=_nothing, locks=_nothing)


def test_upload_mode_follows_the_settings():
    j = judge(max_plain_blob=1000, weight_patterns=("*.npz",))
    assert [j.upload_mode(p, n) for p, n in (("a.npz", 1), ("a.npz", 0), ("a.bin", 10), ("b.txt", 1001))] == \
        ["lfs", "regular", "regular", "lfs"]


def test_card_problems_use_the_custom_schema(tmp_path):
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"license": {"const": "mit"}}}))
    j = judge(model_card_schema=schema)
    assert j.card_problems(b"---\nlicense: mit\ntags: nlp\n---\n") == []  # the bundled schema would refuse tags
    (problem,) = j.card_problems(b"---\nlicense: apache-2.0\n---\n")
    assert problem.code == "model_card" and "https://models.example/api/v1/model-card.schema.json" in problem.message
    assert problem.message.startswith("README.md: metadata field license")


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"type": "no-such-type"})])
def test_a_broken_schema_is_a_configuration_error(tmp_path, content):
    schema = tmp_path / "broken.json"
    if content is not None:
        schema.write_text(content)
    with pytest.raises(ConfigError, match="push.model_card_schema"):
        judge(model_card_schema=schema)
