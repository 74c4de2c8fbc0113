"""pyinfra inventory: GPURIG_HOSTS=user@host[:port],... else the running sandbox hosts.

pyinfra loads this file by path (`pyinfra inventory.py deploy/gpu.py`). Never `import
inventory`: that name finds the inventory/ folder of example fleets first. The parsing lives in
gpurig.inventory; every module-level list here is a pyinfra group of (name, data) pairs.
"""

from pyinfra.api.exceptions import InventoryError

from gpurig.errors import GpurigError
from gpurig.inventory import pyinfra_groups

try:
    globals().update(pyinfra_groups())  # `hosts`, or `sandbox` plus one group per suite
except GpurigError as error:
    raise InventoryError(str(error)) from None
