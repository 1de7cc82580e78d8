"""Teams (issue 18): who is asking, what their answers cost, and the limits they are held to.

``Accounts`` is the runtime's single entry: ``clients.py`` (keys to names), ``prices.py`` (the
built-in table and the config's), ``cost.py`` (usage to dollars), ``budgets.py`` (windows and
refusals, sans-IO), ``ledger.py`` (this instance's counts), ``shared.py`` (the counts in Redis).
Imported by the runtime, the inbound layer and the CLI only; it reaches no provider and no
client connection, and ``observe/`` never calls it (it hands daily totals to the history).
"""

from ccbalancer.accounting.accounts import Accounts, Refused
from ccbalancer.accounting.clients import NOBODY, Client, ClientBook

__all__ = ["NOBODY", "Accounts", "Client", "ClientBook", "Refused"]
