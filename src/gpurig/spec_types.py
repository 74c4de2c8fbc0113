"""The checks behind stack.yml's fields, and how an error message may show a value.

Every spec string ends up somewhere that gives characters meaning: a shell line, an Ansible
variable (Jinja), a Dockerfile, apt's argv or a requirements file. So each one is checked as
what it is (an apt package, a PEP 508 requirement, a host path, an index URL) in the schema,
before any front end sees it; rendering quotes values too, but does not rely on this.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from pathlib import Path, PurePosixPath
from typing import Annotated, Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from packaging.requirements import InvalidRequirement, Requirement
from pydantic import AfterValidator, StringConstraints

SHOWN_CHARS = 60
# Longer than any real path, URL or requirement: such a value is a pasted file or an attack.
MAX_TEXT = 1024
MAX_BUNDLE_BYTES = 16 << 20
TEMPLATE_MARKERS = ("{{", "{%", "{#")
# Control, format (bidi overrides, zero-width) and line/paragraph separator characters.
INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})

# Debian policy 5.6.1 names; apt's `name:arch=version`. A trailing `-` would make apt remove.
APT_PACKAGE = re.compile(
    r"[a-z0-9][a-z0-9+.-]*[a-z0-9+.](:[a-z0-9][a-z0-9-]*)?(=[0-9][A-Za-z0-9.+~:-]*)?"
)
PACKAGE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")  # PEP 508 names
MODEL_NAME = re.compile(r"[A-Za-z0-9._/-]+")  # Hugging Face repo ids and plain folders
NO_PROXY_HOST = re.compile(r"\*|(\*?\.)?[A-Za-z0-9:][A-Za-z0-9._:-]*(/\d{1,3})?")
# What index and proxy URLs need; anything else is percent-encoded (RFC 3986).
URL_CHARS = re.compile(r"[A-Za-z0-9._~:/%+=@-]+")
# Characters a shell, Jinja or a Dockerfile gives meaning to (quoting, expansion, globbing,
# command separators, comments): a path free of them is the same text everywhere it lands.
PATH_UNSAFE = frozenset("'\"$`{}\\;&|<>*?()[]!#^")
CREDENTIALS_HOWTO = (
    "credentials in a URL leak into logs and the lock: use a netrc file or uv's "
    "UV_INDEX_<NAME>_USERNAME/_PASSWORD variables"
)


def mask_credentials(text: str) -> str:
    """What lies between `scheme://` (or the start, without one) and the last `@` after it
    becomes `***`: a password may hold `@` or `/` unencoded, so mask wide, never leak."""
    scheme = text.find("://")
    start = scheme + 3 if scheme >= 0 else 0
    at = text.rfind("@", start)
    return text if at < 0 else f"{text[:start]}***{text[at:]}"


def shown(value: Any) -> str:
    """A value as an error message may echo it: repr'd, credentials masked, cut short."""
    text = mask_credentials(repr(value))
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def text_problem(value: Any, where: str = "") -> str | None:
    """The first string (in a list or mapping too) no field may hold, said without echoing
    it: it may be a proxy password."""
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            return f"{where}is {len(value)} characters long (at most {MAX_TEXT})"
        invisible = next((c for c in value if unicodedata.category(c) in INVISIBLE), None)
        if invisible:
            return f"{where}has the control character {invisible!r}: one line of text only"
        marker = next((m for m in TEMPLATE_MARKERS if m in value), None)
        if marker:
            return f"{where}has {marker!r}: template markers are refused (Ansible evaluates them)"
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if found := text_problem(item, f"{where}item [{i}] "):
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if found := text_problem(key, f"{where}key {shown(key)} "):
                return found
            if found := text_problem(item, f"{where}value of {shown(key)} "):
                return found
    return None


def _apt_package(value: str) -> str:
    if value.startswith("-"):
        raise ValueError(f"{shown(value)} is an apt option, not a package name")
    if not APT_PACKAGE.fullmatch(value):
        raise ValueError(
            f"{shown(value)} is not a Debian package name (lower case, name[:arch][=version])"
        )
    return value


def _requirement(value: str) -> str:
    if value.lstrip().startswith("-"):
        raise ValueError(f"{shown(value)} is a pip/uv option: set indexes under sources")
    try:
        requirement = Requirement(value)
    except InvalidRequirement as error:
        reason = str(error).splitlines()[0][:80]
        raise ValueError(f"{shown(value)} is not a PEP 508 requirement ({reason})") from None
    if requirement.url:
        raise ValueError(
            f"{shown(value)} names a URL: put the wheel in sources.find_links, or its index "
            "in sources.index"
        )
    return value


