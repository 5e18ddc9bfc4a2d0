"""Credentials: API keys, JWTs from an identity provider, client certificates; rate limits."""
