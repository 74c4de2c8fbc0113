"""sha256 of a host file, as a shell command line.

OpenSSL's digest uses the CPU's SHA extensions where coreutils' sha256sum does not: about 3x
less CPU for uv's 38 MB binary, which every no-change run hashes on every host (on a fleet of
sandbox hosts sharing two cores, the hashing alone was a second of the run). Same digest; hosts
without the openssl binary (ca-certificates brings it) fall back to sha256sum.
"""

from __future__ import annotations


def sha256_command(quoted_path: str) -> str:
    """Prints the hex digest of the file at `quoted_path` (already shell-quoted), one line."""
    return (
        f"if command -v openssl >/dev/null 2>&1; then "
        f"openssl dgst -sha256 -r < {quoted_path} | cut -d' ' -f1; "
        f"else sha256sum < {quoted_path} | cut -d' ' -f1; fi"
    )
