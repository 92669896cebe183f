"""Typed configuration: defaults < YAML file < MODELREPO_* environment < command-line flags.

Every section is a frozen dataclass so the rest of the code can trust the types it is handed.
cattrs does the structuring with ``forbid_extra_keys`` so a typo in the YAML stops start-up with
the key path named, instead of being silently ignored.
"""


import dataclasses
import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NewType

import cattrs
import yaml

ENV_PREFIX = "MODELREPO_"
# Variables with our prefix that are not config keys: the config path itself, and the variables the
# daemon puts in the environment of the git processes (and so of the hooks) it spawns.
ENV_RESERVED = {"MODELREPO_CONFIG"}
ENV_RESERVED_PREFIXES = ("MODELREPO_HOOK_",)

ByteSize = NewType("ByteSize", int)
Duration = NewType("Duration", float)
# server.workers: a count, or "auto" (one per CPU), resolved when the settings are loaded.
WorkerCount = NewType("WorkerCount", int)
MAX_WORKERS = 256

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024,
               "m": 1000**2, "mb": 1000**2, "mib": 1024**2, "mi": 1024**2,
               "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
               "t": 1000**4, "tb": 1000**4, "tib": 1024**4, "ti": 1024**4}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(Exception):
    """A configuration value is unknown or invalid; the message names the key."""


