"""Does the host reach the Hugging Face Hub? A few lines of preflight's one-round-trip probe.

Asked only when stack.yml lists a `source: auto` model that the host would download (other
deploys pay nothing): a host that cannot reach the Hub gets those models pushed from the
controller, as an offline host does. One HEAD request by curl, bounded to a few seconds, to
`HF_ENDPOINT` where the host's gpurig environment file sets it, else https://huggingface.co,
through the spec's proxy. Proxy credentials stay off the command line (they live in the host's
environment file only): a proxy that asks for them (407) counts as a way out. Before the
install stage puts the spec's CA bundle in the host's store, a certificate the host cannot
verify yet counts as reachable when the spec names a CA bundle (the download checks it later,
with that bundle); nothing read over that connection is trusted.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from urllib.parse import urlsplit

from gpurig.hostlayout import ENV_FILE
from gpurig.spec import Stack

DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_S = 3
TOTAL_S = 4  # curl's own bound, DNS included
KEY = "hub"  # the probe's line: hub=<http code> <proxy CONNECT code> <curl exit code>
NO_CURL = "nocurl"
# curl's exit codes, in words for the preflight note.
CURL_ERRORS = {
    5: "the proxy's name does not resolve",
    6: "its name does not resolve",
    7: "the connection is refused",
    28: "no answer within the time limit",
    35: "the TLS handshake failed",
    56: "the connection broke",
    60: "its TLS certificate is not trusted",
}


@dataclass(frozen=True)
class HubAnswer:
    reachable: bool | None  # None: the host could not test it (no curl)
    why: str  # in words, for preflight's note


def _proxy_without_credentials(proxy: str) -> str:
    parts = urlsplit(proxy)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def probe_script(stack: Stack) -> str:
    """Shell lines printing `hub=...`; they run inside the system probe (as the SSH user)."""
    q = shlex.quote
    env = ""
    if stack.network.proxy:
        proxy = q(_proxy_without_credentials(stack.network.proxy))
        no_proxy = q(",".join(stack.network.no_proxy))
        env = (
            f"https_proxy={proxy} HTTPS_PROXY={proxy} http_proxy={proxy} "
            f"no_proxy={no_proxy} NO_PROXY={no_proxy} "
        )
    return "\n".join(
        [
            f"ep={DEFAULT_ENDPOINT}",
            f"if [ -r {ENV_FILE} ]; then",
            f'  ep=$(. {ENV_FILE} >/dev/null 2>&1; echo "${{HF_ENDPOINT:-$ep}}")',
            "fi",
            "if command -v curl >/dev/null 2>&1; then",
            f'  echo "{KEY}=$({env}curl -sS -I -o /dev/null --connect-timeout {CONNECT_S} '
            f"--max-time {TOTAL_S} -w '%{{http_code}} %{{http_connect}}' \"$ep\" 2>/dev/null; "
            'echo " $?") $ep"',
            f"else echo {KEY}={NO_CURL}; fi",
        ]
    )


def answer(line: str | None, ca_bundle: bool) -> HubAnswer | None:
    """The probe's `hub=` value read; None when the probe did not ask (no line)."""
    if line is None:
        return None
    if line.strip() == NO_CURL:
        return HubAnswer(None, "the host has no curl to test it")
    fields = line.split()
    if len(fields) < 3 or not all(f.isdigit() for f in fields[:3]):
        return HubAnswer(None, f"the probe printed {line[:80]!r}")
    code, connect, rc = fields[0], fields[1], int(fields[2])
    where = fields[3] if len(fields) > 3 else DEFAULT_ENDPOINT
    if rc == 0 and code != "000":
        return HubAnswer(True, f"{where} answers (HTTP {code})")
    if connect == "407":
        return HubAnswer(True, "the proxy asks for its credentials, which the deploy gives it")
    if rc == 60 and ca_bundle:
        return HubAnswer(True, f"{where} answers; its certificate is checked with the CA bundle")
    if rc == 56 and connect not in ("000", ""):
        return HubAnswer(False, f"{where}: the proxy refused it (HTTP {connect})")
    return HubAnswer(False, f"{where}: {CURL_ERRORS.get(rc, f'curl exit code {rc}')}")
