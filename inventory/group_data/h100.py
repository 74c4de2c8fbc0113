# H100 hosts (Hopper): stack.yml fields overridden as gpurig_<section>_<field>.
gpurig_nvidia_require_gpu = True  # a host whose GPU is not usable fails its deploy
gpurig_nvidia_driver_branch = 580
