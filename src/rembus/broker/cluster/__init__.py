"""Brokers joined through a NATS cluster with JetStream.

* :mod:`.subjects` — Rembus topics, tenants and patterns as NATS subjects and
  subscriptions (pure, no I/O);
* :mod:`.names` — one name, one connection, cluster-wide: leases in a
  JetStream key-value bucket;
* :mod:`.locations` — which broker holds the connection of a named component;
* :mod:`.security` — keys, tenants, admins and private topics shared by every
  broker (a key-value bucket watched into a cache);
* :mod:`.load` — ``less_busy`` across brokers: load reports;
* :mod:`.bridge` — the cluster driver: a broker's router joined to the others
  through NATS (``rembus broker --cluster``), with :mod:`.logins` (its
  components' names) and :mod:`.config`.

The ``nats`` package (extra ``rembus[cluster]``) is imported only by the
modules that talk to NATS.
"""
