"""Tasks: formats, the built-in offline suite, tokenisation and collation."""
