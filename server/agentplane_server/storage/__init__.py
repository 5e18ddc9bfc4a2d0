"""Storage: the only package that speaks SQL. SQLite by default, PostgreSQL by URL."""