@functools.lru_cache(maxsize=8)
def ip_networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A setting's addresses and CIDR networks, parsed once per value (settings are replaced, not
    mutated, on reload); ValueError names the first entry that is neither."""
    found = []
    for entry in entries:
        try:
            found.append(ipaddress.ip_network(str(entry).strip().strip("[]"), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
    return tuple(found)


@dataclass(frozen=True)
class ServerSettings:
    listen: str = "127.0.0.1:8080"
    # Base URL clients use to reach us (clone URLs, LFS hrefs). Default: http://<listen>.
    public_url: str | None = None
    # Seconds SIGTERM waits for in-flight requests before closing them.
    shutdown_timeout: Duration = Duration(30.0)
    # /readyz fails when the data dir's filesystem has less free space than this.
    min_free_space: ByteSize = ByteSize(1024**3)
    # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For is believed. Behind one,
    # every request comes from the proxy: without this the brute-force guard and the per-client
    # git limits would count all clients as one.
    trusted_proxies: tuple[str, ...] = ()
    # Processes serving requests: 1 is one process; N > 1 is a supervisor and N workers sharing the
    # port (SO_REUSEPORT); "auto" is one per CPU.
    workers: WorkerCount = WorkerCount(1)
    # Unix sockets (hooks, notify) and per-run files; null means DATA/run. Must be a local filesystem.
    run_dir: Path | None = None

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class LogSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: console renderer when stderr is a TTY, JSON lines otherwise.
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True)
class AuthSettings:
    realm: str = "modelrepo"
    # Anonymous users may read public models; set false to require a token for everything.
    allow_anonymous_read: bool = True
    # Brute-force guard: after this many failed authentications from one client address within
    # failure_window, that address gets 429 until the window has passed.
    max_failures: int = 20
    failure_window: Duration = Duration(300.0)
    # Web UI sessions end after this long without a request, and this long after sign-in whatever happens.
    session_idle: Duration = Duration(2 * 3600.0)
    session_absolute: Duration = Duration(7 * 86400.0)


@dataclass(frozen=True)
class LimitsSettings:
    # Largest JSON body the REST API reads.
    max_json_body: ByteSize = ByteSize(1024 * 1024)
    # Largest (decompressed) git-upload-pack negotiation body; a push body is not bounded here.
    max_upload_pack_request: ByteSize = ByteSize(64 * 1024 * 1024)
    # Largest git push (receive-pack request body, after gzip); 0 means no limit.
    max_push_size: ByteSize = ByteSize(0)
    # Largest Hub API commit body (regular files arrive base64-encoded in it; weights go through LFS).
    max_commit_body: ByteSize = ByteSize(256 * 1024 * 1024)
    # How long a git RPC may take end to end before the subprocess is killed.
    git_rpc_timeout: Duration = Duration(3600.0)
    # A connection must send a whole request head within this of opening or of its previous
    # response (aiohttp's keep-alive timer also covers a head in progress): the slowloris guard.
    header_timeout: Duration = Duration(30.0)
    # A request body that stalls this long gets 408: stalled uploads do not hold resources forever.
    body_idle_timeout: Duration = Duration(60.0)
    # aiohttp's parser limits, set deliberately: header count, request line / header field bytes.
    max_headers: int = 100
    max_header_size: ByteSize = ByteSize(8190)
    # Concurrent git protocol processes, in total and per client address (503 + Retry-After past).
    max_git_processes: int = 64
    max_git_processes_per_client: int = 16


@dataclass(frozen=True)
class GitSettings:
    binary: str = "git"
    default_branch: str = "main"


DEFAULT_WEIGHT_PATTERNS = ("*.bin", "*.safetensors", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.onnx", "*.gguf",
                           "*.tflite", "*.pb", "*.msgpack", "*.zip", "*.tar", "*.gz", "*.npz", "*.pkl", "*.joblib")


@dataclass(frozen=True)
class PushSettings:
    # A blob larger than this that is not an LFS pointer is refused.
    max_plain_blob: ByteSize = ByteSize(10 * 1024 * 1024)
    # File names (fnmatch on the base name) that must be LFS pointers whatever their size.
    weight_patterns: tuple[str, ...] = DEFAULT_WEIGHT_PATTERNS
    # JSON Schema for README.md front matter; null means the bundled config/model-card.schema.json.
    model_card_schema: Path | None = None
    # A pushed pickle (or PyTorch zip, object .npy) importing a dangerous callable such as
    # os.system: refuse the push, warn (accept and flag it), or allow it.
    pickle_policy: Literal["refuse", "warn", "allow"] = "refuse"


@dataclass(frozen=True)
class WebhookSettings:
    # Seconds one delivery attempt may take.
    timeout: Duration = Duration(10.0)
    # Attempts before a delivery is marked failed (it can still be redelivered by hand).
    max_attempts: int = 8
    # Backoff: base * 2^(attempt-1), capped, with +-50% jitter.
    backoff_base: Duration = Duration(2.0)
    backoff_max: Duration = Duration(600.0)
    # SSRF guard: webhooks may reach public addresses only; loopback, link-local, private,
    # unique-local and other internal addresses are refused unless listed here, as host names
    # (exact; trusted whatever they resolve to) or IP addresses / CIDR networks.
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeploySettings:
    # Model card fields a tag must carry to be deployed.
    required_fields: tuple[str, ...] = ("library_name", "pipeline_tag")
    # Refuse to deploy a tag holding any pickle-based weights, not only dangerous ones.
    require_safe_weights: bool = False


@dataclass(frozen=True)
class S3Settings:
    bucket: str = ""
    # Key prefix inside the bucket; objects are stored as <prefix><oid[0:2]>/<oid[2:4]>/<oid>.
    prefix: str = "lfs/"
    # Endpoint of an S3-compatible server (SeaweedFS, MinIO, Ceph RGW); null means AWS.
    endpoint_url: str | None = None
    region: str = "us-east-1"
    # Credentials; leave null to use the standard AWS chain (env, shared files, instance role).
    # Prefer MODELREPO_LFS__S3__ACCESS_KEY_ID / ..._SECRET_ACCESS_KEY in the environment file.
    access_key_id: str | None = None
    secret_access_key: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "path"
    # proxy: bytes flow through the daemon (verified while streaming);
    # direct: clients get presigned S3 URLs and the daemon checks the object on verify.
    mode: Literal["proxy", "direct"] = "proxy"
    # Multipart part size for proxy uploads (S3 needs >= 5 MiB); also the memory per upload.
    part_size: ByteSize = ByteSize(8 * 1024 * 1024)


@dataclass(frozen=True)
class LfsSettings:
    storage: Literal["local", "s3"] = "local"
    # Largest single object accepted (per-object 422 in the batch response past it).
    max_object_size: ByteSize = ByteSize(256 * 1024**3)
    # Objects per batch request (413 past it). git-lfs sends 100.
    max_batch_objects: int = 1000
    # Lifetime of the signed action headers and presigned URLs handed out by the batch API.
    action_expiry: Duration = Duration(3600.0)
    s3: S3Settings = field(default_factory=S3Settings)


@dataclass(frozen=True)
class CatalogSettings:
    # Where the catalog lives: null means the embedded SQLite file DATA/catalog.db; or
    # sqlite:///PATH, or postgresql://USER:PASSWORD@HOST:PORT/DB (driven with asyncpg). Several
    # daemons (replicas, workers) can share one PostgreSQL catalog; an SQLite one is for one machine.
    url: str | None = None
    # PostgreSQL only: connections each process keeps open, and how many more it may open at a peak.
    pool_size: int = 5
    max_overflow: int = 10
    # The longest a catalog statement waits for a lock another transaction holds (SQLite's busy
    # timeout; PostgreSQL's lock_timeout) before the request gets 503 + Retry-After, unchanged.
    lock_timeout: Duration = Duration(10.0)
    # PostgreSQL only: the server ends a session of ours idle inside a transaction this long (a
    # hung process), releasing its locks. Above the longest pause inside one (gc's 30 s store delete).
    idle_in_transaction_timeout: Duration = Duration(60.0)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    server: ServerSettings = field(default_factory=ServerSettings)
    log: LogSettings = field(default_factory=LogSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    git: GitSettings = field(default_factory=GitSettings)
    lfs: LfsSettings = field(default_factory=LfsSettings)
    push: PushSettings = field(default_factory=PushSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    deploy: DeploySettings = field(default_factory=DeploySettings)
    catalog: CatalogSettings = field(default_factory=CatalogSettings)

    @property
    def lfs_dir(self) -> Path:
        return self.data_dir / "lfs"

    @property
    def secret_key_path(self) -> Path:
        return self.data_dir / "secret.key"

    @property
    def catalog_url(self) -> str:
        """The catalog's URL as ``catalog.db_url`` understands it (sqlite:///… or postgresql://…)."""
        return self.catalog.url or f"sqlite:///{self.data_dir / 'catalog.db'}"

    @property
    def catalog_path(self) -> Path:
        """The SQLite catalog's file (the default DATA/catalog.db); meaningless on PostgreSQL."""
        if self.catalog.url and self.catalog.url.startswith("sqlite"):
            return Path(self.catalog.url.split(":///", 1)[1])
        return self.data_dir / "catalog.db"

    @property
    def repos_dir(self) -> Path:
        return self.data_dir / "repos"

    @property
    def run_dir(self) -> Path:
        return self.server.run_dir or self.data_dir / "run"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"


