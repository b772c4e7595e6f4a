"""mason.cli: the only package that prints or reads the environment."""
