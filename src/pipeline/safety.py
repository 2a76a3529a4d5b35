"""Keeping secrets out of what is logged, and archives inside the folder they are extracted to.

Secrets: environment variables whose name says they are one (MLFLOW_TRACKING_PASSWORD, AWS_SECRET_ACCESS_KEY,
HF_TOKEN, ...) may reach the config through `${oc.env:...}` interpolations or overrides; config keys that say
so (api_key, password, ...) hold one; a URI may carry a password (https://user:pass@host). All three are
replaced by REDACTED before params, config files or texts go to MLflow.
"""

import os
import re
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

from pipeline.errors import DataError

REDACTED = "***"
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|PASSPHRASE|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|(^|_)KEY$|AUTH", re.I)
URI_PASSWORD = re.compile(r"(\w[\w+.-]*://[^/:@\s]*:)[^/@\s]+@")
# "api_key: x", "password=x", "MLFLOW_TRACKING_TOKEN: x" in YAML or override text
SECRET_ASSIGNMENT = re.compile(
    r"(?P<key>[\w.-]*(?:token|secret|passw\w*|passphrase|credential\w*|private_?key|api_?key|access_?key)[\w.]*)"
    r"(?P<sep>\s*[:=]\s*)(?P<value>[^\s,}\]]+)",
    re.I,
)
MIN_SECRET_LENGTH = 4  # shorter values ("1", "no") would redact half of every config


def _snapshot(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of the environment; another thread (MLflow's telemetry) may change it while it is read."""
    for _ in range(9):
        try:
            return dict(environ)
        except (KeyError, RuntimeError):  # a variable removed or added meanwhile: read it again
            continue
    return dict(environ)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the environment variables named like secrets, longest first."""
    environ = _snapshot(os.environ if environ is None else environ)
    values = {v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, environ: Mapping[str, str] | None = None) -> str:
    """text with secret environment values, secret-named keys' values and URI passwords replaced."""
    for value in secret_values(environ):
        text = text.replace(value, REDACTED)
    text = URI_PASSWORD.sub(rf"\g<1>{REDACTED}@", text)
    return SECRET_ASSIGNMENT.sub(lambda m: f"{m['key']}{m['sep']}{REDACTED}", text)


def redact_params(params: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Flat params (see tracking.flatten) with secrets replaced; a secret-named key keeps its name only."""
    return {
        key: REDACTED if SECRET_NAME.search(key.rsplit(".", 1)[-1]) else redact_text(str(value), environ)
        for key, value in params.items()
    }


def _check_member(name: str, dest: Path, archive: Path, link: str | None = None) -> None:
    target = (dest / name).resolve()
    if os.path.isabs(name) or not target.is_relative_to(dest):
        raise DataError(f"{archive}: member {name!r} would be written outside {dest}; refusing to extract")
    if link is not None:
        pointee = (target.parent / link).resolve() if not os.path.isabs(link) else Path(link)
        if not pointee.is_relative_to(dest):
            raise DataError(f"{archive}: link {name!r} -> {link!r} points outside {dest}; refusing to extract")


def safe_extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract a .tar(.gz|.bz2|.xz) or .zip into dest after checking that no member (or link) escapes it.

    Nothing is written when any member is unsafe (absolute path, `..`, a link out, a device file).
    """
    archive, dest = Path(archive), Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for name in zipped.namelist():
                _check_member(name, dest, archive)
            zipped.extractall(dest)
        return dest
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                    raise DataError(f"{archive}: member {member.name!r} is a device or fifo; refusing to extract")
                link = member.linkname if member.issym() else None
                _check_member(member.name, dest, archive, link)
                if member.islnk():
                    _check_member(member.linkname, dest, archive)
            tar.extractall(dest, members=members, filter="data")  # the standard library's own check, too
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"{archive}: not a readable tar or zip archive ({err.__class__.__name__}: {err})") from None
    return dest
