# Data for every host of the inventories in this folder. Plain assignments only: pyinfra turns
# every module-level name here into host data, imports included.
ssh_user = "debian"
ssh_key = "~/.ssh/id_ed25519"
ssh_known_hosts_file = "~/.ssh/known_hosts"
# A host missing from known_hosts is refused: add keys you have checked (ssh-keyscan + compare).
ssh_strict_host_key_checking = "yes"
