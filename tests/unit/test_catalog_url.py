"""catalog.url: the two engines accepted, everything else refused in words naming the key; an
unreachable PostgreSQL is a start-up error in words, not a traceback."""

import pytest

from modelrepo.catalog.db import Catalog, CatalogUnavailable
from modelrepo.settings import ConfigError, load_settings


def test_default_is_the_sqlite_file_in_the_data_dir(tmp_path):
    s = load_settings(None, environ={"MODELREPO_DATA_DIR": str(tmp_path)})
    assert s.catalog.url is None
    assert s.catalog_url == f"sqlite:///{tmp_path.resolve() / 'catalog.db'}"
    assert s.catalog_path == tmp_path.resolve() / "catalog.db"


def test_env_sets_the_url_and_sqlite_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(None, environ={"MODELREPO_CATALOG__URL": "sqlite:///elsewhere/cat.db"})
    assert s.catalog.url == f"sqlite:///{tmp_path.resolve() / 'elsewhere' / 'cat.db'}"
    assert s.catalog_path == tmp_path.resolve() / "elsewhere" / "cat.db"
    pg = load_settings(None, environ={"MODELREPO_CATALOG__URL": "postgresql+asyncpg://u:p%40ss@db:5433/mr"})
    assert pg.catalog_url == "postgresql://u:p%40ss@db:5433/mr"


@pytest.mark.parametrize("url, words", [
    ("mysql://u:p@h/db", "unsupported database 'mysql'"),
    ("not a url", "not a URL"),
    ("postgresql://u:secret@/db", "needs a host and a database"),
    ("postgresql://u:secret@host", "needs a host and a database"),
    ("sqlite://", "needs a file path"),
    ("sqlite:///:memory:", "needs a file path"),
])
def test_bad_urls_are_config_errors(url, words):
    with pytest.raises(ConfigError) as err:
        load_settings(None, environ={"MODELREPO_CATALOG__URL": url})
    assert str(err.value).startswith("catalog.url: ") and words in str(err.value)
    assert "secret" not in str(err.value)  # the password is never shown


def test_unreachable_postgresql_is_an_error_in_words():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CatalogUnavailable) as err:
        Catalog.open(f"postgresql://u:secret@127.0.0.1:{port}/db")
    assert f"cannot connect to the catalog at postgresql://u:***@127.0.0.1:{port}/db" in str(err.value)
    assert "secret" not in str(err.value)


def test_wrong_password_and_missing_database_are_errors_in_words(pg_server):
    url = pg_server.url()
    with pytest.raises(CatalogUnavailable, match="password authentication failed"):
        Catalog.open(url.replace(pg_server.password, "wrong"))
    with pytest.raises(CatalogUnavailable, match='database "nope" does not exist'):
        Catalog.open(pg_server.url("nope", create=False))
