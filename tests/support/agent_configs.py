"""The smallest valid agent configs, as TOML text: [agent] and [link], for a config test to add its
section to (or to change a value of)."""
from __future__ import annotations

OUTER = """
[agent]
name = "o"
key = "keys/outer.key"
peer_public = "keys/inner.pub"
policy = "policy"
audit_dir = "audit"
[link]
peer_host = "10.0.0.2"
peer_port = 47000
"""
"""An outer agent whose paths are relative to the config's folder, sending to 10.0.0.2:47000."""

OUTER_LOOPBACK = """
[agent]
name = "o"
key = "k"
peer_public = "p"
policy = "pol"
audit_dir = "a"
[link]
peer_host = "127.0.0.1"
peer_port = 9000
"""
"""An outer agent with one-letter paths, sending to 127.0.0.1:9000."""

INNER_LOOPBACK = """
[agent]
name = "i"
key = "k"
peer_public = "p"
policy = "pol"
audit_dir = "a"
[link]
listen_host = "127.0.0.1"
listen_port = 9000
"""
"""Its inner peer, listening on 127.0.0.1:9000."""
