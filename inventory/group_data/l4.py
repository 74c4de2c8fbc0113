# L4 inference hosts: these images boot Ubuntu, whose cloud user is `ubuntu`.
ssh_user = "ubuntu"
gpurig_nvidia_require_gpu = True
