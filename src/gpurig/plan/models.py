"""The models step: stack.yml's `models:` placed in each host's Hugging Face cache.

Each model lands as huggingface_hub lays out its cache (HF_HOME/hub): `models--org--name/`
with `blobs/<name>`, `snapshots/<revision>/<file>` links to `../../blobs/<name>` and
`refs/main` holding the revision, so `from_pretrained("org/name")` finds it with
HF_HUB_OFFLINE=1. A blob's name is its hash: the sha256 of an LFS file, the git blob sha1 of a
small one; the host checks every file against its name, whichever way it came.

Two sources (`models[].source`): the host downloads a model itself (`snapshot_download` in the
venv, the revision pinned), or the controller pushes the files from its own HF cache (offline
and air-gapped hosts). A push lands in a root-owned folder outside the cache (MODELS_INCOMING);
the rest runs as the service user, in its own cache, so that root never writes through a path
that user controls. A snapshot is built in a hidden folder and renamed into place: no half
snapshot is ever visible. The same two scripts serve every front end: `check` prints one line
per thing missing (nothing on a converged host); `script` places everything, prints a
`gpurig: changed: ` line per change, and with GPURIG_DRY_RUN=1 changes nothing.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import ClassVar, Literal

from gpurig.facts.hub import HubAnswer, answer
from gpurig.hostlayout import ENV_FILE, MODELS_INCOMING, hub_dir, model_dir
from gpurig.model.host import HostFacts
from gpurig.plan.hashing import SHA256_FUNCTION, SHA256_STDIN, sha256_command, tee_hashed
from gpurig.plan.steps import CHANGED, Step
from gpurig.spec import HubModel, Stack

HASHED = ".hashed"  # beside a pushed file: hashed on the host as it was written (`receive`)
CHECKED = "checked"  # the check's last line: it ran to its end (a cut-off check proves nothing)
# The Hub's download, run by the venv's python as the service user; the revision is pinned.
DOWNLOAD = (
    "import sys; from huggingface_hub import snapshot_download; "
    "snapshot_download(sys.argv[1], revision=sys.argv[2], cache_dir=sys.argv[3])"
)
# Is FILE's content the blob NAME? sha256 for LFS files (gpurig.plan.hashing; its memo is
# root's, and this check runs as the service user, so every run reads every file), git's blob
# sha1 for the others.
_BLOB_OK = r"""
blob_ok() {
  case $2 in *[!0-9a-f]*|'') return 1 ;; esac
  [ -f "$1" ] && [ ! -L "$1" ] || return 1
  case ${#2} in
    64) set -- "$(__SHA256__)" "$2" ;;
    40) set -- "$({ printf 'blob %s\000' "$(stat -c %s "$1")"; cat "$1"; } | sha1sum)" "$2" ;;
    *) return 1 ;;
  esac
  [ "${1%% *}" = "$2" ]
}""".replace("__SHA256__", sha256_command('"$1"'))
BLOB_OK = SHA256_FUNCTION + _BLOB_OK


@dataclass(frozen=True)
class ModelFile:
    path: str  # in the snapshot: config.json, onnx/model.onnx, ...
    blob: str  # its name in blobs/: sha256 (64 hex) or git blob sha1 (40 hex)
    size: int


@dataclass(frozen=True)
class PushedModel:
    """A snapshot in the controller's HF cache (gpurig.hfcache reads and checks it)."""

    repo: str
    revision: str
    files: list[ModelFile]
    sources: dict[str, str]  # blob -> its file on the controller


@dataclass(frozen=True)
class ModelUpload:
    name: str  # in the incoming folder: <models--org--name>@<blob>
    src: str  # on the controller
    size: int
    label: str  # repo/path, what progress names

    @property
    def blob(self) -> str:
        return self.name.rpartition("@")[2]


def receive(upload: ModelUpload, incoming: str) -> str:
    """The host's side of a streamed push, run as root: the bytes from stdin are written to
    incoming/<name> and hashed in the same pass (no second read of a gigabyte file); when the
    hash is the blob's name and the size is whole, a `<name>.hashed` marker says so, and the
    placing script takes the file without reading it again. It prints the hash it found."""
    header = f"printf 'blob %s\\000' {upload.size}; " if len(upload.blob) == 40 else ""
    hashing = SHA256_STDIN if len(upload.blob) == 64 else "sha1sum"  # git's: header, bytes
    return (
        f"umask 077; f={shlex.quote(f'{incoming}/{upload.name}')}; "
        + tee_hashed('"$f"', hashing, header)
        + f'[ "$h" = {upload.blob} ] && [ -f "$f" ] && [ ! -L "$f" ] && '
        f'[ "$(stat -c %s "$f")" = {upload.size} ] && : > "$f{HASHED}"'
    )


