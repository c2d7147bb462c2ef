"""NixOS's `VLan`: one virtual network (a `vde_switch`), the script's `vlan<N>` and `vlans`."""

from pathlib import Path

class VLan:
    nr: int
    socket_dir: Path
    pid: int
