"""ferry: a one-way, policy-checked boundary access appliance.

The core (codecs, wire, policy, audit, lanes) is sans-IO: bytes and ``now`` in,
values and bytes out. Only ``ferry.agents`` and ``ferry.mgmt`` touch sockets,
files and clocks.
"""

__version__ = "0.1.0"
