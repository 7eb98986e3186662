"""ferry.mgmt: the gRPC management service of the agents (proto/mgmt.proto) and its client."""