@dataclass(frozen=True)
class Models(Step):
    """The spec's models in the host's HF cache, each file checked against its hash."""

    kind: ClassVar[str] = "models"
    hub_dir: str = ""
    incoming: str = ""  # where pushed files wait for their check (root's, mode 0700)
    user: str = ""
    models: list[str] = field(default_factory=list)  # repo@revision, for messages
    uploads: list[ModelUpload] = field(default_factory=list)
    # Prints `need NAME` (push it), `link REPO`, `fetch REPO` for what is missing, then CHECKED.
    check: str = ""
    script: str = ""  # run as root


def asks_hub(stack: Stack) -> bool:
    """Does preflight test the host's way to the Hub? Only for `auto` models it may download."""
    return not stack.install.offline and any(m.source == "auto" for m in stack.models)


def hub(stack: Stack, facts: HostFacts | None) -> HubAnswer | None:
    """What preflight's probe found (gpurig.facts.hub); None when it did not ask."""
    if facts is None or not asks_hub(stack):
        return None
    return answer(facts.hub, ca_bundle=stack.network.ca_bundle is not None)


def source(
    stack: Stack, model: HubModel, facts: HostFacts | None = None
) -> Literal["push", "fetch"]:
    """Pushed where asked, and when auto to offline hosts: `install.offline`, or a host whose
    preflight found no way to the Hub. Downloaded by the host otherwise."""
    if model.source == "controller":
        return "push"
    if model.source == "auto":
        found = hub(stack, facts)
        if stack.install.offline or (found is not None and found.reachable is False):
            return "push"
    return "fetch"


def pushed(stack: Stack, facts: HostFacts | None = None) -> list[HubModel]:
    """The models the controller must bring to this host."""
    return [m for m in stack.models if source(stack, m, facts) == "push"]


def notes(stack: Stack, facts: HostFacts | None) -> list[str]:
    """Preflight's word on the Hub test, when it changed or could not decide the source."""
    found = hub(stack, facts)
    if found is None or found.reachable is True:
        return []
    auto = ", ".join(m.repo for m in stack.models if m.source == "auto")
    if found.reachable is None:
        return [f"could not test the way to the Hub ({found.why}): the host downloads {auto}"]
    return [
        f"the host does not reach the Hub ({found.why}): {auto} pushed from the controller's "
        "HF cache, as to an offline host"
    ]


def _link(path: str, blob: str) -> str:
    """snapshots/<rev>/<path> -> ../../blobs/<blob>, one more `..` per folder in path."""
    return "../" * (2 + path.count("/")) + f"blobs/{blob}"


def _snapshot_ok(model: PushedModel) -> str:
    """A condition: every file of the snapshot links to its blob, and refs/main is pinned."""
    q = shlex.quote
    tests = [
        f'[ "$(readlink "$S"/{q(f.path)})" = {q(_link(f.path, f.blob))} ]' for f in model.files
    ]
    tests.append(f'[ "$(cat "$M/refs/main" 2>/dev/null)" = {model.revision} ]')
    return " && ".join(tests)


def _header(repo: str, revision: str) -> list[str]:
    return [f'M="$HUB"/{model_dir(repo)}', f'S="$M/snapshots/{revision}"']


def _check_pushed(model: PushedModel) -> list[str]:
    blobs = " ".join(sorted({f.blob for f in model.files}))
    need = f'echo "need {model_dir(model.repo)}@$b"'
    return [
        *_header(model.repo, model.revision),
        f'for b in {blobs}; do blob_ok "$M/blobs/$b" "$b" || {need}; done',
        f"{_snapshot_ok(model)} || echo link {shlex.quote(model.repo)}",
    ]


