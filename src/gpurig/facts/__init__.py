"""pyinfra facts gpurig reads from hosts: small classes, `command()` and `process(lines)`.

`system`: what preflight and the install stages need; `gpu`: the NVIDIA layer's facts.
"""
