"""The facts-only pyinfra deploy behind `gpurig preflight`: the deploy's own preflight stage,
run with `--dry` (nothing executes), each host's verdict written to $GPURIG_PREFLIGHT_OUT."""

import json
import os
from pathlib import Path

from pyinfra.context import host

from gpurig.commands.preflight import ENV_OUT, host_result, result_file
from gpurig.deploys import FACTS_KEY, VERDICT_KEY
from gpurig.deploys.preflight import preflight

preflight()
verdict = host.data.get(VERDICT_KEY)
facts = host.data.get(FACTS_KEY)
result = host_result(host.name, facts, verdict)
result_file(Path(os.environ[ENV_OUT]), host.name).write_text(json.dumps(result))
