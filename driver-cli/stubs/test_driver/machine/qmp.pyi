"""Where NixOS's test scripts import the QMP session and its error from."""

from test_driver.qmp import QMPAPIError as QMPAPIError
from test_driver.qmp import QMPSession as QMPSession
