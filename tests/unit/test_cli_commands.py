"""The command tree of ``modelrepo``: every command explained, and the progress line's two modes."""

import io
import subprocess
import sys
import time

import click
from modelrepo.cli.main import main
from modelrepo.cli.progress import Status


def _commands(group: click.Group, prefix: str = "modelrepo"):
    """(path, command, the width click gives its description in the group's 80-column listing)."""
    width = 80 - 6 - max(len(name) for name in group.commands)
    for name, command in group.commands.items():
        yield f"{prefix} {name}", (command, width)
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")


def test_every_command_has_a_one_line_description():
    commands = dict(_commands(main))
    assert len(commands) >= 30
    missing = [path for path, (command, width) in commands.items() if not command.get_short_help_str(width).strip()]
    assert not missing, f"commands without a description: {missing}"
    cut = [path for path, (command, width) in commands.items() if command.get_short_help_str(width).endswith("...")]
    assert not cut, f"descriptions cut short in `--help` listings: {cut}"


def test_the_admin_commands_issue_10_asks_for_exist():
    commands = dict(_commands(main))
    for path in ("model delete", "model show", "token list", "token revoke", "user list", "user disable",
                 "namespace list", "namespace remove-member", "deployment list", "deployment stop",
                 "webhook list", "webhook redeliver", "gc", "fsck", "backup", "restore", "serve"):
        assert f"modelrepo {path}" in commands, path


# What a command imports when it runs, never to declare the command tree (see modelrepo/cli/__init__.py).
HEAVY = ("sqlalchemy", "alembic", "aiohttp", "pygit2", "numpy", "gguf", "structlog", "modelrepo.services",
         "modelrepo.daemon", "modelrepo.settings")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return out.split()


def test_the_command_tree_is_declared_without_the_services():
    """`modelrepo --help` (and a usage error) must not pay for the services' imports (~2.5 s of CPU)."""
    assert _loaded_after("from modelrepo.cli.main import main") == []
    help_text = subprocess.run([sys.executable, "-c", "from modelrepo.cli.main import main; main()", "--help"],
                               capture_output=True, text=True).stdout
    assert "namespace" in help_text and "fsck" in help_text
    # The probe can fail: importing the composition root loads what the command tree must not.
    assert "sqlalchemy" in _loaded_after("import modelrepo.services")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_off_a_tty_prints_only_the_steps():
    stream = io.StringIO()
    with Status("backup", stream) as status:
        add = status.measure("copied", 100)
        add(50)
        status.say("copied the catalog")
        time.sleep(0.25)
    assert stream.getvalue() == "copied the catalog\n"


def test_status_on_a_tty_draws_a_live_line_and_clears_it():
    stream = Tty()
    with Status("fsck", stream) as status:
        add = status.measure("re-hashed", 2048)
        add(1024)
        time.sleep(0.25)
        status.say("step one")
    out = stream.getvalue()
    assert "\r\x1b[K| fsck" in out or "\r\x1b[K/ fsck" in out
    assert "re-hashed: 1 KiB of 2 KiB (50%)" in out
    assert "step one\n" in out
    assert out.endswith("\r\x1b[K"), repr(out[-40:])
