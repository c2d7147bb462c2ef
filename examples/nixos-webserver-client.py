# The seed's webserver/client scenario as a NixOS testScript, on machines built the way NixOS builds a
# test's machines (the `nixos` guest: run-client-vm is machine 1, run-webserver-vm machine 2, each
# attaching its own NIC to VLAN 1 from QEMU_VDE_SOCKET_1, both names in every /etc/hosts):
#   N=$(bash guests/build.sh nixos)
#   vm-test-driver --start-scripts "$N/run-client-vm" "$N/run-webserver-vm" --vlans 1 -- examples/nixos-webserver-client.py
# (not the whole directory: its run-server-vm is another machine 2, for nixpkgs' networking test)
# examples/nixos-webserver-client.rhai is the same in Rhai.
import socket
import time
from urllib.request import urlopen

start_all()

# By name, over VLAN 1; --max-time keeps a fetch over a cut link short.
fetch = "curl --fail --silent --show-error --max-time 5 http://webserver/"

with subtest("the webserver serves its page"):
    webserver.wait_for_unit("httpd.service")
    webserver.wait_for_open_port(80)

with subtest("the client fetches the page over VLAN 1"):
    page = client.wait_until_succeeds(fetch, timeout=120)
    assert "Hello from the webserver" in page, f"unexpected page: {page!r}"

with subtest("block cuts the webserver off, unblock brings it back"):
    webserver.block()
    client.fail(fetch)
    webserver.unblock()
    client.wait_until_succeeds(fetch, timeout=120)

# partition, heal and set_link_quality are vm-test-driver's own (NixOS has no network faults).
with subtest("a partition cuts the client off until healed"):
    partition([webserver], [client])
    client.fail(fetch)
    heal()
    client.wait_until_succeeds(fetch, timeout=120)

with subtest("a slow link slows every round trip"):
    # What the client sends waits 300 ms: a TCP handshake and a request take two such trips.
    set_link_quality(1, client, 300)
    t0 = time.monotonic()
    client.succeed(fetch)
    took = time.monotonic() - t0
    assert took >= 0.6, f"the fetch took {took:.3f} s over a 300 ms link"
    set_link_quality(1, client, 0)

with subtest("forward_port makes the server reachable from the host"):
    # A port no other process of the host holds right now.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    webserver.forward_port(port, 80)
    page = urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
    assert "Hello from the webserver" in page, f"unexpected page: {page!r}"

client.shutdown()
webserver.shutdown()
