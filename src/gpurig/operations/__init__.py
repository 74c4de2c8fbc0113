"""gpurig's own pyinfra operations: each reads facts and yields commands only when the host
differs from what is wanted, so a converged host reports no change.

pyinfra's `pip.packages(requirements=...)` cannot tell whether a requirements file is
installed and always reports a change; `venv.locked_venv` decides from the venv's marker.
"""
