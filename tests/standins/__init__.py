"""Stand-ins for provider APIs: small real HTTP servers on loopback speaking their formats."""
