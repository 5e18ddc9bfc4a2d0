"""RegistryService: which agents exist, what they can do (A2A cards), liveness leases, watch."""
