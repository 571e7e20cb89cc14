"""The root service: its loop, limits and RPC framing and values, the client proxy, credentials, units."""