def package_name_problem(name: str) -> str | None:
    if PACKAGE_NAME.fullmatch(name):
        return None
    return f"{shown(name)} is not a package name (letters, digits, . _ -; no extras or versions)"


def _safe_path(value: str) -> str:
    if value.startswith("-"):  # paths also reach argv, where this reads as an option
        raise ValueError(f"{shown(value)} reads as an option: start it with ./ instead")
    unsafe = sorted({c for c in value if c.isspace() or c in PATH_UNSAFE})
    if unsafe:
        raise ValueError(
            f"{shown(value)} has {', '.join(map(repr, unsafe))}: paths may not hold "
            "whitespace, quotes or shell/Jinja characters"
        )
    return value


def _host_path(value: str) -> str:
    if not PurePosixPath(value).is_absolute():
        raise ValueError(f"must be an absolute path on the host, got {shown(value)}")
    return _safe_path(value)


def url_problem(url: str, schemes: tuple[str, ...], credentials: bool = False) -> str | None:
    """What is wrong with an index or proxy URL, its credentials never shown."""
    if not URL_CHARS.fullmatch(url):
        return f"{shown(url)} has characters a URL does not need: percent-encode them"
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        return f"{shown(url)} is not a {' or '.join(f'{s}://' for s in schemes)} URL"
    if "@" in parts.netloc and not credentials:
        return f"{shown(url)}: {CREDENTIALS_HOWTO}"
    if parts.scheme != "file" and not parts.hostname:
        return f"{shown(url)} names no host"
    return None


def index_url_problem(url: str, insecure_ok: bool) -> str | None:
    """https or file:// only; plain http only behind sources.allow_insecure_http."""
    if url.partition("://")[0].lower() == "http" and not insecure_ok:
        return (
            f"{shown(url)} is plain http: use https, or opt in with "
            "sources.allow_insecure_http: true (a network you trust)"
        )
    return url_problem(url, ("https", "file", "http") if insecure_ok else ("https", "file"))


def _proxy_url(value: str) -> str:
    problem = url_problem(value, ("http", "https"), credentials=True)
    if problem:
        raise ValueError(problem)
    return value


def _no_proxy_host(value: str) -> str:
    if not NO_PROXY_HOST.fullmatch(value):
        raise ValueError(f"{shown(value)} is not a host, domain (.example.com), IP/CIDR or *")
    return value


def _model_name(value: str) -> str:
    if value.startswith("-") or ".." in value or not MODEL_NAME.fullmatch(value):
        raise ValueError(
            f"{shown(value)} is not a model: tiny, a Hugging Face repo id (org/name) or a folder"
        )
    return value


def ca_bundle_problem(bundle: str | None) -> str | None:
    """What hosts would be made to trust: a readable file of PEM certificates, nothing else.

    A relative path is read from the current folder, as the front ends that push it do.
    """
    if bundle is None:
        return None
    path = Path(bundle)
    if not path.is_file():
        missing = "is not a file" if path.exists() else "does not exist"
        return f"{shown(bundle)} {missing} on this controller"
    try:
        if path.stat().st_size > MAX_BUNDLE_BYTES:
            return f"{shown(bundle)} is too large for a CA bundle (at most 16 MiB)"
        data = path.read_bytes()
    except OSError as error:
        return f"cannot read {shown(bundle)}: {error.strerror}"
    if b"PRIVATE KEY-----" in data:
        return f"{shown(bundle)} holds a private key: give the CA certificates only"
    try:
        with warnings.catch_warnings():
            # System bundles hold old roots with serials RFC 5280 now forbids; cryptography
            # warns about them, and hosts trust them all the same.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            x509.load_pem_x509_certificates(data)
    except ValueError:
        return f"{shown(bundle)} is not PEM certificates (-----BEGIN CERTIFICATE----- blocks)"
    return None


AptPackage = Annotated[str, AfterValidator(_apt_package)]
PythonRequirement = Annotated[str, AfterValidator(_requirement)]
HostPath = Annotated[str, AfterValidator(_host_path)]
ControllerPath = Annotated[str, AfterValidator(_safe_path)]
ProxyUrl = Annotated[
    str, StringConstraints(pattern=r"^https?://[^\s]+$"), AfterValidator(_proxy_url)
]
NoProxyHost = Annotated[str, AfterValidator(_no_proxy_host)]
ModelName = Annotated[str, StringConstraints(min_length=1), AfterValidator(_model_name)]
