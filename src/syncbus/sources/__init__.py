"""Sources: what puts records onto the bus (entry point group ``syncbus.connectors``).

``base`` is the contract a source type implements (``PushSource`` or
``PollSource``), ``publisher`` the one publish path every record takes,
``poller`` and ``schedule`` run poll sources, and the remaining modules are
the built-in types. Plugin authors import from :mod:`syncbus.plugin`.
"""
