# The nixos guest's run-client-vm and run-server-vm on VLAN 1 (client is machine 1, server 2): names
# resolve as NixOS's /etc/hosts has them, a Python web server on the server answers curl on the client,
# block/unblock cut its link, and forward_port brings it to the host.
# Run by driver-cli/tests/nixpkgs_machines.rs (with --vlans 1).
import socket
from urllib.request import urlopen

FETCH = "curl --fail --silent --max-time 5 http://server:8080/greeting"

start_all()
client.wait_for_unit("multi-user.target")
server.wait_for_unit("multi-user.target")

with subtest("each machine finds the other by name on VLAN 1"):
    # getent's ahosts asks with AI_ADDRCONFIG: no IPv4 answer before networkd gave the machine its
    # own address, which multi-user.target does not wait for.
    got = client.wait_until_succeeds("getent ahostsv4 server", timeout=60)
    assert got.split()[0] == "192.168.1.2", got
    got = server.wait_until_succeeds("getent ahostsv4 client", timeout=60)
    assert got.split()[0] == "192.168.1.1", got

with subtest("python serves, curl fetches"):
    server.wait_for_closed_port(8080)
    server.succeed("mkdir -p /srv/www", "echo 'greetings from the server' > /srv/www/greeting")
    server.succeed("cd /srv/www && python -m http.server 8080 >&2 &")
    server.wait_for_open_port(8080)
    page = client.wait_until_succeeds(FETCH, timeout=120)
    assert page == "greetings from the server\n", repr(page)

with subtest("a blocked server is out of reach until unblocked"):
    server.block()
    client.fail(FETCH)
    server.unblock()
    client.wait_until_succeeds(FETCH, timeout=120)

with subtest("a forwarded port reaches the server from the host"):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server.forward_port(port, 8080)
    body = urlopen(f"http://127.0.0.1:{port}/greeting", timeout=60).read()
    assert body == b"greetings from the server\n", repr(body)
