"""sha256 of a host file, as shell: the `gpurig_sha256 FILE` function every host-side check
calls (the probe of what is in place, the models' blob check, the file fact).

Small files go to coreutils' sha256sum (no library to load). Large ones go to OpenSSL's digest
where the binary is there (the CPU's SHA extensions: a third of sha256sum's CPU), and their
digest is remembered in a root-only memo keyed by the file's device, inode, size, mtime and
ctime, as git's index and gpurig.digests do on the controller: a no-change run on a converged
host then does not read uv's 38 MB binary at all. Every write to a file
moves its ctime to the current time, and nobody but root can set a ctime, so an unchanged key
means unchanged bytes; a file changed in the last RACY_S seconds is not remembered, because a
write in the same clock tick would leave the key as it was.

The memo is a cache: it is used only by root (a check run as another user hashes every time:
the models' blob check, which runs as the service user, reads every model file on every run),
only inside a folder root owns, and a missing or foreign memo only costs the hashing. It is
emptied when it grows past MEMO_MAX_BYTES.
"""

from __future__ import annotations

from gpurig.hostlayout import DIGEST_MEMO

MEMO_MIN_BYTES = 1 << 20  # below this, stat plus a lookup costs what hashing does
MEMO_MAX_BYTES = 256 << 10  # about 2,000 files
RACY_S = 2

# stdin's sha256 as the first word of one line, for a pipeline that writes and hashes the same
# bytes (the pushed wheels and model files), and the large files' branch of gpurig_sha256:
# OpenSSL's digest where it is there (190 MB of torch's wheel: 0.13 CPU-s against sha256sum's
# 0.55 here).
SHA256_STDIN = (
    "if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; else sha256sum; fi"
)


def tee_hashed(path: str, hashing: str = SHA256_STDIN, header: str = "") -> str:
    """Shell that writes stdin to `path` (already quoted, or a quoted "$var") and hashes the
    same bytes in one pass, `header` first (git's blob header) through `hashing` only; a failed
    write removes the file. Leaves the hex digest in $h and prints it, one line."""
    return f'h=$({{ {header}tee {path} || rm -f {path}; }} | {hashing}); h=${{h%% *}}; echo "$h"; '


# $1: the file (a regular file: callers test that). Prints its hex digest, one line; fails
# when the file cannot be read. Variables are prefixed: POSIX sh has no locals.
_FUNCTION = r"""gpurig_sha256() {
  _gs_k=$(stat -c '%s %Z %d %i %y %z' -- "$1") || return 1
  _gs_m=__MEMO__
  if [ "${_gs_k%% *}" -lt __MIN__ ]; then
    _gs_d=$(sha256sum < "$1") || return 1; echo "${_gs_d%% *}"; return 0
  fi
  _gs_use=
  if [ -O "${_gs_m%/*}" ] && [ ! -L "${_gs_m%/*}" ] && [ ! -L "$_gs_m" ]; then
    [ ! -e "$_gs_m" ] || [ -O "$_gs_m" ] && _gs_use=1
  fi
  if [ -n "$_gs_use" ]; then
    _gs_d=$(awk -v k="$_gs_k" 'index($0, k " ") == 1 { d = substr($0, length(k) + 2) }
      END { print d }' "$_gs_m" 2>/dev/null)
    case $_gs_d in ????????????????????????????????????????????????????????????????)
      case $_gs_d in *[!0-9a-f]*) ;; *) echo "$_gs_d"; return 0 ;; esac ;;
    esac
  fi
  _gs_d=$(__STDIN__ < "$1") || return 1
  _gs_d=${_gs_d%% *}
  echo "$_gs_d"
  _gs_c=${_gs_k#* }; _gs_c=${_gs_c%% *}
  if [ -n "$_gs_use" ] && [ $(($(date +%s) - _gs_c)) -ge __RACY__ ]; then
    (
      umask 077
      [ "$(stat -c %s "$_gs_m" 2>/dev/null || echo 0)" -lt __MAX__ ] || : > "$_gs_m"
      printf '%s %s\n' "$_gs_k" "$_gs_d" >> "$_gs_m"
    ) 2>/dev/null
  fi
  return 0
}"""


def sha256_function(memo: str = DIGEST_MEMO, racy_s: int = RACY_S) -> str:
    """The function's definition, remembering in `memo` (an absolute path, no quoting needed)."""
    return (
        _FUNCTION.replace("__MEMO__", memo)
        .replace("__MIN__", str(MEMO_MIN_BYTES))
        .replace("__MAX__", str(MEMO_MAX_BYTES))
        .replace("__RACY__", str(racy_s))
        .replace("__STDIN__", SHA256_STDIN)
    )


SHA256_FUNCTION = sha256_function()


def sha256_command(quoted_path: str) -> str:
    """Prints the hex digest of the file at `quoted_path` (already shell-quoted), one line.
    The script it goes into must define SHA256_FUNCTION first."""
    return f"gpurig_sha256 {quoted_path}"
