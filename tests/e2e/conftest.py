"""End-to-end fixtures: an LFS daemon per storage backend, SeaweedFS for the S3 ones."""

import shutil
import signal
import time

import pytest

from ..helpers import start_daemon, wait_until

LFS_MODES = ["local", "s3-proxy", "s3-direct"]


BUCKET = "modelrepo-test"


def s3_client(server):
    """A plain (sync) botocore client, to look at the bucket independently of the daemon."""
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=server.endpoint, region_name=server.region, aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      request_checksum_calculation="when_required", response_checksum_validation="when_required"))


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (SeaweedFS `weed mini`) on free loopback ports, for the whole session."""
    from ..s3server import start_s3_server

    server = start_s3_server(BUCKET)
    yield server
    server.stop()


class StoreProbe:
    """Looks at the object store from outside the daemon, the way an operator would."""

    def __init__(self, daemon, mode: str, s3=None, bucket: str = "", prefix: str = "") -> None:
        self.daemon, self.mode, self.s3, self.bucket, self.prefix = daemon, mode, s3, bucket, prefix

    def _key(self, oid: str) -> str:
        return f"{self.prefix}{oid[:2]}/{oid[2:4]}/{oid}"

    def stored(self, oid: str) -> int | None:
        if self.mode == "local":
            path = self.daemon.data / "lfs/objects" / oid[:2] / oid[2:4] / oid
            return path.stat().st_size if path.exists() else None
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=self._key(oid))["ContentLength"]
        except self.s3.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def temp_files(self) -> list:
        if self.mode == "local":
            return list((self.daemon.data / "lfs/tmp").iterdir())
        uploads = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix).get("Uploads", [])
        return [u["Key"] for u in uploads]


@pytest.fixture(scope="module", params=LFS_MODES)
def lfs_daemon(request):
    mode = request.param
    env = {}
    probe_args = {}
    if mode.startswith("s3"):
        server = request.getfixturevalue("s3_server")
        prefix = f"t{int(time.time() * 1000)}/"
        env = {"MODELREPO_LFS__STORAGE": "s3", "MODELREPO_LFS__S3__BUCKET": BUCKET,
               "MODELREPO_LFS__S3__PREFIX": prefix, "MODELREPO_LFS__S3__ENDPOINT_URL": server.endpoint,
               "MODELREPO_LFS__S3__ACCESS_KEY_ID": server.access_key,
               "MODELREPO_LFS__S3__SECRET_ACCESS_KEY": server.secret_key,
               "MODELREPO_LFS__S3__REGION": server.region,
               "MODELREPO_LFS__S3__MODE": mode.removeprefix("s3-")}
        probe_args = {"s3": s3_client(server), "bucket": BUCKET, "prefix": prefix}
    d = start_daemon(extra_env=env)
    probe = StoreProbe(d, mode, **probe_args)
    d.lfs_mode = mode
    d.stored = probe.stored
    d.temp_files = probe.temp_files

    def wait_for(predicate, what: str, timeout: float = 60) -> None:
        wait_until(predicate, what, timeout)

    d.wait_for = wait_for
    yield d
    rc = d.stop(signal.SIGTERM)
    assert rc == 0, d.log()[-4000:]
    shutil.rmtree(d.data.parent, ignore_errors=True)
