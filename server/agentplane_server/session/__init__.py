"""SessionService: conversations across agents."""
