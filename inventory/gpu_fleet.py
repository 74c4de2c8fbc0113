"""Example: a GPU fleet in two groups; each group's settings are in group_data/GROUP.py.

pyinfra inventory/gpu_fleet.py deploy/gpu.py
pyinfra inventory/gpu_fleet.py deploy/gpu.py --limit l4
"""

h100 = ["h100-01.gpu.example.com", "h100-02.gpu.example.com"]
l4 = [
    "l4-01.gpu.example.com",
    ("l4-02.gpu.example.com", {"ssh_port": 2222}),  # one host's own data
]
