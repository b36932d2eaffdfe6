"""asyncssh, imported without the deprecation warnings its own import raises.

Newer cryptography releases (51 here) deprecate DSA and warn when a module
touches it; asyncssh 2.x defines its DSA key class at import, so
every ``import asyncssh`` printed "CryptographyDeprecationWarning: DSA is
deprecated" to the user's terminal, on each command (and into the lines
a script reads from stderr). The launcher never offers DSA keys (OpenSSH
dropped them in 9.8): the warning says nothing to a user of it. Only the
warnings raised while asyncssh is being imported are silenced, and only
cryptography's deprecation warnings.
"""

from __future__ import annotations

import warnings


def _quiet_import():
    try:
        from cryptography.utils import CryptographyDeprecationWarning
    except ImportError:  # a cryptography without it has nothing to silence
        import asyncssh
        return asyncssh
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        import asyncssh
    return asyncssh


asyncssh = _quiet_import()
