"""Services: the rules of one resource, shared by the web API, the CLI and the UI.

Handlers and commands call a service; a service calls the store. No handler reaches
into a store directly.
"""

from mailgate.services.account_schema import AccountIn, AccountPatch, account_view
from mailgate.services.accounts import AccountsService, ProbeSettings

__all__ = ["AccountIn", "AccountPatch", "AccountsService", "ProbeSettings", "account_view"]
