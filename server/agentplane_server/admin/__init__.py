"""AdminService: projects, API keys and roles, server and contract info."""
