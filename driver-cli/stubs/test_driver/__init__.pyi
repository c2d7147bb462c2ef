"""Types of vm-test-driver's `test_driver`, the module a NixOS testScript runs against.

Names and signatures follow NixOS's test driver (nixos/lib/test-driver), so a script checked here
checks there too; written for vm-test-driver. `test_driver.testscript` holds the globals a script
sees (typing only: it is not importable at run time).
"""