def _fetched_ok(repo: str, revision: str) -> str:
    """A condition: the snapshot is there, pinned, and every link's blob checks."""
    return (
        f'[ -d "$S" ] && [ "$(cat "$M/refs/main" 2>/dev/null)" = {revision} ] && '
        '[ -z "$(find "$S" -type l | while IFS= read -r l; do b=$(readlink "$l"); '
        'blob_ok "$M/blobs/${b##*/}" "${b##*/}" || echo x; done)" ]'
    )


def _check_fetched(repo: str, revision: str) -> list[str]:
    return [
        *_header(repo, revision),
        f"{_fetched_ok(repo, revision)} || echo fetch {shlex.quote(repo)}",
    ]


def _swap(repo: str, revision: str) -> list[str]:
    """$T (complete) becomes $S in two renames; then refs/main names the revision."""
    label = shlex.quote(f"{repo}: refs/main -> {revision}")
    return [
        '  if [ -e "$S" ]; then mv -T "$S" "$T.old"; fi',
        '  mv -T "$T" "$S"',
        '  rm -rf "$T.old"',
        "fi",
        f'if [ "$(cat "$M/refs/main" 2>/dev/null)" != {revision} ] && change {label}; then',
        '  mkdir -p "$M/refs"',
        f'  printf %s {revision} > "$M/refs/.main.gpurig"',
        '  mv -f "$M/refs/.main.gpurig" "$M/refs/main"',
        "fi",
    ]


def _place_pushed(model: PushedModel) -> list[str]:
    q = shlex.quote
    repo, rev = model.repo, model.revision
    lines = [*_header(repo, rev), f'T="$M/snapshots/.gpurig-{rev}"']
    for f in model.files:
        lines.append(f"place {f.blob} {q(f'{repo}: {f.path}')} {model_dir(repo)}@{f.blob}")
    folders = sorted({str(PurePosixPath(f.path).parent) for f in model.files} - {"."})
    lines += [
        f"if ! {{ {_snapshot_ok(model)}; }} && change {q(f'{repo}: snapshot {rev}')}; then",
        '  rm -rf "$T" && mkdir -p "$T"',
        *[f'  mkdir -p "$T"/{q(d)}' for d in folders],
        *[f'  ln -s {q(_link(f.path, f.blob))} "$T"/{q(f.path)}' for f in model.files],
    ]
    return lines + _swap(repo, rev)


def _place_fetched(repo: str, revision: str, python: str) -> list[str]:
    q = shlex.quote
    label = q(f"{repo}: download {revision} from the Hub")
    return [
        *_header(repo, revision),
        f'T="$M/snapshots/.gpurig-{revision}"',
        f'F="$HUB/.gpurig-download-{model_dir(repo)}"',
        f"if ! {{ {_fetched_ok(repo, revision)}; }} && change {label}; then",
        '  rm -rf "$F" "$T" && mkdir -p "$F" "$T" "$M/blobs"',
        f'  {q(python)} -c {q(DOWNLOAD)} {q(repo)} {revision} "$F"',
        f'  FM="$F"/{model_dir(repo)}; FS="$FM/snapshots/{revision}"',
        f'  [ -d "$FS" ] || fail {q(f"{repo}: the download left no snapshot {revision}")}',
        '  (cd "$FS" && find . -type l) | while IFS= read -r p; do',
        '    p=${p#./}; l=$(readlink "$FS/$p"); b=${l##*/}',
        '    case $l in ../../*blobs/"$b") ;; *) fail "$p links outside the cache: $l" ;; esac',
        '    if ! blob_ok "$M/blobs/$b" "$b"; then',
        f'      blob_ok "$FM/blobs/$b" "$b" || fail {q(repo)}": $p (blob $b) does not match '
        'its hash"',
        '      mv -f "$FM/blobs/$b" "$M/blobs/$b"',
        "    fi",
        '    mkdir -p "$(dirname "$T/$p")" && ln -s "$l" "$T/$p"',
        "  done",
        '  rm -rf "$F"',
        *_swap(repo, revision),
    ]