def parse_size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1048576 or '10 MiB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])
    raise ValueError(f"expected a size such as 1048576 or '10 MiB', got {value!r}")


def parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30 or '30s'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"expected a duration such as 30, '500ms', '30s', '24h', got {value!r}")


def parse_workers(value: Any) -> int:
    """A worker count: an integer from 1 to MAX_WORKERS, or "auto" for one per CPU."""
    if value == "auto":
        return max(1, os.cpu_count() or 1)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise ValueError(f"expected a number of processes from 1 to {MAX_WORKERS} or 'auto', got {value!r}")
    return value


def _strict(kind: type) -> Any:
    def hook(value: Any, _t: Any) -> Any:
        # bool is an int subclass: refuse it where an int is expected, and refuse "1" for bool.
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"expected {kind.__name__}, got {value!r}")
        return value

    return hook


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(str, _strict(str))
    conv.register_structure_hook(bool, _strict(bool))
    conv.register_structure_hook(int, _strict(int))
    conv.register_structure_hook(float, lambda v, _t: float(_strict(int)(v, _t)) if isinstance(v, int)
                                 else _strict(float)(v, _t))
    conv.register_structure_hook(Path, lambda v, _t: Path(_strict(str)(v, _t)))
    conv.register_structure_hook(ByteSize, lambda v, _t: ByteSize(parse_size(v)))
    conv.register_structure_hook(Duration, lambda v, _t: Duration(parse_duration(v)))
    conv.register_structure_hook(WorkerCount, lambda v, _t: WorkerCount(parse_workers(v)))
    return conv


