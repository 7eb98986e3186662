"""The signaling lane (GB/T 28181 SIP and MANSCDP, issue 13): pure, one object per side and part.

- ``outer``: ferry as the upper-level platform of outer devices (REGISTER with digest, MESSAGE
  with MANSCDP, device state) -> canonical signaling objects (``OuterSignalingLane``);
- ``registry``: the registered outer devices (online, contact, keepalives, catalog);
- ``inner``: ferry as a lower-level platform of the inner platform (the cascade);
- ``ids``: the outer device ID <-> inner ID mapping;
- ``outer_media``: ferry INVITEs outer cameras for their video (always-on, or on demand through
  the reverse lane): dialogs, dynamic ingest ports, holders (``OuterMediaLane``).
"""