def _place_prelude(hub: str, incoming: str) -> list[str]:
    return [
        "set -eu",
        "umask 022",
        f"HUB={shlex.quote(hub)}",
        f"IN={shlex.quote(incoming)}",
        f'change() {{ echo "{CHANGED}$*"; [ -z "${{GPURIG_DRY_RUN:-}}" ]; }}',
        'fail() { echo "gpurig: $*" >&2; exit 1; }',
        BLOB_OK,
        # A blob from the incoming folder when the cache's copy is missing or wrong.
        "place() {",
        '  blob_ok "$M/blobs/$1" "$1" && return 0',
        '  if [ -n "${GPURIG_DRY_RUN:-}" ]; then echo "' + CHANGED + '$2"; return 0; fi',
        # A marker: the pushing front end hashed the bytes on the host as they were written.
        f'  {{ [ -f "$IN/$3{HASHED}" ] && [ -f "$IN/$3" ] && [ ! -L "$IN/$3" ]; }} || '
        'blob_ok "$IN/$3" "$1" || fail "$2 (blob $1) is missing or does not match its hash '
        'after the transfer"',
        '  change "$2"',
        '  chmod 0644 "$IN/$3" && mkdir -p "$M/blobs" && mv -f "$IN/$3" "$M/blobs/$1"',
        "}",
        '[ -n "${GPURIG_DRY_RUN:-}" ] || mkdir -p "$HUB"',
    ]


def _as_user(user: str, inner: str) -> str:
    """Run `inner` as the service user (in its own cache), or as root before it exists (a
    fresh host's check: nothing is there yet)."""
    q = shlex.quote
    return (
        f"cd / && if id -u {q(user)} >/dev/null 2>&1; then "
        f"runuser -u {q(user)} -- /bin/sh -c {q(inner)}; else /bin/sh -c {q(inner)}; fi"
    )


def step(
    stack: Stack, controller_models: list[PushedModel], facts: HostFacts | None = None
) -> Models:
    """controller_models: the snapshots of `pushed(stack, facts)`, read from the controller's
    cache."""
    hub = hub_dir(stack.host.hf_home)
    user = stack.host.user
    by_repo = {m.repo: m for m in controller_models}
    python = f"{stack.host.venv}/bin/python"
    check = ["set -u", f"HUB={shlex.quote(hub)}", BLOB_OK]
    place = _place_prelude(hub, MODELS_INCOMING)
    uploads: dict[str, ModelUpload] = {}
    for spec_model in stack.models:
        repo, rev = spec_model.repo, spec_model.revision
        if source(stack, spec_model, facts) == "fetch":
            check += _check_fetched(repo, rev)
            place += _place_fetched(repo, rev, python)
            continue
        model = by_repo[repo]
        check += _check_pushed(model)
        place += _place_pushed(model)
        for f in model.files:
            name = f"{model_dir(repo)}@{f.blob}"
            uploads.setdefault(
                name, ModelUpload(name, model.sources[f.blob], f.size, f"{repo}/{f.path}")
            )
    q = shlex.quote
    script = "\n".join(
        [
            "set -eu",
            # The proxy and the CA bundle for a download; the service user gets them too.
            f"if [ -r {ENV_FILE} ]; then set -a; . {ENV_FILE}; set +a; fi",
            # Pushed files: checked by hash, as the service user, before they enter its cache.
            f'if [ -z "${{GPURIG_DRY_RUN:-}}" ] && [ -d {MODELS_INCOMING} ] && '
            f"[ ! -L {MODELS_INCOMING} ]; then chown -hR {q(user)}:{q(user)} {MODELS_INCOMING}; fi",
            "rc=0",
            _as_user(user, "\n".join(place)) + " || rc=$?",
            f'[ -n "${{GPURIG_DRY_RUN:-}}" ] || rm -rf {MODELS_INCOMING}',
            "exit $rc",
        ]
    )
    return Models(
        "llm_env.models",
        "Place the models in the HF cache",
        hub_dir=hub,
        incoming=MODELS_INCOMING,
        user=user,
        models=[f"{m.repo}@{m.revision}" for m in stack.models],
        uploads=sorted(uploads.values(), key=lambda u: u.name),
        check=_as_user(user, "\n".join([*check, f"echo {CHECKED}"])),
        script=script + "\n",
    )


def missing(lines: list[str]) -> list[str]:
    """What the check's output says the host lacks; ["unchecked"] when it did not finish."""
    said = [line.strip() for line in lines if line.strip()]
    return [line for line in said if line != CHECKED] if CHECKED in said else ["unchecked"]


def steps(
    stack: Stack, controller_models: list[PushedModel], facts: HostFacts | None = None
) -> list[Step]:
    return [step(stack, controller_models, facts)] if stack.models else []
