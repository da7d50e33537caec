"""Call the methods of examples/rpc_server.py (sync API).

Run a broker and examples/rpc_server.py first, then: python examples/rpc_client.py
"""

import rembus.sync as rembus

rb = rembus.component()
print("add(1, 2) =", rb.rpc("add", 1, 2))
print("stats =", rb.rpc("stats", [20.5, 21.0, 23.5]))
print("direct add =", rb.direct("calculator", "add", 10, 20))
try:
    rb.rpc("stats", [])
except rembus.RembusError as exc:  # the server's exception comes back as an error
    print("stats([]) failed:", exc.message)
rb.close()
