from pathlib import Path

import pytest

from modelrepo.settings import ConfigError, load_settings, parse_duration, parse_size


def test_defaults():
    s = load_settings(None, environ={})
    assert s.server.listen == "127.0.0.1:8080" and s.server.base_url() == "http://127.0.0.1:8080"
    assert s.data_dir == Path("./data").resolve()
    assert s.limits.max_json_body == 1024 * 1024


def test_yaml_env_and_flag_layers(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  listen: 0.0.0.0:9000\n  public_url: https://models.example.com/\n"
                   "limits:\n  max_json_body: 2 MiB\n  git_rpc_timeout: 10m\nlog:\n  level: debug\n")
    s = load_settings(cfg, environ={"MODELREPO_LOG__LEVEL": "warning", "MODELREPO_DATA_DIR": str(tmp_path / "d"),
                                    "MODELREPO_AUTH__ALLOW_ANONYMOUS_READ": "false"},
                      overrides={"server.listen": "127.0.0.1:9001"})
    assert s.server.listen == "127.0.0.1:9001"  # flag beats file
    assert s.server.base_url() == "https://models.example.com"
    assert s.log.level == "warning"  # env beats file
    assert s.limits.max_json_body == 2 * 1024 * 1024 and s.limits.git_rpc_timeout == 600
    assert s.data_dir == tmp_path / "d" and s.auth.allow_anonymous_read is False


@pytest.mark.parametrize("yaml_text, env, fragment", [
    ("server:\n  lisen: 1.2.3.4:1\n", {}, "lisen"),
    ("bogus: 1\n", {}, "bogus"),
    ("server:\n  listen: nonsense\n", {}, "server.listen"),
    ("server:\n  listen: 'h:99999'\n", {}, "server.listen"),
    ("log:\n  level: loud\n", {}, "log.level"),
    ("limits:\n  max_json_body: lots\n", {}, "limits.max_json_body"),
    ("limits:\n  max_json_body: -5\n", {}, "limits.max_json_body"),
    ("auth:\n  allow_anonymous_read: 'yes please'\n", {}, "auth.allow_anonymous_read"),
    ("server: [1, 2]\n", {}, "server"),
    ("- a\n", {}, "top level"),
    ("server: {listen: [\n", {}, "invalid YAML"),
    ("", {"MODELREPO_SERVR__LISTEN": "x:1"}, "MODELREPO_SERVR__LISTEN"),
    ("", {"MODELREPO_SERVER__NOPE": "1"}, "nope"),
    ("", {"MODELREPO_LIMITS__MAX_JSON_BODY": "abc"}, "limits.max_json_body"),
    ("git:\n  default_branch: 'a..b'\n", {}, "git.default_branch"),
])
def test_bad_config_names_the_key(tmp_path, yaml_text, env, fragment):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg, environ=env)
    assert fragment in str(exc.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_sizes_and_durations():
    assert parse_size(10) == 10 and parse_size("10 MiB") == 10 * 1024**2 and parse_size("1G") == 10**9
    assert parse_duration("500ms") == 0.5 and parse_duration("24h") == 86400 and parse_duration(3) == 3.0
    for bad in ("ten", "1 parsec", True, -1):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_example_config_is_complete_and_valid():
    """config/modelrepo.example.yaml documents every key with its default."""
    import dataclasses

    import yaml

    from modelrepo.settings import Settings

    example = Path(__file__).resolve().parents[2] / "config" / "modelrepo.example.yaml"
    loaded = yaml.safe_load(example.read_text())
    s = load_settings(example, environ={})
    defaults = load_settings(None, environ={})
    assert s == defaults, "the example must show the defaults"

    def keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.type):
                yield from keys(f.type, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}"

    def flat(tree, prefix=""):
        for k, v in tree.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    assert set(keys(Settings)) == set(flat(loaded))


def test_trusted_proxies_must_be_addresses_or_networks(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  trusted_proxies: [10.0.0.5, 10.1.0.0/16, '::1']\n")
    assert load_settings(cfg, environ={}).server.trusted_proxies == ("10.0.0.5", "10.1.0.0/16", "::1")
    cfg.write_text("server:\n  trusted_proxies: [proxy.example.com]\n")
    with pytest.raises(ConfigError, match="server.trusted_proxies: 'proxy.example.com' is not an IP address"):
        load_settings(cfg, environ={})