_CONVERTER = _make_converter()


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(path)}: {part} is not a section")
        node = child
    node[path[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """MODELREPO_SECTION__KEY=value (double underscore between levels; single-level keys such as
    MODELREPO_DATA_DIR need none). Values are parsed as YAML scalars so ints and bools work."""
    tree: dict[str, Any] = {}
    top = {f.name: f for f in dataclasses.fields(Settings)}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_RESERVED:
            continue
        if name.startswith(ENV_RESERVED_PREFIXES):
            continue
        key = name[len(ENV_PREFIX):].lower()
        path = key.split("__")
        if path[0] not in top:
            raise ConfigError(f"environment variable {name}: unknown config key {'.'.join(path)!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        # A path-like or free-text value must stay a string even if it looks like a number.
        if isinstance(value, (int, float)) and path[-1] in {"listen", "public_url", "realm", "binary",
                                                            "data_dir", "default_branch", "bucket", "prefix",
                                                            "access_key_id", "secret_access_key", "region",
                                                            "endpoint_url", "url", "run_dir"}:
            value = raw
        if path == ["catalog", "url"] and value is not None:
            value = raw  # a URL is never YAML: "sqlite:///:memory:" would parse as a mapping
        _set_path(tree, path, value)
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _format_cattrs_error(exc: BaseException) -> str:
    messages = cattrs.transform_error(exc, path="")
    cleaned = []
    for msg in messages:
        # "invalid value for type, expected int @ $.server.port" -> "server.port: ..."
        text, _, where = msg.rpartition(" @ ")
        where = where.lstrip("$").lstrip(".") or "(top level)"
        cleaned.append(f"{where}: {text}")
    return "; ".join(cleaned)


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the effective settings. ``overrides`` are dotted keys from command-line flags."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if config_file is not None:
        try:
            text = Path(config_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{config_file}: invalid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_file}: the top level must be a mapping of sections")
        raw = loaded
    raw = _merge(raw, _env_overrides(environ))
    for dotted, value in (overrides or {}).items():
        _set_path(raw, dotted.split("."), value)
    try:
        settings = _CONVERTER.structure(raw, Settings)
    except Exception as exc:  # cattrs raises ClassValidationError / ForbiddenExtraKeysError
        if isinstance(exc, (cattrs.errors.ClassValidationError, cattrs.errors.ForbiddenExtraKeysError)):
            raise ConfigError(_format_cattrs_error(exc)) from exc
        raise ConfigError(str(exc)) from exc
    _validate(settings)
    # Absolute from here on: git runs hooks with the repository as cwd, and they need our socket.
    settings = dataclasses.replace(settings, data_dir=settings.data_dir.expanduser().resolve())
    if settings.server.run_dir is not None:
        settings = dataclasses.replace(settings, server=dataclasses.replace(
            settings.server, run_dir=settings.server.run_dir.expanduser().resolve()))
    if settings.catalog.url:
        from modelrepo.catalog.urls import BadCatalogUrl, normalize  # noqa: PLC0415 - sqlalchemy when configured

        try:
            url = normalize(settings.catalog.url)
        except BadCatalogUrl as exc:
            raise ConfigError(str(exc)) from None
        settings = dataclasses.replace(settings, catalog=dataclasses.replace(settings.catalog, url=url))
    return settings


def _validate(s: Settings) -> None:
    listen = s.server.listen
    if ":" not in listen:
        raise ConfigError(f"server.listen: expected HOST:PORT, got {listen!r}")
    port = listen.rsplit(":", 1)[1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"server.listen: port must be 0..65535, got {port!r}")
    if s.server.public_url and not re.match(r"^https?://[^/\s]+(/\S*)?$", s.server.public_url):
        raise ConfigError(f"server.public_url: expected an http(s) URL, got {s.server.public_url!r}")
    try:
        ip_networks(s.server.trusted_proxies)
    except ValueError as exc:
        raise ConfigError(f"server.trusted_proxies: {exc}") from None
    if s.lfs.storage == "s3" and not s.lfs.s3.bucket:
        raise ConfigError("lfs.s3.bucket: required when lfs.storage is s3")
    if s.lfs.s3.part_size < 5 * 1024 * 1024:
        raise ConfigError("lfs.s3.part_size: S3 needs at least 5 MiB")
    if s.webhooks.max_attempts < 1:
        raise ConfigError("webhooks.max_attempts: must be at least 1")
    from modelrepo.models.webhook_targets import allow_list  # noqa: PLC0415 - imports aiohttp

    try:
        allow_list(s.webhooks.allowed_hosts)
    except ValueError as exc:
        raise ConfigError(f"webhooks.allowed_hosts: {exc}") from None
    for key in ("max_headers", "max_git_processes", "max_git_processes_per_client"):
        if getattr(s.limits, key) < 1:
            raise ConfigError(f"limits.{key}: must be at least 1")
    if s.limits.header_timeout <= 0 or s.limits.body_idle_timeout <= 0:
        raise ConfigError("limits.header_timeout and limits.body_idle_timeout: must be more than 0")
    if s.catalog.pool_size < 1 or s.catalog.max_overflow < 0:
        raise ConfigError("catalog.pool_size: must be at least 1 (and catalog.max_overflow at least 0)")
    if s.catalog.lock_timeout <= 0 or s.catalog.idle_in_transaction_timeout <= 0:
        raise ConfigError("catalog.lock_timeout and catalog.idle_in_transaction_timeout: must be more than 0")
    if s.lfs.max_batch_objects < 1:
        raise ConfigError("lfs.max_batch_objects: must be at least 1")
    if s.lfs.s3.endpoint_url and not re.match(r"^https?://[^/\s]+/?$", s.lfs.s3.endpoint_url):
        raise ConfigError(f"lfs.s3.endpoint_url: expected http(s)://host[:port], got {s.lfs.s3.endpoint_url!r}")
    from modelrepo.errors import InvalidInput  # noqa: PLC0415 - avoid a cycle at import time
    from modelrepo.names import check_ref_name  # noqa: PLC0415

    try:
        check_ref_name(s.git.default_branch)
    except InvalidInput:
        raise ConfigError(f"git.default_branch: not a valid branch name: {s.git.default_branch!r}") from None
